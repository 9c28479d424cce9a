"""Prefect entry point of the evaluation stage: a thin wrapper over :func:`run_evaluation`."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from lmforge_core.runtime import Runtime
from tasks.evaluate.run import run_evaluation


@task(name="evaluate", retries=0, timeout_seconds=6 * 3600)
def evaluate_task(runtime: Runtime, model_version: str = "candidate") -> dict[str, Any]:
    """Evaluate and gate ``model_version``; returns the result (verdict, checks, report key)."""
    logger = get_run_logger()

    def log(event: dict[str, Any]) -> None:
        if event["type"] != "perplexity_batch":
            logger.info("%s: %s", event["type"], {k: v for k, v in event.items() if k not in ("type", "time")})

    return run_evaluation(runtime, model_version, progress=log).to_dict()
