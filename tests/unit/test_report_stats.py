"""The report's statistics: t interval over seeds, paired bootstrap over images, first epoch reaching a target."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from transferbench.reporting.stats import first_reaching, mean_interval, paired_bootstrap, per_image_correct, t_quantile


def test_t_quantiles_from_the_table_and_the_normal_beyond_30():
    assert t_quantile(1) == 12.706 and t_quantile(2) == 4.303 and t_quantile(30) == 2.042
    assert t_quantile(31) == 1.96
    with pytest.raises(ValueError):
        t_quantile(0)


def test_mean_interval_three_seeds_and_one():
    values = [0.90, 0.92, 0.97]
    half = 4.303 * statistics.stdev(values) / math.sqrt(3)
    stat = mean_interval(values)
    assert stat["mean"] == pytest.approx(0.93) and stat["n"] == 3
    assert (stat["low"], stat["high"]) == pytest.approx((0.93 - half, 0.93 + half))
    assert mean_interval([0.9]) == {"mean": 0.9, "std": None, "n": 1, "low": None, "high": None}


def test_per_image_correctness_averages_seeds_and_positions():
    target = np.array([[1, 2], [3, 4]])
    runs = [np.array([[1, 0], [3, 4]]), np.array([[0, 0], [3, 4]])]
    assert per_image_correct(target, runs).tolist() == [0.25, 1.0]


def test_paired_bootstrap_is_the_direct_computation_and_resamples_images_in_pairs():
    rng = np.random.default_rng(5)
    a, b = rng.random(300) < 0.9, rng.random(300) < 0.8
    result = paired_bootstrap(a, b, resamples=1_234, seed=3)  # not a multiple of the chunk size
    diff = a.astype(float) - b
    means = diff[np.random.default_rng(3).integers(0, 300, size=(1_234, 300))].mean(axis=1)
    assert (result["low"], result["high"]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert result["difference"] == pytest.approx(diff.mean())
    assert result["low"] < result["difference"] < result["high"]
    # Identical arms differ by exactly 0 on every resample: pairing leaves no spread.
    same = paired_bootstrap(a, a, resamples=100)
    assert (same["difference"], same["low"], same["high"]) == (0.0, 0.0, 0.0)


def test_first_reaching():
    assert first_reaching([1, 2, 3], [0.5, 0.8, 0.9], 0.8, [10.0, 20.0, 30.0]) == {"epoch": 2, "seconds": 20.0}
    assert first_reaching([1, 2, 3], [0.5, 0.8, 0.9], 0.95) is None
    assert first_reaching([4, 5], [0.9, 0.9], 0.9) == {"epoch": 4, "seconds": None}
