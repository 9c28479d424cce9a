"""The key of a source's data snapshot: which of its shards are not yet recorded, and after which batch.

Two triggers that see the same snapshot get the same key (the deployment run's idempotency key), so a
duplicate trigger starts nothing twice; new shards, or a new batch recorded since, make a new key.
Shards are compared by URI and size from the listing (no download); the ingest itself still decides by
the sha256 of the bytes.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import select

from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import SourceShard
from lmforge_core.runtime import Runtime
from tasks.ingest.pipeline import ensure_sample_source, work_dir
from tasks.ingest.sources import open_source


def snapshot_key(runtime: Runtime, source_uri: str | None = None) -> str:
    """sha256 (24 hex) of the source URI, its not-yet-recorded shards (URI, size) and the latest batch id."""
    uri = source_uri or str(ensure_sample_source(runtime))
    listing = open_source(uri, spool_dir=work_dir(runtime)).list_shards()
    with runtime.metadata.session() as session:
        recorded = set(session.execute(select(SourceShard.uri, SourceShard.size_bytes)).tuples())
        latest = repo.list_batches(session, limit=1)
        latest_batch = latest[0].id if latest else None
    new = sorted((s.uri, s.size) for s in listing if (s.uri, s.size) not in recorded)
    text = json.dumps({"source": uri, "new": new, "after_batch": latest_batch})
    return hashlib.sha256(text.encode()).hexdigest()[:24]
