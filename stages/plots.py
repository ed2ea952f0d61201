"""Learning-curve figures: train and validation accuracy and loss per epoch, one line per run."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # files only; stages run without a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from stages.io import atomic_path  # noqa: E402


def learning_curves(histories: Mapping[str, pd.DataFrame], title: str, out: Path) -> None:
    """Two panels (accuracy, loss); each run in ``histories`` drawn solid for validation, dashed for train."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for (label, history), color in zip(histories.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        for ax, metric in zip(axes, ("accuracy", "loss")):
            if metric in history:
                ax.plot(history["epoch"], history[metric], "--", color=color, label=f"{label} train")
            if f"val_{metric}" in history:
                ax.plot(history["epoch"], history[f"val_{metric}"], "-", color=color, label=f"{label} validation")
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    # PNG metadata would carry matplotlib's version/date; drop it so equal curves give equal bytes.
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
