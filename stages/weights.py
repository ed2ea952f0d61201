"""Stage `weights@<experiment>`: each arm's initial weights into models/<experiment>/init/<arm>/.

    python -m stages.weights <experiment>
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from transferbench.cli import load_keras, stage_main
from transferbench.config.weights import RANDOM
from transferbench.core import paths
from transferbench.core.files import check_writable
from transferbench.core.inputs import shown
from transferbench.models.pretrained import prepare_init
from transferbench.study.params import Params
from transferbench.study.runs import arm_experiments, init_dir

log = logging.getLogger("stages.weights")  # not __name__: that is __main__ under `python -m`


def prepare_arms(params: Params, name: str) -> None:
    """The initial weights of every arm of experiment ``name``, each in its own folder."""
    check_writable(paths.init_dir(name))
    experiments = arm_experiments(params, name)
    if any(e.arm.source != RANDOM for e in experiments):
        # ImageNet weights and weights files go through Keras: started without CUDA probing lines on a CPU.
        load_keras()
    # Initial weights depend neither on the training seed nor on the setting: one per source, so a
    # `-fixed` arm starts from its source's file (no second download or copy).
    done = set()
    for experiment in experiments:
        if init_dir(experiment) in done:
            continue
        done.add(init_dir(experiment))
        record = prepare_init(experiment, init_dir(experiment))
        log.info("%s: initial weights %s -> %s", name, record["weights"], shown(init_dir(experiment)))


def main(argv: Sequence[str] | None = None) -> None:
    stage_main("weights", argv, prepare_arms, __doc__)


if __name__ == "__main__":
    main()
