"""Prefect entry points of the training stage: thin wrappers over :func:`run_training` and
:func:`train_dataset_once` (the nightly step, under the global training concurrency limit)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.sync import concurrency
from prefect.runtime import task_run

from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import RunStatus
from lmforge_core.metadata.orchestration_repository import cut_off_training, latest_untrained_dataset
from lmforge_core.processes import identity_alive
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


@task(name="train", retries=0, timeout_seconds=24 * 3600, cache_policy=NO_CACHE)  # its runtime cannot be hashed
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
    logger.info("waiting for a slot of concurrency limit %r (at most %.0f s)", cfg.training_limit,
                cfg.training_slot_timeout_s)
    with contextlib.ExitStack() as held:
        started, timed_out = time.monotonic(), False
        try:
            held.enter_context(concurrency(
                cfg.training_limit, occupy=1, strict=True, timeout_seconds=cfg.training_slot_timeout_s,
                lease_duration=cfg.training_lease_s, holder=_holder()))
        except TimeoutError:
            timed_out = True
        if timed_out:  # raised outside the handler: a TimeoutError in its context would count as transient
            raise TrainingSlotTimeout(
                f"no slot of concurrency limit {cfg.training_limit!r} became free within "
                f"{cfg.training_slot_timeout_s:.0f} s (orchestration.training_slot_timeout_s): another training "
                f"holds it. A slot of a training whose process died is freed at most "
                f"{cfg.training_lease_s:.0f} s after (orchestration.training_lease_s); "
                f"`prefect gcl inspect {cfg.training_limit}` shows the limit")
        logger.info("holding %r after %.0f s: training %s", cfg.training_limit, time.monotonic() - started, dataset)
        result = train_dataset_once(runtime, dataset, steps=steps, processes=processes,
                                    progress=_event_logger(logger))
    return dataclasses.asdict(result)


class TrainingSlotTimeout(RuntimeError):
    """No slot of the training concurrency limit became free in time (not retried: the wait was the retry)."""


def _holder() -> ConcurrencyLeaseHolder | None:
    """The lease's holder: this task run (shown with the lease; Prefect's own records)."""
    task_run_id = task_run.id
    return ConcurrencyLeaseHolder(type="task_run", id=task_run_id) if task_run_id else None


@task(name="untrained-dataset", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 8])
def untrained_dataset_task(runtime: Runtime) -> str | None:
    """The latest dataset version no training has finished on yet (a night that stopped after its ingest)."""
    with runtime.metadata.session() as session:
        pending = latest_untrained_dataset(session)
        return pending.version if pending is not None else None


def interrupted_training(runtime: Runtime) -> dict[str, Any] | None:
    """The training a crashed or interrupted night left unfinished on the latest dataset version (a run left
    ``running`` by a killed process is recorded as interrupted here), so the next night finishes it before it
    ingests anything new; None when there is none. ``{"dataset_version", "run_id", "was"}``."""
    with runtime.metadata.session() as session:
        run = cut_off_training(session, identity_alive)
        if run is None:
            return None
        was = run.status.value
        if run.status is RunStatus.RUNNING:
            owner = (run.config or {}).get("owner") or {}
            repo.finish_run(session, run.run_id, status=RunStatus.INTERRUPTED, summary=run.summary,
                            error=f"its process (pid {owner.get('pid')} on {owner.get('host')}) ended without "
                                  "recording how; found by the next night, which resumes it")
        return {"dataset_version": run.dataset_version.version, "run_id": run.run_id, "was": was}
