"""MinHash signatures, the dedup index, and its persistence (snapshot + journal) in a real artifact store."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pytest

from lmforge_core.artifacts.local import LocalArtifactStore
from lmforge_core.config.data import DedupConfig
from tasks.quality.cleaning import dedup_normal_form
from tasks.quality.dedup import DedupIndex, Verdict
from tasks.quality.dedup_store import JOURNAL_PREFIX, SNAPSHOT_KEY, DedupStateError, DedupStore
from tasks.quality.minhash import MinHasher, jaccard_estimate, optimal_bands

HASHER = MinHasher(128, 5, 1)


def key(text: str) -> bytes:
    return hashlib.sha256(dedup_normal_form(text).encode()).digest()[:16]


def edit(text: str, changes: int, seed: int) -> str:
    words = text.split()
    rng = random.Random(seed)
    for i in rng.sample(range(len(words)), changes):
        words[i] = "zzedit"
    return " ".join(words)


def shingles(text: str) -> set[int]:
    return set(HASHER.shingle_hashes(HASHER.word_hashes(text)).tolist())


def test_signature_estimates_jaccard_and_is_deterministic(make_prose) -> None:
    a = make_prose(10, 300)
    b = edit(a, 5, seed=1)
    true_j = len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))
    est = jaccard_estimate(HASHER.signature(a), HASHER.signature(b))
    assert abs(est - true_j) < 0.12
    assert np.array_equal(HASHER.signature(a), MinHasher(128, 5, 1).signature(a))
    assert jaccard_estimate(HASHER.signature(a), HASHER.signature(make_prose(11, 300))) < 0.2


def test_band_parameters_cover_the_signature() -> None:
    bands, rows = optimal_bands(0.8, 128)
    assert bands * rows <= 128 and bands > 1 and rows > 1


def test_index_finds_exact_and_near_duplicates_but_not_distinct_documents(make_prose) -> None:
    index = DedupIndex(128, 0.8)
    original = make_prose(20, 300)
    index.add(key(original), HASHER.signature(original), "doc-1")
    same_modulo_case = original.upper().replace(" ", "  ")
    exact = index.check(key(same_modulo_case), HASHER.signature(same_modulo_case))
    assert exact.verdict is Verdict.EXACT and exact.duplicate_of == "doc-1"
    near = edit(original, 3, seed=2)
    decision = index.check(key(near), HASHER.signature(near))
    assert decision.verdict is Verdict.NEAR and decision.similarity >= 0.8 and decision.duplicate_of == "doc-1"
    for seed in range(21, 40):
        other = make_prose(seed, 300)
        assert index.check(key(other), HASHER.signature(other)).verdict is Verdict.UNIQUE


def _stage(index: DedupIndex, texts: list[str], prefix: str) -> None:
    for i, text in enumerate(texts):
        index.add(key(text), HASHER.signature(text), f"{prefix}-{i}")


def test_index_persists_across_batches(tmp_path: Path, make_prose) -> None:
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    cfg = DedupConfig()
    committed: set[str] = set()
    store = DedupStore(artifacts, cfg)
    index = store.load(committed.__contains__)
    first = [make_prose(s, 200) for s in range(5)]
    _stage(index, first, "b1")
    store.write_journal(index, "batch-000001")
    committed.add("batch-000001")
    store.commit(index, "batch-000001")
    assert artifacts.exists(SNAPSHOT_KEY) and not artifacts.list(JOURNAL_PREFIX)

    reloaded = DedupStore(artifacts, cfg).load(committed.__contains__)
    assert len(reloaded) == 5 and reloaded.committed == 5
    again = first[3]
    assert reloaded.check(key(again), HASHER.signature(again)).verdict is Verdict.EXACT
    near = edit(first[1], 2, seed=5)
    assert reloaded.check(key(near), HASHER.signature(near)).verdict is Verdict.NEAR


@pytest.mark.parametrize("batch_committed", [True, False])
def test_crash_between_journal_and_snapshot(tmp_path: Path, make_prose, batch_committed: bool) -> None:
    """A journal is replayed only when its batch committed in the metadata store; otherwise dropped."""
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    cfg = DedupConfig()
    committed = {"batch-000001"}
    store = DedupStore(artifacts, cfg)
    index = store.load(committed.__contains__)
    _stage(index, [make_prose(1, 200)], "b1")
    store.write_journal(index, "batch-000001")
    store.commit(index, "batch-000001")

    docs = [make_prose(s, 200) for s in (50, 51)]
    index = DedupStore(artifacts, cfg).load(committed.__contains__)
    _stage(index, docs, "b2")
    DedupStore(artifacts, cfg).write_journal(index, "batch-000002")  # then the process dies
    if batch_committed:
        committed.add("batch-000002")

    recovered = DedupStore(artifacts, cfg).load(committed.__contains__)
    verdict = recovered.check(key(docs[0]), HASHER.signature(docs[0])).verdict
    assert verdict is (Verdict.EXACT if batch_committed else Verdict.UNIQUE)
    assert len(recovered) == (3 if batch_committed else 1)
    assert not artifacts.list(JOURNAL_PREFIX)


def test_changed_minhash_parameters_are_refused(tmp_path: Path, make_prose) -> None:
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    store = DedupStore(artifacts, DedupConfig())
    index = store.load(lambda _: True)
    _stage(index, [make_prose(1, 200)], "b1")
    store.write_journal(index, "batch-000001")
    store.commit(index, "batch-000001")
    with pytest.raises(DedupStateError, match="num_perm"):
        DedupStore(artifacts, DedupConfig(num_perm=64)).load(lambda _: True)
