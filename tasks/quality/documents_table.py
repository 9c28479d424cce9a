"""The per-document table of a batch, streamed into a SQLite file that the quality gate validates with SQL.

One row per accepted document (hash, source, shard, the filter scores the gate re-checks, length and
PII counts). Rows are buffered `flush_rows` at a time and inserted with ``executemany``, so the
process holds at most one buffer whatever the batch size; Great Expectations then runs its
expectations as SQL queries against the file (see `gate`), never loading the table into memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from tasks.quality.pii import PII_TYPES

TABLE = "batch_documents"
# score columns besides doc_hash, source and shard (the ones the gate's expectations name, and the rest
# of the filter scores kept for inspection).
SCORES = ("word_count", "mean_word_length", "non_alnum_fraction", "symbol_word_ratio",
          "dup_line_fraction", "dup_5gram_fraction", "top_2gram_fraction", "longest_word")
NUMERIC = (*SCORES, "chars", *(f"pii_{kind}" for kind in PII_TYPES), "pii_total")
COLUMNS = ("doc_hash", "source", "shard", *NUMERIC)
# identifiers come from the constants above only; every value is a bound parameter.
_CREATE = f"CREATE TABLE {TABLE} ({', '.join(f'{c} TEXT' if c in COLUMNS[:3] else f'{c} REAL' for c in COLUMNS)})"
_INSERT = f"INSERT INTO {TABLE} VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608
_HASHES = f"SELECT doc_hash FROM {TABLE} ORDER BY rowid"  # noqa: S608


class DocumentsTable:
    """Writes the rows of one batch into `path` (replacing any table left there by an earlier batch)."""

    def __init__(self, path: Path, flush_rows: int = 2000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.flush_rows = flush_rows
        self.count = 0
        self._pending: list[tuple[object, ...]] = []
        self._conn = sqlite3.connect(path)
        # the file is scratch space rebuilt per batch: durability would only cost fsyncs.
        self._conn.execute("PRAGMA journal_mode=OFF")
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        self._conn.execute(_CREATE)

    def add(self, doc_hash: str, source: str, shard: str, numeric: Sequence[float]) -> None:
        """One row; `numeric` in the order of `NUMERIC`."""
        self._pending.append((doc_hash, source, shard, *numeric))
        self.count += 1
        if len(self._pending) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._conn.executemany(_INSERT, self._pending)
            self._conn.commit()
            self._pending = []

    def close(self) -> None:
        self.flush()
        self._conn.close()

    def doc_hashes(self) -> Iterator[str]:
        """The hashes of the rows in insertion order, read from the file (call after `close`)."""
        conn = sqlite3.connect(self.path)
        try:
            yield from (row[0] for row in conn.execute(_HASHES))
        finally:
            conn.close()
