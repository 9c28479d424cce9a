"""Artifact store: put/get/stream/list/delete files by relative key, local folder or S3.

Every object carries the sha256 recorded when it was written and is verified when it is read.
Writes are atomic on both backends: a reader sees the old object or the new one, never half.
"""

from lmforge_core.artifacts.base import (
    ArtifactError,
    ArtifactInfo,
    ArtifactIntegrityError,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactStoreUnavailable,
    InvalidArtifactKey,
    validate_key,
)
from lmforge_core.artifacts.factory import open_artifact_store

__all__ = [
    "ArtifactError",
    "ArtifactInfo",
    "ArtifactIntegrityError",
    "ArtifactNotFound",
    "ArtifactStore",
    "ArtifactStoreUnavailable",
    "InvalidArtifactKey",
    "open_artifact_store",
    "validate_key",
]
