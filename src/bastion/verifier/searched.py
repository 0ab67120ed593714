"""Whether searches of the store find each record by what its body says: steps (2c) and (8b) of
verifier/verify.py's checklist.

A store copies some body fields into the columns that ``bastion audit search`` filters on
(``SearchColumns.from_doc``); on SQLite records are also filed into a separate ``search_index``.
Those copies are covered by no hash, so whoever can write the tables can hide a record from a
search without touching a body, and index rows that belong to no record are what deleting
records leaves behind. Owns comparing the copies with the body and grouping index rows that
belong to no record; reporting is verifier/origin.py's.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from heapq import merge
from typing import Any

from bastion.storage.base import IndexedEntry, SearchColumns, SearchIndexRow

HIDDEN = "no search_index row, the only row searches read for this record: hidden from search"


def agrees(body: dict[str, Any], row: IndexedEntry) -> bool:
    """Whether everything searches match ``row``'s record by is a copy of its trusted ``body``."""
    return row.columns == SearchColumns.from_doc(body) and row.index_row is None and not row.hidden


def differing_columns(body: dict[str, Any], row: IndexedEntry, *, in_place: bool) -> list[str]:
    """The stored search columns of ``row`` that differ from its trusted ``body``; a separate index
    row's as ``search_index.<column>``, compared only ``in_place`` (stored at the seq its body names:
    the index is keyed by the stored seq, and a moved row is reported as moved)."""
    expected = SearchColumns.from_doc(body)
    found = [] if row.columns == expected else _differing(SearchColumns._fields, row.columns, expected, "")
    if in_place and row.index_row is not None:
        wanted = SearchIndexRow(body.get("time"), body.get("kind"), *expected)
        found += _differing(SearchIndexRow._fields, row.index_row, wanted, "search_index.")
    return found


def _differing(names: tuple[str, ...], stored: tuple[Any, ...], wanted: tuple[Any, ...], prefix: str) -> list[str]:
    return [prefix + name for name, have, want in zip(names, stored, wanted, strict=True) if have != want]


class Strays:
    """The seqs of the index rows of one origin that belong to no record, kept as runs
    ``[start, end)`` merged as they come: what is held grows with the runs, not with the rows
    (a store may hold millions of forged ones)."""

    def __init__(self) -> None:
        self._runs: list[list[int]] = []
        """Sorted, disjoint and not touching."""
        self._odd: set[int] = set()
        """Seqs that are no integer after all (a forged REAL, which SQLite hands over as a float):
        kept one by one, as they fit in no run."""

    def add(self, seq: int) -> None:
        """Note a stray index row at ``seq``; in any order, any number of times."""
        if not isinstance(seq, int):
            self._odd.add(seq)
            return
        runs = self._runs
        if runs and runs[-1][0] <= seq:  # the common case: in increasing order
            at = len(runs) - 1
        else:
            at = bisect_right(runs, seq, key=lambda run: run[0]) - 1  # the run starting at or before seq
        if at >= 0 and seq < runs[at][1]:
            return
        if at >= 0 and seq == runs[at][1]:
            runs[at][1] += 1
            if at + 1 < len(runs) and runs[at + 1][0] == runs[at][1]:
                runs[at][1] = runs.pop(at + 1)[1]
        elif at + 1 < len(runs) and runs[at + 1][0] == seq + 1:
            runs[at + 1][0] = seq
        else:
            runs.insert(at + 1, [seq, seq + 1])

    def __iter__(self) -> Iterator[int]:
        """Every seq noted, once each, in increasing order."""
        previous: int | None = None
        for seq in merge((seq for start, end in self._runs for seq in range(start, end)), sorted(self._odd)):
            if seq != previous:
                yield seq
            previous = seq


def stray_runs(strays: Iterable[int], missing: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Runs ``(first seq, count)`` of the stray index rows' seqs (``strays``: in increasing order,
    once each) that lie outside every ``[start, end)`` of ``missing``: where the walk reports
    records missing, a stray row is the trace of the same deletion, not news."""
    merged: list[list[int]] = []
    for start, end in sorted(missing):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    starts = [start for start, _ in merged]
    runs: list[tuple[int, int]] = []
    for seq in strays:
        at = bisect_right(starts, seq) - 1
        if at >= 0 and seq < merged[at][1]:
            continue
        if runs and sum(runs[-1]) == seq:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((seq, 1))
    return runs


def stray_reason(first: int, count: int, *, origin_has_records: bool) -> str:
    """Why a run of stray index rows is reported; ``origin_has_records``: whether any record of
    their origin is stored at all."""
    rows = f"a search_index row for seq {first}" if count == 1 else f"search_index rows for seq {first}..{first + count - 1} ({count})"
    if not origin_has_records:
        return (
            f"{rows}, but no record of this origin is stored at all: a log deleted past its index rows, "
            "or rows forged into the index under an origin of their own"
        )
    return f"{rows}, but no record stored there: records deleted past their index rows, or rows forged into the index"
