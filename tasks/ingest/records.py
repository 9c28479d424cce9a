"""What a reader yields: one record (a document or a named rejection) per input line, row or file."""

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    """Stable reason codes of rejected records and failed shards (also used by metadata and quarantine)."""

    # record-level
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_TEXT = "missing_text"
    EMPTY_TEXT = "empty_text"
    NON_STRING_TEXT = "non_string_text"
    NON_UTF8 = "non_utf8"
    LINE_TOO_LONG = "line_too_long"
    DOCUMENT_TOO_LARGE = "document_too_large"
    EXACT_DUPLICATE = "exact_duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    # shard-level
    BINARY_FILE = "binary_file"
    EMPTY_FILE = "empty_file"
    TRUNCATED_GZIP = "truncated_gzip"
    CORRUPT_GZIP = "corrupt_gzip"
    CORRUPT_ZSTD = "corrupt_zstd"
    CORRUPT_PARQUET = "corrupt_parquet"
    MISSING_TEXT_COLUMN = "missing_text_column"
    UNSUPPORTED_FORMAT = "unsupported_format"
    S3_READ_ERROR = "s3_read_error"
    READ_ERROR = "read_error"


def filter_reason(name: str) -> str:
    """Reason code of a document rejected by the quality filter `name`."""
    return f"filter:{name}"


@dataclass(slots=True)
class Record:
    """One input unit. `reason` is set when the reader already rejected it (malformed input)."""

    shard: str
    position: int
    text: str | None = None
    doc_id: str | None = None
    source: str | None = None
    created_at: str | None = None
    meta: dict = field(default_factory=dict)
    reason: str | None = None
    detail: str | None = None
    excerpt: str | None = None


class ShardError(Exception):
    """A shard that cannot be read (further); records yielded before the error still count."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DocRef:
    """Where an accepted document came from. The dedup index keeps one per entry (its doc id, `encode`d),
    so a later duplicate can name its twin: batch, shard, position in the shard, the document's own id."""

    batch_id: int | None
    shard: str | None
    position: int | None
    doc_id: str | None

    def encode(self) -> str:
        return json.dumps([self.batch_id, self.shard, self.position, self.doc_id], ensure_ascii=False,
                          separators=(",", ":"))

    @classmethod
    def decode(cls, ref: str) -> "DocRef":
        """The reverse of `encode`; also reads the ``batch-<id>:<doc id>`` refs of indexes built before it."""
        if ref.startswith("["):
            batch_id, shard, position, doc_id = json.loads(ref)
            return cls(batch_id, shard, position, doc_id)
        label, sep, rest = ref.partition(":")
        number = label.removeprefix("batch-")
        if sep and label.startswith("batch-") and number.isdigit():
            return cls(int(number), None, None, rest)
        return cls(None, None, None, ref)

    def to_dict(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "shard": self.shard, "position": self.position, "id": self.doc_id}
