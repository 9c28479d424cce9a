"""A growable numpy array of fixed-shape rows kept in an anonymous memory map, outside the malloc heap.

Why not a numpy array grown with `ndarray.resize` (realloc): glibc raises its mmap threshold as large
blocks are freed, so arrays of up to 32 MB end up inside the heap; each growth then moves the array and
leaves a hole that glibc keeps, and the process's memory grows with the corpus beyond what the index
holds (measured: +34 MB of free-but-retained heap between 10k and 50k documents). An anonymous map
grows with mremap (the pages move, nothing is copied and nothing is left behind), its capacity beyond
the rows written is never touched and so costs no memory, and it goes back to the kernel whole.
"""

from __future__ import annotations

import math
import mmap

import numpy as np
from numpy.typing import ArrayLike, DTypeLike


class MappedArray:
    """Rows appended at the end; `data` is a view of the rows written so far (valid until the next growth)."""

    def __init__(self, dtype: DTypeLike, row_shape: tuple[int, ...] = (), capacity: int = 1024) -> None:
        self.dtype = np.dtype(dtype)
        self.row_shape = row_shape
        self._row_bytes = self.dtype.itemsize * math.prod(row_shape)
        self.size = 0
        self._map = mmap.mmap(-1, max(1, capacity) * self._row_bytes, flags=mmap.MAP_PRIVATE)
        self._rows = self._view()

    def _view(self) -> np.ndarray:
        # Through a memoryview, which keeps the map's buffer exported while any array derived from it lives,
        # so resizing the map under such an array fails (and `reserve` copies instead) rather than leaving the
        # array pointing at memory that moved.
        return np.frombuffer(memoryview(self._map), dtype=self.dtype).reshape(-1, *self.row_shape)

    @property
    def capacity(self) -> int:
        return len(self._rows)

    @property
    def data(self) -> np.ndarray:
        return self._rows[: self.size]

    @property
    def nbytes(self) -> int:
        """Bytes in use: the untouched capacity of an anonymous map is not resident."""
        return self.size * self._row_bytes

    def reserve(self, rows: int) -> None:
        """Room for `rows` rows, growing the capacity at least twofold."""
        if rows <= self.capacity:
            return
        nbytes = max(rows, 2 * self.capacity) * self._row_bytes
        del self._rows
        try:
            self._map.resize(nbytes)
        except (BufferError, SystemError):
            # a view handed out earlier still lives (or the platform has no mremap): copy into a new map; the
            # old one stays valid for that view and is unmapped when it goes.
            old = np.frombuffer(memoryview(self._map), dtype=self.dtype).reshape(-1, *self.row_shape)
            self._map = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
            self._view()[: self.size] = old[: self.size]
        self._rows = self._view()

    def append(self, row: ArrayLike) -> None:
        if self.size == len(self._rows):
            self.reserve(self.size + 1)
        self._rows[self.size] = row
        self.size += 1

    def extend(self, rows: np.ndarray) -> None:
        end = self.size + len(rows)
        if end > len(self._rows):
            self.reserve(end)
        self._rows[self.size : end] = rows
        self.size = end
