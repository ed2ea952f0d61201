"""Credentials for a mirror (a login, a presigned ``?token=``) never reach stderr, a log line, fetch.json, the
download records or a run's params and tags. params.yaml refuses an address that carries them (DVC would copy
it into dvc.lock and git); the login comes from ~/.netrc. What is masked anyway stays masked: the checks here
are the second line behind that refusal."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.fake_sources import filtered_zip
from tests.loopback import LoopbackServer, free_port
from tests.stage_run import copy_code, run_stage

PASSWORD, TOKEN = "s3cr3t-pass", "s3cr3t-token"
COUNTS = {("train", "cats"): 2, ("train", "dogs"): 2, ("validation", "cats"): 1, ("validation", "dogs"): 1}


def with_secrets(base: str, path: str) -> str:
    return base.replace("http://", f"http://user:{PASSWORD}@") + f"{path}?token={TOKEN}"


def secrets_in(text: str) -> list[str]:
    return [secret for secret in (PASSWORD, TOKEN) if secret in text]


def test_a_fetch_with_a_login_from_netrc_shows_and_records_none(tmp_path, monkeypatch):
    with LoopbackServer() as server:
        server.files["/cats_and_dogs_filtered.zip"] = filtered_zip(COUNTS)
        server.logins["/cats_and_dogs_filtered.zip"] = ("user", PASSWORD)
        (tmp_path / "netrc").write_text(f"machine 127.0.0.1 login user password {PASSWORD}\n")
        monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
        dead = f"http://127.0.0.1:{free_port()}/cats_and_dogs_filtered.zip"

        def mirrors(params: dict) -> None:
            params["cats_and_dogs_filtered"]["source"].update(urls=[dead, server.url("/cats_and_dogs_filtered.zip")],
                                                              sha256=None)

        root = copy_code(tmp_path / "repo", mirrors)
        result = run_stage(root, "fetch", "cats_and_dogs_filtered")
        assert result.returncode == 0, result.stderr[-3000:]
        assert server.log[-1].headers.get("Authorization", "").startswith("Basic ")  # the login was used
    assert dead in result.stderr, "the dead address is logged"
    assert secrets_in(result.stdout + result.stderr) == []
    report = (root / "reports" / "cats_and_dogs_filtered" / "fetch.json").read_text()
    assert json.loads(report)["archive_url"] == server.url("/cats_and_dogs_filtered.zip") and secrets_in(report) == []
    for written in (root / "data" / "raw" / "cats_and_dogs_filtered").rglob("*.json"):
        assert secrets_in(written.read_text()) == [], written


def test_an_address_with_credentials_in_params_is_refused_without_showing_them(tmp_path):
    dead = with_secrets(f"http://127.0.0.1:{free_port()}", "/cats_and_dogs_filtered.zip")
    root = copy_code(tmp_path, lambda params: params["cats_and_dogs_filtered"]["source"].update(urls=[dead]))
    result = run_stage(root, "fetch", "cats_and_dogs_filtered")
    assert result.returncode == 1 and "fetch@cats_and_dogs_filtered: error: " in result.stderr
    assert "http://***@127.0.0.1" in result.stderr and secrets_in(result.stderr) == []
    assert "has an address with credentials in it" in result.stderr and "~/.netrc" in result.stderr


def test_a_bugs_traceback_and_library_log_lines_are_masked_too():
    script = ("import logging; from transferbench import cli\n"
              "def work(args):\n"
              f"    logging.getLogger('urllib3').warning('retrying %s', 'http://u:{PASSWORD}@proxy/')\n"
              f"    raise RuntimeError('cannot reach https://h/a.zip?token={TOKEN}')\n"
              "cli.run(cli.StageParser('fetch', 'x', None), work, [])\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" in result.stderr and "RuntimeError" in result.stderr
    assert "retrying http://***@proxy/" in result.stderr and "token=***" in result.stderr
    assert secrets_in(result.stderr) == []


def test_mlflow_params_and_tags_carry_no_credentials(params, mlflow_db, monkeypatch, tmp_path):
    from mlflow import MlflowClient

    from transferbench.study.experiments import resolve
    from transferbench.study.params import check_params
    from transferbench.tracking import mlflow_runs as tracking

    uri = f"sqlite:///{mlflow_db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    dataset = "cats_and_dogs_filtered"
    params["weights"] = "none"
    params["experiments"] = {"tiny": {"dataset": dataset, "model": "tiny", "pooling": "avg", "head": "dense",
                                      "head_units": 0, "head_dropout": 0.0, "head_l2": 0.0, "strategy": "full",
                                      "augment": "none", "optimizer": "adam", "learning_rate": 0.01,
                                      "batch_size": 4, "epochs": 1, "schedule": {"kind": "constant"}}}
    # params.yaml cannot hold such an address (check_params refuses it): put in behind the check, as a
    # future source of addresses might, to see that MLflow's copy is masked all the same.
    checked = check_params(params)
    section = getattr(checked, dataset)
    source = section.source.model_copy(update={"urls": [with_secrets("http://mirror.example", "/a.zip")]})
    checked = checked.model_copy(update={dataset: section.model_copy(update={"source": source})})
    run_id = tracking.start_run(resolve(checked, "tiny"))
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.params[f"{dataset}.source.urls"] == "['http://***@mirror.example/a.zip?token=***']"
    assert secrets_in(json.dumps([run.data.params, run.data.tags])) == []
