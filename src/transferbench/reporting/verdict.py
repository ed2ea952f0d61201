"""Did pretraining help? Pretrained minus random on one test metric, with every source of chance counted.

The interval resamples each arm's training seeds and then the test images (paired); the p-values of
every verdict in one report are Holm-adjusted together, so a report with many comparisons does not
find a "yes" by luck. Pure functions of arrays and numbers: reporting.read reads the runs, reporting.summary
calls these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from transferbench.reporting.stats import correctness, holm, paired_bootstrap, two_level_bootstrap

ALPHA = 0.05  # family-wise: Holm-adjusted p below it, and the interval on the same side of 0
ONE_RUN = "one run: no verdict on training chance"
NO_PREDICTIONS = "not known: no per-image predictions, so no interval"
METRIC_TITLES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "sequence_accuracy": "whole-CAPTCHA accuracy"}
# The summary key of each metric's per-run test value (results[arm][key]).
RESULT_KEYS = {"accuracy": "test_accuracy", "balanced_accuracy": "test_balanced_accuracy",
               "sequence_accuracy": "test_sequence_accuracy"}
FAMILY = ("every pretrained-minus-random comparison of every experiment at its largest planned share of the "
          "training split; the data-size intervals are descriptive and get no verdict")


def verdict_metric(class_weight: str, n_outputs: int) -> str:
    """Balanced accuracy for a single-output experiment trained with balanced class weights (what it
    optimised for), else accuracy (per character for CAPTCHAs, the figure the reference study published)."""
    return "balanced_accuracy" if class_weight == "balanced" and n_outputs == 1 else "accuracy"


def interval_metrics(verdict: str, n_outputs: int) -> list[str]:
    """Every metric given a paired interval, the verdict's first."""
    others = ["accuracy", "sequence_accuracy"] if n_outputs > 1 else ["accuracy", "balanced_accuracy"]
    return [verdict, *(m for m in others if m != verdict)]


def paired(target: np.ndarray, mine: Sequence[np.ndarray], random: Sequence[np.ndarray], metric: str) -> dict:
    """Pretrained minus random on ``metric``: the two-level interval (seeds, then images) and, beside it,
    the images-only one (each arm's seeds averaged per image first)."""
    whole = metric == "sequence_accuracy"
    a = np.stack([correctness(target, p, whole) for p in mine])
    b = np.stack([correctness(target, p, whole) for p in random])
    labels = np.asarray(target).reshape(-1) if metric == "balanced_accuracy" else None
    images = paired_bootstrap(a.mean(axis=0), b.mean(axis=0), labels=labels)
    return {**two_level_bootstrap(a, b, labels), "metric": metric,
            "images_only": {k: images[k] for k in ("low", "high", "p_value")}}


def compare(target: np.ndarray | None, mine: Sequence[np.ndarray], random: Sequence[np.ndarray],
            metrics: Sequence[str], means: Mapping[str, tuple[float, float]]) -> dict:
    """The verdict metric's comparison (``metrics[0]``) with the others under ``also``.

    Without predictions of every run (``target`` None): the difference of the arms' means, no interval.
    """
    if target is None:
        first = metrics[0]
        difference = means[first][0] - means[first][1]
        return {"metric": first, "difference": None if np.isnan(difference) else difference, "low": None,
                "high": None, "seeds": [len(mine), len(random)]}
    results = [paired(target, mine, random, m) for m in metrics]
    return {**results[0], "also": {m: r for m, r in zip(metrics[1:], results[1:], strict=True)}}


def in_family(comparison: Mapping[str, Any]) -> bool:
    """Whether a comparison can give a verdict: an interval, and at least two seeds in both arms."""
    return comparison.get("p_value") is not None and min(comparison["seeds"]) >= 2


def apply_holm(comparisons: Iterable[MutableMapping[str, Any]]) -> int:
    """Set ``p_holm`` on every comparison in the family (Holm over all of them together); return its size."""
    family = [c for c in comparisons if in_family(c)]
    for comparison, adjusted in zip(family, holm([c["p_value"] for c in family]), strict=True):
        comparison["p_holm"] = adjusted
        comparison["family_size"] = len(family)
    return len(family)


def helped(comparison: Mapping[str, Any]) -> str:
    """The verdict words: yes / no, it hurt / not shown; or why there is none."""
    if comparison.get("low") is None:
        return NO_PREDICTIONS
    if min(comparison["seeds"]) < 2:
        return ONE_RUN
    p = comparison.get("p_holm")
    if p is None:
        return "not shown (no Holm-adjusted p-value)"
    shown = f"Holm-adjusted p = {fmt_p(p)}"
    if p < ALPHA and comparison["low"] > 0:
        return f"yes ({shown}; 95% interval above 0)"
    if p < ALPHA and comparison["high"] < 0:
        return f"no, it hurt ({shown}; 95% interval below 0)"
    if comparison["low"] <= 0 <= comparison["high"]:
        return f"not shown ({shown}; 95% interval includes 0)"
    return f"not shown ({shown}, not below {ALPHA})"


def fmt_p(p: float) -> str:
    """A p-value to two significant figures (resampling cannot say more), e.g. 0.031, 0.0001."""
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1g}"
