"""How the report writes numbers, intervals, arms and tables (pure functions of already computed values)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tabulate import tabulate

from transferbench.reporting.settings import SETTING_TITLES, setting_of


def arm_title(arm: str, setting: str | None = None) -> str:
    """e.g. ``random init (none)``, ``fine-tuned (imagenet)``, ``fixed features (imagenet-fixed)``."""
    return f"{SETTING_TITLES[setting or setting_of(arm)]} ({arm})"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A GitHub markdown table's lines, cells shown exactly as given (already formatted, never re-parsed)."""
    return tabulate([list(row) for row in rows], headers=list(header), tablefmt="github",
                    disable_numparse=True).splitlines()


def time_unit(seconds: float) -> tuple[str, float]:
    magnitude = abs(seconds)
    return ("s", 1) if magnitude < 120 else ("min", 60) if magnitude < 7200 else ("h", 3600)


def fmt_value(value: float, kind: str, signed: bool = False, unit: tuple[str, float] | None = None) -> str:
    sign = "+" if signed and value > 0 else ""
    if kind == "seconds":
        name, scale = unit or time_unit(value)
        return f"{sign}{value / scale:.1f} {name}"
    if kind == "epochs":
        return f"{sign}{value:.0f}" if float(value).is_integer() else f"{sign}{value:.1f}"
    if kind == "points":
        return f"{sign}{value * 100:.1f}"
    return f"{sign}{value:.4f}"


def fmt_stat(stat: Mapping[str, Any] | None, kind: str) -> str:
    """``mean [low, high]`` (the 95% t interval over seeds, in the mean's unit), or the mean alone for one
    seed; a dash for no value. Epochs to stability also count the runs left out of the mean: not stable,
    still improving, did not learn.
    """
    if not stat:
        return "—"
    left_out = [(stat.get(key, 0), words) for key, words in LEFT_OUT if stat.get(key, 0)]
    if stat["mean"] is None:
        if [words for _, words in left_out] == ["not stable"]:
            return "not stable" + (f" ({left_out[0][0]} runs)" if left_out[0][0] > 1 else "")
        return "no stable run (" + ", ".join(f"{k} {words}" for k, words in left_out) + ")"
    text = fmt_value(stat["mean"], kind)
    if stat.get("low") is not None:
        unit = time_unit(stat["mean"])
        text += f" [{fmt_value(stat['low'], kind, unit=unit)}, {fmt_value(stat['high'], kind, unit=unit)}]"
    if left_out:
        total = stat["n"] + sum(k for k, _ in left_out)
        (first, words), *rest = left_out
        text += f" ({first} of {total} runs {words}" + "".join(f", {k} {w}" for k, w in rest) + ")"
    return text


# Runs counted beside epochs to stability, not in its mean: summary key, words.
LEFT_OUT = (("not_stable", "not stable"), ("still_improving", "still improving"), ("did_not_learn", "did not learn"))


def fmt_seeds_stat(stat: Mapping[str, Any] | None, kind: str = "number") -> str:
    """fmt_stat, saying so when one seed leaves no interval (rather than showing a bare mean)."""
    text = fmt_stat(stat, kind)
    return f"{text} (one seed, no interval)" if stat and stat.get("n") == 1 and stat["mean"] is not None else text


def fmt_difference(comparison: Mapping[str, Any]) -> str:
    """Pretrained minus random in points, with its 95% interval over seeds and test images; with one seed in
    an arm, the interval over test images alone, labelled so."""
    if comparison.get("difference") is None:
        return "— (not recorded by every run; no predictions.npz, no interval)"
    text = fmt_value(comparison["difference"], "points", signed=True)
    if comparison.get("low") is None:
        return f"{text} (difference of means; no predictions.npz, no interval)"
    one_run = min(comparison.get("seeds", [2])) < 2
    interval = comparison["images_only"] if one_run and "images_only" in comparison else comparison
    low, high = (fmt_value(interval[k], "points", signed=True) for k in ("low", "high"))
    return f"{text} [{low}, {high}]" + (" (test images only)" if one_run else "")
