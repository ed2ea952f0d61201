"""Stage `report`: the project's answer, pretrained against random initialisation, per experiment.

Reads every run that params.yaml plans (transferbench.study.runs: arms x shares x seeds) from
reports/runs/<experiment>/<run>/ (history.csv, metrics.json, confusion.csv, predictions.npz) and writes:

- reports/README.md: the page to read first: the answer (per experiment and pretrained setting against
  random initialisation: the difference with its interval over seeds and test images, then the verdict,
  Holm-adjusted over the report: transferbench.reporting.verdict), what each arm was given
  (reporting.budget), tables per experiment and overall, the answer across data sizes (reporting.data_size),
  time to accuracy, per-class accuracy, the reference studies' figures beside ours, missing runs, figures;
- reports/summary.json: the same numbers as data (sorted keys, no timestamps);
- reports/curves.csv: every run's curves (main share) in long format, for `dvc plots` (template
  .dvc/plots/pretrained_vs_random.json: pretrained and random as separate lines);
- reports/data_size.csv: each arm's verdict metric per share of the training split (x train_images, y mean);
- reports/figures/<experiment>-curves.png (and -confusion.png for single-output tasks, -data-size.png with
  several shares): one folder, so dvc.yaml names it once whatever the experiments are.

The main tables use the runs at the largest planned share. Then the stage logs each experiment's figures to
its runs in MLflow (reporting.mlflow_log).

One concern per module, imported one way: read (files -> runs) -> summary (numbers; statistics from stats and
verdict) -> figures and readme (render) -> report (this module: writes the files) -> mlflow_log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from transferbench.core.files import write_json, write_text
from transferbench.reporting import data_size
from transferbench.reporting.answer import answer_table
from transferbench.reporting.figures import curves_frame, draw
from transferbench.reporting.read import ExperimentRuns, collect
from transferbench.reporting.readme import readme
from transferbench.reporting.stability import epochs_to_stability  # noqa: F401 - README.md names it here
from transferbench.reporting.summarise import definitions, overall_rows, summarise
from transferbench.reporting.summary import ExperimentSummary, MissingRun, Summary, rounded, to_json
from transferbench.reporting.verdict import apply_holm
from transferbench.study.params import Params


@dataclass
class Report:
    """What build wrote: the runs read, the summary (rounded as written) and each experiment's figures."""

    experiments: list[ExperimentRuns]
    typed: Summary
    figures: dict[str, dict[str, Path]]  # experiment -> {label: png}

    @property
    def summary(self) -> dict:
        """summary.json's content."""
        return to_json(self.typed)


def build(params: Params, reports_root: Path) -> Report:
    """Read the runs under ``reports_root`` and write README.md, summary.json, curves.csv, data_size.csv and
    the PNGs there."""
    experiments = collect(params, reports_root)
    summaries = {experiment.name: summarise(experiment) for experiment in experiments}
    family = apply_holm(c for s in summaries.values() for c in s.comparisons.values())
    sizes = data_size.frame(summaries)
    figures = {experiment.name: draw(experiment, summaries[experiment.name], sizes, reports_root)
               for experiment in experiments}
    links = {name: {label: path.relative_to(reports_root).as_posix() for label, path in figs.items()}
             for name, figs in figures.items()}
    summary = rounded(Summary(
        definitions=definitions(params, family), overall=overall_rows(summaries), experiments=summaries,
        missing=[MissingRun(name, m.run, m.reason) for name, s in summaries.items() for m in s.missing],
        figures=links))
    write_json(reports_root / "summary.json", to_json(summary))
    write_text(reports_root / "README.md", readme(summary))
    write_text(reports_root / "curves.csv", curves_csv(experiments))
    write_text(reports_root / "data_size.csv", data_size.to_csv(sizes))
    return Report(experiments, summary, figures)


def curves_csv(experiments: list[ExperimentRuns]) -> str:
    curves = [curves_frame(experiment) for experiment in experiments]
    # Empty frames (experiments without runs) would turn the number columns into objects.
    table = pd.concat([c for c in curves if not c.empty] or curves[:1], ignore_index=True)
    return table.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def print_answer(summaries: Mapping[str, ExperimentSummary]) -> None:
    """The report's first table on stdout: it is the stage's output, not a log message."""
    print("\n".join(answer_table(summaries)))
