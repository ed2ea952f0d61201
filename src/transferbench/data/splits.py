"""Deterministic, stratified splits of a source's items into train / validation / test."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from fractions import Fraction

import numpy as np
import pandas as pd

from transferbench.core.errors import ConfigError

UNUSED = ""  # the split of an item no split asked for


def stratified(labels: pd.Series, sizes: Mapping[str, int], seed: int, *, where: str) -> pd.Series:
    """Assign exactly ``sizes[split]`` items to each split, every class in proportion; the rest get UNUSED.

    Same labels, sizes and seed: same assignment. ConfigError (before any work) when the sizes cannot
    be met: see :func:`allocate`.
    """
    counts = {str(c): int(n) for c, n in labels.value_counts().sort_index().items()}
    quotas = allocate(counts, sizes, where=where)
    out = pd.Series(UNUSED, index=labels.index, dtype=object)
    rng = np.random.default_rng(seed)
    for c in counts:
        # Each class is shuffled once and cut into consecutive runs, one per split.
        shuffled = rng.permutation(labels.index[labels == c].to_numpy())
        taken = 0
        for split in sizes:
            out.loc[shuffled[taken:taken + quotas[split][c]]] = split
            taken += quotas[split][c]
    return out


def allocate(counts: Mapping[str, int], sizes: Mapping[str, int], *, where: str) -> dict[str, dict[str, int]]:
    """Images per split and class: each split gets exactly its size, each class at most its count.

    Split ``s`` gets ``sizes[s] * counts[c] / total`` images of class ``c`` rounded down or up (largest
    remainders first) and at least one, since validation requires every class in every split. The
    rounding is shared between the splits cut from one pool, so no class is rounded up more often
    than it has images for. ConfigError naming what is possible when no such allocation exists.
    """
    _check_sizes(counts, sizes, where)
    total = sum(counts.values())
    if not total:  # nothing to share, and _check_sizes made sure nothing was asked for
        return {s: {} for s in sizes}
    rows = {**sizes, UNUSED: total - sum(sizes.values())}  # the unused rest rounds like a split
    exact = {s: {c: Fraction(n * k, total) for c, k in counts.items()} for s, n in rows.items()}
    low = {s: {c: max(int(e), 1 if s != UNUSED and rows[s] else 0) for c, e in exact[s].items()} for s in exact}
    high = {s: {c: max(-(-e.numerator // e.denominator), low[s][c]) for c, e in exact[s].items()} for s in exact}
    quotas = _round(rows, counts, exact, low, high)
    if quotas is None:
        raise ConfigError(
            f"{where}: splits of {_listed(sizes)} cannot each hold every class in proportion from "
            f"{_listed(counts)} images; accepted: smaller splits, each at least {len(counts)}")
    return {s: quotas[s] for s in sizes}


def _check_sizes(counts: Mapping[str, int], sizes: Mapping[str, int], where: str) -> None:
    """The plain conditions, each with its own message: sizes >= 0, all fit, every class fits in every split."""
    total = sum(counts.values())
    for split, n in sizes.items():
        if n < 0:
            raise ConfigError(f"{where}: {split} would get {n} images; accepted: at least 0")
    asked = sum(sizes.values())
    if asked > total:
        raise ConfigError(f"{where}: splits ask for {asked} images ({_listed(sizes)}) "
                          f"but the source has {total} ({_listed(counts)}); accepted: at most {total} in all")
    for split, n in sizes.items():
        if 0 < n < len(counts):
            raise ConfigError(f"{where}: {split} is {n} but must hold one image of each of {len(counts)} classes "
                              f"({', '.join(counts)}); accepted: {split} >= {len(counts)}")
    used = [s for s, n in sizes.items() if n > 0]
    for c, k in counts.items():
        if k < len(used):
            raise ConfigError(f"{where}: class {c} has {k} image{'s' * (k != 1)} but each of {', '.join(used)} "
                              f"needs one; accepted: at most {k} non-empty splits, or a source with more {c} images")


def _round(rows: Mapping[str, int], counts: Mapping[str, int], exact: Mapping[str, Mapping[str, Fraction]],
           low: Mapping[str, Mapping[str, int]], high: Mapping[str, Mapping[str, int]]) -> dict | None:
    """Cells between ``low`` and ``high`` (which differ by at most 1) with row sums ``rows`` and column sums
    ``counts``, or None where none exist: a bipartite flow, greedy by largest remainder, then augmented."""
    quota = {s: dict(low[s]) for s in low}
    row_need = {s: rows[s] - sum(quota[s].values()) for s in rows}
    col_need = {c: counts[c] - sum(quota[s][c] for s in rows) for c in counts}
    if any(v < 0 for v in (*row_need.values(), *col_need.values())):
        return None
    free = [(s, c) for s in rows for c in counts if high[s][c] > low[s][c]]
    # Largest remainders first; ties by split order, then class name, so the result is deterministic.
    order = {s: i for i, s in enumerate(rows)}
    for s, c in sorted(free, key=lambda sc: (-(exact[sc[0]][sc[1]] % 1), order[sc[0]], sc[1])):
        if row_need[s] > 0 and col_need[c] > 0:
            quota[s][c] += 1
            row_need[s] -= 1
            col_need[c] -= 1
    raised = {(s, c) for s, c in free if quota[s][c] > low[s][c]}
    for s in rows:
        while row_need[s] > 0:
            path = _augmenting_path(s, free, raised, col_need)
            if path is None:
                return None
            for step, cell in enumerate(path):  # alternate: raise, lower, raise, ..., raise
                delta = 1 if step % 2 == 0 else -1
                quota[cell[0]][cell[1]] += delta
                (raised.add if delta > 0 else raised.discard)(cell)
            row_need[s] -= 1
            col_need[path[-1][1]] -= 1
    return quota


def _augmenting_path(start: str, free: list[tuple[str, str]], raised: set[tuple[str, str]],
                     col_need: Mapping[str, int]) -> list[tuple[str, str]] | None:
    """Cells to raise and lower in turn so row ``start`` gains one and a column with room gives it."""
    by_column: dict[str, tuple[str, str]] = {}  # column -> the cell raised to reach it
    by_row: dict[str, str | None] = {start: None}  # row -> the column whose raised cell it lowers
    queue = deque([start])
    while queue:
        s = queue.popleft()
        for cell in free:
            c = cell[1]
            if cell[0] != s or cell in raised or c in by_column:
                continue
            by_column[c] = cell
            if col_need[c] > 0:
                return _walk_back(c, by_column, by_row)
            for other in sorted(x for x in raised if x[1] == c and x[0] not in by_row):
                by_row[other[0]] = c
                queue.append(other[0])
    return None


def _walk_back(end: str, by_column: Mapping[str, tuple[str, str]],
               by_row: Mapping[str, str | None]) -> list[tuple[str, str]]:
    path = [by_column[end]]
    while (column := by_row[path[-1][0]]) is not None:
        path += [(path[-1][0], column), by_column[column]]
    return path[::-1]


def official(source_split: pd.Series) -> pd.Series:
    """The source's own splits, unchanged (Open Images)."""
    return source_split.astype(object)


def _listed(numbers: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in numbers.items())
