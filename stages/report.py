"""Stage `report`: the project's answer, pretrained against random initialisation, per experiment.

    python -m stages.report

Reads every planned run's results under reports/runs/ and writes reports/README.md, summary.json, curves.csv
and figures/; the work is transferbench.reporting's (report.build, then mlflow_log.log_figures and
log_answers: the answer on each experiment's MLflow parent run).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from transferbench import cli
from transferbench.core import paths
from transferbench.core.files import check_writable
from transferbench.core.inputs import shown
from transferbench.reporting.mlflow_log import log_answers, log_figures
from transferbench.reporting.report import build, print_answer
from transferbench.study.params import load_params

log = logging.getLogger("stages.report")  # not __name__: that is __main__ under `python -m`


def report(args: argparse.Namespace) -> None:
    params = load_params()
    check_writable(paths.REPORTS)
    built = build(params, paths.REPORTS)
    for warning in log_figures(built) + log_answers(built, paths.REPORTS):
        log.warning("%s", warning)
    print_answer(built.typed.experiments)
    for item in built.typed.missing:
        log.warning("missing: %s %s (%s)", item.experiment, item.run, item.reason)
    log.info("wrote %s", shown(paths.REPORTS / "README.md"))


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(cli.StageParser("report", __doc__), report, argv)


if __name__ == "__main__":
    main()
