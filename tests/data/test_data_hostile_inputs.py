"""Hostile inputs on real stores (issue 21, points 8 and 9): a rejected document's quarantine copy keeps the
rule's evidence but not its PII; a tiny Parquet file holding one huge cell is rejected before the cell becomes
a Python string; a tiny gzip of many empty records adds a bounded number of rows to the metadata database."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge_core.metadata import removal_repository as removal_repo
from lmforge_core.metadata import repository as repo
from tasks.ingest.pipeline import run_ingest
from tasks.ingest.readers import read_shard
from tasks.ingest.records import Reason

EMAIL, CARD, IBAN = "jane.doe@example.com", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00"
ROOT = Path(__file__).resolve().parents[2]


def _docs(make_prose, seeds) -> list[dict]:
    return [{"id": f"d{s}", "source": "test", "text": make_prose(s, 120)} for s in seeds]


def _quarantine_text(rt, key: str) -> str:
    return gzip.decompress(rt.artifacts.get_bytes(key)).decode()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_rejected_documents_quarantine_copy_keeps_the_evidence_not_the_pii(
        backend, request, data_runtime_factory, make_prose, jsonl_writer, tmp_path) -> None:
    url = "" if backend == "sqlite" else request.getfixturevalue("fresh_postgres_url")
    rt = data_runtime_factory(database_url=url)
    short = f"Refund to {EMAIL} on card {CARD}, account {IBAN}."  # too few words: filter word_count
    # the card straddles the excerpt's cut (20,000 characters): it must be redacted before the cut
    long_tail = make_prose(7, 4000)[:19_990] + f" {CARD} " + "x" * 30
    jsonl_writer(tmp_path / "src" / "part.jsonl", [
        *_docs(make_prose, range(6)), {"id": "short", "text": short},
        {"id": "cut", "text": long_tail + " " + "word " * 20_000},  # repeated n-grams: filtered
        f'{{"text": "unterminated, mail {EMAIL}',  # a reader rejection keeps an excerpt of the raw line
    ])
    result = run_ingest(rt, str(tmp_path / "src"))
    raw = _quarantine_text(rt, result.quarantine_keys[0])
    assert EMAIL not in raw and CARD not in raw and IBAN not in raw and "4111" not in raw
    entries = {e["id"]: e for e in map(json.loads, raw.splitlines())}
    filtered = entries["short"]
    assert filtered["text"] == "Refund to <EMAIL> on card <CREDIT_CARD>, account <IBAN>."
    assert filtered["pii"] == {"email": 1, "iban": 1, "credit_card": 1, "ssn": 0, "ipv6": 0, "ipv4": 0, "phone": 0}
    assert filtered["filter"]["rule"] == "word_count"
    assert filtered["filter"]["score"] == filtered["scores"]["word_count"] < filtered["filter"]["min"]
    assert len(entries["cut"]["text"]) == 20_000 and entries["cut"]["pii"]["credit_card"] == 1
    assert entries[None]["reason"] == "invalid_json" and "<EMAIL>" in entries[None]["text"]
    with rt.metadata.session() as session:
        kept = [removal_repo.removal_dict(r) for r in removal_repo.list_removals(session, result.batch_id)]
    assert {r["doc_id"] for r in kept} >= {"short"}
    assert EMAIL not in json.dumps(kept) and CARD not in json.dumps(kept)


def test_a_tiny_parquet_with_a_huge_cell_is_rejected_before_it_becomes_a_string(tmp_path: Path) -> None:
    huge = "spam " * 12_000_000  # 60 MB of text, a few KB compressed
    path = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"text": ["a fine first row", huge, "a fine last row"], "id": ["a", "b", "c"]}), path,
                   compression="zstd")
    assert path.stat().st_size < 50_000
    tracemalloc.start()
    try:
        records = list(read_shard(path, "bomb.parquet", max_line_bytes=10_000_000))
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert python_peak < 10_000_000  # the 60 MB cell never became a Python object (Arrow's buffers are not traced)
    assert [r.text for r in records] == ["a fine first row", None, "a fine last row"]
    bomb = records[1]
    assert (bomb.position, bomb.reason, bomb.doc_id) == (2, Reason.DOCUMENT_TOO_LARGE, None)
    assert bomb.detail == "column 'text' holds 60000000 bytes, over the cap of 10000000 (data.max_line_bytes)"
    assert bomb.excerpt == huge[:2000]
    oversized_id = tmp_path / "id.parquet"
    pq.write_table(pa.table({"text": ["fine"], "id": ["i" * 2_000]}), oversized_id)
    [record] = read_shard(oversized_id, "id.parquet", max_line_bytes=1_000)
    assert record.reason == Reason.DOCUMENT_TOO_LARGE and "column 'id' holds 2000 bytes" in record.detail


def test_ingesting_a_parquet_bomb_rejects_it_and_keeps_the_other_rows(tmp_path: Path, make_prose) -> None:
    """The whole ingest in a process of its own, through the CLI. Its peak resident memory is not asserted: it
    measured 550-740 MB alone but up to 1.9 GB under the two-worker suite, a variation not yet understood; that the
    cell never becomes a Python object is asserted on the reader above."""
    src = tmp_path / "src"
    src.mkdir()
    texts = [make_prose(s, 120) for s in range(8)] + ["spam " * 12_000_000]
    pq.write_table(pa.table({"text": texts}), src / "bomb.parquet", compression="zstd")
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ} | {
        "LMFORGE_WORKSPACE": str(tmp_path / "ws"), "LMFORGE_DATA__WORKERS": "1", "LMFORGE_DATA__GATE__MIN_ROWS": "3",
        "LMFORGE_DATA__TOKENIZER__VOCAB_SIZE": "400", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "flows.cli", "ingest", str(src), "--json"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["rejected"] == {"document_too_large": 1} and result["records_accepted"] == 8


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_tiny_gzip_of_many_empty_records_adds_bounded_rows_and_keeps_counts_and_samples(
        backend, request, data_runtime_factory, make_prose, tmp_path) -> None:
    url = "" if backend == "sqlite" else request.getfixturevalue("fresh_postgres_url")
    rt = data_runtime_factory(database_url=url, max_removals_per_reason=50)
    src = tmp_path / "src"
    src.mkdir()
    empties = 200_000
    (src / "flood.jsonl.gz").write_bytes(gzip.compress(b'{"text": ""}\n' * empties + b"[1]\n" * 120, 9))
    assert (src / "flood.jsonl.gz").stat().st_size < 10_000
    (src / "good.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _docs(make_prose, range(6))))
    result = run_ingest(rt, str(src))
    assert (result.rejected["empty_text"], result.rejected["not_an_object"]) == (empties, 120)
    assert result.removals_recorded == 100
    with rt.metadata.session() as session:
        assert removal_repo.count_removals(session, result.batch_id) == {"empty_text": 50, "not_an_object": 50}
        samples = removal_repo.list_removals(session, result.batch_id, reason="empty_text", limit=1000)
        assert [r.position for r in samples] == list(range(1, 51))  # the first ones, in input order
        batch = repo.get_batch(session, result.batch_id)
        counts = {r.reason: r.count for r in batch.rejects}
        assert (counts["empty_text"], counts["not_an_object"]) == (empties, 120)
    assert len(_quarantine_text(rt, result.quarantine_keys[0]).splitlines()) == empties + 120
