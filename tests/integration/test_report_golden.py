"""The report's bytes on fixture studies: README.md, summary.json, curves.csv, data_size.csv and the printed
answer, compared byte for byte with tests/golden/report/<study>/, so a change of structure cannot change what
the report says.

Three studies, each built as stages/report.py builds it (``build``, then ``print_answer``):

- ``three_seeds``: pets (balanced class weights, so balanced accuracy on an unbalanced test set) and captcha
  (six positions) with fine-tuned, fixed-features and random arms, three seeds with predictions; captcha's
  pretrained arms miss seeds; an experiment with no run at all.
- ``one_seed``: reference study 003's frozen recipe (fixed features, its fine-tuned variant, random), one seed each with
  predictions; reference study 002's CNN, random only, without predictions, an overfitting curve.
- ``shares``: the two-phase Xception recipe on two shares of the training split, two seeds, with the newer
  metrics keys (tuning, learning rate, train images, best phase); a still-improving and a did-not-learn run;
  a run folder params do not plan.

Params come from tests/golden/report/params.yaml, a frozen copy, so a retuned params.yaml does not change them.
After an intended change of the report, rewrite the expected files and read their diff:

    python -m tests.integration.test_report_golden --write
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.report_runs import write_run, wrong
from transferbench.reporting import report
from transferbench.study.params import Params, check_params

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "report"
OUTPUTS = ("README.md", "summary.json", "curves.csv", "data_size.csv")
CLASSES = ["bird", "cat", "dog"]
SEEDS = (42, 43, 44)


def frozen_params() -> dict:
    return yaml.safe_load((GOLDEN / "params.yaml").read_text(encoding="utf-8"))


def study_params(**changes) -> Params:
    return check_params({**frozen_params(), **changes})



def confusion(target: np.ndarray, predicted: np.ndarray, names: list[str]) -> pd.DataFrame:
    counts = pd.crosstab(pd.Categorical(target, range(len(names))), pd.Categorical(predicted, range(len(names))),
                         dropna=False).to_numpy()
    return pd.DataFrame(counts, index=pd.Index(names, name="true"), columns=names)


# ---- three seeds ---------------------------------------------------------------------------------

PETS_TARGET = np.random.default_rng(1).permutation(np.repeat([0, 1, 2], [40, 15, 5]))  # unbalanced classes
PETS_ERRORS = {"imagenet": (3, 4, 2), "imagenet-fixed": (6, 8, 7), "none": (9, 12, 10)}
PETS_CURVES = {"imagenet": [0.80, 0.90, 0.95, 0.945, 0.96, 0.955],
               "imagenet-fixed": [0.70, 0.80, 0.85, 0.88, 0.89, 0.90],
               "none": [0.30, 0.50, 0.70, 0.80, 0.85, 0.86]}
CAPTCHA_TARGET = np.random.default_rng(2).integers(0, 36, size=(40, 6))
CAPTCHA_ERRORS = {"imagenet": (10,), "imagenet-fixed": (20, 25), "none": (30, 35, 40)}


def three_seeds(root: Path) -> Params:
    for arm, curve in PETS_CURVES.items():
        for seed, errors in zip(SEEDS, PETS_ERRORS[arm], strict=True):
            predicted = wrong(PETS_TARGET, errors, (seed, len(arm)), 3)
            correct = predicted == PETS_TARGET
            val = [0.70, 0.90, 0.85, 0.85, 0.85, 0.85] if (arm, seed) == ("imagenet-fixed", 44) else curve
            extra: dict[str, object] = {
                "per_class_accuracy": {c: float(correct[PETS_TARGET == i].mean()) for i, c in enumerate(CLASSES)}}
            if arm != "none":
                extra["loss_definition"] = "categorical cross-entropy"
            write_run(root, "pets", arm, seed, val, {"accuracy": float(correct.mean()), "loss": 0.5 - errors / 100},
                      confusion(PETS_TARGET, predicted, CLASSES), predictions=(PETS_TARGET, predicted),
                      setting=None if arm == "none" else ("fixed_features" if arm.endswith("fixed") else "fine_tuned"),
                      epoch_seconds=None if arm == "none" else 10.0 + seed - 42, extra=extra)
    for arm, counts in CAPTCHA_ERRORS.items():
        for seed, count in zip(SEEDS, counts, strict=False):
            predicted = wrong(CAPTCHA_TARGET, count, (seed, len(arm)), 36)
            correct = predicted == CAPTCHA_TARGET
            write_run(root, "captcha", arm, seed, [0.5, 0.9, float(correct.mean())], {
                "accuracy": float(correct.mean()), "loss": 0.1 + count / 100,
                "sequence_accuracy": float(correct.all(1).mean()),
                "position_accuracy": {f"head{i}": float(correct[:, i].mean()) for i in range(6)}},
                predictions=(CAPTCHA_TARGET, predicted), epoch_seconds=200.0)
    planned = frozen_params()["experiments"]
    return study_params(seeds=3, fixed_features=True, experiments={
        "pets": planned["pets"], "captcha": planned["captcha"], "absent": {**planned["pets"], "model": "vgg16"}})


# ---- one seed ------------------------------------------------------------------------------------

BINARY_TARGET = np.arange(40) % 2


def one_seed(root: Path) -> Params:
    for arm, errors in (("imagenet", 4), ("imagenet-tuned", 2), ("none", 12)):
        predicted = wrong(BINARY_TARGET, errors, (42, len(arm)), 2)
        write_run(root, "dogs_vs_cats", arm, 42, [0.6, 0.8, 0.9], {"accuracy": 1 - errors / 40, "loss": 0.4},
                  predictions=(BINARY_TARGET, predicted), epoch_seconds=3000.0)
    write_run(root, "cats_and_dogs_filtered_cnn", "none", 42, [0.60, 0.70, 0.74, 0.72, 0.715],
              {"accuracy": 0.71, "loss": 0.9})
    planned = frozen_params()["experiments"]
    return study_params(seeds=1, fixed_features=True, experiments={
        "dogs_vs_cats": planned["dogs_vs_cats"], "cats_and_dogs_filtered_cnn": planned["cats_and_dogs_filtered_cnn"]})


# ---- two shares ----------------------------------------------------------------------------------

SHARE_ERRORS = {("imagenet", 0.5): (4, 6), ("imagenet", 1.0): (2, 3), ("none", 0.5): (16, 18), ("none", 1.0): (8, 9)}
TUNING = {"kind": "grid", "factors": [0.1, 1.0, 10.0], "scores": [0.81, 0.86, 0.52], "chosen_factor": 1.0,
          "trial_epochs": 4, "metric": "val_accuracy"}
SHARE_CURVES = {("none", 1.0, 43): [0.45, 0.5, 0.51],  # did not learn: chance 0.5, margin 0.045
                ("imagenet", 1.0, 43): [0.6, 0.8, 0.9]}  # still improving: best at its last epoch


def shares(root: Path) -> Params:
    for (arm, share), errors in SHARE_ERRORS.items():
        for seed, count in zip((42, 43), errors, strict=True):
            predicted = wrong(BINARY_TARGET, count, (seed, int(share * 10)), 2)
            extra = {"train_fraction": share, "train_images": int(2000 * share), "learning_rate": 0.001,
                     "tuning": TUNING, "epochs_planned": 15,
                     "best_phase": "fine_tune" if arm == "imagenet" else "train"}
            write_run(root, "cats_and_dogs_filtered", arm, seed, SHARE_CURVES.get((arm, share, seed), [0.6, 0.9, 0.85]),
                      {"accuracy": 1 - count / 40, "loss": 0.3}, predictions=(BINARY_TARGET, predicted),
                      extra=extra, train_fraction=share)
    write_run(root, "cats_and_dogs_filtered", "none", 99, [0.5, 0.6], {"accuracy": 0.6, "loss": 0.5})  # not planned
    planned = frozen_params()["experiments"]
    return study_params(seeds=2, fixed_features=False, train_fraction=[0.5, 1.0],
                        experiments={"cats_and_dogs_filtered": planned["cats_and_dogs_filtered"]})


STUDIES: dict[str, Callable[[Path], Params]] = {"three_seeds": three_seeds, "one_seed": one_seed, "shares": shares}


def produce(study: str, root: Path) -> dict[str, bytes]:
    """Build the study's report under ``root`` as the report stage does; every file the comparison reads."""
    params = STUDIES[study](root)
    built = report.build(params, root)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        report.print_answer(built.typed.experiments)
    figures = sorted(p.relative_to(root).as_posix() for p in (root / "figures").glob("*.png"))
    return {**{name: (root / name).read_bytes() for name in OUTPUTS},
            "answer.txt": printed.getvalue().encode(), "figures.txt": "".join(f"{f}\n" for f in figures).encode()}


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_the_report_is_byte_for_byte_the_golden_one(study, tmp_path):
    produced = produce(study, tmp_path / "reports")
    expected = GOLDEN / study
    assert sorted(produced) == sorted(p.name for p in expected.iterdir())
    for name, content in produced.items():
        assert content == (expected / name).read_bytes(), (
            f"{study}/{name} differs from {expected / name}; after an intended change: "
            "python -m tests.integration.test_report_golden --write")


def main() -> None:
    parser = argparse.ArgumentParser(description="Check or rewrite tests/golden/report/ from the fixture studies.")
    parser.add_argument("--write", action="store_true", help="rewrite the expected files (default: check them)")
    args = parser.parse_args()
    differ = []
    for study in sorted(STUDIES):
        with tempfile.TemporaryDirectory() as tmp:
            produced = produce(study, Path(tmp) / "reports")
        folder = GOLDEN / study
        if args.write:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            for name, content in produced.items():
                (folder / name).write_bytes(content)
        else:
            differ += [f"{study}/{n}" for n, c in produced.items()
                       if not (folder / n).is_file() or (folder / n).read_bytes() != c]
    if differ:
        raise SystemExit(f"differ from {GOLDEN}: {', '.join(differ)}")


if __name__ == "__main__":
    main()
