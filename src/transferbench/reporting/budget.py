"""What each arm was given: the rate it trained at, its tuning budget, epochs, training images, seeds
(reporting.readme's budget_table shows it).

A comparison is only as fair as its budgets (Kornblith et al. 2019 tuned every setting; VTAB fixed one
sweep for all before seeing a result), so the report shows them beside the answer. Runs' metrics.json
say what they trained with; where an older run does not, params' plan stands in, marked as planned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transferbench.study.experiments import Experiment, trial_epochs
from transferbench.study.params import Tuning


def planned_budget(experiment: Experiment, tuning: Tuning) -> dict:
    """What params give one arm: its recipe's first rate (before any tuning), epochs, and the tuning grid."""
    settings, grid = experiment.settings, tuning.kind == "grid"
    return {"setting": experiment.setting, "learning_rate": settings.learning_rate, "epochs": settings.epochs,
            "tuning": {"kind": tuning.kind, "factors": list(tuning.factors) if grid else [],
                       "trial_epochs": trial_epochs(settings, tuning.epochs) if grid else None,
                       "chosen_factor": None if grid else 1.0, "scores": None}}


def arm_budget(plan: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict:
    """One arm's budget as its runs (``metrics``, the main share's) recorded it, else as planned."""
    first = next((m for m in metrics if "tuning" in m or "learning_rate" in m), {})
    tuning = {**plan["tuning"], **(first.get("tuning") or {})}
    return {
        "setting": plan["setting"],
        "learning_rate": distinct(m.get("learning_rate") for m in metrics) or [plan["learning_rate"]],
        "learning_rate_source": "runs" if any("learning_rate" in m for m in metrics) else "params",
        "tuning": tuning,
        "tuning_source": "runs" if "tuning" in first else "params",
        "epochs_planned": distinct(m.get("epochs_planned") for m in metrics) or [plan["epochs"]],
        "train_images": distinct(m.get("train_images") for m in metrics),
        "seeds": list(seeds),
    }


def distinct(values: Any) -> list:
    """The values that are not None, each once, in order (seeds of one arm normally agree)."""
    return list(dict.fromkeys(v for v in values if v is not None))


def budget_rule(tuning: Mapping[str, Any], random_schedule: float) -> str:
    """The sentence under the first table: how every arm's budget was fixed."""
    if tuning["kind"] == "grid":
        factors = ", ".join(f"{f:g}" for f in tuning["factors"])
        text = (f"**Budget:** every arm, random initialisation included, got the same learning-rate grid (its "
                f"recipe's rates times {factors}; one trial per factor on {tuning['epochs']:.0%} of its epochs) "
                "and kept the factor with the best validation accuracy: chosen on validation only, never on test.")
    else:
        text = ("**Budget:** tuning: none — the reference studies' rates as published, the random arm inherits "
                "the pretrained recipe's rate.")
    if random_schedule != 1:
        text += f" The random arm trains {random_schedule:g} times the recipe's epochs (He et al. 2019)."
    else:
        text += " Every arm trains the recipe's epochs."
    return text
