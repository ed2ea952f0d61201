"""The README's newcomer path, word for word on a fresh copy: the small run, then every look-at-the-answer command.

The small run's sizes are shrunk (fewer CAPTCHAs, two epochs); everything else is the README's text. A command
that says "failed to load" or shows nothing fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests import repo_copy
from tests.readme_commands import look_commands, small_run, transfer_commands
from tests.repo_copy import copy_repository

pytestmark = pytest.mark.slow

TINY = {"captcha.train": "64", "captcha.validation": "32", "captcha.test": "32", "experiments.captcha.epochs": "2"}
# The transfer step's budget, shrunk: two seeds (still a verdict on training chance) and the whole split
# alone (shares, their table and figure are the report tests' and the tuning tests').
TINY_TRANSFER = {**TINY, "seeds": "2", "train_fraction": "[1.0]"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_ui_experiments(repo: Path, env: dict, command: str) -> list[dict]:
    """Start the README's `mlflow ui` in ``repo`` on a free port; the experiments it lists."""
    port = free_port()
    argv = [sys.executable, "-m", "mlflow", *shlex.split(command)[1:], "--port", str(port)]
    # Its log goes to a file: a pipe nobody reads fills up and blocks the server, also on its way out.
    log = repo.parent / "mlflow-ui.log"
    with log.open("w") as err:
        server = subprocess.Popen(argv, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                  start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search"
        for _ in range(120):
            try:
                answer = requests.post(url, json={"max_results": 100}, timeout=5)
                if answer.ok:
                    return answer.json()["experiments"]
            except requests.ConnectionError:
                pass
            assert server.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        raise AssertionError("mlflow ui did not answer within 2 minutes")
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def test_the_newcomer_path(tmp_path):
    repo, env = copy_repository(tmp_path / "repo", lambda params: None, one_run=False)  # params.yaml as shipped
    out = repo_copy.dvc(repo, env, *small_run(TINY)[1:])
    assert "'report'" in out and not re.search(r"^(ERROR|[\w@]+: error):", out, re.M), out[-3000:]
    copy, transfer = transfer_commands(TINY_TRANSFER)  # the same (shrunk) sizes: its profile builds on the small one's
    assert copy[0] == "cp" and transfer[:3] == ["dvc", "exp", "run"] and "profile=cpu_transfer" in transfer
    repo_copy.run(copy, repo, env)
    out = repo_copy.dvc(repo, env, *transfer[1:])
    assert "'report'" in out and not re.search(r"^(ERROR|[\w@]+: error):", out, re.M), out[-3000:]

    for command in look_commands():
        if command.startswith("cat "):
            text = (repo / shlex.split(command)[1]).read_text()
            assert "captcha" in text and len(text) > 200, text
        elif command.startswith("dvc "):
            extra = ["--no-pager"] if command.startswith("dvc exp show") else []
            shown = repo_copy.dvc(repo, {**env, "COLUMNS": "120"}, *shlex.split(command)[1:], *extra)
            assert "failed to load" not in shown.lower() and shown.strip(), (command, shown)
            if command.startswith("dvc exp show"):
                assert "captcha.none." in shown and "captcha.file-cnn.keras." in shown and "…" not in shown, \
                    (command, shown)
                assert max(len(line) for line in shown.splitlines()) <= 120, (command, shown)
        else:
            experiments = mlflow_ui_experiments(repo, env, command)
            assert [e["name"] for e in experiments] == ["captcha"], experiments
            tags = {t["key"]: t["value"] for t in experiments[0].get("tags", [])}
            assert tags["mlflow.experimentKind"] == "custom_model_development"

    # The answer where people look first: the transfer experiment's parent run holds the difference.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    captcha = client.get_experiment_by_name("captcha").experiment_id
    parents = {r.info.run_name: r for r in client.search_runs([captcha], "tags.role = 'parent'")}
    assert set(parents) == {"captcha (cpu-small)", "captcha (cpu-transfer)"}, sorted(parents)
    answer_metrics = parents["captcha (cpu-transfer)"].data.metrics
    assert {"difference.fine_tuned.points", "difference.fine_tuned.low", "difference.fine_tuned.high",
            "fine_tuned.test_accuracy", "random.test_accuracy"} <= set(answer_metrics), answer_metrics
    assert parents["captcha (cpu-transfer)"].data.tags["verdict.fine_tuned"], parents["captcha (cpu-transfer)"]

    metrics = json.loads((repo / "reports/captcha/metrics.json").read_text())
    assert set(metrics) == {"captcha"}
    assert set(metrics["captcha"]) == {"none", "file-cnn.keras"}
    report = (repo / "reports/README.md").read_text()
    answer = report.split("## The answer")[1].split("\n\n")[1]
    assert "| fine-tuned (file-cnn.keras) " in answer and "one run: no verdict" not in answer, answer
    assert (repo / "reports/data_size.csv").read_text().startswith("experiment,arm,setting,train_fraction")
    budget = json.loads((repo / "reports/runs/captcha/none-s7/metrics.json").read_text())["tuning"]
    assert budget["kind"] == "grid" and len(budget["scores"]) == 3, budget
    page = (repo / "dvc_plots/index.html").read_text()
    assert "learning curves (accuracy)" in page and '"experiment": "captcha"' in page
    assert (repo / "reports/curves.csv").stat().st_size > 100
    assert (repo / "mlartifacts/captcha").is_dir() and not (repo / "mlruns").exists()
