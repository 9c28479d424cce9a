"""Operations every backend shares, written once on top of ``open_write`` / ``open_read`` / ``info``."""

from __future__ import annotations

import shutil
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from lmforge_core.artifacts.base import ArtifactInfo, VerifyingReader
from lmforge_core.fileio import atomic_path

# Copies between a local file and the store go through 1 MiB reads: every read makes a new bytes object, and
# 8 MiB ones (CHUNK_SIZE) land in the malloc heap, whose freed space the process keeps (it showed as memory
# growing with the artifact size in the ingest benchmark).
COPY_CHUNK = 1 << 20


class StoreOperations:
    """Mixin: byte and file helpers expressed through the backend's streaming primitives."""

    def open_write(self, key: str) -> AbstractContextManager[BinaryIO]:
        raise NotImplementedError

    def open_read(self, key: str) -> AbstractContextManager[VerifyingReader]:
        raise NotImplementedError

    def info(self, key: str) -> ArtifactInfo:
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes) -> ArtifactInfo:
        with self.open_write(key) as handle:
            handle.write(data)
        return self.info(key)

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as reader:
            return reader.read()

    def get_file(self, key: str, dest: Path) -> ArtifactInfo:
        """Copy the object to ``dest`` (verified; ``dest`` appears only once complete and correct)."""
        with atomic_path(Path(dest)) as tmp, tmp.open("wb") as out, self.open_read(key) as reader:
            while chunk := reader.read(COPY_CHUNK):
                out.write(chunk)
            reader.read()  # reaching the end triggers the sha256 check even for an empty object
        return self.info(key)

    def put_file(self, key: str, path: Path) -> ArtifactInfo:
        with Path(path).open("rb") as src, self.open_write(key) as handle:
            shutil.copyfileobj(src, handle, COPY_CHUNK)
        return self.info(key)
