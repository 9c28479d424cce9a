"""Prefect entry point of the training stage: a thin wrapper over :func:`run_training`."""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import get_run_logger, task

from lmforge_core.runtime import Runtime
from tasks.train.run import run_training


@task(name="train", retries=0, timeout_seconds=24 * 3600)
def train_task(runtime: Runtime, dataset: str | None = None, steps: int | None = None,
               source: str = "production") -> dict[str, Any]:
    logger = get_run_logger()

    def log(event: dict[str, Any]) -> None:
        if event["type"] == "step" and event["step"] % 10 == 0:
            logger.info("step %d loss %.4f lr %.2e %.0f tok/s", event["step"], event["loss"], event["lr"],
                        event["tokens_per_s"])
        elif event["type"] in ("spike", "rollback", "checkpoint", "done"):
            logger.info("%s: %s", event["type"], {k: v for k, v in event.items() if k not in ("files",)})

    return dataclasses.asdict(run_training(runtime, dataset=dataset, steps=steps, source=source, progress=log))
