"""Prefect entry points of the ingest stage: thin wrappers over `run_ingest`, `retry_batch` and the sample source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lmforge_core.runtime import Runtime
from tasks.ingest.pipeline import IngestResult, Progress, run_ingest
from tasks.ingest.retry import retry_batch
from tasks.ingest.sample import write_sample


@task(name="sample-data", cache_policy=NO_CACHE, timeout_seconds=600)
def sample_data_task(directory: str, days: int) -> list[dict[str, Any]]:
    return write_sample(Path(directory), days)


def _shard_logger(logger: Any) -> Progress:
    def log(name: str, i: int, total: int) -> None:
        logger.info("shard %d/%d: %s", i + 1, total, name)

    return log


def _log_outcome(logger: Any, result: IngestResult) -> None:
    logger.info(result.message)
    if result.gate is not None:
        for failure in result.gate["failures"]:
            logger.warning("gate failure: %s %s observed %r", failure["expectation_type"], failure["column"] or "",
                           failure["observed_value"])


@task(name="ingest", cache_policy=NO_CACHE, retries=0, timeout_seconds=6 * 3600)
def ingest_task(runtime: Runtime, source_uri: str | None = None, all_drops: bool = False,
                new_tokenizer: bool = False) -> dict[str, Any]:
    """Ingest one batch; the returned dict is `IngestResult.to_dict()` (status 'quarantined' = gate failed).

    The flow decides what a quarantined batch means for the night (skip training); the task does not raise
    for it, because a failed gate is a recorded outcome, not an error.
    """
    logger = get_run_logger()
    result = run_ingest(runtime, source_uri, all_drops=all_drops, new_tokenizer=new_tokenizer,
                        progress=_shard_logger(logger))
    _log_outcome(logger, result)
    return result.to_dict()


@task(name="retry-batch", cache_policy=NO_CACHE, retries=0, timeout_seconds=6 * 3600)
def retry_batch_task(runtime: Runtime, batch_id: int, new_tokenizer: bool = False) -> dict[str, Any]:
    """Re-run the shards of quarantined or failed batch `batch_id` as a new batch (see `retry_batch`); returns
    `IngestResult.to_dict()`, like `ingest_task`. A batch that cannot be retried raises `RetryError`."""
    logger = get_run_logger()
    result = retry_batch(runtime, batch_id, new_tokenizer=new_tokenizer, progress=_shard_logger(logger))
    _log_outcome(logger, result)
    return result.to_dict()
