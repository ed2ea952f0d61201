"""What a model must predict. A module of its own, free of pandas and pydantic, so the model code
(heads, feeds) can name it on a machine that has only Keras, NumPy and a backend."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """What the model must predict: ``binary``, ``multiclass`` or ``multihead`` (n_outputs x n_classes)."""

    kind: str
    n_classes: int
    n_outputs: int = 1
