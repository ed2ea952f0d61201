"""The CLI helper every stage shares: expected errors end a stage in one line, bugs keep their traceback,
and the data stages' entry points load no TensorFlow."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys

import pytest

from tests.stage_run import copy_code
from transferbench import cli
from transferbench.core import paths
from transferbench.core.errors import ConfigError, MissingInput


def parser(item: str | None = "dataset") -> cli.StageParser:
    return cli.StageParser("fetch", "Stage `fetch`: download.\n\nMore.", item, "a dataset")


def test_expected_error_is_one_line_naming_the_stage():
    def work(args):
        raise MissingInput(f"data/raw/{args.dataset}/manifest.csv is missing\nrun `dvc repro fetch@pets`")

    with pytest.raises(SystemExit) as stop:
        cli.run(parser(), work, ["pets"])
    assert stop.value.code == "fetch@pets: error: data/raw/pets/manifest.csv is missing; run `dvc repro fetch@pets`"


def test_a_list_after_a_colon_stays_readable_on_one_line():
    message = "could not get x.zip; tried:\n  - http://a/x.zip: refused\n  - http://b/x.zip: 404\nPut it at y."
    assert cli.one_line(message) == ("could not get x.zip; tried: - http://a/x.zip: refused; "
                                     "- http://b/x.zip: 404; Put it at y.")


def test_a_bug_keeps_its_traceback():
    def work(args):
        raise KeyError("not a user's mistake")

    with pytest.raises(KeyError):
        cli.run(parser(None), work, [])


def test_a_full_disk_anywhere_is_one_line_naming_the_file(tmp_path):
    def work(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "mlflow.db"))

    with pytest.raises(SystemExit) as stop:
        cli.run(parser(), work, ["pets"])
    assert str(stop.value.code).startswith(f"fetch@pets: error: cannot write {tmp_path / 'mlflow.db'}: no space left "
                                           "on the disk (")
    assert str(stop.value.code).endswith(" free there); free some space on that disk and rerun the stage")


def test_other_os_errors_keep_their_traceback():
    def work(args):
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError, match="I/O error"):
        cli.run(parser(), work, ["pets"])


def test_interrupt_exits_130(capsys):
    def work(args):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        cli.run(parser(), work, ["pets"])
    assert stop.value.code == 130 and capsys.readouterr().err == "fetch@pets: interrupted\n"


def test_experiment_stages_check_params_and_the_name_before_work(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(cli, "load_params", lambda: {"experiments": {"pets": {}}})

    def resolve(params, name):
        if name not in params["experiments"]:
            raise ConfigError(f"unknown experiment {name!r}; valid: pets")

    monkeypatch.setattr(cli, "resolve", resolve)
    with pytest.raises(SystemExit, match=r"^train@nope: error: unknown experiment 'nope'; valid: pets$"):
        cli.stage_main("train", ["nope"], lambda params, name: called.append(name))
    cli.stage_main("train", ["pets"], lambda params, name: called.append(name))
    assert called == ["pets"]


def test_log_lines_carry_time_level_and_logger():
    formatter = logging.Formatter(cli.LOG_FORMAT, cli.DATE_FORMAT)
    record = logging.LogRecord("transferbench.data.preparation", logging.INFO, __file__, 1, "prepare %s", ("pets",),
                               None)
    assert formatter.format(record).endswith(" INFO transferbench.data.preparation: prepare pets")


@pytest.mark.parametrize("stage", ["generate_captcha", "fetch", "prepare", "validate"])
def test_data_stages_start_without_tensorflow(stage):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", f"stages.{stage}", "--help"], cwd=paths.ROOT,
                            capture_output=True, text=True, check=True)
    assert f"python -m stages.{stage}" in result.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert not imported & {"tensorflow", "keras"}


def test_stages_run_the_package_beside_them_not_the_one_on_the_path(tmp_path):
    # As in `dvc exp run --temp`: the stages run in a copy while another checkout's src is importable.
    root = copy_code(tmp_path)
    result = subprocess.run([sys.executable, "-c", "import stages, transferbench.core.paths as p; print(p.ROOT)"],
                            cwd=root, env={**os.environ, "PYTHONPATH": str(paths.ROOT / "src")},
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(root.resolve())
