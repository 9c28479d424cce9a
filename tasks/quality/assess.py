"""Per-document work that needs no shared state: clean, score filters, redact PII, hash, sign.

`assess_texts` is what the worker processes run; the ingest pipeline then takes the dedup
decisions in one process (they depend on every earlier document).
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from lmforge_core.config.data import DataConfig
from tasks.dedup import MinHasher
from tasks.quality.cleaning import clean_text, dedup_normal_form
from tasks.quality.filters import Bound, bounds, failed_filters, score_document
from tasks.quality.pii import PII_TYPES, redact_pii


@dataclass(slots=True)
class Assessment:
    """What the quality stage learned about one document."""

    text: str
    scores: dict[str, float]
    failed: list[str]
    pii: dict[str, int]
    exact_key: bytes
    signature: np.ndarray | None
    doc_hash: str
    # token-frequency profile: hashed word buckets present in the document and their counts.
    bucket_ids: np.ndarray | None = None
    bucket_counts: np.ndarray | None = None

    @property
    def passed(self) -> bool:
        return not self.failed


class Assessor:
    """Holds the compiled filters and the MinHasher for one configuration."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.checks: list[Bound] = bounds(cfg.filters)
        self.hasher = MinHasher(cfg.dedup.num_perm, cfg.dedup.shingle_size, cfg.dedup.seed)

    def assess(self, raw_text: str) -> Assessment:
        text = clean_text(raw_text)
        scores = score_document(text, self.cfg.filters)
        failed = failed_filters(scores, self.checks)
        if failed:
            # rejected documents are neither redacted nor signed: they go to quarantine as cleaned.
            return Assessment(text, scores, failed, dict.fromkeys(PII_TYPES, 0), b"", None, "")
        if self.cfg.redact_pii:
            text, pii = redact_pii(text)
        else:
            pii = dict.fromkeys(PII_TYPES, 0)
        digest = hashlib.sha256(dedup_normal_form(text).encode()).digest()
        word_hashes = self.hasher.word_hashes(text)
        buckets = (word_hashes % np.uint64(self.cfg.gate.token_histogram_buckets)).astype(np.uint32)
        bucket_ids, bucket_counts = np.unique(buckets, return_counts=True)
        return Assessment(
            text=text,
            scores=scores,
            failed=failed,
            pii=pii,
            exact_key=digest[:16],
            signature=self.hasher.signature_of(word_hashes),
            doc_hash=hashlib.sha256(text.encode()).hexdigest(),
            bucket_ids=bucket_ids,
            bucket_counts=bucket_counts.astype(np.uint32),
        )


_WORKER: Assessor | None = None


def init_worker(cfg_json: str) -> None:
    """Pool initializer: build the worker's Assessor once."""
    global _WORKER
    _WORKER = Assessor(DataConfig.model_validate_json(cfg_json))


def assess_texts(texts: list[str]) -> list[Assessment]:
    """Worker entry point: assess a chunk of documents."""
    assert _WORKER is not None, "init_worker was not called"
    return [_WORKER.assess(t) for t in texts]
