"""Prefect entry points of the training stage: thin wrappers over :func:`run_training` and
:func:`train_dataset_once` (the nightly step, under the global training concurrency limit)."""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from lmforge_core.metadata.orchestration_repository import latest_untrained_dataset
from lmforge_core.runtime import Runtime
from tasks.prefect_policy import cache_key_from
from tasks.train.continual import train_dataset_once
from tasks.train.run import run_training


def _event_logger(logger: Any) -> Any:
    def log(event: dict[str, Any]) -> None:
        if event["type"] == "log":  # a line of the launched training processes' output
            logger.info("[launcher] %s", event["line"])
        elif event["type"] == "step" and event["step"] % 10 == 0:
            logger.info("step %d loss %.4f lr %.2e %.0f tok/s", event["step"], event["loss"], event["lr"],
                        event["tokens_per_s"])
        elif event["type"] in ("spike", "rollback", "checkpoint", "done", "resume"):
            logger.info("%s: %s", event["type"], {k: v for k, v in event.items() if k not in ("files", "type")})

    return log


@task(name="train", retries=0, timeout_seconds=24 * 3600)
def train_task(runtime: Runtime, dataset: str | None = None, steps: int | None = None,
               source: str = "production") -> dict[str, Any]:
    logger = get_run_logger()
    return dataclasses.asdict(run_training(runtime, dataset=dataset, steps=steps, source=source,
                                           progress=_event_logger(logger)))


@task(name="train-dataset", persist_result=True, cache_key_fn=cache_key_from("dataset", "steps", "processes"),
      timeout_seconds=24 * 3600)
def train_dataset_task(runtime: Runtime, dataset: str, steps: int | None = None,
                       processes: int | None = None) -> dict[str, Any]:
    """Train ``dataset`` once (resuming a stopped run), holding a slot of the global training limit.

    The limit (``orchestration.training_limit``, one slot) must exist on the Prefect server: the flows
    create it before they train. Waiting for the slot is logged, so a queued night says what it waits for.
    """
    logger = get_run_logger()
    cfg = runtime.settings.orchestration
    logger.info("waiting for a slot of concurrency limit %r", cfg.training_limit)
    with concurrency(cfg.training_limit, occupy=1, strict=True, timeout_seconds=cfg.training_slot_timeout_s):
        logger.info("holding %r: training %s", cfg.training_limit, dataset)
        result = train_dataset_once(runtime, dataset, steps=steps, processes=processes,
                                    progress=_event_logger(logger))
    return dataclasses.asdict(result)


@task(name="untrained-dataset", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 8])
def untrained_dataset_task(runtime: Runtime) -> str | None:
    """The latest dataset version no training has finished on yet (a night that stopped after its ingest)."""
    with runtime.metadata.session() as session:
        pending = latest_untrained_dataset(session)
        return pending.version if pending is not None else None
