"""Prefect entry points of the ingest stage: thin wrappers over `run_ingest` and the sample source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lmforge_core.runtime import Runtime
from tasks.ingest.pipeline import run_ingest
from tasks.ingest.sample import write_sample


@task(name="sample-data", cache_policy=NO_CACHE, timeout_seconds=600)
def sample_data_task(directory: str, days: int) -> list[dict[str, Any]]:
    return write_sample(Path(directory), days)


@task(name="ingest", cache_policy=NO_CACHE, retries=0, timeout_seconds=6 * 3600)
def ingest_task(runtime: Runtime, source_uri: str | None = None, all_drops: bool = False,
                new_tokenizer: bool = False) -> dict[str, Any]:
    """Ingest one batch; the returned dict is `IngestResult.to_dict()` (status 'quarantined' = gate failed).

    The flow decides what a quarantined batch means for the night (skip training); the task does not raise
    for it, because a failed gate is a recorded outcome, not an error.
    """
    logger = get_run_logger()

    def log(name: str, i: int, total: int) -> None:
        logger.info("shard %d/%d: %s", i + 1, total, name)

    result = run_ingest(runtime, source_uri, all_drops=all_drops, new_tokenizer=new_tokenizer, progress=log)
    logger.info(result.message)
    if result.gate is not None:
        for failure in result.gate["failures"]:
            logger.warning("gate failure: %s %s observed %r", failure["expectation_type"], failure["column"] or "",
                           failure["observed_value"])
    return result.to_dict()
