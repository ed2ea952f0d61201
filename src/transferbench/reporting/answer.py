"""The answer per experiment as markdown: did pretraining help, by how much, how sure; how fast each arm got
there. Pure functions of the summary (reporting.summarise computes it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transferbench.config.weights import RANDOM
from transferbench.reporting.formatting import (
    arm_title,
    fmt_difference,
    fmt_seeds_stat,
    fmt_value,
    markdown_table,
)
from transferbench.reporting.reference_studies import METRICS as PUBLISHED_METRICS
from transferbench.reporting.summary import ExperimentSummary, PerClass, Published
from transferbench.reporting.verdict import METRIC_TITLES, RESULT_KEYS, helped


def answer_rows(name: str, summary: ExperimentSummary) -> list[list[str]]:
    """The first table's rows for one experiment: one per pretrained arm against random initialisation."""
    figures = published_cell(summary.published, summary.published_not_comparable)
    metric = summary.verdict_metric
    title, key = metric_title(metric, summary.task.n_outputs), RESULT_KEYS[metric]
    random = summary.results[RANDOM].get(key) if RANDOM in summary.results else None
    if not summary.comparisons:
        reason = summary.no_result.get("pretrained", "no pretrained arm")
        return [[name, "—", title, "—", fmt_seeds_stat(random), "—", f"not measured: {reason}", figures]]
    rows = []
    for arm, comparison in summary.comparisons.items():
        if "no_result" in comparison:
            difference, verdict = "—", f"not measured: {comparison['no_result']}"
        else:
            difference, verdict = fmt_difference(comparison), helped(comparison)
        rows.append([name, arm_title(arm, comparison["setting"]), title, fmt_seeds_stat(summary.results[arm].get(key)),
                     fmt_seeds_stat(random), difference, verdict, figures])
    return rows


def metric_title(metric: str, n_outputs: int) -> str:
    """The metric's name in the report, e.g. ``balanced accuracy``, ``accuracy per character``."""
    return "accuracy per character" if metric == "accuracy" and n_outputs > 1 else METRIC_TITLES[metric]


ANSWER_HEADER = ["experiment", "pretrained setting (arm)", "test metric of the verdict",
                 "pretrained [95% interval over seeds]", "random init",
                 "pretrained − random, points [95% interval over seeds and test images]", "did pretraining help?",
                 "reference study's published figures (metric)"]


def answer_table(summaries: Mapping[str, ExperimentSummary]) -> list[str]:
    """The report's first table, every experiment."""
    return markdown_table(ANSWER_HEADER, [row for name, s in summaries.items() for row in answer_rows(name, s)])


def published_cell(published: Published | None, not_comparable: str | None = None) -> str:
    """Every accuracy the reference study published for this experiment, each labelled with its arm and metric."""
    if not published:
        return f"not comparable: {not_comparable}" if not_comparable else "none published"
    shown = [f"{f.weights}: {PUBLISHED_METRICS[f.metric]} " + " and ".join(fmt_value(v, "number") for v in f.values)
             for f in published.figures if "accuracy" in f.metric]
    return f"{published.source}: " + "; ".join(shown) if shown else "none published"


def time_table(times: Mapping[str, Sequence[Mapping[str, Any]]], settings: Mapping[str, str]) -> list[str]:
    """Markdown: arm, target, epochs (and seconds) to reach it, or "not reached"."""
    rows = []
    for arm, entries in times.items():
        for entry in entries:
            reached = entry["reached"]
            when = "not reached" if reached is None else f"epoch {reached['epoch']}" + (
                "" if reached["seconds"] is None else f", {fmt_value(reached['seconds'], 'seconds')}")
            rows.append([arm_title(arm, settings.get(arm)), entry["target"], fmt_value(entry["accuracy"], "number"),
                         when])
    return markdown_table(["arm", "target", "validation accuracy", "first reached (mean curve over seeds)"], rows)


def per_class_table(per_class: PerClass, settings: Mapping[str, str]) -> list[str]:
    """Markdown: one row per class (or CAPTCHA position), one column per arm, mean accuracy over seeds."""
    arms = list(per_class.arms)
    names = list(dict.fromkeys(k for values in per_class.arms.values() for k in values))
    rows = [[name, *(fmt_value(per_class.arms[a][name], "number") if name in per_class.arms[a] else "—"
                     for a in arms)] for name in names]
    return markdown_table([per_class.kind, *(arm_title(a, settings.get(a)) for a in arms)], rows)

