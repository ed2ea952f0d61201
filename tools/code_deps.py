"""Each DVC stage's code deps, from the project's import graph: ``--check`` that dvc.yaml lists them, ``--write`` them.

    python -m tools.code_deps --check   # exit 1 with a diff when dvc.yaml's code deps are stale (CI)
    python -m tools.code_deps --write   # rewrite them after moving or adding a module

The graph is read from the source with ``ast`` (nothing is imported or run). Every import counts,
also one inside a function: it runs when that function does. A dotted string that names a project
module or package (``importlib.import_module(f"transferbench.data.sources.{name}")``) counts as an
import of it, so a stage that picks its source by name depends on every source.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from tools import generated

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"transferbench": ROOT / "src" / "transferbench", "stages": ROOT / "stages"}


def module_file(module: str) -> Path | None:
    """The file of a project module (``pkg/mod.py`` or ``pkg/__init__.py``), None if not ours."""
    top, *rest = module.split(".")
    if top not in PACKAGES:
        return None
    base = PACKAGES[top].joinpath(*rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    for top, folder in PACKAGES.items():
        if path.is_relative_to(folder):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(f"{path} is not in the project's packages")


def _package_modules(package: str) -> list[str]:
    folder = module_file(package)
    if folder is None or folder.name != "__init__.py":
        return []
    return sorted(module_name(p) for p in folder.parent.rglob("*.py"))


def _resolve(name: str) -> list[str]:
    """The project modules a dotted name stands for: itself (and its parent packages)."""
    parts = name.split(".")
    found = []
    for end in range(1, len(parts) + 1):
        candidate = ".".join(parts[:end])
        if module_file(candidate) is not None:
            found.append(candidate)
    return found


@cache
def imports(module: str) -> frozenset[str]:
    """Project modules that ``module`` imports directly (package ``__init__`` files included)."""
    path = module_file(module)
    assert path is not None, module
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_resolve(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.update(_resolve(base))
            for alias in node.names:  # `from pkg import module`
                if module_file(f"{base}.{alias.name}") is not None:
                    found.add(f"{base}.{alias.name}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith(tuple(f"{top}." for top in PACKAGES)):
                found.update(_resolve(node.value.rstrip(".")))
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            if isinstance(head, ast.Constant) and str(head.value).startswith(tuple(f"{t}." for t in PACKAGES)):
                package_name = str(head.value).rstrip(".")
                found.update(_resolve(package_name))
                found.update(_package_modules(package_name))
    found.discard(module)
    return frozenset(found)


def closure(module: str) -> set[str]:
    """``module``, its packages and everything they import, transitively."""
    seen, todo = set(), _resolve(module)
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(imports(current))
    return seen


def all_modules() -> list[str]:
    return sorted(module_name(p) for folder in PACKAGES.values() for p in folder.rglob("*.py"))


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in imports(node):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in all_modules():
        if module not in index:
            visit(module)
    return found


# Files a module reads as part of its code (not data a stage processes): they belong in deps with it.
READS = {"transferbench.core.paths": ["src/transferbench/core/paths.yaml"]}


def module_paths(module: str) -> list[str]:
    """A module's file relative to the repository root (``src/transferbench/core/paths.py``) and the files it reads."""
    path = module_file(module)
    assert path is not None, module
    return [path.relative_to(ROOT).as_posix(), *READS.get(module, [])]


def stage_module(cmd: str) -> str:
    """``python -m stages.train ${key}`` -> ``stages.train``."""
    words = cmd.split()
    return words[words.index("-m") + 1]


def minimal_deps(module: str) -> list[str]:
    """The fewest paths that cover exactly ``module``'s closure: a folder where every module in it is
    imported, its files otherwise (what a stage's ``deps:`` should list for its code)."""
    files = {f for m in closure(module) for f in module_paths(m)}
    chosen: list[str] = []

    def cover(folder: Path) -> None:
        inside = sorted(p.relative_to(ROOT).as_posix() for p in folder.rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts)
        if inside and all(f in files for f in inside) and folder != PACKAGES["transferbench"]:
            chosen.append(folder.relative_to(ROOT).as_posix())
            return
        for path in sorted(folder.iterdir()):
            rel = path.relative_to(ROOT).as_posix()
            if path.is_dir() and path.name != "__pycache__":
                cover(path)
            elif rel in files:
                chosen.append(rel)

    for folder in PACKAGES.values():
        cover(folder)
    return chosen


def rewrite_code_deps(text: str, deps_of: dict[str, list[str]]) -> str:
    """dvc.yaml's text with each stage's code deps (lines ``- src/...``, ``- stages/...``) replaced by ``deps_of``."""
    lines, out, stage = text.splitlines(), [], ""
    in_deps = False
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if indent == 2 and stripped.endswith(":") and not stripped.startswith("-"):
            stage = stripped[:-1]
        if stripped == "deps:":
            in_deps = True
            out.append(line)
            out.extend(f"{' ' * (indent + 2)}- {d}" for d in deps_of[stage])
            continue
        if in_deps and stripped.startswith("- ") and stripped[2:].startswith(("src/", "stages/")):
            continue
        if in_deps and stripped and not stripped.startswith(("-", "#")):
            in_deps = False
        out.append(line)
    return "\n".join(out) + "\n"


def stage_deps(dvc_yaml: str) -> dict[str, list[str]]:
    """Every stage of ``dvc_yaml`` (the file's text) -> the code deps its command needs."""
    import yaml

    stages = yaml.safe_load(dvc_yaml)["stages"]
    return {name: minimal_deps(stage_module(stage.get("do", stage)["cmd"])) for name, stage in stages.items()}


def main(argv: Sequence[str] | None = None) -> int:
    return generated.main(argv, tool="tools.code_deps", doc=__doc__, default=ROOT / "dvc.yaml", what="code deps",
                          source="what the stages import",
                          wanted=lambda current: rewrite_code_deps(current, stage_deps(current)))


if __name__ == "__main__":
    sys.exit(main())
