"""A multimap from 64-bit keys to entry numbers, held in one sorted uint64 array instead of Python objects.

Each (key, entry) pair is packed into one uint64, the key's high 32 bits above the entry number, so that
sorting the packed values sorts the pairs by key and the pairs of one key form a run that two binary
searches find. Keeping 32 bits of the key lets distinct keys meet (for a table of P pairs, a lookup meets
a foreign pair with probability about P / 2**32); that only adds a candidate, which the caller verifies.

Layout: ``[committed run | staged run]`` in one `MappedArray`, each run sorted. Pairs that `admit` adds go
to a dict first (the recent pairs, at most `flush_pairs` of them, so their Python objects stay few
whatever the corpus size) and are merged into the staged run when it fills up; `consolidate` merges the
staged run into the committed one. Both merges are numpy's timsort over two sorted runs: linear time,
and a buffer the size of the smaller run. So a flush costs O(pairs of the batch) and a consolidation
O(all pairs), once per batch, never O(all pairs) per document.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

from tasks.dedup.mapped_array import MappedArray

LOW = np.uint64(0xFFFF_FFFF)
HIGH = np.uint64(0xFFFF_FFFF_0000_0000)
SHIFT = np.uint64(32)
MAX_ENTRIES = 0xFFFF_FFFF  # entry numbers below LOW: a pair never equals the upper search bound `key | LOW`


def _check_entry(largest: int) -> None:
    if largest >= MAX_ENTRIES:
        raise OverflowError(f"a key table holds entries 0 to {MAX_ENTRIES - 1}")


class KeyTable:
    """Which entries were paired with a key: `admit` looks rows of keys up and pairs them, `extend` in bulk."""

    def __init__(self, flush_pairs: int = 32_768) -> None:
        self._pairs = MappedArray(np.uint64)
        self._committed = 0  # pairs in the committed run; the staged run follows it
        self._sorted = 0  # pairs sorted from the start; `extend` appends unsorted pairs after them
        self._recent: dict[int, int | list[int]] = {}
        self._pending = np.empty(flush_pairs, dtype=np.uint64)  # the recent pairs, packed
        self._pending_count = 0

    def admit(self, keys: np.ndarray, decide: Callable[[int, list[int]], int | None]) -> None:
        """For each row of `keys` (n x k uint64) in order: `decide(row, entries sharing a key with the row)`
        returns the entry to pair with the row's keys, or None. Each row sees the pairs of the rows before it;
        the entries come in ascending order per run (committed, staged, recent) and may repeat.

        The sorted runs are searched for all rows at once; only the recent pairs are looked up row by row.
        """
        step = max(1, len(self._pending) // max(1, keys.shape[1]))
        for start in range(0, len(keys), step):
            self._admit(keys[start : start + step], decide, start)

    def extend(self, keys: np.ndarray, entries: np.ndarray) -> None:
        """Pair each of `entries` with the key at the same position (loading); sorted on the next lookup."""
        if len(entries):
            _check_entry(int(entries.max()))
        self._pairs.extend((keys & HIGH) | entries.astype(np.uint64))

    def _admit(self, keys: np.ndarray, decide: Callable[[int, list[int]], int | None], offset: int) -> None:
        if self._pending_count + keys.size > len(self._pending):
            self._flush()
        self._sort()
        high = keys & HIGH
        in_runs = self._search_runs(high)
        recent = self._recent
        rows: list[int] = []
        entries: list[int] = []
        for row, small in enumerate((keys >> SHIFT).tolist()):
            found = in_runs.get(row, [])
            fresh = recent.keys().isdisjoint(small)  # the common case, tested in C
            if not fresh:
                for hit in map(recent.get, small):
                    if type(hit) is int:
                        found.append(hit)
                    elif hit:
                        found += hit
            entry = decide(offset + row, found)
            if entry is None:
                continue
            rows.append(row)
            entries.append(entry)
            if fresh:
                recent.update(dict.fromkeys(small, entry))
                continue
            for key in small:
                hit = recent.get(key)
                if hit is None:
                    recent[key] = entry
                elif type(hit) is int:
                    recent[key] = [hit, entry]
                else:
                    hit.append(entry)
        if rows:
            _check_entry(max(entries))
            packed = (high[rows] | np.array(entries, dtype=np.uint64)[:, np.newaxis]).ravel()
            self._pending[self._pending_count : self._pending_count + len(packed)] = packed
            self._pending_count += len(packed)

    def _search_runs(self, high: np.ndarray) -> dict[int, list[int]]:
        """Row -> entries paired with the row's keys in the sorted runs (ascending per run), for the rows with any."""
        found: dict[int, list[int]] = {}
        pairs = self._pairs.data
        flat = high.ravel()
        needles = np.concatenate((flat, flat | LOW))
        order = np.argsort(needles)  # searching in ascending order walks the run forward: several times faster
        ascending = needles[order]
        bounds = np.empty(len(needles), dtype=np.intp)
        for run in (pairs[: self._committed], pairs[self._committed :]):
            if len(run):
                bounds[order] = run.searchsorted(ascending)
                lo, hi = bounds[: len(flat)], bounds[len(flat) :]
                for i in np.flatnonzero(hi > lo).tolist():
                    found.setdefault(i // high.shape[1], []).extend((run[lo[i] : hi[i]] & LOW).tolist())
        return found

    def consolidate(self) -> None:
        """Merge every pair into the committed run (after a batch commits, after loading)."""
        self._flush()
        self._pairs.data.sort(kind="stable")
        self._committed = self._sorted = self._pairs.size

    def _flush(self) -> None:
        if self._pending_count:
            self._pairs.extend(self._pending[: self._pending_count])
            self._pending_count = 0
            self._recent.clear()
        self._sort()

    def _sort(self) -> None:
        """Sort the staged run with what was appended after it."""
        unsorted = self._pairs.size - self._sorted
        if unsorted:
            # a flush appends a small chunk: timsort merges it in linear time with a buffer of its size. A bulk
            # `extend` appends many: quicksort works in place, where timsort would take half of them as buffer.
            kind = "stable" if unsorted <= len(self._pending) else "quicksort"
            self._pairs.data[self._committed :].sort(kind=kind)
            self._sorted = self._pairs.size

    def nbytes(self) -> int:
        """Bytes held: the packed pairs, the pending buffer, and the recent dict with its keys, lists and entries."""
        lists = [v for v in self._recent.values() if isinstance(v, list)]
        entries = {e for v in self._recent.values() for e in (v if isinstance(v, list) else (v,))}
        recent = (sys.getsizeof(self._recent) + sum(map(sys.getsizeof, self._recent))
                  + sum(map(sys.getsizeof, lists)) + sum(map(sys.getsizeof, entries)))
        return self._pairs.nbytes + self._pending.nbytes + recent
