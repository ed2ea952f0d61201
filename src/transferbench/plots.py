"""Figures: learning curves (one run, or pretrained vs random over seeds) and confusion matrices.

Every PNG is written without metadata, so equal data gives equal bytes (DVC and tests compare them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; stages run without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from transferbench.core.files import atomic_path  # noqa: E402


def learning_curves(histories: Mapping[str, pd.DataFrame], title: str, out: Path) -> None:
    """Two panels (accuracy, loss); each run in ``histories`` drawn solid for validation, dashed for train."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (label, history), color in zip(histories.items(), colors, strict=False):  # runs beyond the palette: not drawn
        for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
            if metric in history:
                ax.plot(history["epoch"], history[metric], "--", color=color, label=f"{label} train")
            if f"val_{metric}" in history:
                ax.plot(history["epoch"], history[f"val_{metric}"], "-", color=color, label=f"{label} validation")
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    save(fig, out)


def save(fig, out: Path) -> None:
    """Write ``fig`` as a PNG atomically and close it."""
    # PNG metadata would carry matplotlib's version/date; drop it so equal curves give equal bytes.
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


# Pretrained blue, random orange, in every figure; other arms (weights files) take the next colours.
ARM_COLORS = {"imagenet": "tab:blue", "none": "tab:orange"}
OTHER_COLORS = ("tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def arm_colors(arms: list[str]) -> dict[str, str]:
    others = iter(OTHER_COLORS * (1 + len(arms) // len(OTHER_COLORS)))
    return {arm: ARM_COLORS.get(arm) or next(others) for arm in arms}


def comparison_curves(curves: pd.DataFrame, title: str, out: Path,
                      stability: Mapping[str, float] | None = None,
                      references: Mapping[str, float] | None = None) -> None:
    """Accuracy and loss per epoch, every arm on one figure: validation solid, train dashed.

    ``curves`` is long format (weights, seed, split in {train, validation}, epoch, accuracy, loss).
    Lines are the mean over seeds; with several seeds a band shows mean +- one standard deviation.
    ``stability`` (arm -> epoch) draws a dotted vertical line where the arm's validation accuracy settled;
    ``references`` (label -> accuracy: a published figure) a grey horizontal line, to read time to accuracy off.
    """
    arms = list(dict.fromkeys(curves["weights"]))
    colors = arm_colors(arms)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for arm in arms:
        rows = curves[curves["weights"] == arm]
        seeds = rows["seed"].nunique()
        for split, style in (("validation", "-"), ("train", "--")):
            part = rows[rows["split"] == split]
            if part.empty:
                continue
            for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
                stats = part.groupby("epoch")[metric].agg(["mean", "std", "count"]).sort_index()
                label = f"{arm} {split}" + (f" (mean of {seeds} seeds)" if seeds > 1 else "")
                ax.plot(stats.index, stats["mean"], style, color=colors[arm], label=label)
                spread = stats[stats["count"] > 1]
                if not spread.empty:
                    ax.fill_between(spread.index, spread["mean"] - spread["std"], spread["mean"] + spread["std"],
                                    color=colors[arm], alpha=0.15 if split == "validation" else 0.08, linewidth=0)
        if stability and arm in stability:
            axes[0].axvline(stability[arm], linestyle=":", color=colors[arm],
                            label=f"{arm}: stable from epoch {stability[arm]:g}")
    for (label, value), style in zip((references or {}).items(), ("-.", ":", "--", "-"), strict=False):
        axes[0].axhline(value, linestyle=style, color="grey", linewidth=1, label=f"{label} {value:.4f}")
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    save(fig, out)


def confusion_matrices(matrices: Mapping[str, pd.DataFrame], title: str, out: Path) -> None:
    """One panel per arm: rows true class, columns predicted; colour = share of the true class, text = count."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(1.2 + 4.6 * len(matrices), 4.6),
                             constrained_layout=True, squeeze=False)
    for ax, (label, matrix) in zip(axes[0], matrices.items(), strict=True):
        counts = matrix.to_numpy(dtype=float)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        n = len(matrix.columns)
        slanted = n > 3  # long class names overlap when level
        ax.set_xticks(range(n), [str(c) for c in matrix.columns], rotation=45 if slanted else 0,
                      ha="right" if slanted else "center")
        ax.set_yticks(range(len(matrix.index)), [str(c) for c in matrix.index])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{label}: accuracy {np.trace(counts) / max(counts.sum(), 1):.4f}", fontsize="medium")
        if n <= 15:
            for (i, j), value in np.ndenumerate(counts):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize="small",
                        color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="share of the true class")
    fig.suptitle(title)
    save(fig, out)


def data_size_curves(table: pd.DataFrame, title: str, ylabel: str, out: Path) -> None:
    """One line per arm across shares of the training split, with its 95% interval over seeds as a band.

    ``table``: arm, train_fraction, train_images, mean, low, high (reports/data_size.csv's rows of one
    experiment). x is the training images on a log scale, or the share when a run did not record them.
    """
    known = table["train_images"].notna().all()
    x_column = "train_images" if known else "train_fraction"
    arms = list(dict.fromkeys(table["arm"]))
    colors = arm_colors(arms)
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for arm in arms:
        rows = table[(table["arm"] == arm) & table["mean"].notna()].sort_values(x_column)
        if rows.empty:
            continue
        x = rows[x_column].astype(float)
        setting = rows["setting"].iloc[0] if "setting" in rows else None
        label = f"{str(setting).replace('_', ' ')} ({arm})" if isinstance(setting, str) else arm
        ax.plot(x, rows["mean"], "o-", color=colors[arm], label=label)
        band = rows["low"].notna()
        if band.any():
            ax.fill_between(x[band], rows["low"][band], rows["high"][band], color=colors[arm], alpha=0.15,
                            linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel("training images (log scale)" if known else "share of the training split (log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.suptitle(title)
    save(fig, out)
