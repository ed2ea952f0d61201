"""Stage `train@<experiment>`: train every run of the experiment (arms x seeds) into models/<experiment>/runs/.

    python -m stages.train <experiment>

The work is transferbench.training.train's: in this process, or with more than one GPU slot (GPUs x
params' gpu_runs_per_device) in worker processes, one per slot (transferbench.training.workers).
"""

from __future__ import annotations

from collections.abc import Sequence

from transferbench.cli import load_keras, stage_main
from transferbench.core import paths
from transferbench.core.devices import slot_count
from transferbench.core.files import check_writable
from transferbench.core.inputs import read_json_input
from transferbench.data.datasets import prepared_by
from transferbench.study.params import Params
from transferbench.study.runs import check_batch_fits


def train(params: Params, name: str) -> None:
    check_writable(paths.experiment_model_dir(name), paths.tmp_dir("train", name))
    check_batch(params, name)
    slots = slot_count(params.distribution, params.gpu_runs_per_device)
    if slots > 1:
        # GPUs x gpu_runs_per_device runs and trials at once, each worker process claiming a GPU slot of its
        # own; this process only hands out the work and starts no backend (it would hold GPU memory).
        from transferbench.training.workers import run_in_workers

        run_in_workers(params, name, slots)
        return
    # One slot (no GPU; one GPU, one run at a time; the user's CUDA_VISIBLE_DEVICES; a run spread over every
    # GPU): the runs train here, one after another, on the device the backend picks; nothing to claim.
    # Keras takes seconds to import: imported once params and the name are known to be good.
    load_keras()
    from transferbench.training.train import run

    run(params, name)


def check_batch(params: Params, name: str) -> None:
    """The batch against the prepared training split's size, before Keras starts."""
    dataset = params.experiments[name].dataset
    meta = paths.prepared(dataset) / "meta.json"
    if meta.is_file():  # missing: training says which stage makes the prepared data
        check_batch_fits(params, name, int(read_json_input(meta, prepared_by(dataset))["splits"]["train"]))


def main(argv: Sequence[str] | None = None) -> None:
    stage_main("train", argv, train, __doc__)


if __name__ == "__main__":
    main()
