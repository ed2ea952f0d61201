"""On a machine without a GPU, stages that load Keras do not print TensorFlow's CUDA probing, but keep the rest."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from transferbench.core import paths


def run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(paths.ROOT / "src"), str(paths.ROOT)])}
    return subprocess.run([sys.executable, "-c", code], cwd=paths.ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow  # TensorFlow starts in a child (5 s)
def test_loading_keras_prints_no_cuda_probing_on_a_cpu_machine():
    if any(p.startswith("nvidia") for p in os.listdir("/dev")):
        return  # with a GPU every line is kept on purpose; nothing to check here
    done = run("from transferbench.cli import load_keras; load_keras(); import keras; "
               "print(keras.ops.convert_to_numpy(keras.ops.ones(2)).sum())")
    assert done.returncode == 0 and done.stdout.strip() == "2.0", done.stderr
    assert "cuInit" not in done.stderr and "cudart_stub" not in done.stderr and "absl" not in done.stderr, done.stderr
    assert "E0000" not in done.stderr and "I0000" not in done.stderr, done.stderr


def log_level(*, nvidia: bool, env: dict[str, str]) -> str:
    """TF_CPP_MIN_LOG_LEVEL once the package is imported, on a machine with or without /dev/nvidia*."""
    fake = "import glob; glob.glob = lambda pattern: ['/dev/nvidia0'] if pattern == '/dev/nvidia*' else []; " \
        if nvidia else "import glob; glob.glob = lambda pattern: []; "
    base = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = fake + "import os, transferbench; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    done = subprocess.run([sys.executable, "-c", code], env={**base, **env, "PYTHONPATH": str(paths.ROOT / "src")},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_tensorflow_s_errors_are_hidden_only_without_a_gpu_and_the_user_s_level_wins():
    # Without a GPU, TensorFlow's only ERROR lines on a good run are its CUDA probing (failed call to cuInit).
    assert log_level(nvidia=False, env={}) == "3"
    # With one they say why it is not used: kept, as on every machine its INFO lines are not.
    assert log_level(nvidia=True, env={}) == "2"
    assert log_level(nvidia=False, env={"TF_CPP_MIN_LOG_LEVEL": "0"}) == "0"


def test_other_native_lines_pass_and_a_failure_keeps_everything():
    code = ("import os\nfrom transferbench.cli import native_stderr_without\n"
            "with native_stderr_without(('noise',)):\n"
            "    os.write(2, b'noise line\\nreal warning\\n')\n"
            "try:\n"
            "    with native_stderr_without(('noise',)):\n"
            "        os.write(2, b'noise before the error\\n')\n"
            "        raise RuntimeError('boom')\n"
            "except RuntimeError:\n"
            "    pass\n")
    done = run(code)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["real warning", "noise before the error"]
