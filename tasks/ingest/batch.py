"""One batch in the making: per-shard accounting, the accepted and quarantine spools, the per-document
table for the quality gate, and the batch profile.

Everything a batch produces is spooled to local files (gzip JSONL) as it streams, so memory holds only
the per-document numeric table (a few hundred bytes per accepted document) and the dedup index.
"""

from __future__ import annotations

import array
import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.ingest.records import Record
from tasks.quality.assess import Assessment
from tasks.quality.dedup import DedupDecision
from tasks.quality.drift import BatchProfile
from tasks.quality.pii import PII_TYPES

# per-document columns handed to the quality gate (besides doc_hash, source and shard).
TABLE_SCORES = ("word_count", "mean_word_length", "non_alnum_fraction", "symbol_word_ratio",
                "dup_line_fraction", "dup_5gram_fraction", "top_2gram_fraction", "longest_word")


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

    def __init__(self, directory: Path, excerpt_chars: int, length_bins: int, token_buckets: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.accepted_path = directory / "accepted.jsonl.gz"
        self.rejected_path = directory / "rejected.jsonl.gz"
        self._accepted = gzip.open(self.accepted_path, "wt", encoding="utf-8", compresslevel=3)
        self._rejected = gzip.open(self.rejected_path, "wt", encoding="utf-8", compresslevel=3)
        self.excerpt_chars = excerpt_chars
        self.profile = BatchProfile(length_bins, token_buckets)
        self.doc_hashes: list[str] = []
        self.sources: list[str] = []
        self.shards: list[str] = []
        self.columns: dict[str, array.array] = {name: array.array("d") for name in (*TABLE_SCORES, "chars")}
        self.pii_columns: dict[str, array.array] = {kind: array.array("l") for kind in PII_TYPES}
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
        self.doc_hashes.append(assessment.doc_hash)
        self.sources.append(record.source or record.shard)
        self.shards.append(record.shard)
        for name in TABLE_SCORES:
            self.columns[name].append(assessment.scores[name])
        self.columns["chars"].append(len(assessment.text))
        for kind in PII_TYPES:
            self.pii_columns[kind].append(assessment.pii[kind])
        assert assessment.bucket_ids is not None and assessment.bucket_counts is not None
        self.profile.add(int(assessment.scores["word_count"]), assessment.bucket_ids, assessment.bucket_counts)

    def reject(self, record: Record, reason: str, assessment: Assessment | None = None,
               decision: DedupDecision | None = None) -> None:
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
            entry["text"] = assessment.text[: self.excerpt_chars]
        else:
            entry["text"] = (record.excerpt if record.excerpt is not None else record.text or "")[: self.excerpt_chars]
        if decision is not None:
            entry["duplicate_of"] = decision.duplicate_of
            entry["similarity"] = round(decision.similarity, 4)
        self._rejected.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.rejected_count += 1

    def close(self) -> None:
        self._accepted.close()
        self._rejected.close()

    @property
    def accepted_count(self) -> int:
        return len(self.doc_hashes)

    def table(self) -> pd.DataFrame:
        data: dict[str, Any] = {"doc_hash": self.doc_hashes, "source": self.sources, "shard": self.shards}
        data.update({name: list(col) for name, col in self.columns.items()})
        data.update({f"pii_{kind}": list(col) for kind, col in self.pii_columns.items()})
        frame = pd.DataFrame(data)
        frame["pii_total"] = sum(frame[f"pii_{kind}"] for kind in PII_TYPES) if len(frame) else []
        return frame

    def accepted_documents(self) -> Any:
        """Iterate (doc_hash, text) of the accepted documents, in acceptance order."""
        with gzip.open(self.accepted_path, "rt", encoding="utf-8") as handle:
            for line in handle:
                doc = json.loads(line)
                yield doc["doc_hash"], doc["text"]

    def accepted_texts(self) -> Any:
        for _, text in self.accepted_documents():
            yield text
