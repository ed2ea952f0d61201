"""One GPU per training process: claims by lock files in the main repository, the user's choice first.

Claims are made by real processes (the lock is per process, dropped when it exits), with the GPU
count forced by TRANSFERBENCH_GPUS as on a machine without GPUs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transferbench.core import devices
from transferbench.core.errors import UserError

ROOT = Path(__file__).resolve().parents[2]

CLAIMER = """
import logging, os, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from transferbench.core.devices import claim_gpu
index = claim_gpu(wait_seconds=0.05)
print(index, os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
sys.stdin.readline()  # hold the GPU until the test says so
"""


def claimer(repo: Path, gpus: str = "2", **env: str) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    environment.update(DVC_ROOT=str(repo), TRANSFERBENCH_GPUS=gpus, PYTHONPATH=str(ROOT / "src"), **env)
    return subprocess.Popen([sys.executable, "-c", CLAIMER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment)


def claimed(process: subprocess.Popen) -> str:
    return process.stdout.readline().strip()


def release(process: subprocess.Popen) -> str:
    out, err = process.communicate("\n", timeout=30)
    return err


def stderr_until(process: subprocess.Popen, text: str, timeout: float = 30) -> str:
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        seen += process.stderr.readline()
    return seen


def test_two_claims_get_different_gpus_a_third_waits_and_gets_the_one_released(tmp_path):
    first, second = claimer(tmp_path), None
    try:
        assert claimed(first) == "0 0"
        second = claimer(tmp_path)
        assert claimed(second) == "1 1"
        third = claimer(tmp_path)
        waiting = stderr_until(third, "waiting")
        assert f"all 2 GPUs are taken by other trainings (locks in {tmp_path / 'tmp' / 'gpus'})" in waiting
        time.sleep(0.3)
        assert third.poll() is None, "the third must wait while both GPUs are held"
        release(second)  # its process exits: the kernel drops its lock
        assert claimed(third) == "1 1"
        assert "GPU 1 of 2 claimed after waiting" in release(third)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                release(process)
    assert sorted(p.name for p in (tmp_path / "tmp" / "gpus").iterdir()) == ["gpu0.lock", "gpu1.lock"]


def test_the_users_cuda_visible_devices_wins(tmp_path):
    process = claimer(tmp_path, CUDA_VISIBLE_DEVICES="3")
    assert claimed(process) == "None 3"
    assert "CUDA_VISIBLE_DEVICES='3' as set; no GPU claimed" in release(process)
    assert not (tmp_path / "tmp" / "gpus").exists()


@pytest.mark.parametrize("gpus", ["0", "1"])
def test_one_gpu_or_none_is_not_claimed(tmp_path, gpus):
    process = claimer(tmp_path, gpus=gpus)
    assert claimed(process) == "None None"
    release(process)


def test_data_parallel_claims_none_and_sees_every_gpu(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("TRANSFERBENCH_GPUS", "2")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert devices.claim_gpu("data_parallel") is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_a_bad_gpu_count_names_the_variable_and_what_it_accepts(monkeypatch):
    monkeypatch.setenv("TRANSFERBENCH_GPUS", "two")
    with pytest.raises(UserError, match=r"TRANSFERBENCH_GPUS='two' is not a GPU count; accepted: a whole number"):
        devices.gpu_count()


def test_the_count_comes_from_nvidia_smi(monkeypatch, tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n"
                    "echo 'GPU 2: NVIDIA H100 (UUID: GPU-c)'\n")
    fake.chmod(0o755)
    monkeypatch.delenv("TRANSFERBENCH_GPUS", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert devices.gpu_count() == 3
