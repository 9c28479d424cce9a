"""Choose the artifact backend from the settings' ``artifact_uri``."""

from __future__ import annotations

from pathlib import Path

from lmforge_core.artifacts.base import ArtifactError, ArtifactStore
from lmforge_core.artifacts.local import LocalArtifactStore
from lmforge_core.artifacts.s3 import S3ArtifactStore
from lmforge_core.settings import Settings


def store_for_uri(uri: str) -> ArtifactStore:
    """A store for ``s3://bucket/prefix``, ``file:///path`` or a plain folder path."""
    if uri.startswith("s3://"):
        return S3ArtifactStore(uri)
    if uri.startswith("file://"):
        return LocalArtifactStore(Path(uri[len("file://") :]))
    if "://" in uri:
        raise ArtifactError(f"unsupported artifact URI {uri!r}; use a folder path or s3://bucket/prefix")
    return LocalArtifactStore(Path(uri))


def open_artifact_store(settings: Settings) -> ArtifactStore:
    return store_for_uri(settings.artifact_uri)
