"""benchmarks/gpu.py: its recipe table is params.yaml's, its import chain stays light, bad flags stop it.

The benchmark runs on a GPU machine that has Keras, NumPy and one backend only, so it carries the
reference studies' recipes as a table of its own; this keeps that table equal to params.yaml. A tiny run on CPU
(the real code path, its markdown table and JSON) is in `pytest -m slow`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu
from transferbench.core import paths
from transferbench.data.datasets import DATASETS
from transferbench.study.params import Params, load_params

ROOT = Path(__file__).resolve().parents[2]

# The modules a bare GPU machine lacks; TensorFlow too when the backend is JAX.
HEAVY = ("pydantic", "yaml", "mlflow", "pandas", "dvc", "great_expectations")
BLOCKER = """
import os, runpy, sys
blocked = set(sys.argv[1].split(","))
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"blocked: {name}", name=name)
sys.meta_path.insert(0, Blocker())
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def published_train(dataset: str, params: Params) -> int:
    return sum(DATASETS.get(dataset).published_counts["train"].values())


# Training images per dataset at the reference studies' scale: params' split size where params set it, else the
# source's.
TRAIN_IMAGES = {
    "captcha": lambda p: p.dataset("captcha").train,
    "dogs_vs_cats": lambda p: p.dataset("dogs_vs_cats").train,
    "pets": lambda p: published_train("pets", p),
    "cats_and_dogs_filtered": lambda p: published_train("cats_and_dogs_filtered", p),
    # Validation is carved out of CIFAR-10's train split.
    "cifar10": lambda p: published_train("cifar10", p) - p.dataset("cifar10").validation,
}


def recipe_from_params(params: Params, name: str) -> gpu.Recipe:
    section = params.experiments[name]
    dataset = params.dataset(section.dataset)
    return gpu.Recipe(
        model=section.model, height=dataset.height, width=dataset.width,
        task=DATASETS.get(section.dataset).task(dataset), pooling=section.pooling, head=section.head,
        head_units=section.head_units, head_dropout=section.head_dropout, augment=section.augment,
        optimizer=section.optimizer, learning_rate=section.learning_rate, batch_size=section.batch_size,
        epochs=section.epochs, train_images=TRAIN_IMAGES[section.dataset](params),
        runs=len(params.arms(name)) * params.seeds * len(params.train_fraction), class_weight=section.class_weight,
        tuning_runs=0.0 if params.tuning.kind == "none" else
        len(params.arms(name)) * len(params.train_fraction) * len(params.tuning.factors) * params.tuning.epochs,
        arms=len(params.arms(name)) * len(params.train_fraction),
        factors=0 if params.tuning.kind == "none" else len(params.tuning.factors))


def test_the_recipe_table_is_params_yaml():
    params = load_params(paths.PARAMS)
    assert sorted(gpu.RECIPES) == sorted(params.experiments)
    for name in params.experiments:
        assert gpu.RECIPES[name] == recipe_from_params(params, name), name


def blocked_run(*args: str, backend: str | None = None) -> subprocess.CompletedProcess:
    """benchmarks/gpu.py in a fresh interpreter where importing any HEAVY module fails."""
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    blocked = HEAVY + (("tensorflow",) if backend == "jax" else ())
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "-c", BLOCKER, ",".join(blocked), str(ROOT / "benchmarks" / "gpu.py"),
                           *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


@pytest.mark.slow  # the benchmark's whole import in a child (7 s)
def test_its_imports_need_no_params_tracking_or_data_stack():
    done = blocked_run("--help")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--tiny" in done.stdout


def test_the_blocker_does_block():
    """Without this, a broken blocker would let the import test above pass whatever the benchmark imports."""
    probe = BLOCKER.replace('runpy.run_path(sys.argv[0], run_name="__main__")', "import transferbench.study.params")
    done = subprocess.run([sys.executable, "-c", probe, "pydantic", "x"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 1 and "blocked: pydantic" in done.stderr


@pytest.mark.parametrize("flags, message", [
    (["--per-gpu", "1,0"], "--per-gpu '1,0': accepted: comma-separated whole numbers >= 1"),
    (["--together", "pets,nope"], "--together 'pets,nope': unknown nope; accepted: pets, captcha"),
    (["--feeds", "disk"], "--feeds 'disk': accepted: any of ceiling, host, device"),
])
def test_bad_flags_for_k_per_gpu_are_refused_naming_the_accepted_values(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as stopped:
        gpu.main([*flags, "--json", str(tmp_path / "out.json")])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.slow  # TensorFlow starts in a child (6-9 s)
def test_an_unknown_experiment_is_refused_naming_the_accepted_ones(tmp_path):
    done = blocked_run("--experiments", "captcha,nope", "--json", str(tmp_path / "out.json"))
    assert done.returncode == 2
    assert "unknown nope; accepted: pets, captcha" in done.stderr
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("given, named", [("float16", "bad float16"), ("float32,float32", "bad float32, float32"),
                                          (",", "none given")])
def test_bad_precisions_are_refused_naming_the_accepted_ones(tmp_path, capsys, given, named):
    with pytest.raises(SystemExit) as stopped:
        gpu.main(["--precisions", given, "--json", str(tmp_path / "out.json")])
    assert stopped.value.code == 2
    accepted = "accepted: any of mixed_float16, float32, each once"
    assert f"--precisions {given!r}: {named}; {accepted}" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def fake_part(figures: dict[str, dict[str, float]], stop_at: str | None = None):
    """A stand-in for ``gpu.fed`` that returns ``figures[precision]`` by the model's precision, and stops the run
    (as a time limit would) when asked for ``stop_at``, after noting what the JSON held at that moment."""
    seen: dict[str, dict] = {}

    def fed(model, batches, recipe, steps, epochs, feeds=gpu.FEEDS):
        precision = model.dtype_policy.name
        if precision == stop_at:
            seen["json"] = json.loads(Path(seen["path"]).read_text())
            raise KeyboardInterrupt
        return figures[precision]

    return fed, seen


def test_each_part_is_saved_as_soon_as_it_is_measured_feeders_and_mixed_first(tmp_path, monkeypatch):
    """A run cut short keeps the feeders alone and the mixed-precision figures: the feeder's target and the
    projection. The parts are measured in that order and written, whole, after each."""
    monkeypatch.setattr(gpu, "feeder_alone", lambda batches, seconds: {"host": 5.0, "device": 300.0})
    monkeypatch.setattr(gpu, "resnet50_macs", lambda: 4_000)
    mixed = {"ceiling": 3.0, "host": 2.0, "device": 1.5}
    fed, seen = fake_part({"mixed_float16": mixed}, stop_at="float32")
    monkeypatch.setattr(gpu, "fed", fed)
    # The small CNN's two steps per call (--steps 2: its count divides the timed epoch's steps), on the stage's feed.
    monkeypatch.setattr(gpu, "per_call", lambda recipe, precision, count, batches, feed, steps, epochs: 4.0)
    out = tmp_path / "gpu.json"
    seen["path"] = str(out)
    with pytest.raises(KeyboardInterrupt):
        gpu.main(["--tiny", "--steps", "2", "--experiments", "cats_and_dogs_filtered_cnn", "--json", str(out)])
    assert json.loads(out.read_text()) == seen["json"]
    assert not out.with_name(out.name + ".partial").exists()
    (row,) = seen["json"]["experiments"]
    assert row["feeder_alone"] == {"host": 5.0, "device": 300.0}
    assert row["images_per_second"] == {"mixed_float16": mixed}
    feed = gpu.stage_feed()  # device on JAX, host on TensorFlow
    assert row["steps_per_execution"] == {"mixed_float16": {"count": 2, "feed": feed, "one": mixed[feed], "many": 4.0}}
    assert row["projected_seconds"] == pytest.approx(row["training_images"] / 4.0)  # as the train stage runs it
    assert seen["json"]["precisions"] == ["mixed_float16", "float32"]
    tables = gpu.saved_tables([out])
    # mixed ceiling, host, device; then the stage's feed over the ceiling
    assert f"| 3 | 2 | 1.5 | {mixed[feed] / 3:.2f} ({feed}) |" in tables
    assert "| 32x32, 2 | 3 |" in tables and "| 5 | 300 | 10.0 |" in tables  # device / 10x consumed
    assert f"| cats_and_dogs_filtered_cnn | mixed_float16 | {feed} | 2 | {gpu.rate(mixed[feed])} | 4 " \
           f"| {4.0 / mixed[feed]:.2f} |" in tables


def test_k_processes_take_the_memory_share_the_train_stages_workers_take():
    from transferbench.core import devices

    assert gpu.SHARED_MEMORY == devices.SHARED_MEMORY
    assert [gpu.memory_fraction(k) for k in (1, 2, 4, 8)] == ["0.800", "0.400", "0.200", "0.100"]


def test_the_schedule_of_k_runs_at_once_follows_the_stages_workers():
    recipe = gpu.Recipe("cnn", 32, 32, gpu.Task("binary", 2), "flatten", "dense", 0, 0.0, "none", "sgd", 0.1, 10,
                        epochs=2, train_images=100, runs=6, tuning_runs=1.5, arms=2, factors=3)
    run = 100 * 2 / 10.0  # 20 s a run at 10 images/s; a trial a quarter of it (1.5 = 2 arms x 3 factors x 0.25)
    assert gpu.makespan(recipe, 1, 10.0) == pytest.approx(run * (6 + 1.5))  # alone: the work over the rate
    assert gpu.makespan(recipe, 6, 10.0) == pytest.approx(run * 0.25 + run)  # every trial, then every run, at once
    # Four at once: arm 0's three trials and one of arm 1's to 5 s; then arm 1's other two (first in the queue) to
    # 10 s beside two of arm 0's runs (to 25 s); arm 0's third run and arm 1's first from 10 s, its others from 25 s.
    assert gpu.makespan(recipe, 4, 10.0) == pytest.approx(25 + 20)
    untuned = gpu.replace(recipe, tuning_runs=0.0, factors=0)
    assert gpu.makespan(untuned, 4, 10.0) == pytest.approx(2 * run)  # six runs on four slots: two rounds


def test_the_study_table_takes_each_experiments_best_k():
    together = [{"experiment": "pets", "model": "xception", "batch_size": 16, "per_gpu": {
        "1": {"feed": "device", "per_process": [100.0], "images_per_second": 100.0, "projected_seconds": 7200.0},
        "2": {"feed": "host", "per_process": [90.0, 95.0], "images_per_second": 185.0, "projected_seconds": 4000.0}}}]
    rows = [{"experiment": "cifar10", "projected_seconds": 600.0}, {"experiment": "captcha"}]
    assert gpu.together_table(together).splitlines()[-1] \
        == "| pets | xception | 16 | 2 | host | 90, 95 | 185 | 1.85 | 1.1 h |"
    study = gpu.study_table(rows, together)
    assert "| pets | 2.0 h | 2 | 1.1 h |" in study and "| cifar10 | 10.0 min | 1 | 10.0 min |" in study
    assert study.splitlines()[-1] == "| all | 2.2 h (without captcha) | | 1.3 h (without captcha) |"


def test_rows_without_a_precision_print_n_a_there():
    row = {"experiment": "pets", "model": "xception", "height": 71, "width": 71, "batch_size": 2,
           "images_per_second": {"float32": {"ceiling": 1.0, "host": 2.0}}, "stage_feed": "host",
           "feeder_alone": {}, "training_images": 10}
    assert "| pets | xception | 71x71 | 2 | 1 | 2 | n/a | n/a | n/a | n/a | n/a | 10 | n/a |" in gpu.table([row])
    assert "| all | | | | | | | | | | | 10 | 0.0 min (without pets) |" in gpu.table([row])
    assert "| pets | 71x71, 2 | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |" in gpu.feeder_table([row])


@pytest.mark.slow
def test_a_tiny_run_on_cpu_prints_the_table_and_writes_the_json(tmp_path):
    out = tmp_path / "gpu.json"
    done = blocked_run("--tiny", "--steps", "2", "--epochs", "1", "--experiments", "cats_and_dogs_filtered_cnn",
                       "--together", "cats_and_dogs_filtered_cnn", "--per-gpu", "2", "--together-seconds", "0.5",
                       "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| experiment |"))
    row = next(line for line in lines if line.startswith("| cats_and_dogs_filtered_cnn |"))
    cells = dict(zip([c.strip() for c in header.split("|")[1:-1]], [c.strip() for c in row.split("|")[1:-1]],
                     strict=True))
    assert cells["model"] == "cnn" and cells["batch"] == str(gpu.TINY_BATCH) and cells["input (HxW)"] == "32x32"
    feeds = ("ceiling", "host", "device") if os.environ.get("KERAS_BACKEND") == "jax" else ("ceiling", "host")
    for column in (f"{precision} {feed}" for precision in ("float32", "mixed") for feed in feeds):
        assert float(cells[column].replace(",", "")) > 0, column
    assert "TINY CHECK" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["tiny"] is True
    (experiment,) = figures["experiments"]
    recipe = gpu.RECIPES["cats_and_dogs_filtered_cnn"]
    assert experiment["training_images"] == recipe.train_images * recipe.epochs * (recipe.runs + recipe.tuning_runs)
    # The small CNN: its stage feed one step per call, then two (--steps 2), which the projection takes.
    per_call = experiment["steps_per_execution"]["mixed_float16"]
    assert per_call["count"] == 2 and per_call["feed"] == experiment["stage_feed"]
    assert per_call["one"] == experiment["images_per_second"]["mixed_float16"][experiment["stage_feed"]]
    assert per_call["many"] > 0 and experiment["stage_rate"] == per_call["many"]
    assert experiment["projected_seconds"] == pytest.approx(experiment["training_images"] / per_call["many"])
    assert "| cats_and_dogs_filtered_cnn | 32x32, 2 |" in done.stdout  # the feeder-alone table
    alone = experiment["feeder_alone"]
    if os.environ.get("KERAS_BACKEND") == "jax":
        assert sorted(alone) == ["device", "device_own", "device_per_batch", "host"]
        assert all(value > 0 for value in alone.values())
    else:
        assert alone == {}  # Keras' TensorFlow iterator is another path
    # Two processes at once, each its share of the memory; the study's projection from them.
    (together,) = figures["together"]
    two = together["per_gpu"]["2"]
    assert two["memory_fraction"] == "0.400" and len(two["per_process"]) == 2 and all(v > 0 for v in two["per_process"])
    assert two["images_per_second"] == pytest.approx(sum(two["per_process"]))
    assert two["projected_seconds"] == pytest.approx(gpu.makespan(recipe, 2, two["images_per_second"] / 2))
    assert "| cats_and_dogs_filtered_cnn | cnn | 2 | 2 |" in done.stdout
    assert "| cats_and_dogs_filtered_cnn | mixed_float16 |" in done.stdout  # several steps per call, and one


@pytest.mark.slow  # TensorFlow starts in a child (6-8 s)
def test_saved_figures_print_as_the_tables_in_docs():
    """``--tables`` renders runs' JSON (the GPU figures of docs/benchmarks.md, from docs/gpu/) without measuring."""
    saved = sorted((ROOT / "docs" / "gpu").glob("*.json"))
    assert saved
    done = blocked_run("--tables", *map(str, saved))
    assert done.returncode == 0, done.stderr[-3000:]
    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    names = [json.loads(f.read_text())["experiments"][0]["experiment"] for f in saved]
    assert all(any(line.startswith(f"| {name} |") for line in rows) for name in names)
    assert [line for line in rows if line not in docs] == []  # docs show these figures, as printed
