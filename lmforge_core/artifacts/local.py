"""Artifact store on a local folder.

Layout: object bytes at ``<root>/<key>`` (plain files a person can open), their sha256 and size at
``<root>/.lmforge-meta/<key>.json``. A write goes to ``<root>/.lmforge-tmp/<pid>-<random>``, is
fsynced and renamed into place, then the metadata is renamed into place; a crash before the rename
leaves the old object intact, and stale temporary files of dead writers are removed on open.
A crash between the two renames leaves new bytes with old metadata: reads then fail loudly with
:class:`ArtifactIntegrityError` instead of returning unverified bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lmforge_core.artifacts.base import (
    ArtifactInfo,
    ArtifactNotFound,
    ArtifactStoreUnavailable,
    VerifyingReader,
    validate_key,
    validate_prefix,
)
from lmforge_core.artifacts.common import StoreOperations

META_DIR = ".lmforge-meta"
TMP_DIR = ".lmforge-tmp"


class _HashingWriter:
    """File writer that hashes what passes through it."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalArtifactStore(StoreOperations):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)
        self._tmp = self.root / TMP_DIR
        self._meta = self.root / META_DIR
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            self._meta.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactStoreUnavailable(
                f"cannot create the artifact folder {self.root}: {exc.strerror}; "
                "choose a writable LMFORGE_ARTIFACT_URI"
            ) from exc
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        for tmp in self._tmp.iterdir():
            pid_text = tmp.name.split("-", 1)[0]
            if not pid_text.isdigit() or not _pid_alive(int(pid_text)):
                tmp.unlink(missing_ok=True)

    def _paths(self, key: str) -> tuple[Path, Path]:
        validate_key(key)
        return self.root / key, self._meta / f"{key}.json"

    def local_path(self, key: str) -> Path:
        """Path of the stored file, for zero-copy readers such as ``numpy.memmap`` (verify first)."""
        path, _ = self._paths(key)
        if not path.is_file():
            raise ArtifactNotFound(f"no artifact {key!r} in {self.uri}")
        return path

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        data_path, meta_path = self._paths(key)
        tmp_data = self._tmp / f"{os.getpid()}-{uuid.uuid4().hex}"
        tmp_meta = tmp_data.with_suffix(".json")
        try:
            with tmp_data.open("wb") as handle:
                writer = _HashingWriter(handle)
                yield writer  # type: ignore[misc]
                handle.flush()
                os.fsync(handle.fileno())
            tmp_meta.write_text(json.dumps({"sha256": writer.digest.hexdigest(), "size": writer.size}))
            data_path.parent.mkdir(parents=True, exist_ok=True)
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_data, data_path)
            os.replace(tmp_meta, meta_path)
        finally:
            tmp_data.unlink(missing_ok=True)
            tmp_meta.unlink(missing_ok=True)

    def info(self, key: str) -> ArtifactInfo:
        data_path, meta_path = self._paths(key)
        if not data_path.is_file() or not meta_path.is_file():
            raise ArtifactNotFound(f"no artifact {key!r} in {self.uri}")
        meta = json.loads(meta_path.read_text())
        return ArtifactInfo(key=key, size=int(meta["size"]), sha256=str(meta["sha256"]))

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[VerifyingReader]:
        info = self.info(key)
        data_path, _ = self._paths(key)
        reader = VerifyingReader(data_path.open("rb"), key, info.sha256, info.size)
        try:
            yield reader
        finally:
            reader.close()

    def list(self, prefix: str = "") -> list[ArtifactInfo]:
        prefix = validate_prefix(prefix)
        base = self._meta / prefix if prefix else self._meta
        candidates = [base.with_name(base.name + ".json")] if prefix else []
        if base.is_dir():
            candidates.extend(base.rglob("*.json"))
        found = []
        for meta_path in candidates:
            if not meta_path.is_file():
                continue
            key = meta_path.relative_to(self._meta).as_posix()[: -len(".json")]
            if (self.root / key).is_file():
                found.append(self.info(key))
        return sorted(found, key=lambda item: item.key)

    def exists(self, key: str) -> bool:
        data_path, meta_path = self._paths(key)
        return data_path.is_file() and meta_path.is_file()

    def delete(self, key: str) -> None:
        data_path, meta_path = self._paths(key)
        if not data_path.exists() and not meta_path.exists():
            raise ArtifactNotFound(f"no artifact {key!r} in {self.uri}")
        meta_path.unlink(missing_ok=True)
        data_path.unlink(missing_ok=True)

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise ArtifactStoreUnavailable(f"artifact folder {self.root} is not writable")
