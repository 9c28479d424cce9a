"""``publish``: export, verify in a throw-away Triton, publish and load one model version (manual)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.steps import publish_step
from flows.support import open_flow_runtime


@flow(name="publish")
def publish(model_version: str, config: str | None = None) -> dict[str, Any]:
    """Publish ``model_version`` (vN or an alias); the stage refuses a version the gate rejected."""
    rt = open_flow_runtime(config)
    try:
        return publish_step(rt, model_version)
    finally:
        rt.metadata.dispose()
