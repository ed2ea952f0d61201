"""reports/<experiment>/metrics.json: the experiment's name in every column `dvc exp show` makes of it."""

from __future__ import annotations

import pytest

from transferbench.training.evaluation import aggregate


def run(weights: str, accuracy: float, sequence: float | None = None, seconds: float = 10.0) -> dict:
    test = {"accuracy": accuracy, "loss": 1.0, "n": 10}
    if sequence is not None:
        test["sequence_accuracy"] = sequence
    return {"weights": weights, "test": test, "best_val_accuracy": accuracy + 0.01, "seconds": seconds}


def test_one_seed_per_arm_gives_the_values_under_experiment_then_arm():
    out = aggregate("pets", [run("imagenet", 0.9), run("none", 0.5, seconds=20.0)])
    assert out == {"pets": {
        "imagenet": {"test_accuracy": 0.9, "best_val_accuracy": 0.91, "seconds": 10.0},
        "none": {"test_accuracy": 0.5, "best_val_accuracy": 0.51, "seconds": 20.0},
    }}


def test_seeds_give_a_mean_and_a_spread_and_sequences_their_own_column():
    out = aggregate("captcha", [run("none", 0.6, 0.1), run("none", 0.8, 0.3)])["captcha"]["none"]
    assert out["test_accuracy"] == pytest.approx(0.7) and out["test_accuracy_std"] == pytest.approx(0.1414, abs=1e-4)
    assert out["test_sequence_accuracy"] == pytest.approx(0.2)
    assert list(out) == ["test_accuracy", "test_accuracy_std", "test_sequence_accuracy", "test_sequence_accuracy_std",
                         "best_val_accuracy", "best_val_accuracy_std", "seconds"]


def test_two_experiments_never_share_a_column_name():
    def columns(tree: dict, prefix: str = "") -> set[str]:
        return {c for k, v in tree.items()
                for c in (columns(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"})}

    first, second = aggregate("pets", [run("none", 0.5)]), aggregate("cifar10", [run("none", 0.4)])
    assert not columns(first) & columns(second)
