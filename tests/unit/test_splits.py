"""Stratified splits: exact sizes, disjoint, in proportion, deterministic; a ConfigError exactly when impossible."""

from __future__ import annotations

import itertools
import math
import os
from fractions import Fraction

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferbench.core.errors import ConfigError
from transferbench.data.datasets import DATASETS
from transferbench.data.splits import UNUSED, allocate, stratified

# No example database in the work tree; PROPERTY_EXAMPLES=3000 searches harder.
PROPERTIES = settings(database=None, max_examples=int(os.environ.get("PROPERTY_EXAMPLES", 300)), deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])


def labels_of(counts: dict[str, int]) -> pd.Series:
    # Interleaved and with a gappy index, as a source's items filtered by split are.
    labels = [c for i in range(max(counts.values(), default=0)) for c, n in counts.items() if i < n]
    return pd.Series(labels, index=[3 * i + 1 for i in range(len(labels))], dtype=object)


# ---- the cases that came out short ------------------------------------------------------------

def test_two_splits_from_one_pool_get_exactly_their_sizes():
    # 10.5 cats for each split: the extra half went to cats twice, so test got 20 and one image none.
    split = stratified(labels_of({"cat": 21, "dog": 21}), {"validation": 21, "test": 21}, 0, where="x")
    assert split.value_counts().to_dict() == {"validation": 21, "test": 21}
    assert (split != UNUSED).all()


def test_the_rounding_is_shared_between_splits():
    quotas = allocate({"cat": 21, "dog": 21}, {"validation": 21, "test": 21}, where="x")
    assert quotas == {"validation": {"cat": 11, "dog": 10}, "test": {"cat": 10, "dog": 11}}


def test_filtered_dataset_cuts_its_held_out_half_exactly():
    items = pd.DataFrame({"source_split": ["train"] * 4 + ["validation"] * 42,
                          "label": ["cat", "dog"] * 2 + ["cat"] * 21 + ["dog"] * 21})
    values = DATASETS.get("cats_and_dogs_filtered").section(
        {"validation": 21, "test": 21, "height": 8, "width": 8, "workers": 0, "tolerance": 0.0,
         "source": {"urls": ["https://example.invalid/a.zip"], "sha256": None}})
    split = DATASETS.get("cats_and_dogs_filtered").assign_splits(items, values, 7)
    assert split.value_counts().to_dict() == {"train": 4, "validation": 21, "test": 21}


@pytest.mark.parametrize("counts, sizes, message", [
    ({"cat": 21, "dog": 21}, {"validation": 22, "test": 21},
     r"^x: splits ask for 43 images \(validation 22, test 21\) but the source has 42 \(cat 21, dog 21\); "
     r"accepted: at most 42 in all$"),
    ({"cat": 5, "dog": 5}, {"train": 8, "validation": 1},
     r"^x: validation is 1 but must hold one image of each of 2 classes \(cat, dog\); accepted: validation >= 2$"),
    ({"cat": 2, "dog": 9}, {"train": 4, "validation": 2, "test": 2},
     r"^x: class cat has 2 images but each of train, validation, test needs one; accepted: at most 2 non-empty "
     r"splits, or a source with more cat images$"),
])
def test_impossible_sizes_say_what_is_possible(counts, sizes, message):
    with pytest.raises(ConfigError, match=message):
        stratified(labels_of(counts), sizes, 0, where="x")


def test_cifar_validation_that_leaves_train_no_room_is_a_config_error():
    items = pd.DataFrame({"source_split": ["train"] * 6 + ["test"] * 2, "label": ["cat", "dog"] * 4})
    values = DATASETS.get("cifar10").section(
        {"validation": 5, "height": 8, "width": 8, "workers": 0, "tolerance": 0.0,
         "source": {"urls": ["https://example.invalid/c.tgz"], "sha256": None}})
    with pytest.raises(ConfigError, match=r"^cifar10.validation is 5 but the source's train split has 6 images; "
                                          r"accepted: at most 4, so train keeps one image of each of its 2 classes"):
        DATASETS.get("cifar10").assign_splits(items, values, 0)


# ---- properties -------------------------------------------------------------------------------

@st.composite
def pools(draw, max_classes: int = 5, max_count: int = 40):
    """(class counts, split sizes): sizes mostly near what fits, sometimes more."""
    n_classes = draw(st.integers(1, max_classes))
    counts = {f"c{i}": draw(st.integers(1, max_count)) for i in range(n_classes)}
    total = sum(counts.values())
    names = draw(st.sampled_from([("train", "validation", "test"), ("validation", "test"), ("validation", "train")]))
    sizes = {name: draw(st.integers(1, max(1, total * 2 // len(names)))) for name in names}
    return counts, sizes


def possible(counts: dict[str, int], sizes: dict[str, int]) -> bool:
    """By brute force over every cell: each within one image of proportional, at least one per class in a
    split, the unused rest in proportion too. Only for small pools."""
    total = sum(counts.values())
    if sum(sizes.values()) > total:
        return False
    rows = {**sizes, UNUSED: total - sum(sizes.values())}

    def options(split: str, c: str) -> list[int]:
        exact = Fraction(rows[split] * counts[c], total)
        least = 1 if split != UNUSED and rows[split] else 0
        return [v for v in range(math.floor(exact) - 1, math.ceil(exact) + 2) if abs(v - exact) < 1 and v >= least]

    cells = [(s, c) for s in rows for c in counts]
    for values in itertools.product(*(options(s, c) for s, c in cells)):
        chosen = dict(zip(cells, values, strict=True))
        if all(sum(chosen[s, c] for c in counts) == rows[s] for s in rows) and \
                all(sum(chosen[s, c] for s in rows) == counts[c] for c in counts):
            return True
    return False


@PROPERTIES
@given(pools(), st.integers(0, 2**32 - 1))
def test_splits_are_exact_disjoint_proportional_and_deterministic(pool, seed):
    counts, sizes = pool
    labels = labels_of(counts)
    try:
        split = stratified(labels, sizes, seed, where="x")
    except ConfigError:
        return  # when exactly: test_config_error_exactly_when_impossible
    assert split.index.equals(labels.index)  # one split per item: disjoint by construction, checked next
    assert set(split) <= {*sizes, UNUSED}
    total = len(labels)
    for name, n in sizes.items():
        mine = labels[split == name]
        assert len(mine) == n
        for c, k in counts.items():
            assert abs((mine == c).sum() - Fraction(n * k, total)) <= 1
            assert (mine == c).sum() >= 1
    assert split.equals(stratified(labels, sizes, seed, where="x"))


@PROPERTIES
@given(pools(max_classes=3, max_count=6))
def test_config_error_exactly_when_impossible(pool):
    counts, sizes = pool
    try:
        allocate(counts, sizes, where="x")
    except ConfigError as err:
        assert not possible(counts, sizes), err
    else:
        assert possible(counts, sizes)


@PROPERTIES
@given(pools(), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_the_seed_only_reorders_within_a_class(pool, seed, other):
    counts, sizes = pool
    labels = labels_of(counts)
    try:
        first, second = (stratified(labels, sizes, s, where="x") for s in (seed, other))
    except ConfigError:
        return
    per_class = pd.crosstab(labels, first)
    assert per_class.equals(pd.crosstab(labels, second))
