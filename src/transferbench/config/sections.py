"""The base of every params section model, and how a failed validation becomes one line.

Every section is a pydantic model that refuses unknown keys, converts nothing (``"1"`` is not 1,
``true`` is not a number), takes finite numbers only (YAML's ``.inf`` and ``.nan`` are no rate or
share) and is frozen once read. A ``ValidationError`` becomes one ConfigError
naming the dotted key (``experiments.pets.batch_size``), the bad value and what is accepted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from transferbench.core.errors import ConfigError, quoted, shortened

S = TypeVar("S", bound="Section")


class Section(BaseModel):
    """A params section: exactly its keys, each of its type, no conversion, no infinity or NaN."""

    # allow_inf_nan here rather than on each field: a float field added later is covered too.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @classmethod
    def accepted_keys(cls) -> list[str]:
        return list(cls.model_fields)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # Checked before the values, so a typo names the keys it could have meant rather than
        # reporting the intended key as missing.
        if isinstance(data, Mapping):
            accepted = cls.accepted_keys()
            unknown = [key for key in data if key not in accepted]
            if unknown:
                raise problem(f"unknown key {{where}}; accepted: {', '.join(accepted)}", key=str(unknown[0]))
        return data


def problem(text: str, key: str | None = None) -> PydanticCustomError:
    """A validation error whose message is ``text``, ``{where}`` standing for the dotted key (+ ``key``)."""
    return PydanticCustomError("config", "{text}", {"text": text, "key": key})


def parse(model: type[S], values: Any, where: str = "", context: Mapping[str, Any] | None = None) -> S:
    """``values`` (a mapping, or already a ``model``) as a ``model``; ConfigError naming what is wrong."""
    if isinstance(values, model):
        return values
    try:
        return model.model_validate(values, context=dict(context or {}))
    except ValidationError as err:
        raise ConfigError(message(err.errors()[0], values, where)) from None


def message(error: ErrorDetails, values: Any, where: str = "") -> str:
    """One line for one pydantic error: the dotted key, the bad value and what is accepted."""
    keys = _keys(error["loc"], values)
    ctx = error.get("ctx") or {}
    if error["type"] == "config" and ctx.get("key") is not None:
        keys.append(_key_text(str(ctx["key"])))
    at = ".".join(filter(None, [where, *keys])) or "params"
    value, kind = error["input"], error["type"]
    if kind == "config":
        return str(ctx["text"]).replace("{where}", at)
    if kind == "missing":
        return f"missing key {at}"
    if kind == "extra_forbidden":
        return f"unknown key {at}"
    if kind in ("literal_error", "enum"):
        return f"{at} is {quoted(value)}; accepted: {_listed(ctx['expected'])}"
    if kind == "union_tag_invalid":
        tag, accepted = quoted(ctx["tag"]), _listed(ctx["expected_tags"])
        return f"{at}.{_listed(ctx['discriminator'])} is {tag}; accepted: {accepted}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        limit = int(limit) if isinstance(limit, float) and limit.is_integer() else limit  # `< 1`, not `< 1.0`
        return f"{at} must be {bounds[kind]} {limit}, got {quoted(value)}"
    if kind == "finite_number":
        return f"{at} must be a finite number, got {quoted(value)}"
    wanted = {"int_type": "an integer", "float_type": "a number", "string_type": "a string",
              "bool_type": "true or false", "list_type": "a list", "dict_type": "a mapping",
              "model_type": "a mapping", "model_attributes_type": "a mapping"}
    if kind in wanted:
        return f"{at} must be {wanted[kind]}, got {quoted(value)}"
    if kind == "string_too_short":
        return f"{at} must be a non-empty string, got {quoted(value)}"
    if kind == "too_short":
        return f"{at} must have at least {ctx.get('min_length', 1)} entries, got {quoted(value)}"
    return f"{at} is {quoted(value)}: {error['msg']}"


def _keys(loc: tuple[int | str, ...], values: Any) -> list[str]:
    """The params keys along ``loc``, without the tags pydantic adds for discriminated unions.

    A tag (``partial``, ``step``) is a step in ``loc`` that is not a key of the value reached so far.
    """
    keys, current = [], values
    for step in loc:
        if isinstance(current, Mapping) and step in current:
            current = current[step]
            keys.append(str(step))
        elif isinstance(current, list) and isinstance(step, int) and 0 <= step < len(current):
            current = current[step]
            keys[-1:] = [f"{keys[-1]}[{step}]" if keys else f"[{step}]"]
        elif isinstance(current, Mapping) and isinstance(step, str) and step in _tags(current):
            continue
        else:
            keys.append(str(step))
            current = None
    return keys


def _key_text(key: str) -> str:
    """A key as written, or quoted where it would not read as one key on one line (a newline, a dot, spaces)."""
    plain = key and key.isprintable() and key.strip() == key and "." not in key
    return shortened(key) if plain else quoted(key)


def _tags(value: Mapping) -> set[str]:
    return {v for v in value.values() if isinstance(v, str)}


def _listed(expected: str) -> str:
    """Pydantic's ``'a', 'b' or 'c'`` as ``a, b, c``."""
    found = re.findall(r"'([^']*)'", expected)
    return ", ".join(found) if found else expected


def integer(where: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """A function argument that must be an integer in range (params keys are checked by their models)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer, got {quoted(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(f"{where} must be {bound}, got {quoted(value)}")
    return value
