"""Shard readers: JSONL, Parquet and plain-text/Markdown documents, optionally ``.gz`` / ``.zst`` streams.

Readers stream: a JSONL shard is read line by line with a size cap, so a huge or endless line costs
at most one cap of memory; a Parquet cell over the same cap is rejected while still in Arrow's buffers,
before it becomes a Python string (a few KB of Parquet can hold a cell of many MB). Malformed units become
records with a reason; a shard that cannot be read further raises `ShardError` after yielding what it could
read.
"""

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import zstandard

from tasks.ingest.records import Reason, Record, ShardError

if TYPE_CHECKING:
    import pyarrow as pa

TEXT_SUFFIXES = {".txt", ".md"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
PARQUET_SUFFIXES = {".parquet"}
_SNIFF = 8192
_EXCERPT = 2000



def _text_rejection(shard: str, position: int, text: object, excerpt: str) -> Record | None:
    """The rejection for a record whose text is missing, not a string or blank (JSONL and Parquet alike)."""
    if text is None:
        return Record(shard, position, reason=Reason.MISSING_TEXT, detail="'text' is missing or null", excerpt=excerpt)
    if not isinstance(text, str):
        return Record(shard, position, reason=Reason.NON_STRING_TEXT, detail=f"'text' is {type(text).__name__}",
                      excerpt=excerpt)
    if not text.strip():
        return Record(shard, position, reason=Reason.EMPTY_TEXT, detail="'text' is empty or blank")
    return None

def shard_format(name: str) -> tuple[str, str | None]:
    """(format, compression) from a shard name: format in jsonl/parquet/text/unknown."""
    lower = name.lower()
    compression = None
    for ext, codec in ((".gz", "gzip"), (".zst", "zstd"), (".zstd", "zstd")):
        if lower.endswith(ext):
            compression = codec
            lower = lower[: -len(ext)]
            break
    suffix = Path(lower).suffix
    if suffix in JSONL_SUFFIXES:
        return "jsonl", compression
    if suffix in PARQUET_SUFFIXES and compression is None:
        return "parquet", None
    if suffix in TEXT_SUFFIXES:
        return "text", compression
    return "unknown", compression


def _open_stream(path: Path, compression: str | None) -> BinaryIO:
    if compression == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if compression == "zstd":
        raw = path.open("rb")
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
        return io.BufferedReader(reader, buffer_size=1 << 20)  # type: ignore[arg-type]
    return path.open("rb")


def _stream_error(exc: Exception, name: str, compression: str | None) -> ShardError:
    if isinstance(exc, EOFError):
        return ShardError(Reason.TRUNCATED_GZIP, f"{name}: compressed stream ends early ({exc})")
    if isinstance(exc, gzip.BadGzipFile | zlib.error):
        return ShardError(Reason.CORRUPT_GZIP, f"{name}: {exc}")
    if isinstance(exc, zstandard.ZstdError):
        return ShardError(Reason.CORRUPT_ZSTD, f"{name}: {exc}")
    return ShardError(Reason.READ_ERROR, f"{name}: {exc}")


def _excerpt(raw: bytes) -> str:
    return raw[:_EXCERPT].decode("utf-8", errors="replace")


def _sniff(stream: BinaryIO, name: str) -> bytes:
    """Peek at the first bytes: empty and binary shards end here with a named failure."""
    head = stream.peek(_SNIFF)[:_SNIFF] if hasattr(stream, "peek") else b""
    if not head:
        raise ShardError(Reason.EMPTY_FILE, f"{name} is empty")
    if b"\x00" in head:
        raise ShardError(Reason.BINARY_FILE, f"{name} holds binary data (NUL bytes), not text")
    return head


def _jsonl_record(shard: str, position: int, line: bytes) -> Record:
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Record(shard, position, reason=Reason.NON_UTF8, detail=str(exc), excerpt=_excerpt(line))
    try:
        obj = json.loads(decoded)
    except json.JSONDecodeError as exc:
        return Record(shard, position, reason=Reason.INVALID_JSON, detail=str(exc), excerpt=decoded[:_EXCERPT])
    if not isinstance(obj, dict):
        return Record(
            shard, position, reason=Reason.NOT_AN_OBJECT, detail=type(obj).__name__, excerpt=decoded[:_EXCERPT]
        )
    text = obj.get("text")
    rejected = _text_rejection(shard, position, text, excerpt=decoded[:_EXCERPT])
    if rejected is not None:
        return rejected
    meta = obj.get("meta")
    return Record(
        shard,
        position,
        text=text,
        doc_id=None if obj.get("id") is None else str(obj["id"]),
        source=None if obj.get("source") is None else str(obj["source"]),
        created_at=None if obj.get("created_at") is None else str(obj["created_at"]),
        meta=meta if isinstance(meta, dict) else ({} if meta is None else {"value": meta}),
    )


def read_jsonl(stream: BinaryIO, shard: str, max_line_bytes: int) -> Iterator[Record]:
    _sniff(stream, shard)
    position = 0
    while True:
        line = stream.readline(max_line_bytes + 1)
        if not line:
            return
        position += 1
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            head = line[:_EXCERPT]
            drained = len(line)
            while not line.endswith(b"\n"):
                line = stream.readline(1 << 20)
                if not line:
                    break
                drained += len(line)
            yield Record(
                shard,
                position,
                reason=Reason.LINE_TOO_LONG,
                detail=f"line of at least {drained} bytes exceeds the cap of {max_line_bytes}",
                excerpt=_excerpt(head),
            )
            continue
        if not line.strip():
            position -= 1  # blank separator lines are not records
            continue
        yield _jsonl_record(shard, position, line.rstrip(b"\r\n"))


def read_text_document(stream: BinaryIO, shard: str, max_bytes: int) -> Iterator[Record]:
    _sniff(stream, shard)
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        yield Record(
            shard,
            1,
            reason=Reason.DOCUMENT_TOO_LARGE,
            detail=f"document exceeds the cap of {max_bytes} bytes",
            excerpt=_excerpt(data),
        )
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield Record(shard, 1, reason=Reason.NON_UTF8, detail=str(exc), excerpt=_excerpt(data))
        return
    if not text.strip():
        yield Record(shard, 1, reason=Reason.EMPTY_TEXT, detail="document is blank")
        return
    yield Record(shard, 1, text=text, doc_id=shard)


def _cell(columns: dict[str, list], name: str, i: int) -> str | None:
    value = columns[name][i] if name in columns else None
    return None if value is None else str(value)


def _cell_bytes(batch: "pa.RecordBatch") -> list[tuple[int, str]]:
    """Per row, the size in bytes of its largest string or binary cell and that cell's column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    largest = [(0, "")] * batch.num_rows
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        kind = column.type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
                or pa.types.is_large_binary(kind)):
            continue
        for i, size in enumerate(pc.fill_null(pc.binary_length(column), 0).to_pylist()):
            if size > largest[i][0]:
                largest[i] = (size, name)
    return largest


def _without_oversized(batch: "pa.RecordBatch", shard: str, first: int, text_column: str,
                       cap: int) -> tuple["pa.RecordBatch", dict[int, Record]]:
    """The batch with every row that holds a cell over ``cap`` bytes blanked, and those rows' rejections
    (by index in the batch), each with an excerpt of its text cut in Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    over = {i: found for i, found in enumerate(_cell_bytes(batch)) if found[0] > cap}
    if not over:
        return batch, {}
    mask = pa.array([i in over for i in range(batch.num_rows)])
    text = batch.column(text_column)
    head = pc.utf8_slice_codeunits(text, 0, _EXCERPT) if pa.types.is_string(text.type) \
        or pa.types.is_large_string(text.type) else pa.nulls(batch.num_rows, pa.string())
    rejections = {
        i: Record(shard, first + i, reason=Reason.DOCUMENT_TOO_LARGE,
                  detail=f"column {name!r} holds {size} bytes, over the cap of {cap} (data.max_line_bytes)",
                  excerpt=head[i].as_py() or "")
        for i, (size, name) in over.items()}
    blanked = [pc.if_else(mask, pa.scalar(None, column.type), column) for column in batch.columns]
    return pa.RecordBatch.from_arrays(blanked, schema=batch.schema), rejections


def read_parquet(path: Path, shard: str, text_column: str, max_cell_bytes: int) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise ShardError(Reason.EMPTY_FILE, f"{shard} is empty")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(Reason.CORRUPT_PARQUET, f"{shard}: {exc}") from exc
    names = set(pf.schema_arrow.names)
    if text_column not in names:
        raise ShardError(
            Reason.MISSING_TEXT_COLUMN, f"{shard} has no column {text_column!r} (columns: {sorted(names)})"
        )
    wanted = [c for c in (text_column, "id", "source", "created_at") if c in names]
    position = 0
    try:
        for raw in pf.iter_batches(batch_size=1024, columns=wanted):
            batch, oversized = _without_oversized(raw, shard, position + 1, text_column, max_cell_bytes)
            del raw  # an oversized cell's buffer goes before the other rows become Python objects
            columns = {name: batch.column(name).to_pylist() for name in wanted}
            for i, text in enumerate(columns[text_column]):
                position += 1
                rejected = oversized.get(i) or _text_rejection(shard, position, text, excerpt=repr(text)[:_EXCERPT])
                if rejected is not None:
                    yield rejected
                else:
                    yield Record(
                        shard,
                        position,
                        text=text,
                        doc_id=_cell(columns, "id", i),
                        source=_cell(columns, "source", i),
                        created_at=_cell(columns, "created_at", i),
                    )
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(Reason.CORRUPT_PARQUET, f"{shard}: {exc}") from exc


def read_shard(path: Path, shard: str, max_line_bytes: int, text_column: str = "text") -> Iterator[Record]:
    """Every record of one shard; raises `ShardError` (after the records read so far) when it cannot go on."""
    fmt, compression = shard_format(shard)
    if fmt == "unknown":
        raise ShardError(
            Reason.UNSUPPORTED_FORMAT, f"{shard}: not .jsonl/.ndjson, .parquet, .txt or .md (optionally .gz/.zst)"
        )
    if fmt == "parquet":
        yield from read_parquet(path, shard, text_column, max_line_bytes)
        return
    if path.stat().st_size == 0:
        raise ShardError(Reason.EMPTY_FILE, f"{shard} is empty")
    try:
        with _open_stream(path, compression) as stream:
            if fmt == "jsonl":
                yield from read_jsonl(stream, shard, max_line_bytes)
            else:
                yield from read_text_document(stream, shard, max_line_bytes)
    except ShardError:
        raise
    except (EOFError, OSError, zlib.error, zstandard.ZstdError) as exc:
        raise _stream_error(exc, shard, compression) from exc
