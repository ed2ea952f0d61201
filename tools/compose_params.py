"""Write params.yaml from conf/ as DVC's Hydra composition does on `dvc exp run -S`, with no overrides.

    python -m tools.compose_params --write   # after editing conf/: rewrite params.yaml
    python -m tools.compose_params --check   # exit 1 with a diff if params.yaml is not what conf/ composes to

`dvc repro` reads params.yaml; every `dvc exp run -S` rewrites it from conf/ and the overrides. The two
must agree, or the first `-S` would change more than it names (tests/unit/test_params_profiles.py).
DVC's own composing function writes it, so the bytes are the ones DVC writes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from dvc.utils.hydra import compose_and_dump

from tools import generated

ROOT = Path(__file__).resolve().parents[1]


def composed(*overrides: str, conf: Path = ROOT / "conf") -> str:
    """params.yaml as `dvc exp run -S <overrides>` writes it."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "params.yaml"
        compose_and_dump(out, str(conf), None, "config", folder, list(overrides))
        return out.read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    return generated.main(argv, tool="tools.compose_params", doc=__doc__ or "", default=ROOT / "params.yaml",
                          what="params", source="conf/ composed", wanted=lambda current: composed())


if __name__ == "__main__":
    sys.exit(main())
