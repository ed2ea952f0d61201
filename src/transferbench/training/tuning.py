"""Every arm's learning rate chosen alike, on the validation split only (params' ``tuning``).

A comparison is fair only when every arm had the same chance: Kornblith et al. (2019) tuned each
setting on validation, and VTAB gave every method, from-scratch included, one small sweep fixed before
any result was seen. Here each arm, at each share of the training split, trains one short trial per
factor of ``tuning.factors`` (the recipe's every rate times it) and keeps the factor whose trial
reached the best validation score (accuracy; balanced accuracy where training balances the classes).
The test split is never read. ``tuning.kind: none`` keeps the reference studies' rates as published,
so the random arm inherits the pretrained recipe's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferbench.core.files import read_json, write_json
from transferbench.study.experiments import MONITOR, Experiment, monitor, trial, trial_epochs
from transferbench.study.params import Tuning

if TYPE_CHECKING:  # Keras at import: the train stage's worker coordinator imports this module without it
    from transferbench.training.batches import ArrayBatches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tuned:
    """How an arm's rate was chosen: the factors tried, each trial's best validation score, the winner."""

    kind: str
    factors: tuple[float, ...]
    scores: tuple[float, ...] | None
    chosen_factor: float
    trial_epochs: int | None
    metric: str = MONITOR  # the validation score the trials were compared on (fit.monitor)

    def record(self) -> dict[str, Any]:
        """As train.json, metrics.json and MLflow's params keep it."""
        return {"kind": self.kind, "factors": list(self.factors),
                "scores": None if self.scores is None else list(self.scores),
                "chosen_factor": self.chosen_factor, "trial_epochs": self.trial_epochs, "metric": self.metric}


UNTUNED = Tuned("none", (1.0,), None, 1.0, None)


def choose(factors: Sequence[float], scores: Sequence[float]) -> float:
    """The factor whose trial scored best; a tie goes to the one nearest the recipe's rate (on a log scale)."""
    best = max(scores)
    tied = [f for f, s in zip(factors, scores, strict=True) if s == best]
    return min(tied, key=lambda f: (abs(math.log(f)), f))


def tune(experiment: Experiment, tuning: Tuning, train: ArrayBatches, validation: ArrayBatches,
         work_dir: Path, weights_file: Path | None) -> Tuned:
    """Try every factor on ``experiment`` (an arm at its first seed) and choose one; UNTUNED for kind none.

    Each finished trial leaves its score in ``work_dir``, so a killed stage does not train it again.
    """
    if tuning.kind == "none":
        return UNTUNED
    scores = tuple(trial_score(experiment, factor, tuning.epochs, train, validation, work_dir, weights_file)
                   for factor in tuning.factors)
    return decided(experiment, tuning, scores)


def decided(experiment: Experiment, tuning: Tuning, scores: Sequence[float]) -> Tuned:
    """The arm's choice from its trials' ``scores`` (one per factor of ``tuning``, in its order)."""
    chosen = choose(tuning.factors, scores)
    log.info("%s %s: learning rate x%g chosen on validation (%s)", experiment.name, experiment.weights_label,
             chosen, ", ".join(f"x{f:g}: {s:.4f}" for f, s in zip(tuning.factors, scores, strict=True)))
    return Tuned("grid", tuple(tuning.factors), tuple(scores), chosen,
                 trial_epochs(experiment.settings, tuning.epochs), monitor(experiment.settings))


def trial_score(experiment: Experiment, factor: float, share: float, train: ArrayBatches,
                 validation: ArrayBatches, work_dir: Path, weights_file: Path | None) -> float:
    """The best validation accuracy of one short trial at ``factor`` times the recipe's rates.

    Trials of one arm are independent of each other: the train stage may run them in parallel processes
    (transferbench.training.workers), each writing its own score file.
    """
    from transferbench.training.fit import fit  # Keras: see the imports above

    done = work_dir / f"x{factor:g}.json"
    if done.exists():
        return float(read_json(done)["score"])
    settings = trial(experiment.settings, factor, share)
    log.info("%s %s: tuning trial x%g (learning rate %g), %d epoch(s)", experiment.name, experiment.weights_label,
             factor, settings.learning_rate, settings.epochs)
    trial_dir = work_dir / f"x{factor:g}"
    history = fit(dataclasses.replace(experiment, settings=settings), weights_file, train, validation, trial_dir)
    metric = monitor(settings)
    score = max(float(row[metric]) for row in history)
    write_json(done, {"factor": factor, "learning_rate": settings.learning_rate, "epochs": settings.epochs,
                      "score": score, "metric": metric})
    shutil.rmtree(trial_dir)
    return score
