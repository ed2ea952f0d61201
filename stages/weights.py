"""Stage `weights@<experiment>`: each arm's initial weights into models/<experiment>/init/<arm>/."""

from __future__ import annotations

from transferbench.cli import stage_main
from transferbench.core.errors import ConfigError
from transferbench.models.pretrained import prepare_init
from transferbench.study.runs import arm_experiments, init_dir


def prepare_arms(params: dict, name: str) -> None:
    """The initial weights of every arm of experiment ``name``, each in its own folder."""
    # Initial weights do not depend on the training seed: one per arm.
    for experiment in arm_experiments(params, name):
        try:
            record = prepare_init(experiment, init_dir(experiment))
        except ConfigError as err:
            raise SystemExit(f"error: {err}") from None
        print(f"{name}: initial weights {record['weights']} -> {init_dir(experiment)}")


def main(argv: list[str] | None = None) -> None:
    stage_main("weights", argv, prepare_arms)


if __name__ == "__main__":
    main()
