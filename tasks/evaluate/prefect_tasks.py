"""Prefect entry point of the evaluation stage: a thin wrapper over :func:`run_evaluation`."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from lmforge_core.runtime import Runtime
from tasks.evaluate.run import run_evaluation
from tasks.prefect_policy import cache_key_from


def explain(verdict: str, checks: list[dict[str, Any]]) -> str:
    """One sentence naming the checks behind the verdict."""
    failed = [f"{c['name']} ({c.get('detail') or c.get('verdict')})" for c in checks if not c.get("passed", True)]
    return f"{verdict}: " + ("; ".join(failed) if failed else f"all {len(checks)} checks passed")


@task(name="evaluate", persist_result=True, cache_key_fn=cache_key_from("model_version"), timeout_seconds=2 * 3600)
def evaluate_task(runtime: Runtime, model_version: str) -> dict[str, Any]:
    """Evaluate and gate ``model_version``; the gate decision is recorded by the stage. Returns
    ``EvaluationResult.to_dict()`` plus ``explanation`` and the report's markdown key."""
    logger = get_run_logger()

    def log(event: dict[str, Any]) -> None:
        if event.get("type") in ("start", "plan", "gate", "done"):
            logger.info("%s: %s", event["type"], {k: v for k, v in event.items() if k not in ("type", "time")})

    result = run_evaluation(runtime, model_version, progress=log).to_dict()
    result["explanation"] = explain(result["verdict"], result["checks"])
    result["report_markdown_key"] = result["report_key"].removesuffix(".json") + ".md"
    logger.info("gate %s", result["explanation"])
    return result
