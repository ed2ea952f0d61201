"""Stage `validate@<dataset>`: check a prepared dataset with great-expectations before anything trains on it.

    python -m stages.validate <dataset> [--prepared DIR --report DIR --values FILE]

Writes reports/<dataset>/validation/ and exits 1 when an expectation fails; the work is
transferbench.data.validation's.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import yaml

from transferbench import cli
from transferbench.core import paths
from transferbench.core.errors import ConfigError, MissingInput
from transferbench.core.files import check_writable
from transferbench.data.datasets import DATASETS, DatasetParams
from transferbench.study.params import load_params


def read_values(dataset: str, values_file: Path | None) -> DatasetParams:
    """The dataset's params: from ``values_file`` (a YAML file holding just that section) or params.yaml."""
    if values_file:
        if not values_file.is_file():
            raise MissingInput(f"--values {values_file}: no such file; give a YAML file with the dataset's params")
        try:
            values = yaml.safe_load(values_file.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"--values {values_file}: not YAML ({err})") from None
        return DATASETS.get(dataset).section(values, dataset)
    return load_params().dataset(dataset)


def validate_dataset(args: argparse.Namespace) -> None:
    values = read_values(args.dataset, args.values)
    report_dir = args.report or paths.validation_dir(args.dataset)
    check_writable(report_dir)
    # great-expectations takes seconds to import (here and in the error above): bad params and usage
    # errors do not wait for it.
    from transferbench.data.validation import finish, validate

    summary = validate(args.dataset, args.prepared or paths.prepared(args.dataset), values, report_dir)
    finish(summary, report_dir)


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.StageParser("validate", __doc__, "dataset", "a dataset section of params.yaml, e.g. captcha")
    # For data outside the pipeline (CI validates the tests' fixture data with these): a prepared
    # folder, where to write the report, and a YAML file holding the dataset's params section.
    parser.add_argument("--prepared", type=Path, help="prepared data folder (default: the pipeline's)")
    parser.add_argument("--report", type=Path, help="report folder (default: the pipeline's)")
    parser.add_argument("--values", type=Path, help="YAML file with the dataset's params (default: params.yaml)")
    cli.run(parser, validate_dataset, argv)


if __name__ == "__main__":
    main()
