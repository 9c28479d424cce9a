"""The Runtime: settings plus the opened metadata and artifact stores, handed to every stage."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge_core.artifacts import ArtifactStore, open_artifact_store
from lmforge_core.metadata import MetadataStore
from lmforge_core.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    metadata: MetadataStore
    artifacts: ArtifactStore


def open_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    """Create the workspace, connect the stores and (by default) apply pending migrations."""
    settings.workspace.mkdir(parents=True, exist_ok=True)
    metadata = MetadataStore(settings.database_url)
    if migrate:
        metadata.ensure_schema()
    return Runtime(settings=settings, metadata=metadata, artifacts=open_artifact_store(settings))
