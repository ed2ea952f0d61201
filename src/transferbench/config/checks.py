"""Checkers for params values: each raises ConfigError naming the key, the bad value and what is accepted."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping


from transferbench.core.errors import ConfigError

from transferbench.core import paths


Checker = Callable[[str, Any], None]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
WEIGHT_CHOICES = ("imagenet", "none")


def integer(minimum: int | None = None, maximum: int | None = None) -> Checker:
    def check(where: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{where} must be >= {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{where} must be <= {maximum}, got {value!r}")

    return check


def number(low: float | None = None, high: float | None = None, *, open_low: bool = False,
           open_high: bool = False) -> Checker:
    def check(where: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if low is not None and (value <= low if open_low else value < low):
            raise ConfigError(f"{where} must be {'>' if open_low else '>='} {low}, got {value!r}")
        if high is not None and (value >= high if open_high else value > high):
            raise ConfigError(f"{where} must be {'<' if open_high else '<='} {high}, got {value!r}")

    return check


def choice(*choices: str) -> Checker:
    def check(where: str, value: Any) -> None:
        if value not in choices:
            raise ConfigError(f"{where} is {value!r}; accepted: {', '.join(choices)}")

    return check


def text(where: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}")


def section(schema: Mapping[str, Checker]) -> Checker:
    """A mapping with exactly the keys of ``schema``, each checked by its checker."""

    def check(where: str, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping with keys {', '.join(schema)}, got {value!r}")
        unknown = sorted(set(value) - set(schema))
        if unknown:
            raise ConfigError(f"unknown key {where}.{unknown[0]}; accepted: {', '.join(schema)}")
        missing = [k for k in schema if k not in value]
        if missing:
            raise ConfigError(f"missing key {where}.{missing[0]}")
        for key, checker in schema.items():
            checker(f"{where}.{key}", value[key])

    return check


def weights_source(value: Any, root: Path = paths.ROOT) -> str | Path:
    """``'imagenet'``, ``'none'`` or the path of an existing HDF5 weights file."""
    if value is None:  # YAML `weights: null` means the same as `none`
        return "none"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"weights is {value!r}; accepted: imagenet, none, or a path to a .h5 weights file")
    if value in WEIGHT_CHOICES:
        return value
    path = Path(value)
    if not path.is_absolute():
        path = root / path
    if not path.name.endswith(".h5"):
        raise ConfigError(
            f"weights is {value!r}; accepted: imagenet, none, or a path to a Keras weights file ending in .h5"
        )
    if not path.is_file():
        raise ConfigError(f"weights file {value!r} does not exist (looked at {path}); "
                          "accepted: imagenet, none, or a path to an existing .h5 weights file")
    with open(path, "rb") as f:
        if f.read(8) != HDF5_SIGNATURE:
            raise ConfigError(f"weights file {value!r} is not an HDF5 file (corrupt or another format); "
                              "save one with `model.save_weights('name.weights.h5')`")
    return path
