"""Stage `fetch@<dataset>`: download a photo dataset from its real source into data/raw/<dataset>/.

    python -m stages.fetch <dataset>

Writes what the source reports to reports/<dataset>/fetch.json; the work is transferbench.data.fetching's.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence

from transferbench import cli
from transferbench.core import paths
from transferbench.core.files import check_writable, write_json
from transferbench.core.inputs import shown
from transferbench.data.fetching import fetch, fetched_datasets, source_module
from transferbench.study.params import load_params

log = logging.getLogger("stages.fetch")  # not __name__: that is __main__ under `python -m`


def fetch_dataset(args: argparse.Namespace) -> None:
    source_module(args.dataset)  # a dataset without a source fails before params are read
    params = load_params()
    values = params.dataset(args.dataset)
    raw_dir = paths.RAW / args.dataset
    check_writable(raw_dir, paths.REPORTS / args.dataset)
    started = time.perf_counter()
    report = fetch(args.dataset, values, raw_dir, params.seed, params.extraction)
    write_json(paths.REPORTS / args.dataset / "fetch.json", report)
    log.info("%s: done in %.1f s -> %s", args.dataset, time.perf_counter() - started, shown(raw_dir))


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.StageParser("fetch", __doc__, "dataset", f"one of: {', '.join(fetched_datasets())}")
    cli.run(parser, fetch_dataset, argv)


if __name__ == "__main__":
    main()
