"""A GPU slot per training process (k per GPU): claims by lock files in the main repository, the user's choice first.

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
per_gpu = os.environ.get("PER_GPU")
index = claim_gpu(wait_seconds=0.05, per_gpu=int(per_gpu or 1))
shares = [os.environ.get(k) for k in ("XLA_PYTHON_CLIENT_MEM_FRACTION", "TF_FORCE_GPU_ALLOW_GROWTH")] if per_gpu else []
print(index, os.environ.get("CUDA_VISIBLE_DEVICES"), *shares, flush=True)
sys.stdin.readline()  # hold the GPU until the test says so
"""


def claimer(repo: Path, gpus: str = "2", **env: str) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("CUDA_VISIBLE_DEVICES", devices.JAX_MEMORY, devices.TF_GROWTH)}
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


def test_k_slots_per_gpu_fill_every_gpu_first_each_process_taking_its_share_of_memory(tmp_path):
    holders, seen = [], []
    try:
        for _ in range(4):  # one after another: each claims before the next starts
            holders.append(claimer(tmp_path, gpus="2", PER_GPU="2"))
            seen.append(claimed(holders[-1]))
        # Slot 0 of both GPUs, then slot 1 of both: 0.8 of a GPU's memory shared by its two processes.
        assert seen == ["0 0 0.400 true", "1 1 0.400 true", "0 0 0.400 true", "1 1 0.400 true"]
        fifth = claimer(tmp_path, gpus="2", PER_GPU="2")
        assert "all 4 slots (2 GPUs x 2) are taken by other trainings" in stderr_until(fifth, "waiting")
        release(holders.pop(2))  # slot 1 of GPU 0 comes free
        assert claimed(fifth) == "0 0 0.400 true"
        assert "GPU 0 of 2 claimed (slot 2 of 2, XLA_PYTHON_CLIENT_MEM_FRACTION=0.400)" in release(fifth)
    finally:
        for process in holders:
            release(process)
    assert sorted(p.name for p in (tmp_path / "tmp" / "gpus").iterdir()) == [
        "gpu0-1.lock", "gpu0.lock", "gpu1-1.lock", "gpu1.lock"]


def test_one_gpu_with_two_slots_is_claimed_and_the_users_memory_share_wins(tmp_path):
    process = claimer(tmp_path, gpus="1", PER_GPU="2", XLA_PYTHON_CLIENT_MEM_FRACTION="0.3")
    assert claimed(process) == "0 0 0.3 true"
    release(process)


def test_slots_are_gpus_times_k_where_processes_claim_them(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("TRANSFERBENCH_GPUS", "2")
    assert devices.slot_count("none", 4) == 8
    assert devices.slot_count("data_parallel", 4) == 1
    monkeypatch.setenv("TRANSFERBENCH_GPUS", "0")
    assert devices.slot_count("none", 4) == 1  # no GPU: one run at a time on the CPU
    monkeypatch.setenv("TRANSFERBENCH_GPUS", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert devices.slot_count("none", 4) == 1


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
