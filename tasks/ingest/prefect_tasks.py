"""Prefect entry points of the ingest stage: thin @task wrappers over the pipeline's steps and over the
whole of `run_ingest` and `retry_batch`.

A flow that runs the steps as tasks holds `ingest_lock` around them and discards the staged batch
at the end (see `tasks.ingest.pipeline` for the order, inputs and outputs):

    with ingest_lock(runtime) as confirm:
        plan = plan_shards_task(runtime, source_uri)
        dedup = load_dedup_index_task(runtime)
        staged = assess_and_deduplicate_task(runtime, plan, dedup)
        try:
            if staged.batch_id is None:
                return nothing_new(staged)
            gate = gate_batch_task(runtime, staged)
            if gate.passed:
                choice = choose_tokenizer_task(runtime, staged)
                decision = accept_batch(staged, choice, build_dataset_version_task(runtime, staged, choice))
            else:
                decision = quarantine_batch_task(runtime, staged, gate)
            return commit_batch_task(runtime, staged, gate, decision, dedup, confirm)
        finally:
            staged.discard()

The step tasks pass live objects (open spools, the in-memory dedup index, the lock's confirm function):
they never cache or persist results, and must run in the flow's process.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lmforge_core.metadata.locks import ConfirmLock
from lmforge_core.runtime import Runtime
from tasks.ingest.pipeline import (
    BatchDecision,
    DatasetBuild,
    DedupState,
    GateOutcome,
    IngestResult,
    Progress,
    ShardPlan,
    StagedBatch,
    TokenizerChoice,
    assess_and_deduplicate,
    build_dataset_version,
    choose_tokenizer,
    commit_batch,
    gate_batch,
    load_dedup_index,
    plan_shards,
    quarantine_batch,
    run_ingest,
)
from tasks.ingest.retry import retry_batch

_STEP = {"cache_policy": NO_CACHE, "persist_result": False, "retries": 0}


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


@task(name="ingest-plan-shards", timeout_seconds=600, **_STEP)
def plan_shards_task(runtime: Runtime, source_uri: str | None = None, all_drops: bool = False) -> ShardPlan:
    return plan_shards(runtime, source_uri, all_drops=all_drops)


@task(name="ingest-load-dedup-index", timeout_seconds=3600, **_STEP)
def load_dedup_index_task(runtime: Runtime) -> DedupState:
    return load_dedup_index(runtime)


@task(name="ingest-assess-and-deduplicate", timeout_seconds=6 * 3600, **_STEP)
def assess_and_deduplicate_task(runtime: Runtime, plan: ShardPlan, dedup: DedupState) -> StagedBatch:
    return assess_and_deduplicate(runtime, plan.source, plan.shards, dedup, drop_mode=plan.drop_mode,
                                  progress=_shard_logger(get_run_logger()))


@task(name="ingest-gate", timeout_seconds=3600, **_STEP)
def gate_batch_task(runtime: Runtime, staged: StagedBatch) -> GateOutcome:
    return gate_batch(runtime, staged)


@task(name="ingest-quarantine", timeout_seconds=3600, **_STEP)
def quarantine_batch_task(runtime: Runtime, staged: StagedBatch, gate: GateOutcome) -> BatchDecision:
    return quarantine_batch(runtime, staged, gate)


@task(name="ingest-tokenizer", timeout_seconds=6 * 3600, **_STEP)
def choose_tokenizer_task(runtime: Runtime, staged: StagedBatch, new_tokenizer: bool = False) -> TokenizerChoice:
    return choose_tokenizer(runtime, staged, new_tokenizer)


@task(name="ingest-dataset-version", timeout_seconds=6 * 3600, **_STEP)
def build_dataset_version_task(runtime: Runtime, staged: StagedBatch, choice: TokenizerChoice) -> DatasetBuild:
    return build_dataset_version(runtime, staged, choice)


@task(name="ingest-commit", timeout_seconds=3600, **_STEP)
def commit_batch_task(runtime: Runtime, staged: StagedBatch, gate: GateOutcome, decision: BatchDecision,
                      dedup: DedupState, confirm_lock: ConfirmLock) -> dict[str, Any]:
    """The batch's one commit; returns `IngestResult.to_dict()` like `ingest_task`."""
    result = commit_batch(runtime, staged, gate, decision, dedup, confirm_lock)
    _log_outcome(get_run_logger(), result)
    return result.to_dict()


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
