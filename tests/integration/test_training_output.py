"""What `python -m stages.train` prints on a CPU machine, piped as DVC's logs are: one short line per epoch
(the mean accuracy over a CAPTCHA's six heads, images per second), not Keras' per-batch lines listing every
head's metrics, and none of TensorFlow's CUDA probing."""

from __future__ import annotations

import re

import pytest

from tests.fixture_data import write_prepared_captcha
from tests.stage_run import copy_code, run_stage
from transferbench import nvidia_device_present

SIZES = {"train": 16, "validation": 8, "test": 8}
# TensorFlow's native lines: CUDA probing on a machine without a GPU, and whatever else it starts with.
NATIVE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)|cuInit|cudart_stub|cuDNN|cuBLAS|cuFFT")
EPOCH = re.compile(r" INFO transferbench\.training\.fit: epoch (\d)/2: loss [\d.]+ \(val [\d.]+\), "
                   r"accuracy [\d.]+ \(val [\d.]+\), lr 0\.001, [\d,]+ img/s, [\d.]+ s \+ [\d.]+ s validation$")


def tiny(params: dict) -> None:
    params["weights"] = ["none"]
    params["captcha"].update(SIZES, width=48, height=24, workers=1)
    params["experiments"]["captcha"].update(model="cnn", epochs=2, batch_size=8, learning_rate=0.001)


@pytest.mark.slow  # two stage processes, TensorFlow and MLflow started in each: 15-50 s
@pytest.mark.skipif(nvidia_device_present(), reason="with an NVIDIA device TensorFlow's errors are kept on purpose")
def test_a_cpu_training_stage_prints_a_line_per_epoch_and_no_cuda_probing(tmp_path):
    root = copy_code(tmp_path, tiny)
    values = {"alphabet": "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", "length": 6, "width": 48, "height": 24}
    write_prepared_captcha(root / "data" / "prepared" / "captcha", SIZES, values)
    for stage in (("weights", "captcha"), ("train", "captcha")):
        done = run_stage(root, *stage)
        assert done.returncode == 0, done.stderr[-3000:]
    err = done.stderr.splitlines()
    assert [line for line in err if NATIVE.search(line)] == [], done.stderr
    assert [int(m[1]) for m in map(EPOCH.search, err) if m] == [1, 2], done.stderr
    # Keras' own epoch output ("Epoch 1/2", then "2/2 - 1s - head0_accuracy: ... - head5_loss: ...") is off.
    assert not any(line.startswith("Epoch ") or "head0_accuracy" in line for line in err + done.stdout.splitlines())
    assert (root / "models" / "captcha" / "runs" / "none-s42" / "history.csv").is_file()
