"""The report's statistics: t interval over seeds, paired bootstraps over seeds and images, Holm, balanced
accuracy, first epoch reaching a target."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transferbench.reporting import stats
from transferbench.reporting.stats import (
    balanced_accuracy,
    class_balanced_means,
    clip,
    first_reaching,
    holm,
    mean_interval,
    p_value,
    paired_bootstrap,
    per_image_correct,
    t_quantile,
    two_level_bootstrap,
)


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


# ---- the verdict's statistics --------------------------------------------------------------------

def test_two_level_bootstrap_is_the_direct_computation():
    rng = np.random.default_rng(7)
    a, b = (rng.random((3, 50)) < 0.9).astype(float), (rng.random((2, 50)) < 0.7).astype(float)
    result = two_level_bootstrap(a, b, resamples=300, seed=4)
    draw = np.random.default_rng(4)
    weights_a = draw.multinomial(3, [1 / 3] * 3, size=300) / 3
    weights_b = draw.multinomial(2, [1 / 2] * 2, size=300) / 2
    index = draw.integers(0, 50, size=(300, 50), dtype=np.int32)
    per_image = weights_a @ a - weights_b @ b
    means = np.array([row[i].mean() for row, i in zip(per_image, index, strict=True)])
    assert (result["low"], result["high"]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert result["difference"] == pytest.approx(a.mean() - b.mean())
    assert result["p_value"] == pytest.approx(max(1 / 300, 2 * min((means <= 0).mean(), (means >= 0).mean())))
    assert result["seeds"] == [3, 2] and result["n_images"] == 50


def test_seeds_that_disagree_widen_the_interval_and_small_chunks_still_cover_every_resample(monkeypatch):
    """Seeds far apart (one pretrained seed at 50%, two at 95%) must widen the interval well past the
    images-only one, which sees only their average."""
    rng = np.random.default_rng(1)
    agree = np.stack([(rng.random(400) < 0.8).astype(float)] * 3)
    disagree = np.stack([(rng.random(400) < p).astype(float) for p in (0.95, 0.95, 0.5)])
    random = np.stack([(rng.random(400) < 0.7).astype(float)] * 3)
    wide = two_level_bootstrap(disagree, random)
    narrow = paired_bootstrap(disagree.mean(0), random.mean(0))
    assert wide["high"] - wide["low"] > 2 * (narrow["high"] - narrow["low"])
    monkeypatch.setattr(stats, "BOOTSTRAP_CELLS", 400 * 7)  # 7 resamples a chunk, the last one short
    small = two_level_bootstrap(agree, random, resamples=2_000)
    assert small["resamples"] == 2_000 and small["low"] > 0 and small["p_value"] < 0.05


def test_identical_arms_give_zero_and_p_one():
    """Seeds that agree exactly, on both arms: neither level of resampling can move the difference from 0."""
    same = np.tile((np.random.default_rng(2).random(30) < 0.8).astype(float), (2, 1))
    result = two_level_bootstrap(same, same, resamples=200)
    assert (result["difference"], result["low"], result["high"], result["p_value"]) == (0.0, 0.0, 0.0, 1.0)


def test_balanced_accuracy_is_the_mean_recall_of_the_classes_present():
    target = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 0, 2, 2, 2, 0, 0, 0])  # recalls 3/4, 1/2, 1/2
    assert balanced_accuracy(target, predicted) == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    # Class 5 is never a target: it does not count, even though it could be predicted.
    assert balanced_accuracy(np.array([0, 0, 1]), np.array([5, 0, 1])) == pytest.approx((0.5 + 1) / 2)
    correct = (predicted == target).astype(float)
    assert class_balanced_means(correct[None, :], target[None, :])[0] == pytest.approx((0.75 + 0.5 + 0.5) / 3)


def test_the_balanced_bootstrap_scores_each_resample_by_its_classes():
    target = np.repeat([0, 1], [45, 5])  # an imbalanced test set: accuracy and balanced accuracy part
    a = np.ones((1, 50))
    b = np.concatenate([np.ones(45), np.zeros(5)])[None, :]  # random gets the rare class always wrong
    result = two_level_bootstrap(a, b, labels=target, resamples=500)
    assert result["difference"] == pytest.approx(0.5)
    plain = two_level_bootstrap(a, b, resamples=500)
    assert plain["difference"] == pytest.approx(0.1)


def test_p_value_floor_and_two_sides():
    assert p_value(np.full(100, 0.3)) == pytest.approx(0.01)
    assert p_value(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(0.5)
    assert p_value(np.zeros(10)) == 1.0


def test_holm_adjusts_step_down_and_keeps_the_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2, 0.001]) == pytest.approx([0.2, 0.002])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # 2 x 0.6 capped at 1; the larger never falls below it
    assert holm([]) == []


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
@settings(max_examples=200, deadline=None)
def test_an_accuracys_interval_never_leaves_0_1(values):
    stat = mean_interval(values, (0.0, 1.0))
    if stat["low"] is not None:
        assert 0.0 <= stat["low"] <= stat["mean"] + 1e-12 and stat["mean"] - 1e-12 <= stat["high"] <= 1.0


@given(st.lists(st.integers(0, 1), min_size=2, max_size=30), st.integers(1, 3))
@settings(max_examples=30, deadline=None)
def test_a_bootstrap_interval_of_accuracies_stays_in_minus_1_1(correct, seeds):
    a = np.tile(np.asarray(correct, dtype=float), (seeds, 1))
    result = two_level_bootstrap(a, 1 - a, resamples=50)
    assert -1.0 <= result["low"] <= result["high"] <= 1.0


def test_clip():
    assert clip(-0.2, 1.3, (0.0, 1.0)) == {"low": 0.0, "high": 1.0}
    assert clip(-3.0, 4.0, (0.0, None)) == {"low": 0.0, "high": 4.0}
