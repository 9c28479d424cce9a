"""The Triton model repository on S3 (``s3://bucket/prefix``): what the Triton containers in the cloud load.

A version is staged and verified locally exactly as for a local repository (a throw-away Triton on the
staged copy), then uploaded through the artifact store's S3 client (:class:`S3ArtifactStore`: boto3's
credential chain, ``AWS_ENDPOINT_URL``, the sha256 of every object in its metadata). S3 has no rename, so
what a reader can see is ordered instead:

1. every file of ``<model>/<v>/`` of the four models, the manifests excepted (files left by an upload cut
   short, its manifest among them, are deleted first);
2. each folder's ``lmforge.json`` (the sha256 of every file): a folder without it is no version, so an
   upload cut short is never counted as published (:meth:`S3Repository.published_versions`);
3. the configs, callees first: only a config's version policy makes a version loadable, so a Triton
   reading the bucket (loading on request, or polling) never meets half a version.

Triton reads the prefix itself (:attr:`S3Repository.triton_path`): ``s3://bucket/prefix`` on AWS's own
endpoints, ``s3://http://host:port/bucket/prefix`` on another one (MinIO, moto), with the credentials and
region of its environment. It accepts only letters, digits, ``.``, ``_`` and ``-`` in a repository path,
so the prefix is held to that.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lmforge_core.artifacts.base import ArtifactError
from lmforge_core.artifacts.s3 import S3ArtifactStore
from serving.onnx_files import read_manifest
from serving.triton_config import LM, MODELS, ServingOptions, checked_text, serve_only, validate_config
from serving.triton_repository import (
    CONFIG_FILES,
    VERSION_MANIFEST,
    RepositoryError,
    StagedVersion,
    record_of,
    repository_configs,
    verify_version_dir,
)

_TRITON_PART = re.compile(r"^[0-9A-Za-z._-]+$")  # what Triton's S3 path pattern accepts in a path part


@contextlib.contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    try:
        yield
    except ArtifactError as exc:
        raise RepositoryError(f"S3 model repository {uri}: {exc}") from exc


def triton_s3_path(bucket: str, prefix: str, endpoint_url: str) -> str:
    """The repository as ``tritonserver --model-repository`` names it: host and port written out for an
    endpoint other than AWS's own (Triton's pattern requires both)."""
    tail = "/".join(p for p in (bucket, prefix) if p)
    url = urlsplit(endpoint_url)
    if not url.hostname or url.scheme not in ("http", "https"):
        raise RepositoryError(f"S3 endpoint {endpoint_url!r} is not an http(s) URL Triton can reach")
    if url.hostname.endswith(".amazonaws.com"):
        return f"s3://{tail}"
    return f"s3://{url.scheme}://{url.hostname}:{url.port or (443 if url.scheme == 'https' else 80)}/{tail}"


class S3Repository:
    """The :class:`serving.triton_repository.ModelRepository` interface on an S3 prefix."""

    def __init__(self, uri: str, staging_root: Path, store: S3ArtifactStore | None = None) -> None:
        with _s3_errors(uri):
            self.store = store or S3ArtifactStore(uri)
        bad = [part for part in self.store.prefix.split("/") if part and not _TRITON_PART.match(part)]
        if bad:
            raise RepositoryError(f"S3 model repository {uri!r}: Triton reads only letters, digits, '.', '_' and "
                                  f"'-' in a repository path, and the prefix has {bad[0]!r}")
        self._staging = Path(staging_root)

    @property
    def uri(self) -> str:
        return self.store.uri

    @property
    def triton_path(self) -> str:
        return triton_s3_path(self.store.bucket, self.store.prefix, self.store.endpoint_url)

    @property
    def staging_root(self) -> Path:
        return self._staging

    def published_versions(self) -> list[int]:
        """Versions whose folder is complete (has its manifest) in every model."""
        with _s3_errors(self.uri):
            keys = self.store.list_keys()
        complete: dict[str, set[int]] = {model: set() for model in MODELS}
        for parts in (key.split("/") for key in keys):
            if len(parts) == 3 and parts[0] in complete and parts[1].isdigit() and parts[2] == VERSION_MANIFEST:
                complete[parts[0]].add(int(parts[1]))
        return sorted(set.intersection(*complete.values()))

    def _manifest(self, model: str, version: int) -> dict[str, Any]:
        with _s3_errors(self.uri):
            return json.loads(self.store.get_bytes(f"{model}/{version}/{VERSION_MANIFEST}"))

    def version_record(self, version: int) -> dict[str, Any] | None:
        return record_of(self._manifest(LM, version)) if version in self.published_versions() else None

    def verify_version(self, version: int) -> None:
        """Every file the version's manifests list is in the bucket with the sha256 they record (compared with
        the sha256 the upload put in each object's metadata)."""
        for model in MODELS:
            for name, digest in self._manifest(model, version)["files"].items():
                key = f"{model}/{version}/{name}"
                with _s3_errors(self.uri):
                    info = self.store.info(key)
                if info.sha256 != digest:
                    raise RepositoryError(f"{self.uri}/{key} does not match its recorded sha256; publish a new version")

    def publish(self, staged: StagedVersion, options: ServingOptions) -> list[int]:
        """Upload the staged version in the order the module docstring gives; the local staging goes after."""
        version = staged.version
        for model in MODELS:
            verify_version_dir(staged.staging_dir(model))
        if version in self.published_versions():
            raise RepositoryError(f"version {version} already exists in {self.uri}: versions are immutable, "
                                  "publish a new one")
        with _s3_errors(self.uri):
            existing = self.store.list_keys()
            for model in MODELS:
                self._upload_files(staged.staging_dir(model), f"{model}/{version}", existing)
            for model in MODELS:
                self.store.put_file(f"{model}/{version}/{VERSION_MANIFEST}", staged.staging_dir(model) / VERSION_MANIFEST)
            graph = read_manifest(staged.staging_dir(LM))["model"]
            for path, config in repository_configs(version, options, graph).items():
                self.store.put_bytes(path, checked_text(config, f"{self.uri}/{path}").encode())
        for model in MODELS:
            shutil.rmtree(staged.staging_dir(model))
        return self.published_versions()

    def _upload_files(self, folder: Path, prefix: str, existing: list[str]) -> None:
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != VERSION_MANIFEST)
        for key in existing:  # left by an upload cut short (its manifest too: the folder is no version meanwhile)
            if key.startswith(f"{prefix}/") and key[len(prefix) + 1:] not in names:
                self.store.delete(key)
        for name in names:
            self.store.put_file(f"{prefix}/{name}", folder / name)

    def serve_versions(self, versions: list[int]) -> None:
        """Point every config's version policy at already published ``versions`` (switch, rollback)."""
        published = self.published_versions()
        missing = sorted(set(versions) - set(published))
        if missing:
            raise RepositoryError(f"versions {missing} are not published in {self.uri} (have {published})")
        for version in versions:
            self.verify_version(version)
        with _s3_errors(self.uri):
            for path in CONFIG_FILES:
                source = f"{self.uri}/{path}"
                config = validate_config(self.store.get_bytes(path).decode(), source)
                self.store.put_bytes(path, checked_text(serve_only(config, versions), source).encode())
