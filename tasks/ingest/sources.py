"""Sources: a local folder or an ``s3://bucket/prefix`` holding shards, listed and fetched one by one.

A shard is identified by the sha256 of its bytes (computed when it is fetched), so a changed file
under the same name is a new shard, and an unchanged one is recognised whatever its name.
S3 objects are downloaded to a local temporary file while hashed (bounded memory, one pass), then
read like local files; any failure to fetch becomes the shard failure ``s3_read_error``.
"""

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lmforge_core.fileio import sha256_file
from tasks.ingest.records import Reason, ShardError

_CHUNK = 8 * 1024 * 1024


class SourceError(ValueError):
    """The source URI itself is unusable (missing folder, bucket, bad URI)."""


@dataclass(frozen=True)
class ShardRef:
    """One file of a source: `name` is its path relative to the source root (POSIX)."""

    uri: str
    name: str
    size: int

    @property
    def drop(self) -> str:
        """The top-level folder of the shard inside the source ('' for files at the root)."""
        head, _, rest = self.name.partition("/")
        return head if rest else ""


@dataclass(frozen=True)
class FetchedShard:
    path: Path
    sha256: str
    size: int


class Source(Protocol):
    uri: str

    def list_shards(self) -> list[ShardRef]: ...

    def fetch(self, shard: ShardRef) -> contextlib.AbstractContextManager[FetchedShard]: ...


def _visible(name: str) -> bool:
    return not any(part.startswith((".", "_")) for part in name.split("/"))


class LocalSource:
    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise SourceError(f"source folder {root} does not exist or is not a folder")
        self.root = root.resolve()
        self.uri = str(self.root)

    def list_shards(self) -> list[ShardRef]:
        shards = []
        for path in sorted(self.root.rglob("*")):
            name = path.relative_to(self.root).as_posix()
            if path.is_file() and not path.is_symlink() and _visible(name):
                shards.append(ShardRef(uri=str(path), name=name, size=path.stat().st_size))
        return shards

    @contextlib.contextmanager
    def fetch(self, shard: ShardRef) -> Iterator[FetchedShard]:
        path = Path(shard.uri)
        try:
            digest, size = sha256_file(path), path.stat().st_size
        except OSError as exc:
            raise ShardError(Reason.READ_ERROR, f"{shard.name}: {exc.strerror or exc}") from exc
        yield FetchedShard(path, digest, size)


class S3Source:
    def __init__(self, uri: str, client: Any, spool_dir: Path | None = None) -> None:
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if len(bucket) < 3:
            raise SourceError(f"S3 URI {uri!r} names no valid bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.client = client
        self.spool_dir = spool_dir

    def list_shards(self) -> list[ShardRef]:
        from botocore.exceptions import BotoCoreError, ClientError

        start = f"{self.prefix}/" if self.prefix else ""
        shards = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(start) :]
                    if name and not name.endswith("/") and _visible(name):
                        shards.append(ShardRef(f"s3://{self.bucket}/{obj['Key']}", name, int(obj["Size"])))
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(f"cannot list {self.uri}: {exc}") from exc
        return sorted(shards, key=lambda s: s.name)

    @contextlib.contextmanager
    def fetch(self, shard: ShardRef) -> Iterator[FetchedShard]:
        from botocore.exceptions import BotoCoreError, ClientError

        key = shard.uri[len(f"s3://{self.bucket}/") :]
        suffix = "".join(Path(shard.name).suffixes[-2:])
        with tempfile.NamedTemporaryFile(dir=self.spool_dir, suffix=suffix) as tmp:
            digest = hashlib.sha256()
            size = 0
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
                while chunk := body.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    tmp.write(chunk)
                tmp.flush()
            except (ClientError, BotoCoreError, OSError) as exc:
                raise ShardError(Reason.S3_READ_ERROR, f"{shard.uri}: {exc}") from exc
            yield FetchedShard(Path(tmp.name), digest.hexdigest(), size)


def open_source(uri: str, s3_client: Any | None = None, spool_dir: Path | None = None) -> Source:
    """A source for a folder path, ``file://`` URI or ``s3://bucket/prefix``."""
    if uri.startswith("s3://"):
        if s3_client is None:
            import boto3
            from botocore.config import Config

            s3_client = boto3.client(
                "s3", config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5)
            )
        return S3Source(uri, s3_client, spool_dir)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    elif "://" in uri:
        raise SourceError(f"unsupported source URI {uri!r}; use a folder path or s3://bucket/prefix")
    return LocalSource(Path(uri).expanduser())
