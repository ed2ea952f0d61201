"""Every arm gets the same learning-rate budget and chooses on validation alone (transferbench.training.tuning)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixture_data import write_photo_split
from transferbench.core.files import read_json
from transferbench.study.experiments import at_arm, trial, with_rate
from transferbench.study.params import check_params
from transferbench.study.runs import run_name, runs, train_subset
from transferbench.training.tuning import UNTUNED, choose


def test_the_best_trial_wins_and_a_tie_goes_to_the_recipes_rate():
    assert choose([0.1, 1.0, 10.0], [0.7, 0.6, 0.6]) == 0.1
    assert choose([0.1, 1.0, 10.0], [0.5, 0.6, 0.6]) == 1.0
    assert choose([0.1, 10.0], [0.5, 0.5]) == 0.1  # as far from the recipe either way: the gentler
    assert UNTUNED.record()["chosen_factor"] == 1.0 and UNTUNED.record()["scores"] is None


def test_a_trial_scales_every_rate_and_keeps_two_phases(params):
    settings = check_params(params).experiments["cats_and_dogs_filtered"]  # two_phase: 10 + 5 epochs
    short = trial(settings, 10.0, 0.25)
    assert (short.epochs, short.head_epochs) == (4, 3)
    assert short.learning_rate == pytest.approx(1e-2) and short.fine_tune_learning_rate == pytest.approx(1e-4)
    assert trial(settings, 1.0, 0.01).epochs == 2, "one epoch per phase at the least"
    assert with_rate(settings, 0.1).fine_tune_learning_rate == pytest.approx(1e-6)


def test_random_schedule_lengthens_the_random_arm_alone(params):
    params["random_schedule"] = 2.0
    checked = check_params(params)
    epochs = {run_name(e): e.settings.epochs for e in runs(checked, "pets")}
    assert epochs == {"imagenet-s42": 30, "imagenet-fixed-s42": 30, "none-s42": 60}


@pytest.mark.parametrize(("key", "value", "message"), [
    ("tuning", {"kind": "grid", "factors": [1.0, 1.0], "epochs": 0.2}, "tuning.factors [1.0, 1.0] names a factor"),
    ("tuning", {"kind": "grid", "factors": [float("inf")], "epochs": 0.2}, "tuning.factors[0]"),
    ("tuning", {"kind": "random", "factors": [1.0], "epochs": 0.2}, "tuning.kind is 'random'; accepted: grid, none"),
    ("random_schedule", 0.5, "random_schedule must be >= 1"),
    ("train_fraction", [0.2, 0.2], "train_fraction [0.2, 0.2] names a share twice"),
    ("train_fraction", [0.0], "train_fraction[0] must be > 0"),
])
def test_bad_budgets_are_one_line(params, key, value, message):
    from transferbench.core.errors import ConfigError

    params[key] = value
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[").replace(".", r"\.")):
        check_params(params)


def test_shares_of_the_training_split_are_nested_and_fixed_by_the_seed():
    small, large = train_subset(1000, 0.05, 42), train_subset(1000, 0.2, 42)
    assert len(small) == 50 and len(large) == 200 and set(small) <= set(large)
    assert np.array_equal(small, train_subset(1000, 0.05, 42))
    assert not np.array_equal(small, train_subset(1000, 0.05, 7))
    assert train_subset(1000, 1.0, 42) is None


def _separable_split(folder, n: int, size: int, seed: int) -> None:
    """Cats dark, dogs bright: a task a tiny model learns in a few epochs at a suitable rate."""
    rng = np.random.default_rng(seed)
    labels = ["cat", "dog"] * (n // 2)
    write_photo_split(folder, labels, (size, size, 3), rng, folder.name)
    images = np.load(folder / "images.npy")
    for i, label in enumerate(labels):
        images[i] = rng.integers(0, 90, images[i].shape) if label == "cat" else rng.integers(160, 256, images[i].shape)
    np.save(folder / "images.npy", images)


@pytest.mark.slow  # the train stage's tuning and runs, end to end: about 11 s
def test_the_random_arm_of_dogs_vs_cats_tunes_its_own_rate_without_the_test_split(params, tmp_path, monkeypatch,
                                                                                  mlflow_db):
    import stages.weights
    from transferbench.core import paths
    from transferbench.data import datasets
    from transferbench.models.backbones import build_core
    from transferbench.training import train

    size = 16
    recipe = params["experiments"]["dogs_vs_cats"]  # VGG16's frozen base, SGD 1e-4: a tiny stand-in for it
    recipe.update(model="tiny", head_units=8, epochs=4, batch_size=8)
    params["experiments"] = {"dogs_vs_cats": recipe}
    params["dogs_vs_cats"].update(height=size, width=size)
    build_core("tiny", (size, size, 3)).save_weights(tmp_path / "start.weights.h5")
    params.update(weights=[str(tmp_path / "start.weights.h5"), "none"], fixed_features=False,
                  tuning={"kind": "grid", "factors": [1.0, 100.0], "epochs": 0.5})
    checked = check_params(params)
    monkeypatch.setattr(paths, "MODELS", tmp_path / "models")
    monkeypatch.setattr(paths, "PREPARED", tmp_path / "prepared")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_db}")
    for split, n in (("train", 48), ("validation", 32)):  # no test split at all: reading it would fail
        _separable_split(tmp_path / "prepared" / "dogs_vs_cats" / split, n, size, seed=len(split))
    read: list[str] = []
    real = datasets.load_split
    monkeypatch.setattr(train, "load_split",
                        lambda name, split, shape=None: read.append(split) or real(name, split, shape))
    stages.weights.prepare_arms(checked, "dogs_vs_cats")

    train.run(checked, "dogs_vs_cats", work_root=tmp_path / "work")

    assert set(read) == {"train", "validation"}
    out = paths.experiment_model_dir("dogs_vs_cats") / "runs"
    chosen = {}
    for arm in checked.arms("dogs_vs_cats"):
        experiment = at_arm(checked, "dogs_vs_cats", arm)
        record = read_json(out / run_name(experiment) / "train.json")
        tuning = record["tuning"]
        assert tuning["kind"] == "grid" and tuning["factors"] == [1.0, 100.0] and tuning["trial_epochs"] == 2
        assert tuning["chosen_factor"] == choose(tuning["factors"], tuning["scores"])
        assert record["learning_rate"] == pytest.approx(1e-4 * tuning["chosen_factor"])
        chosen[experiment.setting] = tuning["chosen_factor"]
    # From random weights SGD 1e-4 barely moves in two epochs: the random arm's own trials pick x100.
    assert chosen["random"] == 100.0

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{mlflow_db}")
    found = client.search_runs([client.get_experiment_by_name("dogs_vs_cats").experiment_id])
    logged = [r.data.params for r in found if r.data.tags.get("role") != "parent"]  # the training runs alone
    assert sorted(p["tuning.chosen_factor"] for p in logged) == sorted(str(f) for f in chosen.values())
    assert {p["experiment.learning_rate"] for p in logged} == {str(1e-4 * f) for f in chosen.values()}
