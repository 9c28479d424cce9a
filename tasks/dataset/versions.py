"""Reading recorded dataset versions (for the CLI, the flows and the dashboard)."""

from __future__ import annotations

from typing import Any

from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import Runtime


def dataset_versions(runtime: Runtime) -> list[dict[str, Any]]:
    """Every dataset version, oldest first, with token counts and lineage (batches, tokenizer)."""
    with runtime.metadata.session() as session:
        return [
            {
                "version": ds.version,
                "created_at": ds.created_at.isoformat(),
                "documents": ds.documents,
                "train_tokens": ds.train_tokens,
                "validation_tokens": ds.validation_tokens,
                "tokenizer": ds.tokenizer.version if ds.tokenizer else None,
                "batches": sorted(link.batch_id for link in ds.lineage),
                "manifest_key": ds.manifest_key,
            }
            for ds in repo.list_dataset_versions(session)
        ]
