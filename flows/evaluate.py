"""``evaluate``: evaluate and gate one model version (manual deployment)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.steps import evaluate_step
from flows.support import open_flow_runtime


@flow(name="evaluate")
def evaluate(model_version: str = "candidate", config: str | None = None) -> dict[str, Any]:
    """Evaluate ``model_version`` (vN or an alias); publishes the report and the gate decision artifacts."""
    rt = open_flow_runtime(config)
    try:
        return evaluate_step(rt, model_version)
    finally:
        rt.metadata.dispose()
