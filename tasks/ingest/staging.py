"""The first steps of a batch: load the dedup index, then assess and deduplicate the new shards.

Assessing and deduplicating are one pass (`assess_and_deduplicate`): each shard streams through the
assessors (worker processes) in chunks, and every chunk goes straight on to the dedup index, whose
decisions are taken in input order because each depends on every document accepted before it. What
comes out is a `StagedBatch`: local spool files (accepted documents, quarantined records with why,
the per-document table), one tally per shard, and the batch's unique documents staged in the index,
not persisted; `pipeline` gates it, and accepts or quarantines it.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lmforge_core.config.data import DataConfig
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import BatchStatus
from lmforge_core.runtime import Runtime
from tasks.dedup import DedupIndex, DedupStore
from tasks.ingest.batch import BatchSpool, ShardTally
from tasks.ingest.known_shards import Retry, skip_reason
from tasks.ingest.processing import Assessors, process_shard
from tasks.ingest.records import ShardError
from tasks.ingest.sources import ShardRef, Source

Progress = Callable[[str, int, int], None]


def sample_source_dir(runtime: Runtime) -> Path:
    configured = runtime.settings.data.sample_source_dir
    return Path(configured).expanduser() if configured else runtime.settings.workspace / "sample-source"


def source_config(runtime: Runtime, source_uri: str) -> DataConfig:
    """The data settings an ingest of `source_uri` runs with: the source's own filter profile in effect."""
    return runtime.settings.data.for_source(source_uri, str(sample_source_dir(runtime).resolve()))


def work_dir(runtime: Runtime) -> Path:
    """Local scratch space of the ingest stage (spools, downloaded shards)."""
    folder = runtime.settings.workspace / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def batch_label(batch_id: int) -> str:
    return f"batch-{batch_id:06d}"


@dataclass
class DedupState:
    """The dedup index of everything accepted so far, and the store that persists it."""

    store: DedupStore
    index: DedupIndex


@dataclass
class StagedBatch:
    """A batch assessed and deduplicated, not yet gated: its spool, shard tallies and dedup counts.

    `batch_id` is None when no shard was new (nothing was recorded). `discard` removes the local files.
    """

    source_uri: str
    spool_dir: Path
    spool: BatchSpool
    started: float
    batch_id: int | None = None
    drop: str | None = None  # the sample drop this batch took (drop mode only)
    remaining: list[str] = field(default_factory=list)  # other drops with new shards, left for later runs
    retry_of: int | None = None
    filter_profile: str = ""  # the source's filter profile (`DataConfig.profile_for`)
    tallies: list[ShardTally] = field(default_factory=list)
    skipped: list[ShardTally] = field(default_factory=list)
    dedup_counts: Counter[str] = field(default_factory=lambda: Counter(checked=0, exact_duplicate=0,
                                                                       near_duplicate=0))
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        assert self.batch_id is not None, "no batch was created"
        return batch_label(self.batch_id)

    @property
    def read(self) -> int:
        return sum(t.read for t in self.tallies)

    @property
    def accepted(self) -> int:
        return sum(t.accepted for t in self.tallies)

    def rejects(self) -> Counter[str]:
        rejects: Counter[str] = Counter()
        for t in self.tallies:
            rejects.update(t.rejected)
        return rejects

    def shard_failures(self) -> dict[str, int]:
        return dict(Counter(t.error_reason for t in self.tallies if t.error_reason))

    def discard(self) -> None:
        self.spool.close()
        shutil.rmtree(self.spool_dir, ignore_errors=True)


def _abandon_stale_batches(runtime: Runtime) -> None:
    """Batches left `running` by a crashed ingest are closed as failed (the caller holds the ingest lock)."""
    with runtime.metadata.session() as session:
        for batch in repo.list_batches(session, limit=50):
            if batch.status == BatchStatus.RUNNING:
                repo.finish_batch(session, batch.id, status=BatchStatus.FAILED, records_read=0,
                                  records_accepted=0, rejects={},
                                  stats={"error": "abandoned: the ingest that created it did not finish"})


def _is_committed(runtime: Runtime) -> Callable[[str], bool]:
    def check(label: str) -> bool:
        with runtime.metadata.session() as session:
            try:
                batch = repo.get_batch(session, int(label.removeprefix("batch-")))
            except (repo.NotFoundError, ValueError):
                return False
            return batch.status == BatchStatus.ACCEPTED

    return check


def load_dedup_index(runtime: Runtime) -> DedupState:
    """Step 0 (under the ingest lock): close batches a crashed ingest left running, load the dedup index."""
    _abandon_stale_batches(runtime)
    store = DedupStore(runtime.artifacts, runtime.settings.data.dedup)
    return DedupState(store, store.load(_is_committed(runtime)))


def _new_batch(runtime: Runtime, staged: StagedBatch, shard: ShardRef) -> None:
    """The batch is created with its first new shard: a run with nothing new records nothing."""
    if staged.batch_id is None:
        with runtime.metadata.session() as session:
            staged.batch_id = repo.create_batch(session, staged.source_uri).id
        staged.drop = shard.drop


def _stage_shard(runtime: Runtime, source: Source, shard: ShardRef, staged: StagedBatch, assessors: Assessors,
                 index: DedupIndex, seen: dict[str, str], retry: Retry | None) -> None:
    """Fetch one shard and, unless it is known, run its records through assessment and dedup."""
    tally = ShardTally(shard.name, shard.uri, size=shard.size)
    try:
        with source.fetch(shard) as fetched:
            tally.sha256, tally.size = fetched.sha256, fetched.size
            with runtime.metadata.session() as session:
                reason = skip_reason(session, shard.name, fetched.sha256, seen, retry)
            if reason:
                tally.status, tally.skipped_because = "skipped", reason
                staged.skipped.append(tally)
                return
            seen[fetched.sha256] = shard.name
            _new_batch(runtime, staged, shard)
            assert staged.batch_id is not None
            process_shard(fetched.path, tally, assessors.cfg, assessors, index, staged.spool,
                          staged.batch_id, staged.dedup_counts)
    except ShardError as exc:  # the shard could not even be fetched (S3 errors, unreadable file)
        tally.status, tally.error_reason, tally.error = "failed", exc.reason.value, exc.detail
        _new_batch(runtime, staged, shard)
    staged.tallies.append(tally)


def assess_and_deduplicate(runtime: Runtime, source: Source, shards: list[ShardRef], dedup: DedupState, *,
                           drop_mode: bool = False, progress: Progress | None = None, retry: Retry | None = None,
                           started: float | None = None) -> StagedBatch:
    """Steps 1-2: clean, filter, redact and sign every record of the new `shards`, and deduplicate them against
    the index (the unique ones are staged in it). In drop mode only the first drop with a new shard is taken.

    The caller owns the returned batch's local files (`StagedBatch.discard`); on an error they are removed here.
    """
    cfg = source_config(runtime, source.uri)
    spool_dir = work_dir(runtime) / f"ingest-{uuid.uuid4().hex[:12]}"
    spool = BatchSpool(spool_dir, spool_dir / "documents.sqlite", cfg.quarantine_excerpt_chars,
                       cfg.gate.length_histogram_bins, cfg.gate.token_histogram_buckets)
    staged = StagedBatch(source.uri, spool_dir, spool, time.perf_counter() if started is None else started,
                         retry_of=retry.batch_id if retry else None, filter_profile=cfg.filter_profile)
    seen: dict[str, str] = {}  # sha256 -> name of the shards taken in this run
    t0 = time.perf_counter()
    try:
        with Assessors(cfg) as assessors:
            for i, shard in enumerate(shards):
                if progress:
                    progress(shard.name, i, len(shards))
                if drop_mode and staged.batch_id is not None and shard.drop != staged.drop:
                    if shard.drop not in staged.remaining:
                        staged.remaining.append(shard.drop)
                    continue
                _stage_shard(runtime, source, shard, staged, assessors, dedup.index, seen, retry)
        spool.close()
    except BaseException:
        staged.discard()
        raise
    if not drop_mode:
        staged.drop = None
    staged.timings["process_s"] = time.perf_counter() - t0
    return staged
