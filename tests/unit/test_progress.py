"""Training's one line per epoch in a log says how fast it goes: images per second."""

from __future__ import annotations

import time

import pytest

from transferbench.training.train import EpochSeconds


def test_each_epoch_logs_its_seconds_and_images_per_second():
    callback = EpochSeconds(images=500)
    logs: dict = {"loss": 1.0}
    callback.on_epoch_begin(0)
    time.sleep(0.05)
    callback.on_epoch_end(0, logs)
    assert logs["epoch_seconds"] >= 0.05
    assert logs["images_per_second"] == pytest.approx(500 / logs["epoch_seconds"])
