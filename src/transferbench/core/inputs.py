"""Reading what an earlier stage wrote: a missing or damaged file is a one-line error naming it and the stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from transferbench.core import paths
from transferbench.core.errors import BadInput, MissingInput


def shown(path: Path | str) -> str:
    """``path`` relative to the repository when it is inside it (shorter in messages), else as given."""
    path = Path(path)
    resolved = path.resolve()
    return str(resolved.relative_to(paths.ROOT)) if resolved.is_relative_to(paths.ROOT) else str(path)


def missing(path: Path | str, stage: str) -> MissingInput:
    return MissingInput(f"{shown(path)} is missing; run `dvc repro {stage}`")


def load_array(path: Path | str, stage: str) -> np.ndarray:
    """The .npy file at ``path``, memory-mapped read-only; ``stage`` is the DVC stage that writes it."""
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise missing(path, stage) from None
    # A truncated file fails to map ("mmap length is greater than file size"), a damaged header to parse.
    except (ValueError, EOFError) as err:
        raise BadInput(f"{shown(path)} is truncated or corrupt ({err}); run `dvc repro {stage}`") from None


def read_json_input(path: Path | str, stage: str) -> Any:
    """The JSON file at ``path``; ``stage`` is the DVC stage that writes it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise missing(path, stage) from None
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError both are
        raise BadInput(f"{shown(path)} is not valid JSON ({err}); run `dvc repro {stage}`") from None
