""".npz files (readable by `numpy.load`) written and read without a whole in-memory copy of their arrays.

`numpy.savez` copies each array in 16 MB blocks and `numpy.load` reads each array whole; the dedup index
must not need twice its size to be persisted or loaded, so arrays are written straight from their
buffers and read back a block of rows at a time.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Store `arrays` uncompressed under their names, each written from its own buffer."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            array = np.require(array, requirements="C")  # (ascontiguousarray would make a 0-d array 1-d)
            with archive.open(f"{name}.npy", "w", force_zip64=True) as out:
                npy.write_array_header_1_0(out, npy.header_data_from_array_1_0(array))
                out.write(array.reshape(-1).view(np.uint8))


class NpyReader:
    """One array of an open .npz, read a block of rows at a time."""

    def __init__(self, stream: IO[bytes]) -> None:
        version = npy.read_magic(stream)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        self.shape, fortran_order, self.dtype = read_header(stream)
        if fortran_order:
            raise ValueError("Fortran-ordered arrays are not read by rows")
        self._stream = stream
        self._row_shape = self.shape[1:]
        self._row_bytes = self.dtype.itemsize * int(np.prod(self._row_shape))

    def read(self, rows: int) -> np.ndarray:
        """The next `rows` rows (fewer at the end of the array)."""
        data = self._stream.read(rows * self._row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(-1, *self._row_shape)

    def read_all(self) -> np.ndarray:
        return np.frombuffer(self._stream.read(), dtype=self.dtype).reshape(self.shape)


@contextmanager
def open_npy(archive: zipfile.ZipFile, name: str) -> Iterator[NpyReader]:
    with archive.open(f"{name}.npy") as stream:
        yield NpyReader(stream)
