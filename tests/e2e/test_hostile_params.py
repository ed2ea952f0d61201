"""End to end: params that would reach outside the project stop `dvc repro` at the first stage's params
check, before any stage writes, with the same one line the stage prints alone."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests import repo_copy
from tests.integration.test_stage_errors import BAD_NAMES
from transferbench.core.errors import shortened

pytestmark = pytest.mark.slow


def test_dvc_repro_stops_at_the_params_check_for_an_experiment_name_that_is_no_safe_folder(tmp_path):
    repo, env = repo_copy.copy_repository(tmp_path / "repo", lambda params: None)
    committed = yaml.safe_load((repo / "params.yaml").read_text())
    # The names DVC itself could take as paths; non-ASCII and 300 characters go through the stage alone
    # (tests/integration/test_stage_errors.py), as every `dvc repro` here costs seconds.
    for name in (BAD_NAMES["climbs out"], BAD_NAMES["a folder"], BAD_NAMES["absolute"]):
        params = {**committed, "experiments": {**committed["experiments"],
                                               name: committed["experiments"]["cats_and_dogs_filtered_cnn"]}}
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        done = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=120)
        shown = done.stdout[-2000:] + done.stderr[-2000:]
        assert done.returncode != 0 and "Traceback" not in shown, shown
        assert f"error: experiments has the name {shortened(repr(name))}; accepted: names matching" in shown, shown
    assert not (tmp_path / "x").exists() and not Path("/transferbench-outside").exists()
    assert not any((repo / folder).exists() for folder in ("data", "models", "reports")), list(repo.iterdir())


def test_a_source_address_with_a_login_is_refused_before_dvc_records_it_anywhere(tmp_path):
    secret = f"pw{uuid.uuid4().hex}"  # made here: the copy's own test files must not contain it
    repo, env = repo_copy.copy_repository(tmp_path / "repo", lambda params: None)
    done = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "-S",
                           f"cifar10.source.urls=[http://reader:{secret}@127.0.0.1:9/c.tar.gz]", "fetch@cifar10"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    shown = done.stdout[-2000:] + done.stderr[-2000:]
    assert done.returncode != 0 and secret not in shown, shown
    assert "cifar10.source.urls has an address with credentials in it ('http://***@127.0.0.1:9" in shown, shown
    assert "~/.netrc" in shown, shown
    history = subprocess.run(["git", "log", "-p", "--all"], cwd=repo, capture_output=True, text=True).stdout
    refs = subprocess.run(["git", "for-each-ref", "--format=%(objectname)"], cwd=repo, capture_output=True,
                          text=True).stdout.split()
    trees = "".join(subprocess.run(["git", "show", ref, "--", "dvc.lock", "params.yaml"], cwd=repo,
                                   capture_output=True, text=True).stdout for ref in refs)
    lock = (repo / "dvc.lock").read_text() if (repo / "dvc.lock").exists() else ""
    assert secret not in history + trees + lock
