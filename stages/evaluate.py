"""Stage `evaluate@<experiment>`: test-split metrics of every run into reports/runs/<experiment>/.

    python -m stages.evaluate <experiment>

Also writes reports/<experiment>/metrics.json (per arm, for `dvc exp show`); the work is
transferbench.training.evaluation's.
"""

from __future__ import annotations

from collections.abc import Sequence

from transferbench.cli import load_keras, stage_main
from transferbench.core import paths
from transferbench.core.devices import claim_gpu
from transferbench.core.files import check_writable
from transferbench.study.params import Params


def evaluate(params: Params, name: str) -> None:
    check_writable(paths.REPORTS / "runs" / name, paths.experiment_report_dir(name))
    # A GPU slot of its own in a queue worker, as the train stage's workers (transferbench.core.devices).
    claim_gpu(params.distribution, per_gpu=params.gpu_runs_per_device)
    # Keras takes seconds to import: imported once params and the name are known to be good.
    load_keras()
    from transferbench.training.evaluation import run

    run(params, name)


def main(argv: Sequence[str] | None = None) -> None:
    stage_main("evaluate", argv, evaluate, __doc__)


if __name__ == "__main__":
    main()
