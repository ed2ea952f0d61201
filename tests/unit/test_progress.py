"""Progress in logs and terminals: data work says done/total, rate and time left every ~10 s when piped,
and training prints one short line per epoch with the mean accuracy and images per second."""

from __future__ import annotations

import logging
import time

import pytest

from transferbench.core import progress
from transferbench.core.progress import Progress
from transferbench.training.fit import EpochLine, EpochSeconds, epoch_line

LOGGER = "transferbench.core.progress"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog, logger: str = LOGGER) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_piped_progress_is_a_line_per_interval_with_rate_and_time_left_and_a_last_line(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = Clock()
    with Progress("rendering", 1000, terminal=False, interval=10, clock=clock) as bar:
        for _ in range(9):  # 100 images every 3 s: a line at 12 s and at 24 s, 10 s or more after it
            clock.now += 3
            bar.update(100)
        assert lines(caplog) == ["rendering 400/1,000 img (40%), 33.3 img/s, 00:18 left",
                                 "rendering 800/1,000 img (80%), 33.3 img/s, 00:06 left"]
        clock.now += 3
        bar.update(100)
    assert lines(caplog)[-1] == "rendering 1,000/1,000 img (100%), 33.3 img/s, done in 00:30"
    assert len(lines(caplog)) == 3


def test_a_resumed_run_rates_only_its_own_work_and_a_stopped_one_says_so(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = Clock()
    with pytest.raises(KeyboardInterrupt), Progress("decoding", 1000, initial=600, terminal=False, interval=10,
                                                    clock=clock) as bar:
        clock.now += 20
        bar.update(200)  # 200 in 20 s: 10 img/s, 200 left
        raise KeyboardInterrupt
    assert lines(caplog) == ["decoding 800/1,000 img (80%), 10.0 img/s, 00:20 left",
                             "decoding 800/1,000 img (80%), 10.0 img/s, stopped after 00:20"]


def test_bytes_in_binary_units_and_an_unknown_total_counts_up(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = Clock()
    with Progress("train.zip", None, unit="B", terminal=False, interval=10, clock=clock) as bar:
        clock.now += 10
        bar.update(3 * 1024 * 1024)
    assert lines(caplog) == ["train.zip 3.0 MiB, 307.2 KiB/s, 00:10 so far",
                             "train.zip 3.0 MiB, 307.2 KiB/s, done in 00:10"]
    with Progress("a.tar", 2048 * 1024, unit="B", terminal=False, interval=10, clock=clock) as bar:
        clock.now += 1
        bar.update(512)
    assert lines(caplog)[-1] == "a.tar 512 B/2.0 MiB (0%), 512 B/s, done in 00:01"


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.5")
    assert Progress("x", 1, terminal=False).interval == 0.5
    monkeypatch.setenv(progress.INTERVAL_ENV, "soon")
    with pytest.raises(ValueError, match="TRANSFERBENCH_PROGRESS_SECONDS='soon'"):
        Progress("x", 1, terminal=False)
    monkeypatch.delenv(progress.INTERVAL_ENV)
    assert Progress("x", 1, terminal=False).interval == progress.DEFAULT_INTERVAL_S


def test_in_a_terminal_it_is_a_tqdm_bar_with_rate_and_no_log_line(caplog, capsys):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Progress("rendering", 10, terminal=True) as bar:
        bar.update(10)
    err = capsys.readouterr().err
    assert "rendering: 100%|" in err and "10/10" in err and "img/s" in err
    assert lines(caplog) == []


def test_each_epoch_logs_its_seconds_and_images_per_second():
    callback = EpochSeconds(images=500)
    logs: dict = {"loss": 1.0}
    callback.on_epoch_begin(0)
    time.sleep(0.05)
    callback.on_epoch_end(0, logs)
    assert logs["epoch_seconds"] >= 0.05
    assert logs["images_per_second"] == pytest.approx(500 / logs["epoch_seconds"])


# What a CAPTCHA model's epoch logs hold: a loss and an accuracy for each of six heads, train and validation.
HEADS = [f"head{i}" for i in range(6)]
CAPTCHA_LOGS = {"loss": 20.5, "val_loss": 21.25, **{f"{p}head{i}_{m}": v for p in ("", "val_") for i in range(6)
                                                    for m, v in (("loss", 3.5), ("accuracy", 0.1 * i))},
                "learning_rate": 0.001, "epoch_seconds": 39.43, "validation_seconds": 2.1, "images_per_second": 811.6}


def test_the_epoch_line_is_short_and_shows_the_mean_accuracy_and_speed():
    logs = dict(CAPTCHA_LOGS)
    logs.update(accuracy=0.25, val_accuracy=0.25)  # the mean over the heads, as EpochSummary leaves it
    line = epoch_line(3, 20, logs)
    assert line == ("epoch 3/20: loss 20.5 (val 21.25), accuracy 0.250 (val 0.250), lr 0.001, 812 img/s, "
                    "39.4 s + 2.1 s validation")
    assert len(line) < 110  # Keras' line for the same logs: ~640 characters


def test_epoch_line_is_one_log_line_per_epoch_piped(caplog):
    caplog.set_level(logging.INFO, logger="transferbench.training.fit")
    callback = EpochLine(20, HEADS, terminal=False)
    callback.set_params({"steps": 4, "epochs": 20})
    for epoch in (0, 1):
        callback.on_epoch_begin(epoch)
        for batch in range(4):
            callback.on_train_batch_end(batch, {"loss": 20.0, "head0_accuracy": 0.5})
        callback.on_epoch_end(epoch, {**CAPTCHA_LOGS, "accuracy": 0.25, "val_accuracy": 0.2})
    assert [line.split(":")[0] for line in lines(caplog, "transferbench.training.fit")] == ["epoch 1/20", "epoch 2/20"]


def test_epoch_line_in_a_terminal_draws_the_epoch_s_batches_then_logs_the_line(caplog, capsys):
    caplog.set_level(logging.INFO, logger="transferbench.training.fit")
    callback = EpochLine(2, ["head0", "head1"], terminal=True)
    callback.set_params({"steps": 3, "epochs": 2})
    callback.on_epoch_begin(0)
    for batch in range(3):
        callback.on_train_batch_end(batch, {"loss": 2.0, "head0_accuracy": 0.5, "head1_accuracy": 0.25})
    callback.on_epoch_end(0, {"loss": 2.0, "accuracy": 0.375})
    callback.on_epoch_begin(1)  # three steps per execution (steps_per_execution): one call, after the third
    callback.on_train_batch_end(2, {"loss": 2.0})
    assert callback.bar is not None and callback.bar.n == 3
    callback.on_train_end()
    err = capsys.readouterr().err
    assert "epoch 1/2: " in err and "/3 [" in err and "batch" in err  # tqdm's bar, cleared at the end
    assert lines(caplog, "transferbench.training.fit") == ["epoch 1/2: loss 2, accuracy 0.375"]
