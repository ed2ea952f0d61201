"""``kill -9`` while training writes an epoch's checkpoint: the rerun ends where an unbroken run ends.

Training runs in a child process that sends itself SIGKILL at a chosen moment of epoch 2's
checkpoint: half-way through writing a model file, or with the epoch's state written to its
temporary file but not yet renamed into place. The rerun must resume, train the same epochs once
each and finish with the same best model as a run that was never killed: nothing lost, nothing
half-written used, no epoch trained twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CHILD = """
import json, os, signal, sys
from pathlib import Path

import keras
import yaml

import tests.tiny_backbone  # noqa: F401
from tests.integration.test_training import tiny_experiment
from transferbench.core import paths
from transferbench.training.fit import finish, fit

root, moment = Path(sys.argv[1]), sys.argv[2]
experiment, batches = tiny_experiment(yaml.safe_load(paths.PARAMS.read_text()), root)
current = {"epoch": 0}


class Epoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        current["epoch"] = epoch + 1


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if moment == "model":  # the first model file written at epoch 2's end, cut off half-way
    save = keras.Model.save

    def cut_save(model, filepath, *args, **kwargs):
        save(model, filepath, *args, **kwargs)
        if current["epoch"] == 2:
            with open(filepath, "r+b") as f:
                f.truncate(os.path.getsize(filepath) // 2)
            die()

    keras.Model.save = cut_save
elif moment == "state":  # epoch 2's state complete in its temporary file, not yet in place
    replace = os.replace

    def replace_then_die(src, dst, *args, **kwargs):
        if Path(dst).name == "state.json" and json.loads(Path(src).read_text())["epoch"] == 2:
            die()
        return replace(src, dst, *args, **kwargs)

    os.replace = replace_then_die

data = batches()
history = fit(experiment, None, data["train"], data["validation"], root / "work", extra_callbacks=[Epoch()],
              verbose=0)
finish(root / "work", root / "model.keras")
print(json.dumps(history))
"""


def train(root: Path, moment: str = "none") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, sys.path))}
    return subprocess.run([sys.executable, "-c", CHILD, str(root), moment], env=env, capture_output=True,
                          text=True, timeout=600)


def trained(row: dict) -> dict:
    """An epoch's metrics without its clock readings, which no two runs share."""
    return {k: v for k, v in row.items() if k not in {"epoch_seconds", "validation_seconds", "images_per_second"}}


def weights(path: Path) -> list[np.ndarray]:
    from transferbench.models.backbones import load_model

    return [np.asarray(w) for w in load_model(path, compile=False).weights]


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> tuple[list[dict], Path]:
    root = tmp_path_factory.mktemp("unbroken")
    done = train(root)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.splitlines()[-1]), root / "model.keras"


@pytest.mark.slow  # three trainings in child processes: the default set's slowest test by far (42 s)
@pytest.mark.parametrize("moment", ["model", "state"])
def test_a_kill_during_the_checkpoint_write_loses_nothing(tmp_path, unbroken, moment):
    killed = train(tmp_path, moment)
    assert killed.returncode == -9, f"not killed at the {moment} write:\n{killed.stderr[-4000:]}"
    state = json.loads((tmp_path / "work" / "state.json").read_text())
    assert state["epoch"] == 1, "epoch 2 was not committed: the rerun starts it again"

    rerun = train(tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    history, model = json.loads(rerun.stdout.splitlines()[-1]), tmp_path / "model.keras"
    expected_history, expected_model = unbroken
    assert [row["epoch"] for row in history] == [1, 2, 3]
    for row, expected in zip(history, expected_history, strict=True):
        assert trained(row) == pytest.approx(trained(expected), rel=1e-4, abs=1e-6), \
            "the resumed run trained other epochs"
    for got, expected in zip(weights(model), weights(expected_model), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert not (tmp_path / "work").exists(), "the resume state is dropped once the model is in place"
