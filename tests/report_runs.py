"""Fixture runs for the report: the files evaluate writes per run, made by hand with known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from transferbench.study import runs


def write_run(root: Path, experiment: str, weights: str, seed: int, val: list[float], test: dict,
              confusion: pd.DataFrame | None = None, run_id: str | None = None, *,
              predictions: tuple[np.ndarray, np.ndarray] | None = None, setting: str | None = None,
              epoch_seconds: float | None = None, extra: dict | None = None, train_fraction: float = 1.0) -> Path:
    """reports/runs/<experiment>/<weights>[-f<share>]-s<seed>/: history.csv, metrics.json and, if given,
    confusion.csv, predictions.npz (target, predicted), ``setting`` in metrics.json and a ``seconds`` history
    column; ``extra`` adds (or overrides) metrics.json keys, such as the newer train_images, tuning, best_phase."""
    share = runs.fraction_label(train_fraction)
    folder = root / "runs" / experiment / f"{weights}{f'-f{share}' if share else ''}-s{seed}"
    folder.mkdir(parents=True)
    n = len(val)
    history = pd.DataFrame({
        "epoch": range(1, n + 1), "accuracy": [min(1.0, v + 0.03) for v in val], "val_accuracy": val,
        "loss": [(1 - v) * 2 for v in val], "val_loss": [(1 - v) * 2.5 for v in val],
        "learning_rate": 0.001, "head0_accuracy": 0.5,  # extra columns are ignored
    })
    if epoch_seconds is not None:
        history["seconds"] = [epoch_seconds * e for e in range(1, n + 1)]
    history.to_csv(folder / "history.csv", index=False)
    metrics = {"test": {**test, "n": 100}, "best_val_accuracy": max(val), "best_epoch": val.index(max(val)) + 1,
               "epochs": n, "seconds": 100.0 + seed, "weights": weights, "seed": seed, "mlflow_run_id": run_id,
               **({"setting": setting} if setting else {}), **(extra or {})}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if confusion is not None:
        confusion.to_csv(folder / "confusion.csv")
    if predictions is not None:
        np.savez(folder / "predictions.npz", target=predictions[0], predicted=predictions[1])
    return folder


def markdown_tables(markdown: str) -> list[list[list[str]]]:
    """Each markdown table in ``markdown`` as rows of stripped cells, header first, separator line dropped."""
    found: list[list[list[str]]] = []
    previous = ""
    for line in markdown.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                found.append([])
            found[-1].append([cell.strip() for cell in line.strip().removeprefix("|").removesuffix("|").split("|")])
        previous = line
    for table in found:
        assert all(set(cell) <= set("-:") and cell for cell in table.pop(1)), "second line must be the separator"
    return found


def wrong(target: np.ndarray, errors: int, key: tuple, classes: int) -> np.ndarray:
    """``target`` with ``errors`` cells moved to another class, at places fixed by ``key``."""
    predicted = target.copy()
    flat = predicted.reshape(-1)
    where = np.random.default_rng(key).choice(flat.size, errors, replace=False)
    flat[where] = (flat[where] + 1) % classes
    return predicted
