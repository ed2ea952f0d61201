"""Params checking over random bad values and unknown keys: always one ConfigError naming the key and the value."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferbench.core import paths
from transferbench.core.errors import ConfigError, quoted, shortened
from transferbench.study.params import check_params

# No example database in the work tree; PROPERTY_EXAMPLES=3000 searches harder.
PROPERTIES = settings(database=None, max_examples=int(os.environ.get("PROPERTY_EXAMPLES", 300)), deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])

with open(paths.PARAMS, encoding="utf-8") as _f:
    REPOSITORY = yaml.safe_load(_f)


def walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (path, value) below the root, depth first."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield (*path, str(key)), value
            yield from walk(value, (*path, str(key)))


# Sections: mappings whose keys are keys (``experiments`` itself maps names to sections).
SECTIONS = [()] + [p for p, v in walk(REPOSITORY) if isinstance(v, Mapping) and p != ("experiments",)]
# Numbers: every key whose value is a count, size, rate or share.
NUMBERS = [p for p, v in walk(REPOSITORY) if isinstance(v, (int, float)) and not isinstance(v, bool)]


def at(params: dict, path: tuple[str, ...]) -> dict:
    for key in path:
        params = params[key]
    return params


def checked(params: dict) -> str:
    """The ConfigError's message; a pass or any other exception fails the test."""
    with pytest.raises(ConfigError) as err:
        check_params(params)
    message = str(err.value)
    assert "\n" not in message, message
    return message


def test_every_number_and_section_is_drawn_from():
    assert ("experiments", "pets", "batch_size") in NUMBERS and ("cifar10", "validation") in NUMBERS
    assert ("experiments", "pets", "schedule") in SECTIONS and ("pets", "source") in SECTIONS
    check_params(copy.deepcopy(REPOSITORY))


@PROPERTIES
@given(st.sampled_from(SECTIONS), st.text(min_size=1, max_size=20))
def test_an_unknown_key_anywhere_is_named(section, key):
    params = copy.deepcopy(REPOSITORY)
    target = at(params, section)
    if key in target:
        return
    target[key] = 1
    message = checked(params)
    # A key that would not read as one (a newline, a dot, edge spaces) is quoted.
    named = shortened(key) if key.isprintable() and key.strip() == key and "." not in key else quoted(key)
    assert ".".join((*section, named)) in message, message  # 'unknown key ...', or which strategy takes it


NOT_NUMBERS = st.one_of(st.text(max_size=10), st.booleans(), st.none(), st.lists(st.integers(), max_size=3),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
NEGATIVE = st.one_of(st.integers(max_value=-1), st.floats(max_value=-1e-12, allow_infinity=False))


def refusal(path: tuple[str, ...], value: Any) -> str | None:
    """The ConfigError message for params.yaml with ``value`` at ``path``, or None if it passes."""
    params = copy.deepcopy(REPOSITORY)
    at(params, path[:-1])[path[-1]] = value
    try:
        check_params(params)
    except ConfigError as err:
        return str(err)
    return None


@PROPERTIES
@given(st.sampled_from(NUMBERS), st.one_of(NEGATIVE, NOT_NUMBERS))
def test_a_negative_or_non_numeric_value_is_named_with_its_key(path, value):
    # No count, size, rate or share in params.yaml may be negative, and none is anything but a number.
    params = copy.deepcopy(REPOSITORY)
    at(params, path[:-1])[path[-1]] = value
    message = checked(params)
    assert ".".join(path) in message and quoted(value) in message, message


@PROPERTIES
@given(st.sampled_from(NUMBERS), st.integers(min_value=10**7, max_value=10**15) | st.floats(allow_nan=True))
def test_any_number_either_passes_or_is_named_with_its_key(path, value):
    message = refusal(path, value)
    if message is not None:
        assert ".".join(path) in message and quoted(value) in message, message


TEXTS = [p for p, v in walk(REPOSITORY) if isinstance(v, str)]


@PROPERTIES
@given(st.sampled_from(TEXTS), st.text(max_size=12) | NEGATIVE | st.booleans() | st.none())
def test_any_value_for_a_named_choice_or_text_either_passes_or_is_named_with_its_key(path, value):
    # model, pooling, head, strategy, optimizer, schedule.kind, alphabet, urls' hosts, bucket, ...
    message = refusal(path, value)
    if message is not None:
        # A valid choice that does not fit the rest ('strategy two_phase needs ...') may stand unquoted.
        named = quoted(value) in message or (isinstance(value, str) and value.isidentifier() and value in message)
        assert "\n" not in message and named, message
        assert ".".join(path) in message or ".".join(path[:-1]) in message, message
