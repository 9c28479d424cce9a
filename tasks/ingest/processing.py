"""Stream one shard's records through assessment (in worker processes) and the dedup index.

Records are read in chunks of `chunk_docs`; at most `workers + 1` chunks are in flight, so memory
stays bounded whatever the shard size. Dedup decisions are taken in this process, in input order,
because each depends on every document accepted before it; a chunk goes to the index in one call,
which computes the lookup keys of all its documents at once.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from multiprocessing.pool import AsyncResult, Pool
from pathlib import Path
from typing import Any

import numpy as np

from lmforge_core.config.data import DataConfig
from tasks.dedup import DedupDecision, DedupIndex, Verdict
from tasks.ingest.batch import BatchSpool, ShardTally
from tasks.ingest.readers import read_shard
from tasks.ingest.records import DocRef, Reason, Record, ShardError, filter_reason
from tasks.quality.assess import Assessment, Assessor, assess_texts, init_worker
from tasks.quality.filters import bounds


class Assessors:
    """Assessment in a pool of spawned worker processes, or in-process when workers <= 1."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self._local = Assessor(cfg) if cfg.workers <= 1 else None
        self._pool: Pool | None = None  # started on first use: a run with nothing new starts no process
        self.checks = {bound.name: bound for bound in bounds(cfg.filters)}  # to explain a failed filter

    def submit(self, texts: list[str]) -> AsyncResult[list[Assessment]] | list[Assessment]:
        if self._local is not None:
            return [self._local.assess(t) for t in texts]
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(self.cfg.workers, initializer=init_worker, initargs=(self.cfg.model_dump_json(),))
        return self._pool.apply_async(assess_texts, (texts,))

    @property
    def in_flight(self) -> int:
        return max(1, self.cfg.workers) + 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> Assessors:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None and exc[0] is not None:
            self._pool.terminate()
            self._pool = None
        self.close()


def _chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """Lists of `size` records; when the reader fails, the records it gave so far come first."""
    chunk: list[Record] = []
    try:
        for record in records:
            chunk.append(record)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    except ShardError:
        if chunk:
            yield chunk
        raise
    if chunk:
        yield chunk


def assessed(records: Iterable[Record], assessors: Assessors) -> Iterator[list[tuple[Record, Assessment | None]]]:
    """Chunks of (record, assessment) in input order; malformed records pass through with None.

    A `ShardError` from the reader is re-raised after every record read before it was yielded.
    """
    pending: deque[tuple[list[Record], Any]] = deque()

    def resolve(chunk: list[Record], handle: Any) -> list[tuple[Record, Assessment | None]]:
        results = iter(handle if isinstance(handle, list) else handle.get())
        return [(record, next(results) if record.reason is None else None) for record in chunk]

    error: ShardError | None = None
    try:
        for chunk in _chunks(records, assessors.cfg.chunk_docs):
            texts = [r.text for r in chunk if r.reason is None]
            pending.append((chunk, assessors.submit(texts)))  # type: ignore[arg-type]
            while len(pending) >= assessors.in_flight:
                yield resolve(*pending.popleft())
    except ShardError as exc:
        error = exc
    while pending:
        yield resolve(*pending.popleft())
    if error is not None:
        raise error


def _doc_ref(record: Record, batch_id: int) -> str:
    return DocRef(batch_id, record.shard, record.position, record.doc_id).encode()


def _dedup(chunk: list[tuple[Record, Assessment | None]], index: DedupIndex, batch_id: int) -> list[DedupDecision]:
    """Dedup decisions for the chunk's records that passed the filters, in order (the index adds the unique)."""
    passed = [(r, a) for r, a in chunk if a is not None and not a.failed]
    if not passed:
        return []
    return index.admit_many([a.exact_key for _, a in passed], np.stack([a.signature for _, a in passed]),
                            [_doc_ref(r, batch_id) for r, _ in passed])


def process_shard(path: Path, tally: ShardTally, cfg: DataConfig, assessors: Assessors, index: DedupIndex,
                  spool: BatchSpool, batch_id: int, dedup_counts: dict[str, int]) -> None:
    """Read, assess, dedup and spool every record of one fetched shard, updating `tally`."""
    records = read_shard(path, tally.name, cfg.max_line_bytes, cfg.parquet_text_column)
    try:
        for chunk in assessed(records, assessors):
            decisions = iter(_dedup(chunk, index, batch_id))
            for record, assessment in chunk:
                tally.read += 1
                if assessment is None:
                    reason = record.reason or Reason.MISSING_TEXT
                    tally.rejected[reason] += 1
                    spool.reject(record, reason)
                    continue
                if assessment.failed:
                    reason = filter_reason(assessment.failed[0])
                    tally.rejected[reason] += 1
                    spool.reject(record, reason, assessment,
                                 rule=assessors.checks[assessment.failed[0]].explain(assessment.scores))
                    continue
                dedup_counts["checked"] += 1
                decision = next(decisions)
                if decision.verdict is not Verdict.UNIQUE:
                    dedup_counts[decision.verdict.value] += 1
                    tally.rejected[decision.verdict.value] += 1
                    spool.reject(record, decision.verdict.value, assessment, decision)
                    continue
                tally.accepted += 1
                spool.accept(record, assessment)
    except ShardError as exc:
        tally.status = "failed"
        tally.error_reason = exc.reason.value
        tally.error = exc.detail
