"""In-memory deduplication index: exact keys plus MinHash LSH bands, in arrays rather than Python objects.

Entries are appended in acceptance order. Entries below `committed` came from the persisted state
(everything ever accepted); entries above it were staged by the batch now running, so a document
is compared with the whole history and with the earlier documents of its own batch.
Persistence (snapshot + journal in the artifact store) lives in `tasks.dedup.store`.

Per entry the index holds its signature, exact key and UTF-8 doc id in `MappedArray`s, and its lookup
keys (the first 8 bytes of the exact key, and one key per LSH band) in one `KeyTable`: about 0.7 kB
per entry at 128 permutations, and no Python object per entry, so its memory is what `memory_bytes`
counts. A lookup takes the entries that share any key as candidates, then verifies them (`_verify`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from tasks.dedup.key_table import KeyTable
from tasks.dedup.mapped_array import MappedArray
from tasks.dedup.minhash import band_keys, containment_estimate, jaccard_estimate, optimal_bands

KEY_BYTES = 16
_KEY_CHUNK_ROWS = 4096  # rows whose keys `add_many` computes at once (a transient of 8 bytes per signature value)


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
    # estimated share of this document's shingles found in that document (set when containment decided it).
    containment: float | None = None


@dataclass(frozen=True)
class Entries:
    """Index entries as arrays: what is persisted, and what `DedupIndex.add_many` takes.

    Doc id i is ``id_bytes[id_offsets[i]:id_offsets[i + 1]]`` decoded as UTF-8 (``id_offsets[0] == 0``).
    """

    exact_keys: np.ndarray  # N x 16 uint8
    signatures: np.ndarray  # N x num_perm uint32
    id_offsets: np.ndarray  # N + 1 int64
    id_bytes: np.ndarray  # uint8

    def __len__(self) -> int:
        return len(self.exact_keys)


def _read_only(view: np.ndarray) -> np.ndarray:
    view.flags.writeable = False
    return view


class DedupIndex:
    """Exact and near-duplicate lookup over every entry added so far."""

    def __init__(self, num_perm: int, threshold: float, containment_threshold: float | None = None,
                 bands: int | None = None, rows: int | None = None) -> None:
        """The LSH layout is `bands` x `rows` (`bands` None: all the signature holds; `rows` None: `optimal_bands`
        for the threshold); a document whose shingles are at least `containment_threshold` contained in a
        candidate's is a near duplicate too (None: off)."""
        self.num_perm = num_perm
        self.threshold = threshold
        self.containment_threshold = containment_threshold
        self.bands, self.rows = (bands or num_perm // rows, rows) if rows else optimal_bands(threshold, num_perm)
        if not 1 <= self.bands * self.rows <= num_perm:
            raise ValueError(f"{self.bands} LSH bands of {self.rows} rows need {self.bands * self.rows} signature "
                             f"values; signatures have {num_perm}")
        self._sigs = MappedArray(np.uint32, (num_perm,))
        self._exact_keys = MappedArray(np.uint8, (KEY_BYTES,))
        self._id_offsets = MappedArray(np.int64)
        self._id_offsets.append(0)
        self._id_bytes = MappedArray(np.uint8)
        self._keys = KeyTable()
        self.committed = 0

    def __len__(self) -> int:
        return self._sigs.size

    def _lookup_keys(self, keys: np.ndarray, sigs: np.ndarray) -> np.ndarray:
        """(n, 1 + bands) uint64: each exact key's first 8 bytes, then its signature's band keys."""
        exact = np.ascontiguousarray(keys[:, :8]).view(np.uint64)
        return np.concatenate((exact, band_keys(sigs, self.bands, self.rows)), axis=1)

    def _doc_id(self, entry: int) -> str:
        offsets = self._id_offsets.data
        return bytes(self._id_bytes.data[offsets[entry] : offsets[entry + 1]]).decode()

    def check(self, exact_key: bytes, sig: np.ndarray) -> DedupDecision:
        """Is this document a duplicate of an entry already in the index? (It is not added.)"""
        key = np.frombuffer(exact_key, dtype=np.uint8)
        found: list[int] = []

        def look(_: int, candidates: list[int]) -> None:  # returns no entry: the table pairs nothing
            found.extend(candidates)

        self._keys.admit(self._lookup_keys(key[np.newaxis], sig[np.newaxis]), look)
        return self._verify(key, sig, found)

    def admit_many(self, exact_keys: list[bytes], sigs: np.ndarray, doc_ids: list[str]) -> list[DedupDecision]:
        """Check each document in order and add the unique ones; a document is compared with every entry
        added before it, those of its own call included. The keys of all are computed at once."""
        keys = np.frombuffer(b"".join(exact_keys), dtype=np.uint8).reshape(-1, KEY_BYTES)
        decisions: list[DedupDecision] = []

        def decide(row: int, candidates: list[int]) -> int | None:
            decision = self._verify(keys[row], sigs[row], candidates)
            decisions.append(decision)
            if decision.verdict is not Verdict.UNIQUE:
                return None
            self._sigs.append(sigs[row])
            self._exact_keys.append(keys[row])
            self._id_bytes.extend(np.frombuffer(doc_ids[row].encode(), dtype=np.uint8))
            self._id_offsets.append(self._id_bytes.size)
            return len(self) - 1

        self._keys.admit(self._lookup_keys(keys, sigs), decide)
        return decisions

    def _verify(self, key: np.ndarray, sig: np.ndarray, candidates: list[int]) -> DedupDecision:
        """The same exact key makes an exact duplicate; else the most similar signature at or above the threshold
        (the earliest entry among equals) a near one; else, with containment on, the candidate that contains the
        most of this document, when that share reaches `containment_threshold`."""
        if not candidates:
            return DedupDecision(Verdict.UNIQUE)
        entries = np.unique(candidates)
        exact = np.flatnonzero((self._exact_keys.data[entries] == key).all(axis=1))
        if len(exact):
            return DedupDecision(Verdict.EXACT, self._doc_id(int(entries[exact[0]])), 1.0)
        sigs = self._sigs.data[entries]
        similarities = jaccard_estimate(sigs, sig)
        best = int(np.argmax(similarities))
        if similarities[best] >= self.threshold:
            return DedupDecision(Verdict.NEAR, self._doc_id(int(entries[best])), float(similarities[best]))
        if self.containment_threshold is not None:
            contained = containment_estimate(sig, sigs)
            best = int(np.argmax(contained))
            if contained[best] >= self.containment_threshold:
                return DedupDecision(Verdict.NEAR, self._doc_id(int(entries[best])), float(similarities[best]),
                                     float(contained[best]))
        return DedupDecision(Verdict.UNIQUE)

    def add_many(self, entries: Entries) -> None:
        """Append entries in bulk (loading a snapshot or a journal)."""
        first = len(self)
        self._sigs.extend(entries.signatures)
        self._exact_keys.extend(entries.exact_keys)
        self._id_offsets.extend(entries.id_offsets[1:] - entries.id_offsets[0] + self._id_bytes.size)
        self._id_bytes.extend(entries.id_bytes)
        numbers = np.arange(first, len(self), dtype=np.uint64)
        for start in range(0, len(entries), _KEY_CHUNK_ROWS):
            chunk = slice(start, start + _KEY_CHUNK_ROWS)
            keys = self._lookup_keys(entries.exact_keys[chunk], entries.signatures[chunk])
            self._keys.extend(keys.ravel(), np.repeat(numbers[chunk], keys.shape[1]))

    def commit(self) -> None:
        """The entries added so far are persisted state now: merge them into the committed part."""
        self._keys.consolidate()
        self.committed = len(self)

    def entries(self, start: int = 0) -> Entries:
        """The entries from `start` on, as read-only views of the index's own arrays (persisting the index must
        not double its memory); they do not see entries added after them."""
        offsets = self._id_offsets.data[start:]
        ids = self._id_bytes.data[offsets[0] : offsets[-1]]
        if start:
            offsets = offsets - offsets[0]
        return Entries(_read_only(self._exact_keys.data[start:]), _read_only(self._sigs.data[start:]),
                       _read_only(offsets), _read_only(ids))

    def memory_bytes(self) -> int:
        """Bytes the index holds: its arrays (rows in use) and its key table."""
        arrays = (self._sigs, self._exact_keys, self._id_offsets, self._id_bytes)
        return sum(a.nbytes for a in arrays) + self._keys.nbytes()
