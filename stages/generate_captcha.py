"""Stage `generate_captcha`: render the seeded CAPTCHA dataset into data/prepared/captcha, resumably.

    python -m stages.generate_captcha

Reads params.yaml's `seed` and `captcha` sections; the work is transferbench.data.generation's.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from transferbench import cli
from transferbench.core import paths
from transferbench.core.files import check_writable
from transferbench.core.parallel import cpu_count
from transferbench.data.generation import DATASET, fingerprint, generate, kept_work, remove_other_work_dirs
from transferbench.study.params import load_params

log = logging.getLogger("stages.generate_captcha")  # not __name__: that is __main__ under `python -m`


def generate_captcha(args: argparse.Namespace) -> None:
    params = load_params()
    values, seed = params.dataset(DATASET), params.seed
    key = fingerprint(values, seed)
    work_root = paths.tmp_dir("generate_captcha")
    check_writable(paths.prepared(DATASET), work_root)
    remove_other_work_dirs(work_root, keep=key)
    try:
        generate(paths.prepared(DATASET), work_root / key, values, seed, values.workers or cpu_count())
    except KeyboardInterrupt:
        log.warning("finished chunks are kept in %s; rerun with the same params to resume (a run with other "
                    "params deletes them)", kept_work(work_root / key))
        raise


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(cli.StageParser("generate_captcha", __doc__), generate_captcha, argv)


if __name__ == "__main__":
    main()
