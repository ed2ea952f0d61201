"""Every stage fails on bad input the same way: one line naming what is wrong and what to do, exit code 1,
no traceback. Each kind of expected error goes through the real `python -m stages.<name>`, in a copy of the
code and params (tests.stage_run), so the stages read and write there, not in this checkout."""

from __future__ import annotations

import contextlib
import re
import resource
import signal
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.fake_sources import make_zip
from tests.loopback import closed_port_url
from tests.stage_run import copy_code, run_stage
from transferbench.core.errors import shortened

# TensorFlow's C++ start-up lines (e.g. "E0000 ... failed call to cuInit" on a machine without a GPU) are
# not the stage's to format; everything else on stderr is.
TF_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm's


def error_line(result: subprocess.CompletedProcess, label: str, *needles: str, alone: bool = True) -> str:
    """The stage's one error line, checked: exit code 1, no traceback, the line last and the only one.

    ``alone``: nothing else on stderr but log lines and progress bars (and TensorFlow's start-up lines).
    """
    shown = f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode == 1, shown
    assert "Traceback" not in result.stderr, shown
    lines = [line for line in result.stderr.splitlines() if line.strip() and not TF_LINE.match(line)]
    assert lines and lines[-1].startswith(f"{label}: error: "), shown
    assert [line for line in lines if ": error: " in line] == [lines[-1]], shown
    if alone:
        assert all(LOG_LINE.match(line) or PROGRESS_BAR.search(line) for line in lines[:-1]), shown
    for needle in needles:
        assert needle in lines[-1], shown
    return lines[-1]


def set_seeds(value: int) -> Callable[[dict], None]:
    return lambda params: params.update(seeds=value)


def tiny_captcha(workers: int = 1) -> Callable[[dict], None]:
    return lambda params: params["captcha"].update(train=4, validation=2, test=2, workers=workers)


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Stages started in the block may write no file past ``limit`` bytes (as `ulimit -f`): a write past it
    fails with EFBIG, the way one on a full disk fails with ENOSPC, without needing a full disk or root."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited: the stage gets EFBIG, not killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


@pytest.mark.parametrize("stage, args, label", [
    ("generate_captcha", (), "generate_captcha"),
    ("fetch", ("pets",), "fetch@pets"),
    ("prepare", ("pets",), "prepare@pets"),
    ("validate", ("captcha",), "validate@captcha"),
    ("report", (), "report"),
])
def test_bad_params_are_one_line_in_every_data_stage(tmp_path, stage, args, label):
    root = copy_code(tmp_path, set_seeds(0))
    error_line(run_stage(root, stage, *args), label, "seeds", "0")


def test_bad_params_are_one_line_in_a_stage_that_trains(tmp_path):
    root = copy_code(tmp_path, set_seeds(0))
    error_line(run_stage(root, "train", "captcha"), "train@captcha", "seeds", "0")


def test_unknown_experiment_names_the_valid_ones(tmp_path):
    root = copy_code(tmp_path)
    line = error_line(run_stage(root, "weights", "nope"), "weights@nope", "'nope'")
    assert "captcha" in line and "pets" in line


def test_missing_prepared_data_names_the_file_and_the_stage_to_run(tmp_path):
    root = copy_code(tmp_path)
    error_line(run_stage(root, "validate", "captcha"), "validate@captcha",
               "data/prepared/captcha/train/images.npy is missing; run `dvc repro generate_captcha`")


def test_missing_raw_data_names_the_fetch_stage(tmp_path):
    root = copy_code(tmp_path)
    error_line(run_stage(root, "prepare", "cifar10"), "prepare@cifar10",
               "manifest.csv is missing", "`dvc repro fetch@cifar10`")


@pytest.mark.slow  # the train stage starts TensorFlow in a child (7 s)
def test_missing_initial_weights_stop_training_with_the_stage_to_run(tmp_path):
    root = copy_code(tmp_path)
    error_line(run_stage(root, "train", "captcha"), "train@captcha",
               "models/captcha/init/", "source.json is missing; run `dvc repro weights@captcha`")


def test_truncated_prepared_array_names_the_file_and_the_stage_to_rerun(tmp_path):
    root = copy_code(tmp_path)
    images = root / "data/prepared/captcha/train/images.npy"
    images.parent.mkdir(parents=True)
    np.save(images, np.zeros((20, 8, 8, 3), dtype=np.uint8))
    images.write_bytes(images.read_bytes()[:600])  # as a disk that filled up would leave it
    error_line(run_stage(root, "validate", "captcha"), "validate@captcha",
               "data/prepared/captcha/train/images.npy is truncated or corrupt",
               "mmap length is greater than file size", "run `dvc repro generate_captcha`")


def test_a_prepared_array_that_does_not_match_its_manifest_stops_training_before_the_model(tmp_path):
    root = copy_code(tmp_path, lambda params: params.update(weights="none", seeds=1))
    init = root / "models/captcha/init/none/source.json"  # what the weights stage leaves for a random start
    init.parent.mkdir(parents=True)
    init.write_text('{"weights": "none"}')
    for split, n in (("train", 3), ("validation", 2), ("test", 2)):  # train: 3 images, 2 manifest rows
        folder = root / "data/prepared/captcha" / split
        folder.mkdir(parents=True)
        np.save(folder / "images.npy", np.zeros((n, 80, 160, 3), dtype=np.uint8))
        (folder / "manifest.csv").write_text("label,sha256\n" + f"ABC123,{'0' * 64}\n" * 2)
    error_line(run_stage(root, "train", "captcha"), "train@captcha",
               "data/prepared/captcha/train/images.npy holds 3 images but data/prepared/captcha/train/manifest.csv "
               "lists 2", "rerun `dvc repro generate_captcha`", alone=False)


def test_duplicate_params_key_names_the_key_and_both_lines(tmp_path):
    root = copy_code(tmp_path)
    params = root / "params.yaml"
    lines = params.read_text(encoding="utf-8").splitlines()
    first = lines.index(next(line for line in lines if line.startswith("seed:"))) + 1
    params.write_text("\n".join([*lines, "seed: 7", ""]), encoding="utf-8")
    error_line(run_stage(root, "generate_captcha"), "generate_captcha",
               f"params.yaml: key 'seed' appears twice, on lines {first} and {len(lines) + 1}")


def test_full_disk_during_generation_is_one_line_not_a_signal_with_two_workers(tmp_path):
    root = copy_code(tmp_path, tiny_captcha(workers=2))
    with file_size_limit(64 * 1024):  # the train array is 150 KiB
        result = run_stage(root, "generate_captcha")
    line = error_line(result, "generate_captcha", "cannot write 150.0 KiB for ",
                      "train/images.npy: the file would exceed the file size limit",
                      "free some space on that disk and rerun the stage")
    assert "BrokenProcessPool" not in result.stderr and "Bus error" not in result.stderr, line
    assert not (root / "data/prepared/captcha").exists()


def test_arrays_that_cannot_fit_are_refused_before_generation_in_one_line(tmp_path):
    # The largest side params accept, and ten times the images: 6 TiB.
    root = copy_code(tmp_path, lambda params: params["captcha"].update(height=1024, width=1024, train=2_000_000))
    error_line(run_stage(root, "generate_captcha"), "generate_captcha", "captcha: 2,010,000 images of 1024x1024x3",
               "free (keeping 256.0 MiB spare); accepted: fewer images or a smaller captcha.height / captcha.width")
    assert not (root / "tmp").exists()


@pytest.mark.parametrize("stage, args, label, blocked, output", [
    ("generate_captcha", (), "generate_captcha", "data/prepared", "data/prepared/captcha"),
    ("fetch", ("cifar10",), "fetch@cifar10", "data/raw", "data/raw/cifar10"),
    ("prepare", ("pets",), "prepare@pets", "data/prepared", "data/prepared/pets"),
    ("validate", ("captcha",), "validate@captcha", "reports", "reports/captcha/validation"),
    ("weights", ("captcha",), "weights@captcha", "models", "models/captcha/init"),
    ("train", ("captcha",), "train@captcha", "models", "models/captcha"),
    ("evaluate", ("captcha",), "evaluate@captcha", "reports", "reports/runs/captcha"),
    ("report", (), "report", "reports", "reports"),
])
def test_unwritable_output_folder_is_found_before_any_work(tmp_path, stage, args, label, blocked, output):
    root = copy_code(tmp_path, tiny_captcha())
    (root / blocked).parent.mkdir(parents=True, exist_ok=True)
    (root / blocked).write_text("a file where a folder of outputs should be")
    error_line(run_stage(root, stage, *args), label, f"cannot create {output}: {blocked} is a file, not a folder")
    assert not (root / "tmp").exists()  # no work started


def test_a_captcha_release_that_draws_differently_is_one_line_with_the_fix(tmp_path):
    root = copy_code(tmp_path, tiny_captcha())
    # A distribution earlier on the path is the one importlib.metadata reports: captcha 0.0.1 "installed".
    dist = root / "src" / "captcha-0.0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: captcha\nVersion: 0.0.1\n")
    error_line(run_stage(root, "generate_captcha"), "generate_captcha",
               "captcha 0.0.1 is installed; seeded generation needs captcha==0.7.1", "pip install captcha==0.7.1")


def test_unreachable_source_says_what_was_tried_and_what_to_do(tmp_path):
    dead = closed_port_url("/cats_and_dogs_filtered.zip")

    def unreachable(params: dict) -> None:
        params["cats_and_dogs_filtered"]["source"]["urls"] = [dead]

    root = copy_code(tmp_path, unreachable)
    # The download logs each failed address as it goes (its own line); the error is still one line, last.
    error_line(run_stage(root, "fetch", "cats_and_dogs_filtered"), "fetch@cats_and_dogs_filtered",
               f"tried: - {dead}", "To provide it by hand", alone=False)


def test_unsafe_archive_is_refused_in_one_line(tmp_path):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip({"cats_and_dogs_filtered/train/cats/cat.0.jpg": b"x", "../escaped.txt": b"x"}))

    def served_from_file(params: dict) -> None:
        params["cats_and_dogs_filtered"]["source"].update(urls=[archive.as_uri()], sha256=None)

    root = copy_code(tmp_path / "repo", served_from_file)
    error_line(run_stage(root, "fetch", "cats_and_dogs_filtered"), "fetch@cats_and_dogs_filtered",
               "entry '../escaped.txt' climbs out with '..'")
    assert not (tmp_path / "repo" / "data" / "raw" / "escaped.txt").exists()


def test_failed_validation_lists_each_failure_then_one_line(tmp_path):
    def tiny(params: dict) -> None:
        params["captcha"].update(train=4, validation=2, test=2)

    root = copy_code(tmp_path, tiny)
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("validation", 2), ("test", 3)):  # test has one image too many
        folder = root / "data/prepared/captcha" / split
        folder.mkdir(parents=True)
        np.save(folder / "images.npy", rng.integers(0, 256, (n, 80, 160, 3), dtype=np.uint8))
        labels = ["".join(rng.choice(list("ABC123"), 6)) for _ in range(n)]
        (folder / "manifest.csv").write_text("label,sha256\n" + "".join(f"{label},{'0' * 64}\n" for label in labels))
    result = run_stage(root, "validate", "captcha")
    line = error_line(result, "validate@captcha", "expectations FAILED", "data_docs/index.html")
    failures = [x for x in result.stderr.splitlines() if " ERROR transferbench.data.validation: FAILED " in x]
    assert failures and f"{len(failures)} of" in line


def test_unreadable_run_results_stop_the_report_in_one_line(tmp_path):
    root = copy_code(tmp_path, lambda params: params.update(weights="none"))
    metrics = root / "reports/runs/captcha/none-s42/metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"test": {"accuracy": 0.5')  # cut off mid-write
    (metrics.parent / "history.csv").write_text("epoch,accuracy,val_accuracy,loss,val_loss\n1,0.5,0.5,1,1\n")
    error_line(run_stage(root, "report"), "report", "metrics.json: not valid JSON")


def test_usage_errors_are_argparse_s(tmp_path):
    root = copy_code(tmp_path)
    result = run_stage(root, "fetch")
    assert result.returncode == 2 and "usage: python -m stages.fetch [-h] dataset" in result.stderr
    assert "Traceback" not in result.stderr


BAD_NAMES = {"climbs out": "../x", "a folder": "a/b", "absolute": "/transferbench-outside/x",
             "non-ASCII": "caf\u00e9", "300 characters": "x" * 300}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_an_experiment_name_that_is_no_safe_folder_stops_its_own_stage_before_it_writes(tmp_path, name):
    root = copy_code(tmp_path / "repo", lambda params: params["experiments"].update(
        {name: params["experiments"]["cats_and_dogs_filtered_cnn"]}))
    line = error_line(run_stage(root, "weights", name), f"weights@{shortened(name)}",
                      "[A-Za-z][A-Za-z0-9_]{0,63}", repr(name)[:40])
    assert len(line) < 400, line
    assert not (root / "models").exists() and not (tmp_path / "x").exists()
    assert not Path("/transferbench-outside").exists()


def test_a_zip_bomb_stops_the_fetch_in_one_line_naming_the_limit_and_how_to_raise_it(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bomb:  # 8 MB of zeros in 8 KB
        bomb.writestr("cats_and_dogs_filtered/train/cats/cat.0.jpg", bytes(8 << 20))

    def served_from_file(params: dict) -> None:
        params["cats_and_dogs_filtered"]["source"].update(urls=[archive.as_uri()], sha256=None)

    root = copy_code(tmp_path / "repo", served_from_file)
    error_line(run_stage(root, "fetch", "cats_and_dogs_filtered"), "fetch@cats_and_dogs_filtered",
               "entry 'cats_and_dogs_filtered/train/cats/cat.0.jpg' unpacks to", "over extraction.max_ratio 100",
               "`dvc exp run -S extraction.max_ratio=")
    assert not (root / "data" / "raw" / "cats_and_dogs_filtered" / "extracted").exists()


def test_a_batch_larger_than_the_training_split_stops_training_in_one_line_before_keras(tmp_path):
    root = copy_code(tmp_path, lambda params: params.update(train_fraction=[0.5, 1.0]))
    meta = root / "data/prepared/captcha/meta.json"  # training reads the split sizes the generator recorded
    meta.parent.mkdir(parents=True)
    meta.write_text('{"dataset": "captcha", "splits": {"train": 20, "validation": 4, "test": 4}}')
    error_line(run_stage(root, "train", "captcha"), "train@captcha",
               "experiments.captcha.batch_size is 16, more than the 10 images its runs train on (captcha's training "
               "split of 20 x train_fraction 0.5); accepted: batch_size <= 10")
    assert not (root / "models/captcha/runs").exists()
