"""Artifact store on S3 (or any S3-compatible endpoint; boto3 honours ``AWS_ENDPOINT_URL``).

Writes are spooled to a local temporary file while hashing, then uploaded in one PUT or a multipart
upload with the sha256 in the object metadata (``x-amz-meta-sha256``). S3 makes an object visible
only when its PUT or multipart completion succeeds, so a reader never sees a partial object, and an
aborted write leaves the previous version in place. Credentials come only from boto3's standard chain.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from lmforge_core.artifacts.base import (
    CHUNK_SIZE,
    ArtifactError,
    ArtifactInfo,
    ArtifactNotFound,
    ArtifactStoreUnavailable,
    VerifyingReader,
    validate_key,
    validate_prefix,
)
from lmforge_core.artifacts.common import StoreOperations
from lmforge_core.fileio import sha256_file

MULTIPART_THRESHOLD = 64 * 1024 * 1024
_MISSING = {"404", "NoSuchKey", "NotFound"}
_AUTH = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken"}
# S3's general-purpose bucket naming rules (the same pattern the Terraform modules validate against)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix``)."""
    if not uri.startswith("s3://"):
        raise ArtifactError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ArtifactError(f"S3 URI {uri!r} names no valid bucket: bucket names have 3-63 characters, lowercase "
                            "letters, digits, '.' and '-', and begin and end with a letter or digit")
    return bucket, validate_prefix(prefix) if prefix else ""


class S3ArtifactStore(StoreOperations):
    def __init__(
        self,
        uri: str,
        client: Any | None = None,
        spool_dir: Path | None = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
    ) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.uri = uri.rstrip("/")
        self._client = client or boto3.client(
            "s3", config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5)
        )
        self._spool_dir = spool_dir
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(5 * 1024 * 1024, min(multipart_threshold, CHUNK_SIZE * 2)),
            use_threads=True,
        )

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint the client talks to (boto3's default for the region, or ``AWS_ENDPOINT_URL``)."""
        return str(self._client.meta.endpoint_url)

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc: Exception, key: str | None = None) -> ArtifactError:
        """Translate a boto error into one that names the cause and what to do."""
        where = f"s3://{self.bucket}/{self._object_key(key) if key else self.prefix}"
        if isinstance(exc, NoCredentialsError):
            return ArtifactStoreUnavailable(
                f"no AWS credentials found for {where}; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
            )
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchBucket":
                return self._missing_bucket()
            if code in _MISSING:
                return ArtifactNotFound(f"no artifact {key!r} in {self.uri}")
            if code in _AUTH:
                return ArtifactStoreUnavailable(
                    f"S3 refused the credentials for {where} ({code}); check the AWS access key and secret"
                )
            return ArtifactError(f"S3 error on {where}: {code}")
        return ArtifactStoreUnavailable(f"cannot reach S3 for {where}: {exc}")

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        object_key = self._object_key(key)
        with tempfile.NamedTemporaryFile(prefix="lmforge-s3-", dir=self._spool_dir) as spool:
            yield spool  # type: ignore[misc]
            spool.flush()
            self._upload(Path(spool.name), object_key, key)

    def put_file(self, key: str, path: Path) -> ArtifactInfo:
        object_key = self._object_key(key)
        self._upload(Path(path), object_key, key)
        return self.info(key)

    def _upload(self, path: Path, object_key: str, key: str) -> None:
        sha256 = sha256_file(path)
        try:
            self._client.upload_file(
                str(path),
                self.bucket,
                object_key,
                ExtraArgs={"Metadata": {"sha256": sha256}},
                Config=self._transfer,
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, key) from exc
        except boto3.exceptions.S3UploadFailedError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, ClientError) else None
            raise (self._error(cause, key) if cause else ArtifactError(f"upload of {key!r} failed: {exc}")) from exc

    def info(self, key: str) -> ArtifactInfo:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in _MISSING:
                self.check()  # a missing bucket is the more useful thing to report than a missing key
            raise self._error(exc, key) from exc
        sha256 = head.get("Metadata", {}).get("sha256")
        if not sha256:
            raise ArtifactError(f"artifact {key!r} in {self.uri} has no recorded sha256; it was not written by lmforge")
        return ArtifactInfo(key=key, size=int(head["ContentLength"]), sha256=sha256)

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[VerifyingReader]:
        # One GET carries the bytes and the sha256 they were written with, so a concurrent overwrite
        # cannot pair one version's bytes with another version's checksum.
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._object_key(key))
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in _MISSING:
                self.check()
            raise self._error(exc, key) from exc
        sha256 = response.get("Metadata", {}).get("sha256")
        if not sha256:
            response["Body"].close()
            raise ArtifactError(f"artifact {key!r} in {self.uri} has no recorded sha256; it was not written by lmforge")
        reader = VerifyingReader(response["Body"], key, sha256, int(response["ContentLength"]))
        try:
            yield reader
        except (BotoCoreError, ReadTimeoutError, ProtocolError) as exc:
            raise ArtifactStoreUnavailable(f"reading artifact {key!r} from {self.uri} failed midway: {exc}") from exc
        finally:
            reader.close()

    def list(self, prefix: str = "") -> list[ArtifactInfo]:
        return [self.info(key) for key in self.list_keys(prefix)]

    def list_keys(self, prefix: str = "") -> list[str]:
        """The keys under ``prefix``, from the listing alone (no HEAD request per object, unlike :meth:`list`)."""
        prefix = validate_prefix(prefix)
        # The listing prefix always ends at a key-part boundary, so 'team' never matches 'team2/...'.
        if self.prefix:
            full = f"{self.prefix}/{prefix}" if prefix else f"{self.prefix}/"
        else:
            full = prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Contents", []):
                    key = item["Key"][strip:]
                    if not prefix or key == prefix or key.startswith(prefix + "/"):
                        keys.append(key)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc
        return sorted(keys)

    def exists(self, key: str) -> bool:
        try:
            self.info(key)
        except ArtifactNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        self.info(key)  # raises ArtifactNotFound for a missing key, like the local backend
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._object_key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, key) from exc

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise (self._missing_bucket() if code in ("404", "NoSuchBucket") else self._error(exc)) from exc
        except BotoCoreError as exc:
            raise self._error(exc) from exc

    def _missing_bucket(self) -> ArtifactStoreUnavailable:
        return ArtifactStoreUnavailable(
            f"bucket {self.bucket!r} does not exist; create it or fix LMFORGE_ARTIFACT_URI"
        )


