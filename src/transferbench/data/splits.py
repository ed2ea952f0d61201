"""Deterministic, stratified splits of a source's items into train / validation / test."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from transferbench.core.errors import ConfigError

UNUSED = ""  # the split of an item no split asked for


def stratified(labels: pd.Series, sizes: Mapping[str, int], seed: int, *, where: str) -> pd.Series:
    """Assign ``sizes[split]`` items to each split, in proportion to the classes; the rest get UNUSED.

    Same labels, sizes and seed: same assignment. Each class is shuffled once and cut into
    consecutive runs, so growing one split never moves an item between the other splits' classes.
    """
    total = sum(sizes.values())
    if total > len(labels):
        raise ConfigError(f"{where}: splits ask for {total} images ({', '.join(f'{k} {v}' for k, v in sizes.items())}) "
                          f"but the source has {len(labels)}; accepted: at most {len(labels)} in all")
    out = pd.Series(UNUSED, index=labels.index, dtype=object)
    classes = sorted(labels.unique())
    counts = labels.value_counts()
    rng = np.random.default_rng(seed)
    shuffled = {c: rng.permutation(labels.index[labels == c].to_numpy()) for c in classes}
    taken = {c: 0 for c in classes}
    for split, n in sizes.items():
        # Largest-remainder apportionment: per-class counts proportional to the class shares, summing to n.
        exact = {c: n * counts[c] / len(labels) for c in classes}
        quota = {c: int(exact[c]) for c in classes}
        for c in sorted(classes, key=lambda c: (-(exact[c] - quota[c]), c))[: n - sum(quota.values())]:
            quota[c] += 1
        for c in classes:
            picked = shuffled[c][taken[c]:taken[c] + quota[c]]
            out.loc[picked] = split
            taken[c] += quota[c]
    return out


def official(source_split: pd.Series) -> pd.Series:
    """The source's own splits, unchanged (Open Images)."""
    return source_split.astype(object)
