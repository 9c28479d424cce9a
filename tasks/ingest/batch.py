"""One batch in the making: per-shard accounting, the accepted and quarantine spools, the per-document
table for the quality gate, and the batch profile.

Everything a batch produces is spooled to local files as it streams (gzip JSONL for the documents,
a SQLite file for the per-document table), so memory holds nothing per document: what grows with
the batch is on disk, and only the dedup index (kept by the caller) grows in memory.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.dedup import DedupDecision
from tasks.ingest.records import DocRef, Record
from tasks.quality.assess import Assessment
from tasks.quality.documents_table import SCORES, DocumentsTable
from tasks.quality.drift import BatchProfile
from tasks.quality.pii import PII_TYPES, redact_excerpt


@dataclass
class ShardTally:
    """What happened to one shard; accepted + sum(rejected) == read always."""

    name: str
    uri: str
    sha256: str | None = None
    size: int = 0
    status: str = "ingested"  # ingested | failed | skipped
    read: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    error_reason: str | None = None
    error: str | None = None
    skipped_because: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uri": self.uri,
            "sha256": self.sha256,
            "size": self.size,
            "status": self.status,
            "read": self.read,
            "accepted": self.accepted,
            "rejected": dict(sorted(self.rejected.items())),
            "error_reason": self.error_reason,
            "error": self.error,
            "skipped_because": self.skipped_because,
        }


class BatchSpool:
    """Accepted documents, quarantined records and the per-document table of one batch."""

    def __init__(self, directory: Path, table_path: Path, excerpt_chars: int, length_bins: int,
                 token_buckets: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.accepted_path = directory / "accepted.jsonl.gz"
        self.rejected_path = directory / "rejected.jsonl.gz"
        self._accepted = gzip.open(self.accepted_path, "wt", encoding="utf-8", compresslevel=3)
        self._rejected = gzip.open(self.rejected_path, "wt", encoding="utf-8", compresslevel=3)
        self.excerpt_chars = excerpt_chars
        self.profile = BatchProfile(length_bins, token_buckets)
        self.documents = DocumentsTable(table_path)
        self.pii_totals: Counter[str] = Counter(dict.fromkeys(PII_TYPES, 0))
        self.rejected_count = 0

    def accept(self, record: Record, assessment: Assessment) -> None:
        self._accepted.write(json.dumps({
            "doc_hash": assessment.doc_hash,
            "id": record.doc_id,
            "source": record.source,
            "created_at": record.created_at,
            "meta": record.meta,
            "shard": record.shard,
            "position": record.position,
            "pii": assessment.pii,
            "text": assessment.text,
        }, ensure_ascii=False) + "\n")
        pii = [assessment.pii[kind] for kind in PII_TYPES]
        self.pii_totals.update(assessment.pii)
        self.documents.add(assessment.doc_hash, record.source or record.shard, record.shard,
                           [*(assessment.scores[name] for name in SCORES), len(assessment.text), *pii, sum(pii)])
        assert assessment.bucket_ids is not None and assessment.bucket_counts is not None
        self.profile.add(int(assessment.scores["word_count"]), assessment.bucket_ids, assessment.bucket_counts)

    def reject(self, record: Record, reason: str, assessment: Assessment | None = None,
               decision: DedupDecision | None = None, rule: dict[str, Any] | None = None) -> None:
        """Quarantine a record with why: `rule` (the failed filter's `Bound.explain`) or `decision` (its twin).

        The excerpt kept is PII-redacted whatever `redact_pii` says (a quarantine is read by people, never trained
        on): the scores and the counts of what was redacted (`pii`) stay as the evidence, the values do not."""
        entry: dict[str, Any] = {
            "shard": record.shard,
            "position": record.position,
            "id": record.doc_id,
            "source": record.source,
            "reason": reason,
            "detail": record.detail,
        }
        if assessment is not None:
            entry["failed_filters"] = assessment.failed
            entry["scores"] = {k: round(v, 6) for k, v in assessment.scores.items()}
            text = assessment.text
        else:
            text = record.excerpt if record.excerpt is not None else record.text or ""
        entry["text"], entry["pii"] = redact_excerpt(text, self.excerpt_chars)
        if rule is not None:
            entry["filter"] = rule
        if decision is not None and decision.duplicate_of is not None:
            entry["duplicate_of"] = DocRef.decode(decision.duplicate_of).to_dict()
            entry["similarity"] = round(decision.similarity, 4)
            if decision.containment is not None:  # decided by containment: this share of it is in its twin
                entry["containment"] = round(decision.containment, 4)
        self._rejected.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.rejected_count += 1

    def close(self) -> None:
        self._accepted.close()
        self._rejected.close()
        self.documents.close()

    def accepted_documents(self) -> Any:
        """Iterate (doc_hash, text) of the accepted documents, in acceptance order."""
        with gzip.open(self.accepted_path, "rt", encoding="utf-8") as handle:
            for line in handle:
                doc = json.loads(line)
                yield doc["doc_hash"], doc["text"]

    def removals(self) -> Iterator[dict[str, Any]]:
        """The quarantined records as removal rows (the columns of the metadata store's `DocumentRemoval`)."""
        with gzip.open(self.rejected_path, "rt", encoding="utf-8") as handle:
            for line in handle:
                yield removal_row(json.loads(line))

    def accepted_texts(self) -> Any:
        for _, text in self.accepted_documents():
            yield text


def removal_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A quarantine entry (`BatchSpool.reject`) as a removal row of the metadata store."""
    rule = entry.get("filter") or {}
    twin = entry.get("duplicate_of") or {}
    return {
        "shard": entry["shard"], "position": entry["position"], "doc_id": entry.get("id"),
        "reason": entry["reason"], "detail": entry.get("detail"),
        "rule": rule.get("rule"), "score": rule.get("score"), "bound_min": rule.get("min"), "bound_max": rule.get("max"),
        "twin_batch_id": twin.get("batch_id"), "twin_shard": twin.get("shard"), "twin_position": twin.get("position"),
        "twin_doc_id": twin.get("id"), "similarity": entry.get("similarity"), "containment": entry.get("containment"),
    }
