"""`retry_batch`: re-run a quarantined (or failed) batch's shards through the pipeline as a new batch.

A batch that fails the quality gate keeps its shards recorded (so nightly runs do not pick them up
again and again); after the cause is fixed (a threshold in the settings, a filter), retrying runs
the same shards, fetched again from the batch's source and checked against the sha256 recorded
then, through the whole pipeline under the current settings. The new batch's stats name the earlier
one (``retry_of``) and the earlier one's name the new one (``retried_by``); each shard's record moves
to the new batch, so no shard counts twice.
"""

from __future__ import annotations

from typing import Any

from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import BatchStatus
from lmforge_core.runtime import Runtime
from tasks.ingest.ingest_lock import ingest_lock
from tasks.ingest.known_shards import Retry
from tasks.ingest.pipeline import IngestResult, Progress, ingest_shards, work_dir
from tasks.ingest.sources import ShardRef, open_source

RETRYABLE = (BatchStatus.QUARANTINED, BatchStatus.FAILED, BatchStatus.EMPTY)


class RetryError(ValueError):
    """The batch cannot be retried; the message says why and what to do instead."""


def _plan(runtime: Runtime, batch_id: int) -> tuple[str, list[ShardRef], Retry]:
    """The earlier batch's source, its shards and the retry rule, or a `RetryError` naming the obstacle."""
    with runtime.metadata.session() as session:
        try:
            batch = repo.get_batch(session, batch_id)
        except repo.NotFoundError as exc:
            raise RetryError(f"batch {batch_id} does not exist") from exc
        status, source_uri, stats = batch.status, batch.source_uri, dict(batch.stats or {})
    if status == BatchStatus.ACCEPTED:
        raise RetryError(f"batch {batch_id} was accepted (dataset version {stats.get('dataset_version')}); "
                         "only quarantined or failed batches can be retried")
    if status not in RETRYABLE:
        raise RetryError(f"batch {batch_id} is {status.value}; only quarantined or failed batches can be retried")
    if stats.get("retried_by") is not None:
        raise RetryError(f"batch {batch_id} was already retried as batch {stats['retried_by']}; "
                         "retry that batch if it needs another run")
    recorded: list[dict[str, Any]] = stats.get("shards") or []
    if not recorded:
        raise RetryError(f"batch {batch_id} recorded no shards (its ingest did not finish), so none is marked "
                         "ingested: a plain `lmforge ingest` of its source takes them again")
    shards = [ShardRef(uri=s["uri"], name=s["name"], size=int(s.get("size") or 0)) for s in recorded]
    return source_uri, shards, Retry(batch_id, {s["name"]: s.get("sha256") for s in recorded})


def retry_batch(runtime: Runtime, batch_id: int, *, new_tokenizer: bool = False, s3_client: Any | None = None,
                progress: Progress | None = None) -> IngestResult:
    """Re-run the shards of quarantined or failed batch `batch_id` as a new batch under the current settings."""
    with ingest_lock(runtime) as confirm_lock:
        source_uri, shards, retry = _plan(runtime, batch_id)
        source = open_source(source_uri, s3_client=s3_client, spool_dir=work_dir(runtime))
        result = ingest_shards(runtime, source, shards, confirm_lock, new_tokenizer=new_tokenizer,
                               progress=progress, retry=retry)
    if result.batch_id is None:
        result.message = f"batch {batch_id}: none of its shards could be re-run: " + "; ".join(
            f"{s['name']}: {s['skipped_because']}" for s in result.shards)
    else:
        result.message = f"retry of batch {batch_id}: {result.message}"
    return result
