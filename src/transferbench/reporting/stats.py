"""Uncertainty: a t interval over training seeds, a paired bootstrap over test images, time to accuracy.

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


def t_quantile(df: int) -> float:
    """t(0.975, df), the multiplier of a two-sided 95% interval."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return T_975[df - 1] if df <= len(T_975) else 1.96


def mean_interval(values: Sequence[float]) -> dict:
    """Mean, sample std (n - 1) and the 95% t interval of the mean; std and interval None for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "std": None, "n": n, "low": None, "high": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "low": mean - half, "high": mean + half}


def per_image_correct(targets: np.ndarray, predicted: Sequence[np.ndarray]) -> np.ndarray:
    """Per test image, the share right averaged over the runs (seeds); several positions (CAPTCHAs) averaged too."""
    runs = [np.asarray(p) == targets for p in predicted]
    per_run = [r.reshape(len(targets), -1).mean(axis=1) for r in runs]
    return np.mean(per_run, axis=0)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> dict:
    """Mean of ``a - b`` (per-image correctness of two arms on one test set) and its 95% percentile interval.

    Images are resampled with replacement, the same indices for both arms (paired): the interval is
    about this test set's sampling, with each arm's seeds already averaged per image.
    """
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(diff)
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, BOOTSTRAP_CHUNK):
        index = rng.integers(0, n, size=(min(BOOTSTRAP_CHUNK, resamples - start), n))
        means.append(diff[index].mean(axis=1))
    low, high = np.percentile(np.concatenate(means), [2.5, 97.5])
    return {"difference": float(diff.mean()), "low": float(low), "high": float(high), "n_images": n,
            "resamples": resamples, "seed": seed}


def first_reaching(epochs: Sequence[int], values: Sequence[float], target: float,
                   seconds: Sequence[float] | None = None) -> dict | None:
    """The first epoch (and its cumulative seconds) whose value reaches ``target``; None when none does."""
    for i, value in enumerate(values):
        if value >= target:
            return {"epoch": int(epochs[i]), "seconds": None if seconds is None else float(seconds[i])}
    return None
