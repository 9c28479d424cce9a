"""Shard records in the metadata store: which fetched shard is skipped, and recording one under a batch.

A shard's sha256 is recorded once, so every shard counts in exactly one batch: the latest that ran it
(a retry moves the record of each shard it re-runs from the earlier batch to the new one).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from lmforge_core.metadata import repository as repo
from tasks.ingest.batch import ShardTally


@dataclass(frozen=True)
class Retry:
    """A re-run of an earlier batch's shards: those still recorded under that batch may be processed again."""

    batch_id: int
    # shard name -> sha256 recorded by the earlier batch (None when it could not be fetched then).
    expected: dict[str, str | None]

    def skip_reason(self, name: str, sha256: str, known_batch: int | None) -> str | None:
        expected = self.expected.get(name)
        if expected is not None and expected != sha256:
            return (f"bytes changed since batch {self.batch_id}: not the shard it quarantined "
                    "(a plain `lmforge ingest` takes it as a new shard)")
        if known_batch is not None and known_batch != self.batch_id:
            return f"already ingested in batch {known_batch}"
        return None


def skip_reason(session: Session, name: str, sha256: str, seen: dict[str, str], retry: Retry | None) -> str | None:
    """Why the fetched shard `name` is not processed in this run (None: process it); `seen` maps sha256 -> name."""
    if sha256 in seen:
        return f"same bytes as {seen[sha256]}"
    known = repo.find_shard(session, sha256)
    if retry is not None:
        return retry.skip_reason(name, sha256, known.batch_id if known else None)
    return f"already ingested in batch {known.batch_id}" if known else None


def record_shard(session: Session, tally: ShardTally, batch_id: int, accepted: int) -> None:
    """Record a shard under `batch_id`; a shard re-run by a retry moves from the earlier batch to this one.

    A shard's sha256 is recorded once, so every shard counts in exactly one batch (the latest that ran it).
    """
    error = f"{tally.error_reason}: {tally.error}" if tally.error_reason else None
    known = repo.find_shard(session, tally.sha256 or "")
    if known is None:
        repo.add_shard(session, uri=tally.uri, sha256=tally.sha256 or "", size_bytes=tally.size, batch_id=batch_id,
                       records_read=tally.read, records_accepted=accepted, records_rejected=tally.read - accepted,
                       error=error)
        return
    repo.move_shard(session, known, uri=tally.uri, size_bytes=tally.size, batch_id=batch_id,
                    records_read=tally.read, records_accepted=accepted, error=error)


def link_retry(session: Session, retry_of: int | None, batch_id: int) -> None:
    """Note on the earlier batch which batch re-ran its shards (the new batch's stats name the earlier one)."""
    if retry_of is not None:
        repo.add_batch_stats(session, retry_of, retried_by=batch_id)
