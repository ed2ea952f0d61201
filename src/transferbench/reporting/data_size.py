"""The answer across data sizes: each arm's verdict metric at every share of the training split.

Pretraining's gap is largest with little data (He et al. 2019; Kornblith et al. 2019), so one share
alone can mislead. reports/data_size.csv holds the numbers for `dvc plots` (x: train_images, y: mean),
one row per experiment x arm x share, written even with one share so dvc.yaml can name it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from transferbench.config.weights import RANDOM
from transferbench.reporting.formatting import arm_title, fmt_difference, fmt_seeds_stat, markdown_table
from transferbench.reporting.summary import ExperimentSummary
from transferbench.reporting.verdict import METRIC_TITLES

DATA_SIZE_FIGURE = "data size"  # the figure's label in summary.json's figures; its file: <experiment>-data-size.png
CSV_COLUMNS = ["experiment", "arm", "setting", "train_fraction", "train_images", "metric", "mean", "low", "high"]


def frame(summaries: Mapping[str, ExperimentSummary]) -> pd.DataFrame:
    """Every experiment x arm x share: the verdict metric's mean over seeds and its 95% t interval."""
    rows = []
    for name, summary in summaries.items():
        for share in summary.data_size:
            for arm, entry in share.arms.items():
                stat = entry.metric or {}
                rows.append({"experiment": name, "arm": arm, "setting": entry.setting,
                             "train_fraction": share.train_fraction,
                             "train_images": entry.train_images[0] if entry.train_images else None,
                             "metric": summary.verdict_metric, "mean": stat.get("mean"),
                             "low": stat.get("low"), "high": stat.get("high")})
    table = pd.DataFrame(rows, columns=CSV_COLUMNS)
    table["train_images"] = table["train_images"].astype("Int64")
    return table


def to_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def data_size_lines(name: str, summary: ExperimentSummary, figures: Mapping[str, str]) -> list[str]:
    """The experiment's data-size table and figure, when params plan more than one share."""
    shares = summary.data_size
    if len(shares) < 2:
        return []
    metric, arms = METRIC_TITLES[summary.verdict_metric], summary.arms
    pretrained = [a for a in arms if a != RANDOM]
    header = ["share of the training split", "train images",
              *(f"{arm_title(a, summary.settings[a])}: test {metric} [95% over seeds]" for a in arms),
              *(f"{a} − {RANDOM}, points [95% over seeds and test images]" for a in pretrained if RANDOM in arms)]
    rows = []
    for share in shares:
        images = sorted({n for entry in share.arms.values() for n in entry.train_images})
        cells = [f"{share.train_fraction:g}", " / ".join(f"{n:,}" for n in images) or "not recorded",
                 *(fmt_seeds_stat(share.arms[a].metric) if share.arms[a].n else "no run" for a in arms)]
        if RANDOM in arms:
            cells += [difference_cell(share.comparisons[a]) for a in pretrained]
        rows.append(cells)
    lines = [f"**Across data sizes** (test {metric}; intervals descriptive, no verdict and not in the Holm "
             "family):", "", *markdown_table(header, rows), ""]
    if DATA_SIZE_FIGURE in figures:
        lines += [f"![{name}: {DATA_SIZE_FIGURE}]({figures[DATA_SIZE_FIGURE]})", ""]
    return lines


def difference_cell(comparison: Mapping[str, Any]) -> str:
    return "—" if "no_result" in comparison else fmt_difference(comparison)
