"""In-memory deduplication index: exact keys plus MinHash LSH bands.

Entries are appended in acceptance order. Entries below `committed` came from the persisted state
(everything ever accepted); entries above it were staged by the batch now running, so a document
is compared with the whole history and with the earlier documents of its own batch.
Persistence (snapshot + journal in the artifact store) lives in `dedup_store`.
"""

import sys
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from tasks.quality.minhash import jaccard_estimate, optimal_bands


class Verdict(StrEnum):
    UNIQUE = "unique"
    EXACT = "exact_duplicate"
    NEAR = "near_duplicate"


@dataclass(frozen=True)
class DedupDecision:
    verdict: Verdict
    # doc id of the earlier document it duplicates, and the estimated Jaccard similarity.
    duplicate_of: str | None = None
    similarity: float = 0.0


class DedupIndex:
    """Exact and near-duplicate lookup over every entry added so far."""

    def __init__(self, num_perm: int, threshold: float) -> None:
        self.num_perm = num_perm
        self.threshold = threshold
        self.bands, self.rows = optimal_bands(threshold, num_perm)
        self._exact: dict[bytes, int] = {}
        # band key (Python hash of the band's bytes; the tables are rebuilt in every process) -> entry
        # index, or a list of indexes once several entries share the band. Colliding keys only add
        # candidates, which are verified against the signatures.
        self._band_tables: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self._sigs = np.zeros((1024, num_perm), dtype=np.uint32)
        self._exact_keys: list[bytes] = []
        self._doc_ids: list[str] = []
        self.committed = 0

    def __len__(self) -> int:
        return len(self._doc_ids)

    def _band_keys(self, sig: np.ndarray) -> list[int]:
        r = self.rows
        return [hash(sig[i * r : (i + 1) * r].tobytes()) for i in range(self.bands)]

    def check(self, exact_key: bytes, sig: np.ndarray) -> DedupDecision:
        """Is this document a duplicate of an entry already in the index?"""
        hit = self._exact.get(exact_key)
        if hit is not None:
            return DedupDecision(Verdict.EXACT, self._doc_ids[hit], 1.0)
        candidates: set[int] = set()
        for table, key in zip(self._band_tables, self._band_keys(sig), strict=True):
            found = table.get(key)
            if isinstance(found, int):
                candidates.add(found)
            elif found:
                candidates.update(found)
        best, best_sim = -1, 0.0
        for idx in candidates:
            sim = jaccard_estimate(self._sigs[idx], sig)
            if sim > best_sim:
                best, best_sim = idx, sim
        if best >= 0 and best_sim >= self.threshold:
            return DedupDecision(Verdict.NEAR, self._doc_ids[best], best_sim)
        return DedupDecision(Verdict.UNIQUE)

    def add(self, exact_key: bytes, sig: np.ndarray, doc_id: str) -> None:
        """Append one accepted document."""
        idx = len(self._doc_ids)
        if idx == len(self._sigs):
            # in place (realloc, which moves pages rather than copying them): growing must not hold the old
            # and the new array at once. No view of the array outlives the call that made it (see `entries`).
            self._sigs.resize((2 * len(self._sigs), self.num_perm), refcheck=False)
        self._sigs[idx] = sig
        self._exact.setdefault(exact_key, idx)
        for table, key in zip(self._band_tables, self._band_keys(sig), strict=True):
            found = table.get(key)
            if found is None:
                table[key] = idx
            elif isinstance(found, int):
                table[key] = [found, idx]
            else:
                found.append(idx)
        self._exact_keys.append(exact_key)
        self._doc_ids.append(doc_id)

    def add_many(self, exact_keys: np.ndarray, sigs: np.ndarray, doc_ids: list[str]) -> None:
        for key, sig, doc_id in zip(exact_keys, sigs, doc_ids, strict=True):
            self.add(bytes(key), sig, doc_id)

    def entries(self, start: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(exact keys as N x 16 uint8, signatures as N x num_perm uint32, doc ids) from `start` on.

        The signatures are a read-only view of the index's own array (no copy: persisting the index
        must not double its memory); it is valid until the next `add`.
        """
        end = len(self._doc_ids)
        keys = np.frombuffer(b"".join(self._exact_keys[start:end]), dtype=np.uint8).reshape(-1, 16)
        sigs = self._sigs[start:end]
        sigs.flags.writeable = False
        return keys, sigs, self._doc_ids[start:end]

    def memory_bytes(self) -> int:
        """Approximate bytes the index holds (arrays, tables, keys, ids); what the ingest benchmark reports."""
        ints = sum(sys.getsizeof(key) for table in self._band_tables for key in table)
        tables = sum(sys.getsizeof(table) for table in self._band_tables)
        shared = sum(sys.getsizeof(v) for table in self._band_tables for v in table.values() if isinstance(v, list))
        strings = sum(sys.getsizeof(k) for k in self._exact_keys) + sum(sys.getsizeof(d) for d in self._doc_ids)
        containers = sys.getsizeof(self._exact) + sys.getsizeof(self._exact_keys) + sys.getsizeof(self._doc_ids)
        return self._sigs.nbytes + ints + tables + shared + strings + containers + 28 * len(self)

    def staged_count(self) -> int:
        return len(self._doc_ids) - self.committed
