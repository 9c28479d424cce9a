"""Shard readers: formats, compressed streams, and every malformed input ending in its named reason."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tasks.ingest.readers import read_shard, shard_format
from tasks.ingest.records import Reason, ShardError
from tasks.ingest.sources import LocalSource, SourceError, open_source

CAP = 10_000


def read_all(path: Path, name: str | None = None, cap: int = CAP) -> tuple[list, ShardError | None]:
    records, error = [], None
    try:
        for record in read_shard(path, name or path.name, cap):
            records.append(record)
    except ShardError as exc:
        error = exc
    return records, error


def jsonl_bytes(docs: list[dict]) -> bytes:
    return "".join(json.dumps(d) + "\n" for d in docs).encode()


def test_shard_format_from_name() -> None:
    assert shard_format("a/b.jsonl.gz") == ("jsonl", "gzip")
    assert shard_format("x.JSONL.zst") == ("jsonl", "zstd")
    assert shard_format("x.parquet") == ("parquet", None)
    assert shard_format("notes.md") == ("text", None)
    assert shard_format("data.csv") == ("unknown", None)


def test_jsonl_fields_and_compressed_streams(tmp_path: Path) -> None:
    docs = [{"text": "hello world", "id": 7, "source": "s", "created_at": "2026-01-01", "meta": {"k": 1}},
            {"text": "second"}]
    plain = tmp_path / "a.jsonl"
    plain.write_bytes(jsonl_bytes(docs))
    gz = tmp_path / "b.jsonl.gz"
    gz.write_bytes(gzip.compress(jsonl_bytes(docs)))
    zst = tmp_path / "c.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(jsonl_bytes(docs)))
    for path in (plain, gz, zst):
        records, error = read_all(path)
        assert error is None
        assert [r.text for r in records] == ["hello world", "second"]
        assert records[0].doc_id == "7" and records[0].meta == {"k": 1} and records[0].created_at == "2026-01-01"


def test_each_malformed_line_is_a_named_rejection_and_the_rest_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [
        b'{"text": "good one"}',
        b'{"text": "unterminated',
        b'["a", "list"]',
        b'{"id": 1}',
        b'{"text": null}',
        b'{"text": "   "}',
        b'{"text": 42}',
        b'{"text": "caf\xe9 latin-1"}',
        b'{"text": "' + b"x" * (CAP + 10) + b'"}',
        b"",
        b'{"text": "good two"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    records, error = read_all(path)
    assert error is None
    reasons = [r.reason for r in records]
    assert reasons == [None, Reason.INVALID_JSON, Reason.NOT_AN_OBJECT, Reason.MISSING_TEXT, Reason.MISSING_TEXT,
                       Reason.EMPTY_TEXT, Reason.NON_STRING_TEXT, Reason.NON_UTF8, Reason.LINE_TOO_LONG, None]
    assert [r.text for r in records if r.reason is None] == ["good one", "good two"]
    assert records[8].excerpt and len(records[8].excerpt) <= 2000  # the huge line is not kept whole
    assert [r.position for r in records] == list(range(1, 11))


@pytest.mark.parametrize(
    ("name", "payload", "reason"),
    [
        ("empty.jsonl", b"", Reason.EMPTY_FILE),
        ("image.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), Reason.BINARY_FILE),
        ("empty.md", b"", Reason.EMPTY_FILE),
        ("notgzip.jsonl.gz", b"this is not gzip data at all", Reason.CORRUPT_GZIP),
        ("data.csv", b"a,b\n1,2\n", Reason.UNSUPPORTED_FORMAT),
        ("broken.parquet", b"PAR1 but not really parquet", Reason.CORRUPT_PARQUET),
    ],
)
def test_unreadable_shards_fail_with_their_reason(tmp_path: Path, name: str, payload: bytes, reason: Reason) -> None:
    path = tmp_path / name
    path.write_bytes(payload)
    records, error = read_all(path)
    assert records == []
    assert error is not None and error.reason is reason


def test_truncated_gzip_keeps_what_was_read_then_fails(tmp_path: Path) -> None:
    docs = [{"text": f"document number {i} " * 20} for i in range(2000)]
    data = gzip.compress(jsonl_bytes(docs))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    records, error = read_all(path)
    assert error is not None and error.reason is Reason.TRUNCATED_GZIP
    assert 0 < len(records) < 2000
    assert all(r.reason is None for r in records)


def test_text_documents_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "doc.md").write_text("# Title\n\nSome markdown body.\n")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "big.txt").write_text("y" * (CAP + 1))
    records, _ = read_all(tmp_path / "doc.md", "docs/doc.md")
    assert records[0].text.startswith("# Title") and records[0].doc_id == "docs/doc.md"
    assert read_all(tmp_path / "latin.txt")[0][0].reason is Reason.NON_UTF8
    assert read_all(tmp_path / "big.txt")[0][0].reason is Reason.DOCUMENT_TOO_LARGE

    table = pa.table({"text": ["first doc", None, "  ", "fourth"], "id": ["a", "b", "c", "d"]})
    pq.write_table(table, tmp_path / "t.parquet")
    records, error = read_all(tmp_path / "t.parquet")
    assert error is None
    assert [r.reason for r in records] == [None, Reason.MISSING_TEXT, Reason.EMPTY_TEXT, None]
    assert records[3].doc_id == "d"
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "nocol.parquet")
    assert read_all(tmp_path / "nocol.parquet")[1].reason is Reason.MISSING_TEXT_COLUMN
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    assert [r.reason for r in read_all(tmp_path / "ints.parquet")[0]] == [Reason.NON_STRING_TEXT] * 2


def test_local_source_lists_visible_files_recursively(tmp_path: Path) -> None:
    (tmp_path / "day-01").mkdir()
    (tmp_path / "day-01" / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / ".hidden.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "b.md").write_text("doc")
    shards = LocalSource(tmp_path).list_shards()
    assert [(s.name, s.drop) for s in shards] == [("b.md", ""), ("day-01/a.jsonl", "day-01")]
    with LocalSource(tmp_path).fetch(shards[1]) as fetched:
        assert len(fetched.sha256) == 64 and fetched.size == shards[1].size
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="unsupported"):
        open_source("ftp://host/x")
