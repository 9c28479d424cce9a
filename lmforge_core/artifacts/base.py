"""The artifact-store interface, its errors, key validation and the verifying reader."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

CHUNK_SIZE = 8 * 1024 * 1024
_KEY_PART = re.compile(r"^[A-Za-z0-9._=+@-]+$")


class ArtifactError(Exception):
    """Base class of every artifact-store failure."""


class ArtifactNotFound(ArtifactError):
    """No object is stored under the key."""


class ArtifactIntegrityError(ArtifactError):
    """The stored bytes no longer match the sha256 recorded when they were written."""


class InvalidArtifactKey(ArtifactError, ValueError):
    """A key that could escape the store or is not a plain relative path."""


class ArtifactStoreUnavailable(ArtifactError):
    """The store cannot be reached (missing bucket, wrong credentials, unreachable endpoint)."""


@dataclass(frozen=True)
class ArtifactInfo:
    key: str
    size: int
    sha256: str


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative POSIX path, else raise :class:`InvalidArtifactKey`.

    Refused: empty keys, absolute paths, backslashes, ``.``/``..`` parts, empty parts and parts with
    characters outside ``[A-Za-z0-9._=+@-]`` (keys become file names and S3 keys alike).
    """
    if not isinstance(key, str) or not key:
        raise InvalidArtifactKey("artifact key must be a non-empty string")
    if key.startswith("/") or "\\" in key or re.match(r"^[A-Za-z]:", key):
        raise InvalidArtifactKey(f"artifact key {key!r} must be a relative path like 'datasets/x/manifest.json'")
    for part in key.split("/"):
        if len(part) > 255:
            raise InvalidArtifactKey(f"artifact key {key!r} has a part longer than 255 characters")
        if part in ("", ".", ".."):
            raise InvalidArtifactKey(f"artifact key {key!r} contains an empty, '.' or '..' path part")
        if not _KEY_PART.match(part) or part.startswith(".lmforge"):
            raise InvalidArtifactKey(
                f"artifact key {key!r}: part {part!r} may only use letters, digits and . _ = + @ -"
            )
    return key


def validate_prefix(prefix: str) -> str:
    """Like :func:`validate_key` but allows the empty prefix and a trailing slash."""
    stripped = prefix.rstrip("/")
    return "" if not stripped else validate_key(stripped)


class VerifyingReader:
    """Wraps a binary stream and checks its sha256 once the stream has been read to its end."""

    def __init__(self, raw: BinaryIO, key: str, expected_sha256: str, expected_size: int) -> None:
        self._raw = raw
        self._key = key
        self._expected = expected_sha256
        self._expected_size = expected_size
        self._digest = hashlib.sha256()
        self._size = 0
        self._checked = False

    def read(self, size: int = -1) -> bytes:
        """Read like a file; the sha256 is checked at EOF or as soon as the recorded size has been read.

        Bytes handed out before that point are only guaranteed once the check has passed.
        """
        if size == 0:
            return b""
        data = self._raw.read(size) if size is not None and size >= 0 else self._raw.read()
        if data:
            self._digest.update(data)
            self._size += len(data)
        if not data or size is None or size < 0 or self._size >= self._expected_size:
            if self._size >= self._expected_size and not self._checked and self._raw.read(1):
                self._size += 1  # more bytes than were recorded: corrupt
            self._verify()
        return data

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK_SIZE):
            yield chunk

    def _verify(self) -> None:
        if self._checked:
            return
        self._checked = True
        actual = self._digest.hexdigest()
        if self._size != self._expected_size or actual != self._expected:
            raise ArtifactIntegrityError(
                f"artifact {self._key!r} is corrupt: sha256 {actual[:12]}… ({self._size} bytes) does not "
                f"match the recorded {self._expected[:12]}… ({self._expected_size} bytes); "
                "restore it from a backup or re-create it"
            )

    def close(self) -> None:
        self._raw.close()


@runtime_checkable
class ArtifactStore(Protocol):
    """One interface over the local and S3 backends; keys are relative POSIX paths."""

    uri: str

    def put_file(self, key: str, path: Path) -> ArtifactInfo: ...

    def put_bytes(self, key: str, data: bytes) -> ArtifactInfo: ...

    def open_write(self, key: str) -> AbstractContextManager[BinaryIO]: ...

    def get_file(self, key: str, dest: Path) -> ArtifactInfo: ...

    def get_bytes(self, key: str) -> bytes: ...

    def open_read(self, key: str) -> AbstractContextManager[VerifyingReader]: ...

    def info(self, key: str) -> ArtifactInfo: ...

    def list(self, prefix: str = "") -> list[ArtifactInfo]: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def check(self) -> None:
        """Raise :class:`ArtifactStoreUnavailable` when the store cannot be used."""
        ...
