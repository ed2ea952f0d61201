"""Stage `prepare@<dataset>`: decode a fetched photo dataset once into data/prepared/<dataset>, resumably.

    python -m stages.prepare <dataset>

Reads data/raw/<dataset>/ and params.yaml's `seed` and <dataset> sections; writes the prepared data and
reports/<dataset>/prepare.json. The work is transferbench.data.preparation's.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from transferbench import cli
from transferbench.core import paths
from transferbench.core.files import check_writable, write_json
from transferbench.core.inputs import shown
from transferbench.data.preparation import photo_spec, prepare, source_loader, summary_lines
from transferbench.study.params import load_params

log = logging.getLogger("stages.prepare")  # not __name__: that is __main__ under `python -m`


def prepare_dataset(args: argparse.Namespace) -> None:
    name = args.dataset
    spec = photo_spec(name)  # before loading params: a wrong name fails at once
    params = load_params(paths.PARAMS)
    values, seed = params.dataset(name), params.seed
    work_root = paths.tmp_dir("prepare")
    check_writable(paths.prepared(name), work_root, paths.REPORTS / name)
    try:
        report = prepare(name, values, seed, paths.RAW / name, paths.prepared(name), work_root,
                         loader=source_loader(spec), workers=values.workers)
    except KeyboardInterrupt:
        log.warning("decoded chunks are kept in %s; rerun to resume", shown(work_root))
        raise
    write_json(paths.REPORTS / name / "prepare.json", report)
    log.info("\n".join(summary_lines(report, Path(shown(paths.prepared(name))))))


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.StageParser("prepare", __doc__, "dataset", "a fetched photo dataset, e.g. cats_and_dogs_filtered")
    cli.run(parser, prepare_dataset, argv)


if __name__ == "__main__":
    main()
