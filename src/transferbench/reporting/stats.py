"""Uncertainty: a t interval over training seeds, paired bootstraps over seeds and test images, Holm's
correction, balanced accuracy, time to accuracy.

numpy only: scipy is not a dependency, so the t quantiles come from a table (below).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# t(0.975, df) for df = 1..30 (standard tables, 3 decimals); beyond 30 the normal 1.96 is within 2%.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed, so the same predictions give the same interval (the report is deterministic)
BOOTSTRAP_CHUNK = 500  # resamples drawn at once: 500 x n indices stay small for a 10,000-image test set
# Cells (resamples x images) held at once by the two-level bootstrap: about 16 MB per float array,
# so 10,000 images x 10,000 resamples runs in 50 chunks of 200.
BOOTSTRAP_CELLS = 2_000_000


def t_quantile(df: int) -> float:
    """t(0.975, df), the multiplier of a two-sided 95% interval."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return T_975[df - 1] if df <= len(T_975) else 1.96


def mean_interval(values: Sequence[float], bounds: tuple[float | None, float | None] = (None, None)) -> dict:
    """Mean, sample std (n - 1) and the 95% t interval of the mean, clipped to ``bounds`` (the values' valid
    range: an accuracy's interval past 1 claims nothing more); std and interval None for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "std": None, "n": n, "low": None, "high": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, **clip(mean - half, mean + half, bounds)}


def clip(low: float, high: float, bounds: tuple[float | None, float | None]) -> dict:
    """``{"low", "high"}`` inside ``bounds`` (None: unbounded on that side)."""
    floor, ceiling = bounds
    if floor is not None:
        low, high = max(low, floor), max(high, floor)
    if ceiling is not None:
        low, high = min(low, ceiling), min(high, ceiling)
    return {"low": low, "high": high}


def per_image_correct(targets: np.ndarray, predicted: Sequence[np.ndarray]) -> np.ndarray:
    """Per test image, the share right averaged over the runs (seeds); several positions (CAPTCHAs) averaged too."""
    runs = [np.asarray(p) == targets for p in predicted]
    per_run = [r.reshape(len(targets), -1).mean(axis=1) for r in runs]
    return np.mean(per_run, axis=0)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED, labels: np.ndarray | None = None) -> dict:
    """Mean of ``a - b`` (per-image correctness of two arms on one test set), its 95% percentile interval
    and two-sided p-value; ``labels``: balanced accuracy (mean recall over classes) instead of the mean.

    Images are resampled with replacement, the same indices for both arms (paired): the interval is
    about this test set's sampling only, with each arm's seeds already averaged per image.
    """
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(diff)
    classes = None if labels is None else np.unique(labels, return_inverse=True)[1].reshape(-1)
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, BOOTSTRAP_CHUNK):
        index = rng.integers(0, n, size=(min(BOOTSTRAP_CHUNK, resamples - start), n))
        means.append(diff[index].mean(axis=1) if classes is None
                     else class_balanced_means(diff[index], classes[index]))
    drawn = np.concatenate(means)
    low, high = np.percentile(drawn, [2.5, 97.5])
    difference = diff.mean() if classes is None else class_balanced_means(diff[None, :], classes[None, :])[0]
    return {"difference": float(difference), "low": float(low), "high": float(high), "p_value": p_value(drawn),
            "n_images": n, "resamples": resamples, "seed": seed}


def balanced_accuracy(targets: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present in ``targets`` (single-output tasks)."""
    targets, predicted = np.asarray(targets).reshape(-1), np.asarray(predicted).reshape(-1)
    return float(np.mean([(predicted[targets == c] == c).mean() for c in np.unique(targets)]))


def correctness(targets: np.ndarray, predicted: np.ndarray, whole: bool = False) -> np.ndarray:
    """Per test image, the share of its positions right (one position: 0 or 1); ``whole``: 1 only if all are."""
    right = (np.asarray(predicted) == targets).reshape(len(targets), -1)
    return right.all(axis=1).astype(float) if whole else right.mean(axis=1)


def class_balanced_means(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row, the mean over classes (present in that row's ``labels``) of the class's mean value.

    ``values`` and ``labels`` are (rows, n); labels are 0..classes-1. With correctness as values this is
    balanced accuracy of each resample.
    """
    rows, classes = values.shape[0], int(labels.max()) + 1
    slots = (labels + classes * np.arange(rows)[:, None]).ravel()
    sums = np.bincount(slots, weights=values.ravel(), minlength=rows * classes).reshape(rows, classes)
    counts = np.bincount(slots, minlength=rows * classes).reshape(rows, classes)
    present = counts > 0
    return (sums / np.maximum(counts, 1)).sum(axis=1) / present.sum(axis=1)


def seed_weights(rng: np.random.Generator, seeds: int, rows: int) -> np.ndarray:
    """(rows, seeds): each row the share of ``seeds`` draws with replacement that fell on each seed."""
    return rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=rows) / seeds


def two_level_bootstrap(a: np.ndarray, b: np.ndarray, labels: np.ndarray | None = None,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """Arm ``a`` minus arm ``b`` on one test set, with a 95% percentile interval and a two-sided p-value.

    ``a`` and ``b`` are (seeds, images) per-image correctness. Each resample draws every arm's seeds
    with replacement and averages them per image, then draws test images with replacement, the same
    for both arms (paired): the interval counts training chance and the test set's sampling.
    ``labels`` (images,): score by balanced accuracy (mean recall over classes) instead of the mean.
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    n = a.shape[1]
    classes = None if labels is None else np.unique(labels, return_inverse=True)[1].reshape(-1)

    def score(values: np.ndarray, index: np.ndarray) -> np.ndarray:
        return values.mean(axis=1) if classes is None else class_balanced_means(values, classes[index])

    rng = np.random.default_rng(seed)
    step = max(1, min(resamples, BOOTSTRAP_CELLS // n))
    diffs = []
    for start in range(0, resamples, step):
        rows = min(step, resamples - start)
        # einsum, not BLAS: a handful of seeds makes a tiny product that threads only slow down.
        per_image = (np.einsum("rk,kn->rn", seed_weights(rng, len(a), rows), a)
                     - np.einsum("rk,kn->rn", seed_weights(rng, len(b), rows), b))
        index = rng.integers(0, n, size=(rows, n), dtype=np.int32)
        diffs.append(score(gather(per_image, index), index))
    drawn = np.concatenate(diffs)
    low, high = np.percentile(drawn, [2.5, 97.5])
    everything = np.arange(n)[None, :]
    difference = float(score((a.mean(axis=0) - b.mean(axis=0))[None, :], everything)[0])
    return {"difference": difference, "low": float(low), "high": float(high), "p_value": p_value(drawn),
            "n_images": n, "seeds": [len(a), len(b)], "resamples": resamples, "seed": seed}


def gather(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[r, index[r]]`` for every row r; row by row, which keeps each row in cache (about 3x
    take_along_axis on a 10,000-image test set)."""
    out = np.empty(index.shape, dtype=values.dtype)
    for row in range(len(index)):
        out[row] = values[row, index[row]]
    return out


def p_value(drawn: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference": 2 x the smaller tail share at 0, floored at 1/resamples."""
    tail = min(float(np.mean(drawn <= 0)), float(np.mean(drawn >= 0)))
    return min(1.0, max(1 / len(drawn), 2 * tail))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (family-wise error over all of them)."""
    m, adjusted, running = len(p_values), [0.0] * len(p_values), 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: p_values[k])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def first_reaching(epochs: Sequence[int], values: Sequence[float], target: float,
                   seconds: Sequence[float] | None = None) -> dict | None:
    """The first epoch (and its cumulative seconds) whose value reaches ``target``; None when none does."""
    for i, value in enumerate(values):
        if value >= target:
            return {"epoch": int(epochs[i]), "seconds": None if seconds is None else float(seconds[i])}
    return None
