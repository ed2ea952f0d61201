"""Stage `train@<experiment>`: see transferbench.training.train."""

from __future__ import annotations

from transferbench.cli import stage_main
from transferbench.training.train import run


def main(argv: list[str] | None = None) -> None:
    stage_main("train", argv, run)


if __name__ == "__main__":
    main()
