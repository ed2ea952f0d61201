"""What every stage's entry point shares: reading params and turning expected errors into one line."""

from __future__ import annotations

import sys
from typing import Any, Callable

from transferbench.core.errors import ConfigError
from transferbench.study.experiments import resolve
from transferbench.study.params import Params, load_params


def stage_main(stage: str, argv: list[str] | None, run: Callable[[Params, str], Any]) -> None:
    """``python -m stages.<stage> <experiment>``: check params and the name first, then ``run(params, name)``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit(f"usage: python -m stages.{stage} <experiment>")
    try:
        params = load_params()
        resolve(params, argv[0])
        run(params, argv[0])
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
