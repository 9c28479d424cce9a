"""MinHash signatures, the dedup index (against a plain LSH reference), and its persistence (snapshot + journal)
in a real artifact store."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from lmforge_core.artifacts.local import LocalArtifactStore
from lmforge_core.config.data import DedupConfig
from tasks.dedup import store as dedup_store
from tasks.dedup.index import DedupIndex, Verdict
from tasks.dedup.mapped_array import MappedArray
from tasks.dedup.minhash import MinHasher, jaccard_estimate, optimal_bands
from tasks.dedup.store import JOURNAL_PREFIX, SNAPSHOT_KEY, DedupStateError, DedupStore
from tasks.quality.cleaning import dedup_normal_form

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
    _stage(index, [original], "doc")
    same_modulo_case = original.upper().replace(" ", "  ")
    exact = index.check(key(same_modulo_case), HASHER.signature(same_modulo_case))
    assert exact.verdict is Verdict.EXACT and exact.duplicate_of == "doc-0"
    near = edit(original, 3, seed=2)
    decision = index.check(key(near), HASHER.signature(near))
    assert decision.verdict is Verdict.NEAR and decision.similarity >= 0.8 and decision.duplicate_of == "doc-0"
    for seed in range(21, 40):
        other = make_prose(seed, 300)
        assert index.check(key(other), HASHER.signature(other)).verdict is Verdict.UNIQUE


def _stage(index: DedupIndex, texts: list[str], prefix: str) -> list[Verdict]:
    decisions = index.admit_many([key(t) for t in texts], np.stack([HASHER.signature(t) for t in texts]),
                                 [f"{prefix}-{i}" for i in range(len(texts))])
    return [d.verdict for d in decisions]


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


def _reference_decisions(keys: list[bytes], sigs: np.ndarray, ids: list[str], threshold: float) -> list[tuple]:
    """Exact keys in a dict, LSH bands as tuples: what the index must decide, written the plain way."""
    bands, rows = optimal_bands(threshold, sigs.shape[1])
    exact: dict[bytes, int] = {}
    by_band: dict[tuple, list[int]] = {}
    accepted: list[int] = []
    decisions = []
    for i, (k, sig) in enumerate(zip(keys, sigs, strict=True)):
        band_values = [(b, tuple(sig[b * rows : (b + 1) * rows])) for b in range(bands)]
        if k in exact:
            decisions.append(("exact_duplicate", ids[exact[k]], 1.0))
            continue
        candidates = sorted({j for band in band_values for j in by_band.get(band, [])})
        sims = [float(np.count_nonzero(sigs[j] == sig)) / len(sig) for j in candidates]
        if sims and max(sims) >= threshold:
            best = candidates[sims.index(max(sims))]
            decisions.append(("near_duplicate", ids[best], max(sims)))
            continue
        decisions.append(("unique", None, 0.0))
        exact[k] = i
        accepted.append(i)
        for band in band_values:
            by_band.setdefault(band, []).append(i)
    return decisions


def test_index_decides_like_plain_lsh_across_chunks_flushes_and_commits() -> None:
    """Planted exact and near duplicates at similarities around the threshold, admitted in chunks of 97 (a
    duplicate's original is often in its own chunk), past the key table's flush and across a commit."""
    rng = np.random.default_rng(3)
    n = 3000
    sigs = rng.integers(0, 2**32, size=(n, 128), dtype=np.uint32)
    keys = [hashlib.sha256(str(i).encode()).digest()[:16] for i in range(n)]
    for i in range(1, n, 4):
        j = int(rng.integers(max(0, i - 150), i))
        sigs[i] = sigs[j]
        if i % 3:
            changed = rng.choice(128, size=int(rng.integers(1, 45)), replace=False)
            sigs[i, changed] = rng.integers(0, 2**32, size=len(changed), dtype=np.uint32)
        else:
            keys[i] = keys[j]
    ids = [f"batch-1:doc-{i}" for i in range(n)]
    expected = _reference_decisions(keys, sigs, ids, 0.8)

    index = DedupIndex(128, 0.8)
    got = []
    for start in range(0, n, 97):
        if start == 1940:
            index.commit()
        got += [(d.verdict.value, d.duplicate_of, d.similarity)
                for d in index.admit_many(keys[start : start + 97], sigs[start : start + 97], ids[start : start + 97])]
    assert got == expected
    verdicts = {v for v, _, _ in got}
    assert verdicts == {"unique", "exact_duplicate", "near_duplicate"}
    assert sum(v == "unique" for v, _, _ in got) == len(index)


def test_memory_bytes_counts_the_arrays_it_holds(make_prose) -> None:
    index = DedupIndex(128, 0.8)
    texts = [make_prose(s, 150) for s in range(200)]
    _stage(index, texts, "doc")
    id_bytes = sum(len(f"doc-{i}") for i in range(200))
    arrays = 200 * (128 * 4 + 16 + 8 + (index.bands + 1) * 8) + 8 + id_bytes
    assert arrays <= index.memory_bytes() <= arrays + 2**20  # plus the bounded buffer of recent keys


def test_persisted_index_is_read_back_in_blocks(tmp_path: Path, make_prose, monkeypatch) -> None:
    """Doc ids of every length and script survive the block boundaries of the snapshot and the journal."""
    monkeypatch.setattr(dedup_store, "READ_ROWS", 3)
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    store = DedupStore(artifacts, DedupConfig())
    index = store.load(lambda _: True)
    texts = [make_prose(s, 120) for s in range(11)]
    names = ["", "ä", "doc-ü-東京", "x" * 300, *(f"d{i}" for i in range(7))]
    index.admit_many([key(t) for t in texts], np.stack([HASHER.signature(t) for t in texts]), names)
    store.write_journal(index, "batch-000001")
    store.commit(index, "batch-000001")
    more = [make_prose(s, 120) for s in range(11, 15)]
    index.admit_many([key(t) for t in more], np.stack([HASHER.signature(t) for t in more]), ["é" * i for i in range(4)])
    store.write_journal(index, "batch-000002")  # then the process dies after its metadata commit

    reloaded = DedupStore(artifacts, DedupConfig()).load(lambda _: True)
    assert len(reloaded) == 15 and reloaded.committed == 15
    for text, name in zip(texts + more, names + ["é" * i for i in range(4)], strict=True):
        decision = reloaded.check(key(text), HASHER.signature(text))
        assert (decision.verdict, decision.duplicate_of) == (Verdict.EXACT, name)


def test_snapshot_written_with_unicode_doc_ids_still_loads(tmp_path: Path, make_prose) -> None:
    """Snapshots from before doc ids were stored as UTF-8 bytes + offsets held them as a unicode array."""
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    texts = [make_prose(s, 120) for s in range(3)]
    legacy = tmp_path / "legacy.npz"
    np.savez(legacy, exact_keys=np.frombuffer(b"".join(key(t) for t in texts), dtype=np.uint8).reshape(-1, 16),
             signatures=np.stack([HASHER.signature(t) for t in texts]), doc_ids=np.array(["a", "bé", "c-3"]),
             header=np.array(json.dumps({"params": {"num_perm": 128, "shingle_size": 5, "seed": 1},
                                         "batches": ["batch-000001"]})))
    artifacts.put_file(SNAPSHOT_KEY, legacy)
    store = DedupStore(artifacts, DedupConfig())
    index = store.load(lambda _: True)
    assert store.batches == ["batch-000001"] and len(index) == 3
    assert index.check(key(texts[1]), HASHER.signature(texts[1])).duplicate_of == "bé"
    near = edit(texts[2], 2, seed=9)
    assert index.check(key(near), HASHER.signature(near)).verdict is Verdict.NEAR


def test_mapped_array_grows_under_a_live_view() -> None:
    """Growing while an earlier view lives copies instead of moving the pages under that view."""
    array = MappedArray(np.uint32, (4,), capacity=2)
    array.extend(np.arange(8, dtype=np.uint32).reshape(2, 4))
    view = array.data
    for i in range(1000):
        array.append(np.full(4, i, dtype=np.uint32))
    assert view.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert array.size == 1002 and array.data[-1].tolist() == [999] * 4 and array.data[:2].tolist() == view.tolist()
    del view
    array.extend(np.zeros((5000, 4), dtype=np.uint32))  # no view left: grown in place
    assert array.data[1001].tolist() == [999] * 4 and array.nbytes == 6002 * 16
