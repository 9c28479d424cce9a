"""Artifact store on a local folder.

Layout: object bytes at ``<root>/<key>`` (plain files a person can open), their sha256 and size at
``<root>/.lmforge-meta/<key>.json``.

A write streams into ``<root>/.lmforge-tmp/<pid>-<id>`` (fsynced), then writes the *intent*
``<pid>-<id>.json`` = {key, sha256, size} (fsynced), then renames the data into place, then the
metadata. Recovery, when a store is opened, looks at the intents of dead writers:
- data temporary still there -> the crash came before the data rename: both are deleted, the old
  object is untouched;
- data temporary gone -> the crash came between the two renames: the new bytes are in place, so the
  intent is rolled forward as the metadata (after checking that the bytes match it).
A reader that races a live writer between its two renames gets :class:`ArtifactIntegrityError`, never
unverified bytes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lmforge_core.artifacts.base import (
    ArtifactError,
    ArtifactInfo,
    ArtifactIntegrityError,
    ArtifactNotFound,
    ArtifactStoreUnavailable,
    VerifyingReader,
    validate_key,
    validate_prefix,
)
from lmforge_core.artifacts.common import StoreOperations
from lmforge_core.fileio import sha256_file
from lmforge_core.processes import pid_alive

META_DIR = ".lmforge-meta"
TMP_DIR = ".lmforge-tmp"



def _write_synced(path: Path, text: str) -> None:
    with path.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def _os_errors_named(key: str) -> Iterator[None]:
    """Turn the file system's refusals into artifact errors that name the key."""
    try:
        yield
    except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
        raise ArtifactError(
            f"artifact key {key!r} clashes with an existing key that is a folder or a file of the same name "
            "(a key cannot be both 'a' and 'a/b'); choose another key"
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise ArtifactError(f"artifact key {key!r} is too long for the file system") from exc
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ArtifactStoreUnavailable(f"no space left to write artifact {key!r}; free disk space") from exc
        raise


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
        self._recover_dead_writers()

    def _recover_dead_writers(self) -> None:
        for intent in sorted(self._tmp.glob("*.json")):
            pid_text = intent.name.split("-", 1)[0]
            if pid_text.isdigit() and pid_alive(int(pid_text)):
                continue
            data_tmp = intent.with_suffix("")
            if data_tmp.exists():
                data_tmp.unlink()
            else:
                self._roll_forward(intent)
            intent.unlink(missing_ok=True)
        for data_tmp in self._tmp.iterdir():
            pid_text = data_tmp.name.split("-", 1)[0]
            if data_tmp.suffix != ".json" and (not pid_text.isdigit() or not pid_alive(int(pid_text))):
                data_tmp.unlink(missing_ok=True)

    def _roll_forward(self, intent: Path) -> None:
        try:
            record = json.loads(intent.read_text())
            data_path, meta_path = self._paths(record["key"])
        except (ValueError, KeyError, ArtifactError):
            return  # an unreadable intent was written before any rename: nothing to finish
        if data_path.is_file() and (sha256_file(data_path), data_path.stat().st_size) == (record["sha256"], record["size"]):
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(intent, meta_path)

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
        data_tmp = self._tmp / f"{os.getpid()}-{uuid.uuid4().hex}"
        intent = data_tmp.with_suffix(".json")
        try:
            with data_tmp.open("wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            sha256, size = sha256_file(data_tmp), data_tmp.stat().st_size
            _write_synced(intent, json.dumps({"key": key, "sha256": sha256, "size": size}))
            with _os_errors_named(key):
                data_path.parent.mkdir(parents=True, exist_ok=True)
                meta_path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(data_tmp, data_path)
            os.replace(intent, meta_path)
        finally:
            data_tmp.unlink(missing_ok=True)
            intent.unlink(missing_ok=True)

    def info(self, key: str) -> ArtifactInfo:
        data_path, meta_path = self._paths(key)
        if not data_path.is_file() or not meta_path.is_file():
            raise ArtifactNotFound(f"no artifact {key!r} in {self.uri}")
        try:
            meta = json.loads(meta_path.read_text())
            return ArtifactInfo(key=key, size=int(meta["size"]), sha256=str(meta["sha256"]))
        except (ValueError, KeyError) as exc:
            raise ArtifactIntegrityError(
                f"the recorded checksum of artifact {key!r} is unreadable ({meta_path}); re-create the artifact"
            ) from exc

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
