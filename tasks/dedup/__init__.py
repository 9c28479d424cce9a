"""Dedup stage: MinHash near-duplicate detection with a persistent index.

Public surface (what the pipeline uses): `MinHasher` (signatures), `DedupIndex` (the LSH band index
and its verified decisions), `DedupDecision`/`Verdict`, and `DedupStore` (the index's snapshot and
journal in the artifact store, `DedupStateError` when they disagree). The key table, memory-mapped
arrays and the streaming .npz format are internals of the index and the store.
May import: lmforge_core. Never flows/.
"""

from tasks.dedup.index import DedupDecision, DedupIndex, Verdict
from tasks.dedup.minhash import MinHasher
from tasks.dedup.store import DedupStateError, DedupStore

__all__ = [
    "DedupDecision",
    "DedupIndex",
    "DedupStateError",
    "DedupStore",
    "MinHasher",
    "Verdict",
]
