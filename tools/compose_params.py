"""Write params.yaml from conf/ as DVC's Hydra composition does on `dvc exp run -S`, with no overrides.

    python -m tools.compose_params           # after editing conf/: rewrite params.yaml
    python -m tools.compose_params --check   # exit 1 if params.yaml is not what conf/ composes to

`dvc repro` reads params.yaml; every `dvc exp run -S` rewrites it from conf/ and the overrides. The two
must agree, or the first `-S` would change more than it names (tests/unit/test_params_profiles.py).
DVC's own composing function writes it, so the bytes are the ones DVC writes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from dvc.utils.hydra import compose_and_dump

ROOT = Path(__file__).resolve().parents[1]


def composed(*overrides: str, conf: Path = ROOT / "conf") -> str:
    """params.yaml as `dvc exp run -S <overrides>` writes it."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "params.yaml"
        compose_and_dump(out, str(conf), None, "config", folder, list(overrides))
        return out.read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if params.yaml is stale")
    args = parser.parse_args(argv)
    target = ROOT / "params.yaml"
    text = composed()
    if target.read_text(encoding="utf-8") == text:
        return 0
    if args.check:
        print("params.yaml is not what conf/ composes to: run `python -m tools.compose_params`", file=sys.stderr)
        return 1
    target.write_text(text, encoding="utf-8")
    print("params.yaml written from conf/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
