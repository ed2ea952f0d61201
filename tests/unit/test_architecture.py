"""The package's shape: imports run one way, and every stage's deps in dvc.yaml cover exactly the code it runs."""

from __future__ import annotations

import pytest
import yaml

from tools import code_deps as graph

# Each layer may import itself and the layers listed (docs/architecture.md draws them).
LAYERS = {
    "core": set(),
    "config": {"core"},
    "data": {"core", "config"},
    "models": {"core", "config", "data"},
    "study": {"core", "config", "data", "models"},
    "tracking": {"core", "config", "data", "models", "study"},
    "plots": {"core"},
    "training": {"core", "config", "data", "models", "study", "tracking", "plots"},
    "reporting": {"core", "config", "data", "models", "study", "tracking", "plots"},
}


def layer(module: str) -> str | None:
    """``transferbench.data.sources.http`` -> ``data``; None for the package itself, cli and stages."""
    parts = module.split(".")
    return parts[1] if parts[0] == "transferbench" and len(parts) > 1 and parts[1] in LAYERS else None


def test_there_is_no_import_cycle():
    assert graph.cycles() == []


def test_imports_run_one_way_between_layers():
    wrong = []
    for module in graph.all_modules():
        own = layer(module)
        if own is None:
            continue
        for imported in graph.imports(module):
            other = layer(imported)
            if imported.startswith("stages") or imported == "transferbench.cli":
                wrong.append(f"{module} -> {imported}")
            elif other is not None and other != own and other not in LAYERS[own]:
                wrong.append(f"{module} ({own}) -> {imported} ({other})")
    assert wrong == []


def test_every_layer_has_a_known_place():
    """A new subpackage must be placed in LAYERS (and docs/architecture.md), not slip past the check above."""
    folders = {p.name for p in graph.PACKAGES["transferbench"].iterdir() if p.is_dir() and p.name != "__pycache__"}
    modules = {p.stem for p in graph.PACKAGES["transferbench"].glob("*.py")} - {"__init__", "cli"}
    assert folders | modules == set(LAYERS)


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((graph.ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def _code_deps(stage: dict) -> list[str]:
    return [d for d in stage["deps"] if d.startswith(("src/", "stages/"))]


def test_each_stage_depends_on_every_file_its_code_imports():
    missing = {}
    for name, stage in _stages().items():
        deps = _code_deps(stage)
        needed = {f for m in graph.closure(graph.stage_module(stage["cmd"])) for f in graph.module_paths(m)}
        uncovered = sorted(f for f in needed if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))
        if uncovered:
            missing[name] = uncovered
    assert missing == {}, "run `python -m tools.code_deps --write` to rewrite dvc.yaml's code deps"


def test_each_stage_depends_on_no_code_it_does_not_run():
    """Extra deps would rerun a stage for edits that cannot change its results."""
    extra = {}
    for name, stage in _stages().items():
        needed = {f for m in graph.closure(graph.stage_module(stage["cmd"])) for f in graph.module_paths(m)}
        for dep in _code_deps(stage):
            path = graph.ROOT / dep
            files = [path] if path.is_file() else [p for p in path.rglob("*")
                                                   if p.is_file() and "__pycache__" not in p.parts]
            unused = sorted(p.relative_to(graph.ROOT).as_posix() for p in files
                            if p.relative_to(graph.ROOT).as_posix() not in needed)
            if not files or unused:
                extra.setdefault(name, []).extend(unused or [dep])
    assert extra == {}, "run `python -m tools.code_deps --write` to rewrite dvc.yaml's code deps"


def _stages_depending_on(path: str) -> set[str]:
    return {name for name, stage in _stages().items()
            if any(path == d or path.startswith(d.rstrip("/") + "/") for d in _code_deps(stage))}


def test_only_the_stages_that_build_a_model_depend_on_model_code():
    """Data stages check model and head names against models.catalog alone, so editing a backbone or a
    head reruns no download, preparation, validation or CAPTCHA generation (nor the report)."""
    assert {m for m in graph.closure("transferbench.study.params") if m.startswith("transferbench.models")} == {
        "transferbench.models", "transferbench.models.catalog"}
    assert _stages_depending_on("src/transferbench/models/backbones.py") == {"weights", "train", "evaluate"}
    assert _stages_depending_on("src/transferbench/models/heads.py") == {"train", "evaluate"}
    assert _stages_depending_on("src/transferbench/models/catalog.py") == set(_stages())  # every stage checks params


def test_the_graph_sees_imports_inside_functions_and_by_name():
    """The checks above are only as good as the graph: a lazy import and a module picked by name count."""
    fetch = graph.closure("stages.fetch")
    assert "transferbench.data.sources.kaggle_dogs_vs_cats" in fetch  # imported by name from the registry entry
    assert "transferbench.data.sources" in fetch
    assert graph.closure("stages.train") >= {"transferbench.training.fit", "transferbench.models.strategies"}


def test_code_deps_check_shows_a_stale_dep_and_write_restores_it(tmp_path, capsys):
    current = (graph.ROOT / "dvc.yaml").read_text()
    stale = tmp_path / "dvc.yaml"
    stale.write_text(current.replace("        - src/transferbench/models/catalog.py\n", "", 1))

    assert graph.main(["--check", "--file", str(stale)]) == 1
    err = capsys.readouterr().err
    assert "+        - src/transferbench/models/catalog.py" in err and "--write" in err
    assert graph.main(["--write", "--file", str(stale)]) == 0
    assert stale.read_text() == current
    assert graph.main(["--check", "--file", str(stale)]) == 0


def test_code_deps_help_and_no_action_write_nothing(tmp_path):
    stale = tmp_path / "dvc.yaml"
    stale.write_text("stages: {}  # untouched\n")
    for argv in (["--help"], [], ["--file", str(stale)]):
        with pytest.raises(SystemExit):
            graph.main(argv)
    assert stale.read_text() == "stages: {}  # untouched\n"
