"""docs/params.md from the typed params model: every key, what it accepts, its value in params.yaml, what it is for.

    python -m tools.params_doc --check   # exit 1 with a diff when docs/params.md is stale (CI)
    python -m tools.params_doc --write   # rewrite it after changing a param's model or params.yaml

The keys, types, bounds, defaults and descriptions come from ``transferbench.study.params.Params`` and
its sections; the values from params.yaml, read as the stages read it (``read_params_file``). A
discriminated union (an experiment's ``strategy``, a schedule's ``kind``) is one row per key where
every variant agrees, and one row per variant where they differ.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import annotated_types as at
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tools import generated
from transferbench.config import weights
from transferbench.core import paths
from transferbench.data.datasets import DatasetParams
from transferbench.study.params import Params, read_params_file

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "params.md"
NAME = "<name>"  # stands for an experiment's name in a dotted key
# Types whose accepted values their validator, not their annotation, knows.
SPECIAL = {weights.Arm: weights.ACCEPTED}

HEADER = """\
# Params

Every key of `params.yaml`, from the typed model that checks it (`transferbench.study.params.Params`, its
sections in `transferbench.config` and `transferbench.data.datasets`). Written by
`python -m tools.params_doc --write`: edit the models' descriptions, not this file
(`tests/unit/test_params_doc.py` fails when it is stale).

`dvc exp run -S key=value` changes any key for one experiment; every stage refuses an unknown key or a bad
value in one line before it starts work. Numbers are finite (no `.inf` or `.nan`) and nothing is converted
(`"1"` is no number, `true` no integer). *params.yaml* is the value the file sets; a key it leaves out
takes the default its *accepted* cell names. Under `experiments.<name>`, each value is followed by the
experiments that set it.
"""

TABLES = (
    ("Study", "initial weights, seeds, arms, devices, tuning, downloads"),
    ("Datasets", "one optional section per registered dataset: how it is made"),
    ("Experiments", "one model trained on one dataset each"),
)


@dataclass
class Row:
    """One key: where it is, what it accepts, what it is for, and what params.yaml sets it to, by experiment."""

    key: str
    accepted: str
    description: str
    values: dict[str, Any] = field(default_factory=dict)  # experiment name ('' above experiments) -> value
    tags: list[str] = field(default_factory=list)  # the union variants it belongs to, where they differ
    tag_key: str = ""  # the key that tells those variants apart (strategy, kind)


def _flow(value: Any) -> str:
    """A value as YAML in one line, as params.yaml writes it (``[imagenet, none]``, ``1.0e-06``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**20, sort_keys=False, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _constraints(metadata: Sequence[Any]) -> list[Any]:
    """annotated_types constraints, out of the FieldInfos that Annotated[..., Field(...)] nests them in."""
    found: list[Any] = []
    for item in metadata:
        found += _constraints(item.metadata) if isinstance(item, FieldInfo) else [item]
    return found


def _bounds(constraints: Sequence[Any]) -> str:
    signs = {at.Ge: (">=", "ge"), at.Gt: (">", "gt"), at.Le: ("<=", "le"), at.Lt: ("<", "lt")}
    parts = []
    for item in constraints:
        for kind, (sign, attr) in signs.items():
            if isinstance(item, kind):
                limit = getattr(item, attr)
                parts.append(f"{sign} {int(limit) if isinstance(limit, float) and limit.is_integer() else limit}")
    return ", ".join(parts)


def _min_length(constraints: Sequence[Any]) -> int:
    return max([item.min_length for item in constraints if isinstance(item, at.MinLen)], default=0)


def accepted(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    """What a type accepts, in words: ``integer >= 1``, ``max, avg, flatten``, ``list of number > 0, <= 1``."""
    constraints = _constraints(metadata)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return accepted(args[0], [*metadata, *args[1:]])
    special = [text for kind, text in SPECIAL.items() if kind in _types(annotation)]
    if special:
        return special[0]
    if origin is typing.Literal:
        return ", ".join(f"`{value}`" for value in args)
    if origin in (typing.Union, types.UnionType):  # a discriminated union of sections is one mapping
        text = " or ".join(dict.fromkeys(accepted(arg) for arg in args if arg is not type(None)))
        return f"{text}, or null" if type(None) in args else text
    if origin in (list, tuple):
        least = _min_length(constraints)
        return f"list of ({accepted(args[0])})" + (f", at least {least}" if least else "")
    if origin is dict:
        return f"a {accepted(args[1])} per name, at least {_min_length(constraints)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    words = {bool: "true or false", int: "integer", float: "number", str: "text"}
    if annotation is str and _min_length(constraints):
        return "non-empty text"
    text = words.get(annotation, getattr(annotation, "__name__", str(annotation)))
    bounds = _bounds(constraints)
    return f"{text} {bounds}" if bounds else text


def _types(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is None:
        return [annotation]
    return [t for arg in typing.get_args(annotation) for t in _types(arg)]


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [t for t in _types(annotation) if isinstance(t, type) and issubclass(t, BaseModel)]


def _discriminator(metadata: Sequence[Any]) -> str | None:
    """The key a discriminated union's sections are told apart by, from its Field(discriminator=...)."""
    for item in metadata:
        if isinstance(item, FieldInfo) and isinstance(item.discriminator, str):
            return item.discriminator
    return None


def _cell(info: FieldInfo) -> str:
    """The *accepted* cell: the type in words, and the default where the key may be left out."""
    text = accepted(info.annotation, info.metadata)
    if info.is_required():
        return text
    default = info.get_default(call_default_factory=True)
    if default is None:  # null means left out
        return f"{text.removesuffix(', or null')}; optional"
    if isinstance(default, BaseModel):
        default = default.model_dump(mode="json")
    return f"{text}; default `{_flow(default)}`"


def rows(model: type[BaseModel], prefix: str, found: list[tuple[str, Mapping]]) -> Iterator[Row]:
    """``model``'s keys under ``prefix``; ``found``: (experiment, mapping) where params.yaml has this section."""
    for name, info in model.model_fields.items():
        yield from field_rows(name, info, prefix, found)


def field_rows(name: str, info: FieldInfo, prefix: str, found: list[tuple[str, Mapping]]) -> Iterator[Row]:
    """The key ``name``'s row, then those of the keys below it."""
    key = f"{prefix}{name}"
    here = [(label, mapping[name]) for label, mapping in found if name in mapping]
    below = [(label, value) for label, value in here if isinstance(value, Mapping)]
    if typing.get_origin(info.annotation) is dict:  # experiments: a section per name
        sections = [(str(label), value) for _, mapping in below for label, value in mapping.items()
                    if isinstance(value, Mapping)]
        yield Row(key, _cell(info), info.description or "", {"": ", ".join(label for label, _ in sections)})
        yield from _union(typing.get_args(info.annotation)[1], f"{key}.{NAME}.", sections)
        return
    shown = {label: value for label, value in here if not isinstance(value, Mapping)}
    yield Row(key, _cell(info), info.description or "", shown)
    tag = _discriminator([info, *info.metadata])
    if tag is not None:
        yield from _union(info.annotation, f"{key}.", below, tag)
    elif _models(info.annotation):
        yield from rows(_models(info.annotation)[0], f"{key}.", below)


def _union(annotation: Any, prefix: str, found: list[tuple[str, Mapping]], tag: str | None = None) -> Iterator[Row]:
    """The rows of a discriminated union's variants, merged where every variant has the same key alike."""
    models = _models(annotation)
    tag = tag or _discriminator(typing.get_args(annotation)[1:])  # an Annotated union: a dict's values
    assert tag is not None, annotation
    merged: dict[str, list[tuple[str, Row]]] = {}
    for model in models:
        (value,) = typing.get_args(model.model_fields[tag].annotation)
        mine = [(label, mapping) for label, mapping in found if mapping.get(tag) == value]
        for row in rows(model, prefix, mine):
            merged.setdefault(row.key, []).append((value, row))
    everyone = {typing.get_args(model.model_fields[tag].annotation)[0] for model in models}
    for key, variants in merged.items():
        if key == f"{prefix}{tag}":
            yield Row(key, ", ".join(f"`{value}`" for value, _ in variants),
                      "; ".join(f"{value}: {row.description}" for value, row in variants),
                      {label: v for _, row in variants for label, v in row.values.items()})
            continue
        groups: dict[tuple[str, str, tuple[str, ...], str], list[tuple[str, Row]]] = {}
        for value, row in variants:
            groups.setdefault((row.accepted, row.description, tuple(row.tags), row.tag_key), []).append((value, row))
        for (cell, description, inner, inner_key), members in groups.items():
            values = {label: v for _, row in members for label, v in row.values.items()}
            if {value for value, _ in members} == everyone:  # alike in every variant
                yield Row(key, cell, description, values, list(inner), inner_key)
            else:
                yield Row(key, cell, description, values, [value for value, _ in members], tag)


def _values(row: Row, order: list[str]) -> str:
    """The *params.yaml* cell: one value, or each value followed by the experiments that set it."""
    if not row.values:
        return ""
    if list(row.values) == [""]:
        value = row.values[""]
        return value if isinstance(value, str) and row.key == "experiments" else f"`{_flow(value)}`"
    groups: dict[str, list[str]] = {}
    for label in sorted(row.values, key=order.index):
        groups.setdefault(_flow(row.values[label]), []).append(label)
    if len(groups) == 1 and len(row.values) == len(order):
        return f"`{next(iter(groups))}`: all"
    return "; ".join(f"`{value}`: {', '.join(labels)}" for value, labels in groups.items())


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _table(table: list[Row], order: list[str]) -> list[str]:
    lines = ["| key | accepted | params.yaml | description |", "| --- | --- | --- | --- |"]
    for row in table:
        where = f"({row.tag_key} {' / '.join(row.tags)}) " if row.tags else ""
        cells = [f"`{row.key}`", row.accepted, _values(row, order), where + row.description]
        lines.append("| " + " | ".join(_escape(cell) for cell in cells) + " |")
    return lines


def tables(values: Mapping[str, Any]) -> dict[str, list[Row]]:
    """Every key's row, by table: Params' own keys, then those below them, in the model's order."""
    found: dict[str, list[Row]] = {title: [] for title, _ in TABLES}
    for name, info in Params.model_fields.items():
        if name == "experiments":
            title = "Experiments"
        elif any(issubclass(model, DatasetParams) for model in _models(info.annotation)):
            title = "Datasets"
        else:
            title = "Study"
        found[title] += field_rows(name, info, "", [("", values)])
    return found


def render(params: Mapping[str, Any] | None = None) -> str:
    """docs/params.md for ``params`` (default: params.yaml, read as the stages read it)."""
    values = read_params_file(paths.PARAMS) if params is None else params
    order = [str(name) for name in (values.get("experiments") or {})]
    lines = [HEADER]
    for (title, what), rows_ in zip(TABLES, tables(values).values(), strict=True):
        lines += [f"## {title}", "", f"{what[0].upper()}{what[1:]}.", "", *_table(rows_, order), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return generated.main(argv, tool="tools.params_doc", doc=__doc__, default=DOC, what="params docs",
                          source="from the params model and params.yaml", wanted=lambda current: render())


if __name__ == "__main__":
    sys.exit(main())
