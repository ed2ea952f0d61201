"""Stage `evaluate@<experiment>`: see transferbench.training.evaluation."""

from __future__ import annotations

from transferbench.cli import stage_main
from transferbench.training.evaluation import run


def main(argv: list[str] | None = None) -> None:
    stage_main("evaluate", argv, run)


if __name__ == "__main__":
    main()
