"""The ingest pipeline as named steps: `run_ingest` = lock -> steps 0..7 below, each a plain function.

The nightly flow may call the steps one by one as Prefect tasks (`tasks.ingest.prefect_tasks`, with
`ingest_shards` below as the model of their order); it must hold `ingest_lock` around all of them (in the flow's
process: the tasks of one flow run share it, so they must run in that process, e.g. Prefect's default
thread-pool task runner) and call `StagedBatch.discard` at the end. Inputs and outputs:

- `plan_shards(runtime, source_uri=None, all_drops=) -> ShardPlan`: the source and its shards in order.

0. `load_dedup_index(runtime) -> DedupState`: closes batches a crashed ingest left running; the dedup
   index of everything accepted so far (staging.py).
1-2. `assess_and_deduplicate(runtime, source, shards, dedup, drop_mode=, progress=, retry=) -> StagedBatch`:
   clean, filter, redact and sign every record of the new shards, and deduplicate them against the index,
   in one streaming pass (staging.py); `staged.batch_id is None` when nothing was new
   (`nothing_new(staged)` is then the result).
3. `gate_batch(runtime, staged) -> GateOutcome`: batch figures (drift against the previous accepted
   batch) and the Great Expectations gate; `gate.passed`.
4. quarantine or accept:
   - `quarantine_batch(runtime, staged, gate) -> BatchDecision` (gate failed, or nothing readable);
   - 5. `choose_tokenizer(runtime, staged, new_tokenizer) -> TokenizerChoice` (the current tokenizer, or one
     trained on this batch), 6. `build_dataset_version(runtime, staged, choice) -> DatasetBuild` (tokenized,
     packed, its manifest and documents stored), then `accept_batch(staged, choice, build) -> BatchDecision`.
7. `commit_batch(runtime, staged, gate, decision, dedup, confirm_lock) -> IngestResult`: the one commit
   path of both branches: the quarantine files, the dedup journal (accepted only), one metadata
   transaction (shards, validations, removals with why, tokenizer and dataset version if accepted, the
   batch's status) checked against the lock just before it commits, then the dedup snapshot.

Which shards form the batch:
- every shard is identified by its sha256; shards already recorded in the metadata store (ingested,
  failed or quarantined alike) are skipped, so a re-run with nothing new ingests nothing and says so
  (a quarantined batch's shards run again only through `retry.retry_batch`);
- with the built-in sample source (no URI given) one batch is the next not-yet-ingested *drop*
  (top-level folder such as ``day-03-data-formats-text``), so consecutive nightly runs see one new
  topic each; ``all_drops=True`` (and any explicit URI) takes every new shard into one batch.

Outcome of a batch:
- gate passes: the tokenizer, a new immutable dataset version, the accepted documents as an artifact,
  all recorded in one metadata transaction; then the dedup index is committed (see `tasks.dedup.store`);
- gate fails: the batch is quarantined (status ``quarantined``, its would-be-accepted documents in
  ``quarantine/<batch>/gate_failed.jsonl.gz``, counted under ``quality_gate_failed``); it never
  reaches a dataset version and its documents never enter the dedup index.
Records rejected on the way are in ``quarantine/<batch>/rejected.jsonl.gz`` and in the metadata store
(`removal_repository`), each with why: the filter's rule, score and bound, or the duplicate's twin
(batch, shard, position, id) and estimated similarity.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from lmforge_core.metadata import removal_repository as removals
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.locks import ConfirmLock
from lmforge_core.metadata.models import BatchStatus, DatasetVersion, TokenizerVersion
from lmforge_core.runtime import Runtime
from model.token_shards import manifest_bytes
from model.tokenizer import IMPORTED, TokenizerRef, load_tokenizer, make_ref, store_tokenizer, train_bpe
from tasks.dataset.packing import forced_validation, write_dataset
from tasks.ingest.ingest_lock import ingest_lock
from tasks.ingest.known_shards import Retry, link_retry, record_shard
from tasks.ingest.sample import write_sample
from tasks.ingest.sources import ShardRef, Source, open_source
from tasks.ingest.staging import (
    DedupState,
    Progress,
    StagedBatch,
    assess_and_deduplicate,
    load_dedup_index,
    sample_source_dir,
    source_config,
    work_dir,
)
from tasks.quality.drift import jensen_shannon
from tasks.quality.gate import GateResult, run_gate

GATE_FAILED = "quality_gate_failed"
REPORTED_REMOVALS = 100  # removals listed in `IngestResult` (all of them are in the quarantine file)


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
    # why records were removed: the first REPORTED_REMOVALS (each with an `explanation`), and how many of them the
    # metadata store keeps (at most `data.max_removals_per_reason` per reason; `rejected` has every count)
    removals: list[dict[str, Any]] = field(default_factory=list)
    removals_recorded: int = 0

    @property
    def gate_failed(self) -> bool:
        return self.status == "quarantined"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensure_sample_source(runtime: Runtime) -> Path:
    """The sample source folder, written on first use."""
    folder = sample_source_dir(runtime)
    if not folder.is_dir() or not any(folder.iterdir()):
        write_sample(folder, runtime.settings.data.sample_days)
    return folder


@dataclass
class ShardPlan:
    """The source of a batch and its shards in processing order; `drop_mode`: take only the next sample drop."""

    source: Source
    shards: list[ShardRef]
    drop_mode: bool


def plan_shards(runtime: Runtime, source_uri: str | None = None, *, all_drops: bool = False,
                s3_client: Any | None = None) -> ShardPlan:
    """The shards a run looks at: every shard of `source_uri`, or of the sample source (written on first use),
    one drop at a time unless `all_drops`. Which of them are new is decided while staging."""
    drop_mode = source_uri is None and not all_drops
    if source_uri is None:
        source_uri = str(ensure_sample_source(runtime))
    source = open_source(source_uri, s3_client=s3_client, spool_dir=work_dir(runtime))
    shards = source.list_shards()
    return ShardPlan(source, sorted(shards, key=lambda s: (s.drop, s.name)) if drop_mode else shards, drop_mode)


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
    with ingest_lock(runtime) as confirm_lock:
        plan = plan_shards(runtime, source_uri, all_drops=all_drops, s3_client=s3_client)
        return ingest_shards(runtime, plan.source, plan.shards, confirm_lock, drop_mode=plan.drop_mode,
                             new_tokenizer=new_tokenizer, progress=progress, started=started)


def ingest_shards(runtime: Runtime, source: Source, shards: list[ShardRef], confirm_lock: ConfirmLock, *,
                  drop_mode: bool = False, new_tokenizer: bool = False, progress: Progress | None = None,
                  retry: Retry | None = None, started: float | None = None) -> IngestResult:
    """Process `shards` of `source` as one new batch, step by step (the shards already ingested are skipped).

    The caller holds the `ingest_lock` (`run_ingest` and `retry_batch` do): with it held, a batch left
    running can only be a crashed ingest's, and is closed as abandoned. ``confirm_lock`` is called before
    the journal is written and before the metadata transaction commits.
    """
    started = time.perf_counter() if started is None else started
    dedup = load_dedup_index(runtime)
    load_s = time.perf_counter() - started
    staged = assess_and_deduplicate(runtime, source, shards, dedup, drop_mode=drop_mode, progress=progress,
                                    retry=retry, started=started)
    staged.timings = {"load_index_s": load_s, **staged.timings}
    try:
        if staged.batch_id is None:
            return nothing_new(staged)
        gate = gate_batch(runtime, staged)
        if gate.passed:
            choice = choose_tokenizer(runtime, staged, new_tokenizer)
            decision = accept_batch(staged, choice, build_dataset_version(runtime, staged, choice))
        else:
            decision = quarantine_batch(runtime, staged, gate)
        return commit_batch(runtime, staged, gate, decision, dedup, confirm_lock)
    finally:
        staged.discard()


def nothing_new(staged: StagedBatch) -> IngestResult:
    """The result of a run in which no shard was new (nothing was recorded)."""
    skipped = staged.skipped
    return IngestResult(
        status="nothing_new", source_uri=staged.source_uri, shards=[t.to_dict() for t in skipped],
        timings=staged.timings,
        message=(f"nothing new in {staged.source_uri}: all {len(skipped)} shard(s) were ingested before"
                 if skipped else f"no shards found in {staged.source_uri}"),
    )


# -- step 3: gate -------------------------------------------------------------------------------------------


@dataclass
class GateOutcome:
    """The batch's figures and the quality gate's verdict (`result` is None when no record could be read)."""

    figures: dict[str, Any]
    result: GateResult | None = None
    data_docs_key: str | None = None

    @property
    def passed(self) -> bool:
        return self.result is not None and self.result.success

    def summary(self) -> dict[str, Any] | None:
        if self.result is None:
            return None
        return {
            "success": self.result.success,
            "failures": [asdict(f) for f in self.result.failures],
            "suites": [{"suite": s.suite, "success": s.success, "evaluated": len(s.results),
                        "failed": sum(not r.success for r in s.results)} for s in self.result.suites],
        }


def _figures(runtime: Runtime, staged: StagedBatch, profile: dict[str, list[int]]) -> dict[str, Any]:
    assert staged.batch_id is not None
    with runtime.metadata.session() as session:
        previous = repo.previous_accepted_batch(session, staged.batch_id)
        prev_profile = (previous.stats or {}).get("profile") if previous else None
        prev_accepted = previous.records_accepted if previous else None
        prev_id = previous.id if previous else None
    read, accepted, rejected, counts = staged.read, staged.accepted, staged.spool.rejected_count, staged.dedup_counts
    duplicates = counts["exact_duplicate"] + counts["near_duplicate"]
    figures: dict[str, Any] = {
        "rows_read": read,
        "rows_accepted": accepted,
        "rows_rejected": rejected,
        "reject_rate": rejected / read if read else 1.0,
        "duplicate_rate": duplicates / counts["checked"] if counts["checked"] else 0.0,
        "exact_duplicates": counts["exact_duplicate"],
        "near_duplicates": counts["near_duplicate"],
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


def gate_batch(runtime: Runtime, staged: StagedBatch) -> GateOutcome:
    """Step 3: the batch's figures and the Great Expectations gate over its per-document table."""
    outcome = GateOutcome(_figures(runtime, staged, staged.spool.profile.to_dict()))
    if staged.read == 0:
        return outcome
    t0 = time.perf_counter()
    outcome.result = run_gate(runtime.settings.workspace, source_config(runtime, staged.source_uri),
                              staged.spool.documents.path, outcome.figures, staged.label)
    staged.timings["gate_s"] = time.perf_counter() - t0
    outcome.data_docs_key = _upload_data_docs(runtime, outcome.result, staged.label)
    return outcome


# -- step 4: quarantine or accept (5: tokenizer, 6: dataset version) ----------------------------------------


@dataclass(frozen=True)
class TokenizerChoice:
    ref: TokenizerRef
    trained: bool  # trained on this batch now (recorded by `commit_batch`), or the current version


@dataclass(frozen=True)
class DatasetBuild:
    """A dataset version written to the artifact store, not yet recorded in the metadata store."""

    version: str
    manifest: dict[str, Any]
    manifest_key: str
    manifest_sha256: str
    documents_key: str


@dataclass(frozen=True)
class BatchDecision:
    """What the batch becomes; `commit_batch` records it. `dataset` and `tokenizer` are set when accepted."""

    status: BatchStatus
    records_accepted: int
    rejects: dict[str, int]
    quarantine_keys: list[str] = field(default_factory=list)  # beside rejected.jsonl.gz
    tokenizer: TokenizerChoice | None = None
    dataset: DatasetBuild | None = None


def quarantine_batch(runtime: Runtime, staged: StagedBatch, gate: GateOutcome) -> BatchDecision:
    """Step 4, gate failed: the would-be-accepted documents go to quarantine, counted under `GATE_FAILED`
    (status quarantined; failed when no record could be read at all)."""
    rejects = dict(staged.rejects())
    keys = []
    if staged.accepted:
        key = f"quarantine/{staged.label}/gate_failed.jsonl.gz"
        runtime.artifacts.put_file(key, staged.spool.accepted_path)
        keys.append(key)
        rejects[GATE_FAILED] = staged.accepted
    status = BatchStatus.QUARANTINED if gate.result is not None else BatchStatus.FAILED
    return BatchDecision(status, 0, rejects, keys)


def _current_tokenizer(runtime: Runtime) -> TokenizerRef | None:
    """The newest house tokenizer (an imported model's tokenizer is not the house's: training tokenizes the
    same documents for it, see `tasks.dataset.versions.dataset_for_tokenizer`)."""
    cfg = runtime.settings.data.tokenizer
    with runtime.metadata.session() as session:
        latest = repo.latest_tokenizer_version(session, without=IMPORTED)
        if latest is None:
            return None
        version, key, record_id = latest.version, latest.artifact_key, latest.id
    return load_tokenizer(runtime.artifacts, version, key, cfg, record_id)


def choose_tokenizer(runtime: Runtime, staged: StagedBatch, new_tokenizer: bool = False) -> TokenizerChoice:
    """Step 5: the current tokenizer, or (none yet, or `new_tokenizer`) one trained on the accepted documents."""
    current = None if new_tokenizer else _current_tokenizer(runtime)
    if current is not None:
        return TokenizerChoice(current, trained=False)
    t0 = time.perf_counter()
    cfg = runtime.settings.data.tokenizer
    with runtime.metadata.session() as session:
        label = repo.next_sequence_label(session, TokenizerVersion, "tok")
    ref = make_ref(train_bpe(staged.spool.accepted_texts(), cfg), label, cfg)
    store_tokenizer(runtime.artifacts, ref)
    staged.timings["tokenizer_train_s"] = time.perf_counter() - t0
    return TokenizerChoice(ref, trained=True)


def build_dataset_version(runtime: Runtime, staged: StagedBatch, choice: TokenizerChoice) -> DatasetBuild:
    """Step 6: tokenize and pack the accepted documents into a new dataset version, store its manifest and
    the documents (the version is recorded by `commit_batch`)."""
    cfg = runtime.settings.data
    assert staged.batch_id is not None
    t0 = time.perf_counter()
    with runtime.metadata.session() as session:
        version = repo.next_sequence_label(session, DatasetVersion, "ds")
    forced = forced_validation(staged.spool.documents.doc_hashes(), cfg.validation_fraction)
    manifest, manifest_key = write_dataset(
        runtime.artifacts, version, staged.spool.accepted_documents(), choice.ref, window=cfg.window,
        validation_fraction=cfg.validation_fraction, shard_windows=cfg.shard_max_windows,
        encode_batch=cfg.encode_batch_docs, batch_ids=[staged.batch_id], forced_validation=forced,
    )
    info = runtime.artifacts.put_bytes(manifest_key, manifest_bytes(manifest))
    documents_key = f"batches/{staged.label}/documents.jsonl.gz"
    runtime.artifacts.put_file(documents_key, staged.spool.accepted_path)
    staged.timings["dataset_s"] = time.perf_counter() - t0
    return DatasetBuild(version, manifest, manifest_key, info.sha256, documents_key)


def accept_batch(staged: StagedBatch, choice: TokenizerChoice, build: DatasetBuild) -> BatchDecision:
    """Step 4, gate passed: the batch is accepted into dataset version `build` with tokenizer `choice`."""
    return BatchDecision(BatchStatus.ACCEPTED, staged.accepted, dict(staged.rejects()), tokenizer=choice,
                         dataset=build)


# -- step 7: commit (both branches) -------------------------------------------------------------------------


def _stats(staged: StagedBatch, gate: GateOutcome, decision: BatchDecision) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "drop": staged.drop,
        "filter_profile": staged.filter_profile,
        "figures": gate.figures,
        "profile": staged.spool.profile.to_dict(),
        "shards": [t.to_dict() for t in staged.tallies],
        "skipped_shards": len(staged.skipped),
        "shard_failures": staged.shard_failures(),
        "pii": dict(staged.spool.pii_totals),
    }
    if staged.retry_of is not None:
        stats["retry_of"] = staged.retry_of
    if decision.dataset is not None and decision.tokenizer is not None:
        stats.update(tokenizer=decision.tokenizer.ref.version, dataset_version=decision.dataset.version,
                     documents_key=decision.dataset.documents_key)
    return stats


def _record_validations(session: Any, batch_id: int, gate: GateOutcome) -> None:
    if gate.result is None:
        return
    for suite in gate.result.suites:
        repo.record_validation(
            session, batch_id=batch_id, suite_name=suite.suite, success=suite.success, report_key=gate.data_docs_key,
            statistics=suite.statistics,
            results=[{"expectation_type": r.expectation_type, "column": r.column, "success": r.success,
                      "observed_value": r.observed_value, "kwargs": r.kwargs} for r in suite.results],
        )


def _record_dataset(session: Any, staged: StagedBatch, decision: BatchDecision) -> None:
    """The tokenizer (when trained on this batch) and the dataset version of an accepted batch."""
    choice, build = decision.tokenizer, decision.dataset
    assert choice is not None and build is not None and staged.batch_id is not None
    tokenizer_id = choice.ref.record_id
    if choice.trained:
        tokenizer_id = repo.add_tokenizer_version(
            session, version=choice.ref.version, artifact_key=choice.ref.key, sha256=choice.ref.sha256,
            vocab_size=choice.ref.vocab_size, trained_on={"batch_id": staged.batch_id, "documents": staged.accepted},
        ).id
    repo.create_dataset_version(
        session, version=build.version, manifest_key=build.manifest_key, manifest_sha256=build.manifest_sha256,
        tokenizer_id=tokenizer_id, train_tokens=build.manifest["num_tokens"]["train"],
        validation_tokens=build.manifest["num_tokens"]["validation"], documents=staged.accepted,
        batch_ids=[staged.batch_id],
    )


def commit_batch(runtime: Runtime, staged: StagedBatch, gate: GateOutcome, decision: BatchDecision,
                 dedup: DedupState, confirm_lock: ConfirmLock) -> IngestResult:
    """Step 7, one path for accepted and quarantined batches: quarantine files, the dedup journal (accepted),
    one metadata transaction that the lock is confirmed for right before it commits, the dedup snapshot.

    A lost lock (`IngestLockLostError`) rolls the transaction back: nothing of the batch is committed.
    """
    assert staged.batch_id is not None
    batch_id, label, accepted = staged.batch_id, staged.label, decision.status == BatchStatus.ACCEPTED
    keys = list(decision.quarantine_keys)
    if staged.spool.rejected_count:
        keys.insert(0, f"quarantine/{label}/rejected.jsonl.gz")
        runtime.artifacts.put_file(keys[0], staged.spool.rejected_path)
    confirm_lock()
    if accepted:
        dedup.store.write_journal(dedup.index, label)
    with runtime.metadata.session() as session:
        for t in (t for t in staged.tallies if t.sha256 is not None):  # a shard never fetched is retried next run
            record_shard(session, t, batch_id, accepted=t.accepted if accepted else 0)
        link_retry(session, staged.retry_of, batch_id)
        _record_validations(session, batch_id, gate)
        recorded = removals.record_removals(session, batch_id, staged.spool.removals(),
                                            runtime.settings.data.max_removals_per_reason)
        if accepted:
            _record_dataset(session, staged, decision)
        repo.finish_batch(session, batch_id, status=decision.status, records_read=staged.read,
                          records_accepted=decision.records_accepted, rejects=decision.rejects,
                          quarantine_key=keys[0] if keys else None, stats=_stats(staged, gate, decision))
        confirm_lock()  # last: a lock lost by now rolls all of the above back
    if accepted:
        dedup.store.commit(dedup.index, label)
    staged.timings["total_s"] = time.perf_counter() - staged.started
    return _result(staged, gate, decision, keys, recorded)


def _reported_removals(staged: StagedBatch) -> list[dict[str, Any]]:
    return [{**row, "explanation": removals.describe_removal(row)}
            for row in islice(staged.spool.removals(), REPORTED_REMOVALS)]


def _message(staged: StagedBatch, gate: GateOutcome, decision: BatchDecision) -> str:
    label = staged.label
    if decision.dataset is not None:
        tokens = sum(decision.dataset.manifest["num_tokens"].values())
        message = (f"{label} accepted {decision.records_accepted} of {staged.read} records into "
                   f"{decision.dataset.version} ({tokens} tokens)")
        return f"next sample drop {staged.drop}: {message}" if staged.drop else message
    if gate.result is not None:
        failing = "; ".join(f.describe() for f in gate.result.failures)
        return f"{label} failed the quality gate and was quarantined: {failing}"
    return f"{label}: no record could be read from {len(staged.tallies)} new shard(s): " + ", ".join(
        f"{t.name} ({t.error_reason})" for t in staged.tallies)


def _result(staged: StagedBatch, gate: GateOutcome, decision: BatchDecision, keys: list[str],
            recorded: int) -> IngestResult:
    status = {BatchStatus.ACCEPTED: "accepted", BatchStatus.QUARANTINED: "quarantined"}.get(decision.status, "empty")
    result = IngestResult(
        status=status, source_uri=staged.source_uri, message=_message(staged, gate, decision),
        batch_id=staged.batch_id, drop=staged.drop, shards=[t.to_dict() for t in staged.tallies + staged.skipped],
        records_read=staged.read, records_accepted=decision.records_accepted,
        rejected=dict(sorted(decision.rejects.items())), shard_failures=staged.shard_failures(),
        figures=gate.figures, gate=gate.summary(), quarantine_keys=keys, data_docs_key=gate.data_docs_key,
        remaining_drops=staged.remaining, timings=staged.timings, retry_of=staged.retry_of,
        removals=_reported_removals(staged), removals_recorded=recorded,
    )
    if decision.dataset is not None and decision.tokenizer is not None:
        manifest = decision.dataset.manifest
        result.dataset_version = decision.dataset.version
        result.dataset = {"manifest_key": decision.dataset.manifest_key, "num_tokens": manifest["num_tokens"],
                          "documents": manifest["documents"], "dtype": manifest["dtype"], "window": manifest["window"]}
        result.tokenizer_version = decision.tokenizer.ref.version
        result.tokenizer_trained = decision.tokenizer.trained
    return result
