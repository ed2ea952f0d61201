"""README's "Past one machine", word for word on loopback: one MLflow server behind its login, a DVC remote,
two clones of the repository as two machines each running a queued experiment against them, and a third
clone that sees both experiments, their outputs and both machines' runs in the one server.

The README's block is read from its text and run section by section with bash, its ``<...>`` filled in
(PLACEHOLDERS); the server binds 127.0.0.1, not every interface, and a free port instead of 5000. The
repository is a copy of this one shrunk to the CAPTCHA experiment on a few hundred tiny CAPTCHAs (the small
CNN, one seed, no tuning), so each machine trains in seconds.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml

from tests import repo_copy
from tests.loopback import free_port
from tests.readme_commands import bash_blocks
from tests.repo_copy import copy_repository

SECTIONS = ("server", "login", "clone", "data", "machine", "later")  # the block's comment-headed sections, in order
RATES = {"machine-a": 0.01, "machine-b": 0.002}  # each machine's share: one learning rate
DATA_STAGES = "validate@captcha"  # the data the CAPTCHA experiment trains on, made and checked
SERVER_START = 180  # seconds for `mlflow server` to answer on a loaded 2-core machine (about 25 s alone)
# A placeholder is `<words>` in angle brackets; `-S ...` is the machine's share of the experiments.
PLACEHOLDER = re.compile(r"<[a-z][a-z ]*>|-S \.\.\.")


def readme_sections() -> dict[str, list[str]]:
    """The README's many-machines block: section -> its commands (continuations joined, comments dropped)."""
    block = next(b for b in bash_blocks() if "mlflow server --app-name basic-auth" in b)
    sections: list[list[str]] = []
    for line in block.replace("\\\n", " ").splitlines():
        if line.startswith("#"):
            sections.append([])
        elif line.strip():
            assert sections, f"a command before the block's first comment: {line}"
            sections[-1].append(re.sub(r"\s+#\s.*$", "", line).strip())
    assert len(sections) == len(SECTIONS), f"the README's block has {len(sections)} sections, not {SECTIONS}"
    return dict(zip(SECTIONS, sections, strict=True))


def fill(commands: list[str], values: dict[str, str], port: int) -> str:
    """The commands as one bash script, each placeholder replaced and the server's port 5000 made ``port``; a
    placeholder the test does not know fails."""
    script = "\n".join(commands)
    unknown = {p for p in PLACEHOLDER.findall(script) if p not in values}
    assert not unknown, f"the README's block has placeholders the test does not fill: {sorted(unknown)}"
    for placeholder, value in values.items():
        script = script.replace(placeholder, value)
    return "set -euo pipefail\n" + script.replace(":5000", f":{port}").replace("--port 5000", f"--port {port}")


def bash(script: str, cwd: Path, env: dict) -> str:
    return repo_copy.run(["bash", "-c", script], cwd, env)


def test_the_readme_block_is_what_the_test_runs():
    """Every section is there in its order, and no command in README starts a server without the login."""
    sections = readme_sections()
    assert [c.split()[:2] for c in sections["server"]][-1] == ["mlflow", "server"]
    assert sections["login"][0].startswith("curl -fsS -u 'admin:<admin password>'")
    assert sections["clone"] == sections["later"][:1] == ["git clone <repository> transferbench && cd transferbench"]
    assert sections["later"][-1].startswith("dvc pull --with-deps report")
    assert any(c.startswith("dvc exp run --queue -n <name> ") for c in sections["machine"])
    assert sections["machine"][-1] == "dvc exp push origin <name>"
    for block in bash_blocks():
        for line in block.replace("\\\n", " ").splitlines():
            if "mlflow server" in line or "0.0.0.0" in line:
                assert "--app-name basic-auth" in line, f"a server open to the network without a login: {line}"


@pytest.fixture
def origin(tmp_path) -> tuple[Path, dict]:
    """A bare git repository made from a copy of this one, shrunk to seconds of training; the copy's environment."""
    def tiny(params: dict) -> None:
        params["weights"] = ["none"]
        params["experiments"] = {"captcha": {**params["experiments"]["captcha"], "model": "cnn",
                                             "pooling": "flatten", "head_units": 32, "batch_size": 32, "epochs": 2}}
        params["captcha"].update(train=256, validation=64, test=64, width=80, height=40, length=4,
                                 alphabet="0123456789ABCDEF", workers=1)

    seed, env = copy_repository(tmp_path / "seed", tiny)
    bare = tmp_path / "origin.git"
    repo_copy.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], tmp_path, env)
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}  # each machine runs its own clone's code
    # Every machine commits (the data, DVC's experiments) as someone, whatever the developer's git config says.
    env.update(GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.invalid",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.invalid")
    return bare, env


def start_server(script: str, home: Path, env: dict, log: Path) -> subprocess.Popen:
    home.mkdir(parents=True)
    # MLflow's job runner (GenAI jobs) would start a dozen more processes; nothing here uses it.
    server_env = {**env, "HOME": str(home), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "w") as out:
        return subprocess.Popen(["bash", "-c", script], cwd=home, env=server_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: stopped with every worker


def stop_server(server: subprocess.Popen) -> None:
    """Stop the server and every process it started (its workers), also those left by a server that died."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=30)
            time.sleep(1)  # the workers, which got the signal too, finish after the process that started them
        except subprocess.TimeoutExpired:
            pass


def wait_for(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the MLflow server exited:\n{log.read_text()[-4000:]}"
        try:
            if requests.get(f"{url}/health", timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the MLflow server did not answer within {SERVER_START} s:\n{log.read_text()[-4000:]}")


@pytest.mark.slow
def test_two_machines_one_server_one_remote_and_a_third_sees_both(origin, tmp_path, monkeypatch):
    bare, env = origin
    sections = readme_sections()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    study_password = secrets.token_urlsafe(16)
    values = {"<admin password>": secrets.token_urlsafe(16), "<random key>": secrets.token_hex(16),
              "<study password>": study_password, "<server>": "127.0.0.1", "<repository>": str(bare),
              "<remote>": str(tmp_path / "dvc-remote"), "<data stages>": DATA_STAGES, "<its GPUs>": "1"}

    # Loopback only, on a free port: the README's 0.0.0.0 and 5000 are for a machine the others reach.
    server_script = fill(sections["server"], values, port).replace("--host 0.0.0.0", "--host 127.0.0.1")
    assert "--host 127.0.0.1" in server_script and f"--port {port}" in server_script
    log = tmp_path / "server.log"
    server = start_server(server_script, tmp_path / "server", env, log)
    try:
        machines = {name: tmp_path / name for name in (*RATES, "machine-c")}
        for name in RATES:  # both machines clone while the server starts; the first makes the data
            machines[name].mkdir()
            bash(fill(sections["clone"], values, port), machines[name], env)
        first = machines["machine-a"] / "transferbench"
        out = bash(fill(sections["data"], values, port), first, {**env, "PYTHONPATH": f"{first / 'src'}:{first}"})
        assert "Running stage 'generate_captcha'" in out, out[-3000:]

        wait_for(url, server, log)
        bash(fill(sections["login"], values, port), tmp_path, env)

        def machine(name: str) -> str:
            clone = machines[name] / "transferbench"
            own = {**values, "<name>": name, "-S ...": f"-S experiments.captcha.learning_rate={RATES[name]}"}
            return bash(fill(sections["machine"], own, port), clone, {**env, "PYTHONPATH": f"{clone / 'src'}:{clone}"})

        with ThreadPoolExecutor(len(RATES)) as pool:  # two machines at once, against the one server
            logs = dict(zip(RATES, pool.map(machine, RATES), strict=True))
        for name, out in logs.items():
            assert "Running stage 'train@captcha'" in out and "Running stage 'report'" in out, f"{name}:\n{out[-4000:]}"
            # The data came from the remote: the experiment starts from the pushed commit and does not make it again.
            assert "Running stage 'generate_captcha'" not in out and "Running stage 'validate@captcha'" not in out, \
                f"{name}:\n{out[-4000:]}"
            assert not re.search(r"^ERROR", out, re.M), f"{name}:\n{out[-4000:]}"
            clone = machines[name] / "transferbench"
            assert not list(clone.rglob("mlflow.db")) and not (clone / "mlruns").exists(), \
                f"{name} logged to a store of its own, not the server"

        # A third machine: both experiments from origin, one checked out with its outputs from the DVC remote.
        third = machines["machine-c"]
        third.mkdir()
        clone = third / "transferbench"
        bash(fill(sections["later"], {**values, "<name>": "machine-b"}, port), third, env)
        # `dvc exp pull` brought every machine's experiment of main, each with its own rate.
        shown = json.loads(repo_copy.dvc(clone, env, "exp", "show", "--json", "--rev", "main", stdout_only=True))
        (main,) = [commit for commit in shown if commit["name"] == "main"]
        pulled = {rev["name"]: rev["data"]["params"]["params.yaml"]["data"]["experiments"]["captcha"]["learning_rate"]
                  for experiment in main["experiments"] for rev in experiment["revs"]}
        assert pulled == RATES, json.dumps(shown)[:3000]
        params = yaml.safe_load((clone / "params.yaml").read_text())
        assert params["experiments"]["captcha"]["learning_rate"] == RATES["machine-b"]
        model = clone / "models/captcha/runs/none-s42/model.keras"
        assert model.is_file() and model.stat().st_size > 10_000, sorted(p.name for p in clone.rglob("*.keras"))
        assert (clone / "data/prepared/captcha").is_dir()
        assert "captcha" in (clone / "reports/README.md").read_text()
        status = repo_copy.dvc(clone, env, "status", "--with-deps", "report", stdout_only=True)
        assert "up to date" in status.lower(), status

        # Both machines' runs in the one server, read with the machines' login; nobody else gets in.
        assert requests.get(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10).status_code == 401
        assert requests.get(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10,
                            auth=("study", "wrong password")).status_code == 401
        assert requests.get(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10,
                            headers={"Host": "elsewhere.example"}, auth=("study", study_password)).status_code == 403
        from mlflow import MlflowClient

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "study")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", study_password)
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("captcha")
        assert experiment is not None
        found = client.search_runs([experiment.experiment_id])
        parents = {r.info.run_id: r for r in found if r.data.tags.get("role") == "parent"}
        runs = {r.data.tags["dvc_experiment"]: r for r in found if r.info.run_id not in parents}
        assert sorted(runs) == sorted(RATES), "one training run per machine's experiment, none lost"
        for name, rate in RATES.items():
            run = runs[name]
            assert run.info.status == "FINISHED" and "test.accuracy" in run.data.metrics
            assert float(run.data.params["experiment.learning_rate"]) == rate
            parent = parents[run.data.tags["mlflow.parentRunId"]]
            assert parent.data.tags["dvc_experiment"] == name
            assert "random.test_accuracy" in parent.data.metrics, "each machine's report logs its answer there"
            assert "model.keras" in {a.path for a in client.list_artifacts(run.info.run_id)}
        artifacts = tmp_path / "server" / "mlflow" / "artifacts"
        assert len(list(artifacts.rglob("model.keras"))) == len(RATES), "the server keeps the artifacts"
        # The model the third machine pulled from the DVC remote is the one machine-b logged to the server.
        logged = artifacts / experiment.experiment_id / runs["machine-b"].info.run_id / "artifacts" / "model.keras"
        assert logged.read_bytes() == model.read_bytes()
    finally:
        stop_server(server)
