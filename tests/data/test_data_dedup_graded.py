"""Dedup with the default settings on a small graded corpus of real text (pydoc pages of standard modules):
what users call a near duplicate is removed and names its twin, an unrelated document is kept."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lmforge_core.config.data import DataConfig
from tasks.dedup import DedupIndex, Verdict
from tasks.ingest.sample import pydoc_documents
from tasks.quality.assess import Assessor

MODULES = ("json", "csv", "shutil", "textwrap", "difflib", "sched", "queue", "fractions")


@pytest.fixture(scope="module")
def documents() -> list[str]:
    """One real document (>= 150 words) per module: different modules, unrelated texts."""
    docs = [next((d for d in pydoc_documents(m) if len(d.split()) >= 150), None) for m in MODULES]
    return [d for d in docs if d is not None]


def substitute(text: str, share: float, donor: str, seed: int) -> str:
    words, other, rng = text.split(), donor.split(), random.Random(seed)
    for i in rng.sample(range(len(words)), max(1, round(share * len(words)))):
        words[i] = rng.choice(other)
    return " ".join(words)


def decide(docs: dict[str, str], **dedup: object) -> dict[str, object]:
    """The dedup's decision for each document, admitted in order (keys as ingestion computes them); `dedup`
    overrides the default settings."""
    cfg = DataConfig(filter_profiles={"open": {"min_words": 0, "max_dup_ngram_fraction": {}, "max_top_ngram_fraction": {},
                                               "max_dup_line_fraction": 1.0, "max_dup_line_char_fraction": 1.0,
                                               "max_non_alnum_fraction": 1.0, "max_symbol_word_ratio": 1e9,
                                               "max_mean_word_length": 1e9}},
                     filter_profile="open", dedup=dedup)
    assessor = Assessor(cfg)
    assessed = [assessor.assess(t) for t in docs.values()]
    assert all(a.passed for a in assessed)
    d = cfg.dedup
    index = DedupIndex(d.num_perm, d.near_duplicate_threshold, d.containment_threshold, d.lsh_bands, d.lsh_rows)
    decisions = index.admit_many([a.exact_key for a in assessed], np.stack([a.signature for a in assessed]),
                                 list(docs))
    return dict(zip(docs, decisions, strict=True))


def test_graded_copies_are_removed_naming_their_twin_and_unrelated_documents_kept(documents) -> None:
    assert len(documents) >= 6
    a, b, c, d, e, unrelated = documents[:6]
    words = c.split()
    corpus = {"a": a, "b": b, "c": c, "d": d, "e": e, "unrelated": unrelated,
              "a-3pct": substitute(a, 0.03, unrelated, 1),
              "b-appended-20pct": b + " " + " ".join(unrelated.split()[: len(b.split()) // 5]),
              "c-excerpt-60pct": " ".join(words[len(words) // 5 : len(words) // 5 + round(0.6 * len(words))]),
              "d-40pct": substitute(d, 0.40, unrelated, 2),
              "e-reflowed": "\n\n".join("    " + line for line in e.split())}
    got = decide(corpus)
    for original in ("a", "b", "c", "d", "e", "unrelated"):
        assert got[original].verdict is Verdict.UNIQUE, original
    assert got["a-3pct"].verdict is Verdict.NEAR and got["a-3pct"].duplicate_of == "a"
    assert got["a-3pct"].similarity >= DataConfig().dedup.near_duplicate_threshold
    assert got["b-appended-20pct"].verdict is Verdict.NEAR and got["b-appended-20pct"].duplicate_of == "b"
    assert got["c-excerpt-60pct"].verdict is Verdict.NEAR and got["c-excerpt-60pct"].duplicate_of == "c"
    assert got["d-40pct"].verdict is Verdict.UNIQUE  # 40% of the words changed: another document
    assert got["e-reflowed"].verdict is Verdict.EXACT and got["e-reflowed"].duplicate_of == "e"


def test_an_excerpt_is_a_near_duplicate_by_containment_whatever_its_jaccard(documents) -> None:
    words = documents[2].split()
    corpus = {"c": documents[2], "c-excerpt-60pct": " ".join(words[10 : 10 + round(0.6 * len(words))])}
    # a Jaccard threshold the excerpt cannot reach: only containment can decide
    got = decide(corpus, near_duplicate_threshold=0.95)
    excerpt = got["c-excerpt-60pct"]
    assert excerpt.verdict is Verdict.NEAR and excerpt.duplicate_of == "c"
    assert excerpt.containment is not None and excerpt.containment >= 0.9 > excerpt.similarity
    assert decide(corpus, near_duplicate_threshold=0.95, containment_threshold=None)["c-excerpt-60pct"].verdict \
        is Verdict.UNIQUE


def test_containment_is_estimated_from_the_signatures(documents) -> None:
    from tasks.dedup.minhash import MinHasher, containment_estimate, jaccard_estimate

    hasher = MinHasher(256)
    whole = documents[0] + " " + documents[1]
    part, other = hasher.signature(documents[0]), hasher.signature(documents[2])
    host = hasher.signature(whole)[np.newaxis]
    assert containment_estimate(part, host)[0] >= 0.9  # documents[0] is wholly in `whole`
    assert jaccard_estimate(host, part)[0] < 0.75  # ... though only about half of `whole`
    assert containment_estimate(other, host)[0] < 0.1


def test_an_ingest_removes_the_edited_copy_naming_its_twin_and_keeps_the_rest(documents, tmp_path,
                                                                              data_runtime_factory,
                                                                              jsonl_writer) -> None:
    import gzip
    import json

    from tasks.ingest.pipeline import run_ingest

    folder = tmp_path / "pydoc"
    originals = [{"id": f"doc-{i}", "text": text} for i, text in enumerate(documents)]
    copy = {"id": "doc-0-3pct", "text": substitute(documents[0], 0.03, documents[-1], 3)}
    jsonl_writer(folder / "part-0.jsonl", originals)
    jsonl_writer(folder / "part-1.jsonl", [copy])
    rt = data_runtime_factory(source_filter_profiles={str(folder): "technical"})
    result = run_ingest(rt, str(folder))
    assert result.status == "accepted", result.message
    assert result.records_accepted == len(documents) and result.rejected == {"near_duplicate": 1}
    (key,) = [k for k in result.quarantine_keys if k.endswith("rejected.jsonl.gz")]
    (entry,) = [json.loads(line) for line in gzip.decompress(rt.artifacts.get_bytes(key)).splitlines()]
    assert entry["id"] == "doc-0-3pct" and entry["reason"] == "near_duplicate"
    assert entry["duplicate_of"]["id"] == "doc-0" and entry["duplicate_of"]["shard"] == "part-0.jsonl"
    assert entry["duplicate_of"]["batch_id"] == result.batch_id
    assert rt.settings.data.dedup.near_duplicate_threshold <= entry["similarity"] < 1.0
    from lmforge_core.metadata import removal_repository as removals

    with rt.metadata.session() as session:  # the metadata store carries the same explanation
        (row,) = [removals.removal_dict(r) for r in removals.list_removals(session, result.batch_id)]
    assert (row["doc_id"], row["twin_doc_id"], row["twin_shard"]) == ("doc-0-3pct", "doc-0", "part-0.jsonl")
    assert removals.describe_removal(row).startswith(f"near duplicate: {entry['similarity']:.0%} like document doc-0")
