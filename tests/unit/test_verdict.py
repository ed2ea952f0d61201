"""The verdict's words and its Holm family, from comparisons made by hand."""

from __future__ import annotations

import pytest

from transferbench.reporting.verdict import ONE_RUN, apply_holm, helped, interval_metrics, verdict_metric


def comparison(low: float, high: float, p: float, seeds: tuple[int, int] = (3, 3)) -> dict:
    return {"difference": (low + high) / 2, "low": low, "high": high, "p_value": p, "seeds": list(seeds)}


def test_words_follow_the_adjusted_p_and_the_side_of_the_interval():
    found = [comparison(0.01, 0.05, 0.001), comparison(-0.06, -0.02, 0.002), comparison(-0.01, 0.04, 0.3)]
    assert apply_holm(found) == 3
    assert [c["p_holm"] for c in found] == pytest.approx([0.003, 0.004, 0.3])
    assert helped(found[0]).startswith("yes (Holm-adjusted p = 0.003")
    assert helped(found[1]).startswith("no, it hurt")
    assert helped(found[2]) == "not shown (Holm-adjusted p = 0.3; 95% interval includes 0)"


def test_holm_turns_two_borderline_yeses_into_not_shown():
    one = comparison(0.001, 0.05, 0.03)
    apply_holm([one])
    assert helped(one).startswith("yes")
    pair = [comparison(0.001, 0.05, 0.03), comparison(0.002, 0.06, 0.04)]
    apply_holm(pair)
    assert [c["p_holm"] for c in pair] == pytest.approx([0.06, 0.06])
    assert all(helped(c) == "not shown (Holm-adjusted p = 0.06, not below 0.05)" for c in pair)


def test_one_seed_in_either_arm_gives_no_verdict_and_stays_out_of_the_family():
    single, other = comparison(0.05, 0.1, 0.0001, seeds=(1, 3)), comparison(0.01, 0.05, 0.03)
    assert apply_holm([single, other]) == 1
    assert "p_holm" not in single and other["p_holm"] == pytest.approx(0.03)
    assert helped(single) == ONE_RUN == "one run: no verdict on training chance"


def test_without_predictions_there_is_no_interval_and_no_verdict():
    assert helped({"difference": 0.1, "low": None, "high": None, "seeds": [3, 3]}).startswith("not known")


def test_balanced_class_weights_make_balanced_accuracy_the_verdict_metric():
    assert verdict_metric("balanced", 1) == "balanced_accuracy"
    assert verdict_metric("none", 1) == "accuracy" and verdict_metric("balanced", 6) == "accuracy"
    assert interval_metrics("balanced_accuracy", 1) == ["balanced_accuracy", "accuracy"]
    assert interval_metrics("accuracy", 6) == ["accuracy", "sequence_accuracy"]
