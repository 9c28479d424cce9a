"""Prefect entry points of the publish stage: thin wrappers over :mod:`tasks.publish.publish`."""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import get_run_logger, task

from lmforge_core.runtime import Runtime
from tasks.publish.publish import publish_model, rollback_serving


@task(name="publish", retries=0, timeout_seconds=3600)
def publish_task(runtime: Runtime, model_version: str, actor: str = "prefect") -> dict[str, Any]:
    result = dataclasses.asdict(publish_model(runtime, model_version, actor=actor))
    if result["reused"]:
        get_run_logger().info("%s is already published as Triton version %d with the same graph: nothing to do",
                              result["model_version"], result["triton_version"])
    else:
        get_run_logger().info("published %s as Triton version %d (parity %.2g, verified %s)", result["model_version"],
                              result["triton_version"], result["parity_max_abs"], result["verification"]["latency_ms"])
    return result


@task(name="rollback-serving", retries=0, timeout_seconds=600)
def rollback_task(runtime: Runtime, actor: str, reason: str = "") -> dict[str, Any]:
    result = rollback_serving(runtime, actor=actor, reason=reason)
    get_run_logger().info("serving %s again (was Triton version %d)", result["model_version"], result["from_version"])
    return result
