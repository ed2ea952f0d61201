"""The report's modules import one way: read -> summary -> render -> report -> log; each module may import
only the modules before it in LAYERS (and the leaves), so a renderer cannot start computing or reading."""

from __future__ import annotations

import ast
from pathlib import Path

import transferbench.reporting

PACKAGE = "transferbench.reporting"
LAYERS = [
    # leaves: vocabulary, statistics and the reference studies' figures, importing no other report module
    "settings", "stability", "reference_studies", "stats", "verdict",
    "budget", "read",  # what params give each arm; files -> Run, ExperimentRuns
    "summary", "summarise",  # the typed summary, and computing it
    "formatting", "answer", "data_size", "figures", "readme",  # render
    "report",  # build: read, summarise, render, write the files
    "mlflow_log",  # last: logs what report built
]
ROOT = Path(transferbench.reporting.__file__).parent


def report_imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(f"{PACKAGE}."):
                found.add(node.module.removeprefix(f"{PACKAGE}."))
            elif node.module == PACKAGE:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix(f"{PACKAGE}.") for a in node.names if a.name.startswith(f"{PACKAGE}."))
    return found


def test_every_report_module_is_placed():
    assert sorted(p.stem for p in ROOT.glob("*.py") if p.stem != "__init__") == sorted(LAYERS)


def test_report_modules_import_only_earlier_ones():
    upward = {module: sorted(i for i in report_imports(module) if LAYERS.index(i) >= LAYERS.index(module))
              for module in LAYERS}
    assert {m: found for m, found in upward.items() if found} == {}
