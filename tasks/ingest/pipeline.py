"""`run_ingest`: sources -> clean/filter/PII -> dedup -> quality gate -> dataset version, end to end.

Which shards form the batch:
- every shard is identified by its sha256; shards already recorded in the metadata store (ingested,
  failed or quarantined alike) are skipped, so a re-run with nothing new ingests nothing and says so
  (a quarantined batch's shards run again only through `retry.retry_batch`);
- with the built-in sample source (no URI given) one batch is the next not-yet-ingested *drop*
  (top-level folder such as ``day-03-data-formats-text``), so consecutive nightly runs see one new
  topic each; ``all_drops=True`` (and any explicit URI) takes every new shard into one batch.

Outcome of a batch:
- gate passes: the tokenizer (the current one, or a new one trained on this batch when none exists
  or `new_tokenizer` is set), a new immutable dataset version, the accepted documents as an artifact,
  all recorded in one metadata transaction; then the dedup index is committed (see `dedup_store`);
- gate fails: the batch is quarantined (status ``quarantined``, its would-be-accepted documents in
  ``quarantine/<batch>/gate_failed.jsonl.gz``, counted under ``quality_gate_failed``); it never
  reaches a dataset version and its documents never enter the dedup index.
Records rejected on the way are in ``quarantine/<batch>/rejected.jsonl.gz`` with reason and scores.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.locks import ConfirmLock
from lmforge_core.metadata.models import BatchStatus, DatasetVersion, TokenizerVersion
from lmforge_core.runtime import Runtime
from model.token_shards import manifest_bytes
from model.tokenizer import TokenizerRef, load_tokenizer, make_ref, store_tokenizer, train_bpe
from tasks.dataset.packing import split_of, write_dataset
from tasks.dedup import DedupStore
from tasks.ingest.batch import BatchSpool, ShardTally
from tasks.ingest.ingest_lock import ingest_lock
from tasks.ingest.known_shards import Retry, link_retry, record_shard, skip_reason
from tasks.ingest.processing import Assessors, process_shard
from tasks.ingest.records import ShardError
from tasks.ingest.sample import write_sample
from tasks.ingest.sources import ShardRef, Source, open_source
from tasks.quality.drift import jensen_shannon
from tasks.quality.gate import GateResult, run_gate

GATE_FAILED = "quality_gate_failed"
Progress = Callable[[str, int, int], None]


@dataclass
class IngestResult:
    """What one `run_ingest` call did; `to_dict()` is what the CLI prints with --json."""

    status: str  # accepted | quarantined | nothing_new | empty
    source_uri: str
    message: str
    batch_id: int | None = None
    drop: str | None = None
    shards: list[dict[str, Any]] = field(default_factory=list)
    records_read: int = 0
    records_accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    shard_failures: dict[str, int] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] | None = None
    dataset_version: str | None = None
    dataset: dict[str, Any] | None = None
    tokenizer_version: str | None = None
    tokenizer_trained: bool = False
    quarantine_keys: list[str] = field(default_factory=list)
    data_docs_key: str | None = None
    remaining_drops: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    retry_of: int | None = None  # the quarantined or failed batch whose shards this batch re-ran

    @property
    def gate_failed(self) -> bool:
        return self.status == "quarantined"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_source_dir(runtime: Runtime) -> Path:
    configured = runtime.settings.data.sample_source_dir
    return Path(configured).expanduser() if configured else runtime.settings.workspace / "sample-source"


def ensure_sample_source(runtime: Runtime) -> Path:
    """The sample source folder, written on first use."""
    folder = sample_source_dir(runtime)
    if not folder.is_dir() or not any(folder.iterdir()):
        write_sample(folder, runtime.settings.data.sample_days)
    return folder


def _batch_label(batch_id: int) -> str:
    return f"batch-{batch_id:06d}"


def _create_batch(runtime: Runtime, source_uri: str) -> int:
    with runtime.metadata.session() as session:
        return repo.create_batch(session, source_uri).id


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


def _figures(runtime: Runtime, batch_id: int, read: int, accepted: int, rejected: int,
             dedup_counts: dict[str, int], profile: dict[str, list[int]]) -> dict[str, Any]:
    with runtime.metadata.session() as session:
        previous = repo.previous_accepted_batch(session, batch_id)
        prev_profile = (previous.stats or {}).get("profile") if previous else None
        prev_accepted = previous.records_accepted if previous else None
        prev_id = previous.id if previous else None
    duplicates = dedup_counts["exact_duplicate"] + dedup_counts["near_duplicate"]
    figures: dict[str, Any] = {
        "rows_read": read,
        "rows_accepted": accepted,
        "rows_rejected": rejected,
        "reject_rate": rejected / read if read else 1.0,
        "duplicate_rate": duplicates / dedup_counts["checked"] if dedup_counts["checked"] else 0.0,
        "exact_duplicates": dedup_counts["exact_duplicate"],
        "near_duplicates": dedup_counts["near_duplicate"],
        "previous_batch_id": prev_id,
        "volume_ratio": (accepted / prev_accepted) if prev_accepted else None,
        "length_jsd": None,
        "token_jsd": None,
    }
    if prev_profile:
        figures["length_jsd"] = jensen_shannon(profile["length_hist"], prev_profile["length_hist"])
        figures["token_jsd"] = jensen_shannon(profile["token_hist"], prev_profile["token_hist"])
    return figures


def _upload_data_docs(runtime: Runtime, gate: GateResult, label: str) -> str | None:
    """Copy this run's Data Docs pages (index, suites, its own validations, styles) to the artifact store."""
    site = gate.site_dir
    if not (site / "index.html").is_file():
        return None
    prefix = f"quality/{label}/data_docs"
    for path in sorted(site.rglob("*")):
        rel = path.relative_to(site).as_posix()
        if not path.is_file() or rel.startswith("static/fonts/"):
            continue
        if rel.startswith("validations/") and f"/{label}-" not in f"/{rel}":
            continue  # validations of other runs live under their own run's prefix
        runtime.artifacts.put_file(f"{prefix}/{rel}", path)
    return f"{prefix}/index.html"


def _current_tokenizer(runtime: Runtime) -> TokenizerRef | None:
    cfg = runtime.settings.data.tokenizer
    with runtime.metadata.session() as session:
        latest = repo.latest_tokenizer_version(session)
        if latest is None:
            return None
        version, key, record_id = latest.version, latest.artifact_key, latest.id
    return load_tokenizer(runtime.artifacts, version, key, cfg, record_id)


def _select_shards(shards: list[ShardRef], drop_mode: bool) -> list[ShardRef]:
    return sorted(shards, key=lambda s: (s.drop, s.name)) if drop_mode else shards


def run_ingest(
    runtime: Runtime,
    source_uri: str | None = None,
    *,
    all_drops: bool = False,
    new_tokenizer: bool = False,
    s3_client: Any | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Ingest the new shards of a source into one batch; see the module docstring for the rules."""
    started = time.perf_counter()
    drop_mode = source_uri is None and not all_drops
    with ingest_lock(runtime) as confirm_lock:
        if source_uri is None:
            source_uri = str(ensure_sample_source(runtime))
        source = open_source(source_uri, s3_client=s3_client, spool_dir=work_dir(runtime))
        shards = _select_shards(source.list_shards(), drop_mode)
        return ingest_shards(runtime, source, shards, confirm_lock, drop_mode=drop_mode,
                             new_tokenizer=new_tokenizer, progress=progress, started=started)


def work_dir(runtime: Runtime) -> Path:
    """Local scratch space of the ingest stage (spools, downloaded shards)."""
    folder = runtime.settings.workspace / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def ingest_shards(runtime: Runtime, source: Source, shards: list[ShardRef], confirm_lock: ConfirmLock, *,
                  drop_mode: bool = False,
                  new_tokenizer: bool = False, progress: Progress | None = None, retry: Retry | None = None,
                  started: float | None = None) -> IngestResult:
    """Process `shards` of `source` as one new batch (the shards already ingested are skipped).

    The caller holds the `ingest_lock` (`run_ingest` and `retry_batch` do): with it held, a batch left
    running can only be a crashed ingest's, and is closed as abandoned. ``confirm_lock`` is called before
    the journal is written and before the metadata commit.
    """
    cfg = runtime.settings.data
    timings: dict[str, float] = {}
    started = time.perf_counter() if started is None else started
    work_root = work_dir(runtime)
    _abandon_stale_batches(runtime)
    store = DedupStore(runtime.artifacts, cfg.dedup)
    index = store.load(_is_committed(runtime))
    timings["load_index_s"] = time.perf_counter() - started

    batch_id: int | None = None  # created with the first new shard: a run with nothing new records nothing
    spool_dir = work_root / f"ingest-{uuid.uuid4().hex[:12]}"
    spool = BatchSpool(spool_dir, spool_dir / "documents.sqlite", cfg.quarantine_excerpt_chars,
                       cfg.gate.length_histogram_bins, cfg.gate.token_histogram_buckets)
    tallies: list[ShardTally] = []
    skipped: list[ShardTally] = []
    dedup_counts: dict[str, int] = Counter(checked=0, exact_duplicate=0, near_duplicate=0)
    chosen_drop: str | None = None
    seen_this_run: dict[str, str] = {}
    drops_with_new: list[str] = []
    try:
        t0 = time.perf_counter()
        with Assessors(cfg) as assessors:
            for i, shard in enumerate(shards):
                if progress:
                    progress(shard.name, i, len(shards))
                if drop_mode and chosen_drop is not None and shard.drop != chosen_drop:
                    if shard.drop not in drops_with_new:
                        drops_with_new.append(shard.drop)
                    continue
                tally = ShardTally(shard.name, shard.uri, size=shard.size)
                try:
                    with source.fetch(shard) as fetched:
                        tally.sha256, tally.size = fetched.sha256, fetched.size
                        with runtime.metadata.session() as session:
                            reason = skip_reason(session, shard.name, fetched.sha256, seen_this_run, retry)
                        if reason:
                            tally.status, tally.skipped_because = "skipped", reason
                            skipped.append(tally)
                            continue
                        seen_this_run[fetched.sha256] = shard.name
                        chosen_drop = shard.drop if chosen_drop is None else chosen_drop
                        batch_id = batch_id or _create_batch(runtime, source.uri)
                        process_shard(fetched.path, tally, cfg, assessors, index, spool, batch_id, dedup_counts)
                except ShardError as exc:  # the shard could not even be fetched (S3 errors, unreadable file)
                    tally.status, tally.error_reason, tally.error = "failed", exc.reason.value, exc.detail
                    chosen_drop = shard.drop if chosen_drop is None else chosen_drop
                    batch_id = batch_id or _create_batch(runtime, source.uri)
                tallies.append(tally)
        spool.close()
        timings["process_s"] = time.perf_counter() - t0
        if batch_id is None:
            return IngestResult(
                status="nothing_new", source_uri=source.uri, shards=[t.to_dict() for t in skipped], timings=timings,
                message=(f"nothing new in {source.uri}: all {len(skipped)} shard(s) were ingested before"
                         if skipped else f"no shards found in {source.uri}"),
            )
        return _finish(runtime, source.uri, batch_id, _batch_label(batch_id), spool, tallies, skipped, dedup_counts, index, store,
                       drop=chosen_drop if drop_mode else None, remaining=drops_with_new,
                       new_tokenizer=new_tokenizer, timings=timings, started=started,
                       retry_of=retry.batch_id if retry else None, confirm_lock=confirm_lock)
    except BaseException:
        spool.close()
        raise
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)


def _finish(runtime: Runtime, source_uri: str, batch_id: int, label: str, spool: BatchSpool,
            tallies: list[ShardTally], skipped: list[ShardTally], dedup_counts: dict[str, int], index: Any,
            store: DedupStore, *, drop: str | None, remaining: list[str], new_tokenizer: bool,
            timings: dict[str, float], started: float, retry_of: int | None,
            confirm_lock: ConfirmLock) -> IngestResult:
    cfg = runtime.settings.data
    read = sum(t.read for t in tallies)
    accepted = sum(t.accepted for t in tallies)
    rejects: Counter[str] = Counter()
    for t in tallies:
        rejects.update(t.rejected)
    shard_failures = Counter(t.error_reason for t in tallies if t.error_reason)
    result = IngestResult(
        status="accepted", source_uri=source_uri, message="", batch_id=batch_id, drop=drop,
        shards=[t.to_dict() for t in tallies + skipped], records_read=read, records_accepted=accepted,
        rejected=dict(sorted(rejects.items())), shard_failures=dict(shard_failures), remaining_drops=remaining,
        timings=timings, retry_of=retry_of,
    )
    profile = spool.profile.to_dict()
    result.figures = _figures(runtime, batch_id, read, accepted, spool.rejected_count, dedup_counts, profile)
    quarantine_keys = []
    if spool.rejected_count:
        key = f"quarantine/{label}/rejected.jsonl.gz"
        runtime.artifacts.put_file(key, spool.rejected_path)
        quarantine_keys.append(key)

    if read == 0:
        gate = None
        passed = False
    else:
        t0 = time.perf_counter()
        gate = run_gate(runtime.settings.workspace, cfg, spool.documents.path, result.figures, label)
        timings["gate_s"] = time.perf_counter() - t0
        passed = gate.success
        result.data_docs_key = _upload_data_docs(runtime, gate, label)
        result.gate = {
            "success": gate.success,
            "failures": [asdict(f) for f in gate.failures],
            "suites": [{"suite": s.suite, "success": s.success, "evaluated": len(s.results),
                        "failed": sum(not r.success for r in s.results)} for s in gate.suites],
        }

    stats: dict[str, Any] = {
        "drop": drop,
        "figures": result.figures,
        "profile": profile,
        "shards": [t.to_dict() for t in tallies],
        "skipped_shards": len(skipped),
        "shard_failures": dict(shard_failures),
        "pii": dict(spool.pii_totals),
    }
    if retry_of is not None:
        stats["retry_of"] = retry_of

    if not passed:
        if accepted:
            key = f"quarantine/{label}/gate_failed.jsonl.gz"
            runtime.artifacts.put_file(key, spool.accepted_path)
            quarantine_keys.append(key)
        gate_rejects = dict(rejects)
        if accepted:
            gate_rejects[GATE_FAILED] = accepted
        status = BatchStatus.QUARANTINED if gate is not None else BatchStatus.FAILED
        with runtime.metadata.session() as session:
            for t in _recordable(tallies):
                record_shard(session, t, batch_id, accepted=0)
            link_retry(session, retry_of, batch_id)
            _record_validations(session, batch_id, gate, result.data_docs_key)
            repo.finish_batch(session, batch_id, status=status, records_read=read, records_accepted=0,
                              rejects=gate_rejects, quarantine_key=quarantine_keys[0] if quarantine_keys else None,
                              stats=stats)
        result.status = "quarantined" if gate is not None else "empty"
        result.records_accepted = 0
        result.rejected = dict(sorted(gate_rejects.items()))
        result.quarantine_keys = quarantine_keys
        if gate is not None:
            failing = "; ".join(f.describe() for f in gate.failures)
            result.message = f"{label} failed the quality gate and was quarantined: {failing}"
        else:
            result.message = f"{label}: no record could be read from {len(tallies)} new shard(s): " + ", ".join(
                f"{t.name} ({t.error_reason})" for t in tallies)
        return result

    # gate passed: tokenizer, dataset version, then one metadata transaction, then the dedup commit.
    t0 = time.perf_counter()
    tokenizer = None if new_tokenizer else _current_tokenizer(runtime)
    with runtime.metadata.session() as session:
        tok_label = repo.next_sequence_label(session, TokenizerVersion, "tok")
        ds_label = repo.next_sequence_label(session, DatasetVersion, "ds")
    if tokenizer is None:
        tokenizer = make_ref(train_bpe(spool.accepted_texts(), cfg.tokenizer), tok_label, cfg.tokenizer)
        store_tokenizer(runtime.artifacts, tokenizer)
        result.tokenizer_trained = True
        timings["tokenizer_train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    forced = _forced_validation(spool.documents.doc_hashes(), cfg.validation_fraction)
    manifest, manifest_key = write_dataset(
        runtime.artifacts, ds_label, spool.accepted_documents(), tokenizer, window=cfg.window,
        validation_fraction=cfg.validation_fraction, shard_windows=cfg.shard_max_windows,
        encode_batch=cfg.encode_batch_docs, batch_ids=[batch_id], forced_validation=forced,
    )
    manifest_info = runtime.artifacts.put_bytes(manifest_key, manifest_bytes(manifest))
    documents_key = f"batches/{label}/documents.jsonl.gz"
    runtime.artifacts.put_file(documents_key, spool.accepted_path)
    timings["dataset_s"] = time.perf_counter() - t0

    confirm_lock()
    store.write_journal(index, label)
    confirm_lock()
    stats.update(tokenizer=tokenizer.version, dataset_version=ds_label, documents_key=documents_key)
    with runtime.metadata.session() as session:
        tokenizer_id = tokenizer.record_id
        if result.tokenizer_trained:
            tokenizer_id = repo.add_tokenizer_version(
                session, version=tokenizer.version, artifact_key=tokenizer.key, sha256=tokenizer.sha256,
                vocab_size=tokenizer.vocab_size, trained_on={"batch_id": batch_id, "documents": accepted},
            ).id
        for t in _recordable(tallies):
            record_shard(session, t, batch_id, accepted=t.accepted)
        link_retry(session, retry_of, batch_id)
        _record_validations(session, batch_id, gate, result.data_docs_key)
        repo.create_dataset_version(
            session, version=ds_label, manifest_key=manifest_key, manifest_sha256=manifest_info.sha256,
            tokenizer_id=tokenizer_id, train_tokens=manifest["num_tokens"]["train"],
            validation_tokens=manifest["num_tokens"]["validation"], documents=accepted, batch_ids=[batch_id],
        )
        repo.finish_batch(session, batch_id, status=BatchStatus.ACCEPTED, records_read=read,
                          records_accepted=accepted, rejects=rejects,
                          quarantine_key=quarantine_keys[0] if quarantine_keys else None, stats=stats)
    store.commit(index, label)
    timings["total_s"] = time.perf_counter() - started
    result.dataset_version = ds_label
    result.dataset = {"manifest_key": manifest_key, "num_tokens": manifest["num_tokens"],
                      "documents": manifest["documents"], "dtype": manifest["dtype"], "window": manifest["window"]}
    result.tokenizer_version = tokenizer.version
    result.quarantine_keys = quarantine_keys
    result.message = (f"{label} accepted {accepted} of {read} records into {ds_label} "
                      f"({sum(manifest['num_tokens'].values())} tokens)")
    if drop:
        result.message = f"next sample drop {drop}: {result.message}"
    return result


def _recordable(tallies: list[ShardTally]) -> list[ShardTally]:
    """Shards whose bytes were read (and hashed); one that could not be fetched is retried next run."""
    return [t for t in tallies if t.sha256 is not None]


def _forced_validation(doc_hashes: Iterable[str], fraction: float) -> set[str]:
    """A small batch whose hashes put nothing into validation still gets its lowest-hash document there.

    One pass over the hashes (streamed from the documents table), keeping only the smallest.
    """
    if fraction <= 0:
        return set()
    count, lowest = 0, None
    for doc_hash in doc_hashes:
        if split_of(doc_hash, fraction) == "validation":
            return set()
        count += 1
        lowest = doc_hash if lowest is None else min(lowest, doc_hash)
    return {lowest} if count >= 2 and lowest is not None else set()


def _record_validations(session: Any, batch_id: int, gate: GateResult | None, report_key: str | None) -> None:
    if gate is None:
        return
    for suite in gate.suites:
        repo.record_validation(
            session, batch_id=batch_id, suite_name=suite.suite, success=suite.success, report_key=report_key,
            statistics=suite.statistics,
            results=[{"expectation_type": r.expectation_type, "column": r.column, "success": r.success,
                      "observed_value": r.observed_value, "kwargs": r.kwargs} for r in suite.results],
        )
