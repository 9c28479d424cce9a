"""``ingest``: new shards of a source -> quality gate -> dataset version (manual deployment)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.steps import ingest_step
from flows.support import open_flow_runtime


@flow(name="ingest")
def ingest(source: str | None = None, config: str | None = None) -> dict[str, Any]:
    """Ingest one batch; the run fails, naming the failed expectations, when the gate rejects it."""
    rt = open_flow_runtime(config)
    try:
        return ingest_step(rt, source)
    finally:
        rt.metadata.dispose()
