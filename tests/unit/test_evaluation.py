"""Evaluation decides each test image's class once, and its metrics and confusion matrix agree."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest

from transferbench.models.heads import HeadSpec
from transferbench.study.experiments import resolve
from transferbench.study.params import check_params
from transferbench.training import evaluation


def counted(monkeypatch, owner, name: str) -> list:
    """Replace ``owner.name`` with a wrapper that records each call; returns the record."""
    calls: list = []
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def test_classes_are_decided_once_and_metrics_agree_with_the_confusion_matrix(params, monkeypatch):
    experiment = resolve(check_params(params), "cats_and_dogs_filtered_cnn")  # binary: one sigmoid unit
    labels = ["cat", "dog", "dog", "cat", "dog", "cat", "cat", "dog", "dog", "cat"]
    scores = np.array([0.1, 0.9, 0.2, 0.7, 0.8, 0.4, 0.3, 0.6, 0.55, 0.05], dtype="float32").reshape(-1, 1)
    images = np.zeros((len(labels), 4, 4, 3), dtype=np.uint8)
    model = types.SimpleNamespace(name="stand-in", output_names=["label"], losses=[],
                                  predict=lambda batches, verbose=0: scores)
    decided = counted(monkeypatch, HeadSpec, "predicted_classes")
    scored = counted(monkeypatch, evaluation, "task_metrics")

    result = evaluation.evaluate(experiment, model, images, pd.DataFrame({"label": labels}))
    metrics, table = result.metrics, result.confusion

    assert len(decided) == 1 and len(scored) == 1
    classes = experiment.spec.classes
    expected = [classes[int(s > 0.5)] for s in scores.reshape(-1)]
    assert metrics["accuracy"] == pytest.approx(np.mean(np.array(expected) == np.array(labels)))
    assert metrics["n"] == len(labels)
    assert table.to_numpy().sum() == len(labels)
    assert np.trace(table.to_numpy()) / len(labels) == pytest.approx(metrics["accuracy"])
    assert table.loc["dog", "cat"] == sum(t == "dog" and p == "cat" for t, p in zip(labels, expected, strict=True))
    # Per class: the share of each class's images predicted right, the confusion matrix's row-normalised diagonal.
    for name in classes:
        assert metrics["per_class_accuracy"][name] == pytest.approx(table.loc[name, name] / table.loc[name].sum())
    # In test-manifest order, one int per image: what the report's paired bootstrap pairs across arms.
    assert result.targets.tolist() == [classes.index(label) for label in labels]
    assert result.predicted.tolist() == [classes.index(p) for p in expected]


def test_predictions_npz_holds_targets_and_predictions_and_is_byte_stable(tmp_path):
    targets, predicted = np.array([[1, 2], [3, 4], [5, 0]]), np.array([[1, 2], [3, 5], [0, 0]])
    evaluation.write_predictions(tmp_path / "a.npz", targets, predicted)
    evaluation.write_predictions(tmp_path / "b.npz", targets, predicted)
    with np.load(tmp_path / "a.npz") as saved:
        assert sorted(saved.files) == ["predicted", "target"]
        np.testing.assert_array_equal(saved["target"], targets)
        np.testing.assert_array_equal(saved["predicted"], predicted)
        assert saved["target"].dtype.kind == "i" and saved["predicted"].shape == (3, 2)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes(), "DVC would see a change"
