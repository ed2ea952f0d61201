"""A copy of this repository as its own git + DVC repository, for end-to-end runs of the pipeline."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.stage_run import one_untuned_run
from transferbench.core import paths


def run(cmd: list[str], repo: Path, env: dict, stdout_only: bool = False) -> str:
    """Run ``cmd`` in ``repo``; on failure, an AssertionError carrying the end of its output."""
    result = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-6000:]}")
    return result.stdout if stdout_only else result.stdout + result.stderr


def copy_repository(repo: Path, edit_params: Callable[[dict], None],
                    before_commit: Callable[[Path], None] = lambda repo: None,
                    one_run: bool = True) -> tuple[Path, dict]:
    """Copy tracked and unignored files to ``repo``, shrink params.yaml (one_untuned_run unless ``one_run`` is
    False, then ``edit_params``), commit.

    ``before_commit(repo)`` may add files the params refer to (weights files, say).

    Returns the repository and the environment to run it with (the copy's code, no MLflow or
    DVC variables of the developer's shell, Keras' cache inside the test's folder).
    """
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=paths.ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = paths.ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    shipped = yaml.safe_load((repo / "params.yaml").read_text())
    params = copy.deepcopy(shipped)
    if one_run:
        one_untuned_run(params)
    edit_params(params)
    before_commit(repo)
    if params != shipped:
        write_params(repo, params)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               KERAS_HOME=str(repo.parent / "keras_home"), DVC_NO_ANALYTICS="1",
               PYTHONPATH=f"{repo / 'src'}{os.pathsep}{repo}")  # the copy's code, not the developer checkout's
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.name", "test"],
                ["git", "config", "user.email", "test@example.invalid"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "tiny pipeline"]):
        run(cmd, repo, env)
    return repo, env


def write_params(repo: Path, params: dict) -> None:
    """Make ``params`` the copy's params.yaml and what `dvc exp run -S` composes from: conf/ becomes one flat
    config (no experiment sets or profiles), or each `-S` would bring back the shipped study's sizes."""
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.rmtree(repo / "conf")
    (repo / "conf").mkdir()
    (repo / "conf" / "config.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def dvc(repo: Path, env: dict, *args: str, stdout_only: bool = False) -> str:
    return run([sys.executable, "-m", "dvc", *args], repo, env, stdout_only)
