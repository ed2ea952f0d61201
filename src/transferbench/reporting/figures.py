"""The figures: each experiment's learning curves, confusion matrices and data-size figure, and the curves' long
table (curves.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from transferbench.plots import comparison_curves, confusion_matrices, data_size_curves
from transferbench.reporting.data_size import DATA_SIZE_FIGURE
from transferbench.reporting.formatting import (
    arm_title,
)
from transferbench.reporting.read import (
    ExperimentRuns,
)
from transferbench.reporting.reference_studies import METRICS as PUBLISHED_METRICS
from transferbench.reporting.summarise import COMPARABLE_METRICS
from transferbench.reporting.summary import ExperimentSummary
from transferbench.reporting.verdict import (
    METRIC_TITLES,
)

FIGURES = "figures"  # reports/figures/<experiment>-curves.png, -confusion.png


def draw(experiment: ExperimentRuns, summary: ExperimentSummary, sizes: pd.DataFrame,
         reports_root: Path) -> dict[str, Path]:
    """The experiment's figures: learning curves, confusion matrices, and the data-size figure (several shares)."""
    figures: dict[str, Path] = {}
    if experiment.runs:
        stability = {arm: r.stats["epochs_to_stability"]["mean"] for arm, r in summary.results.items()
                     if r.n and r.stats["epochs_to_stability"]["mean"] is not None}
        out = reports_root / FIGURES / f"{experiment.name}-curves.png"
        comparison_curves(curves_frame(experiment), f"{experiment.name}: {experiment.model}, "
                          + " vs ".join(arm_title(a, experiment.setting(a)) for a in experiment.arms), out,
                          stability, references(summary))
        figures["learning curves"] = out
    matrices = summed_confusion(experiment)
    if matrices:
        out = reports_root / FIGURES / f"{experiment.name}-confusion.png"
        confusion_matrices({arm_title(a, experiment.setting(a)): m for a, m in matrices.items()},
                           f"{experiment.name}: test confusion matrices (summed over seeds)", out)
        figures["confusion matrices"] = out
    rows = sizes[sizes["experiment"] == experiment.name]
    if len(experiment.fractions) > 1 and rows["mean"].notna().any():
        out = reports_root / FIGURES / f"{experiment.name}-data-size.png"
        metric = METRIC_TITLES[experiment.verdict_metric]
        data_size_curves(rows, f"{experiment.name}: test {metric} across training-set sizes (95% over seeds)",
                         f"test {metric}", out)
        figures[DATA_SIZE_FIGURE] = out
    return figures


def references(summary: ExperimentSummary) -> dict[str, float]:
    """The reference study's published accuracies a validation curve can be held against, labelled for a
    figure legend."""
    published = summary.published
    if not published:
        return {}
    return {f"{published.source} {f.weights} {PUBLISHED_METRICS[f.metric]}": float(np.mean(f.values))
            for f in published.figures if f.metric in COMPARABLE_METRICS}


def curves_frame(experiment: ExperimentRuns) -> pd.DataFrame:
    """Long format: experiment, weights, seed, split (train, validation), epoch, accuracy, loss."""
    frames = []
    for run in experiment.runs:
        h = run.history
        for split, acc, loss in (("train", "accuracy", "loss"), ("validation", "val_accuracy", "val_loss")):
            frames.append(pd.DataFrame({"experiment": experiment.name, "weights": run.weights, "seed": run.seed,
                                        "split": split, "epoch": h["epoch"], "accuracy": h[acc], "loss": h[loss]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({
        "experiment": [], "weights": [], "seed": pd.Series(dtype=int), "split": [],
        "epoch": pd.Series(dtype=int), "accuracy": pd.Series(dtype=float), "loss": pd.Series(dtype=float)})


def summed_confusion(experiment: ExperimentRuns) -> dict[str, pd.DataFrame]:
    """Per arm, the confusion counts summed over its seeds (arms without any matrix left out)."""
    out = {}
    for arm in experiment.arms:
        tables = [r.confusion for r in experiment.by_arm(arm) if r.confusion is not None]
        if tables:
            total = tables[0].copy()
            for table in tables[1:]:
                total = total.add(table, fill_value=0)
            out[arm] = total
    return out
