"""Repository functions of document removals: why each rejected record of a batch was removed.

Same contract as :mod:`lmforge_core.metadata.repository`: every function takes the caller's session and
never commits. A removal is a mapping with the columns of `DocumentRemoval` (`REMOVAL_FIELDS`); the
ingest writes them in the batch's commit transaction, the dashboard and the CLI read and `describe` them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from lmforge_core.metadata.models import DocumentRemoval

REMOVAL_FIELDS = ("shard", "position", "doc_id", "reason", "detail", "rule", "score", "bound_min", "bound_max",
                  "twin_batch_id", "twin_shard", "twin_position", "twin_doc_id", "similarity", "containment")
_INSERT_ROWS = 1000  # rows per executemany: a batch's removals are streamed, never all in memory


def _sampled(removals: Iterable[Mapping[str, Any]], per_reason: int) -> Iterator[Mapping[str, Any]]:
    """The first `per_reason` removals of each reason, in input order."""
    seen: Counter[str] = Counter()
    for removal in removals:
        seen[removal["reason"]] += 1
        if seen[removal["reason"]] <= per_reason:
            yield removal


def record_removals(session: Session, batch_id: int, removals: Iterable[Mapping[str, Any]],
                    per_reason: int) -> int:
    """Insert the removals of batch `batch_id` (each a mapping over `REMOVAL_FIELDS`), at most `per_reason` of
    each reason (the first ones, as samples: the batch's `rejects` keeps every reason's count); returns how
    many were inserted."""
    rows = _sampled(removals, per_reason)
    count = 0
    while chunk := [{"batch_id": batch_id, **{k: r.get(k) for k in REMOVAL_FIELDS}} for r in islice(rows, _INSERT_ROWS)]:
        session.execute(insert(DocumentRemoval), chunk)
        count += len(chunk)
    return count


def list_removals(session: Session, batch_id: int, *, reason: str | None = None, limit: int = 100,
                  offset: int = 0) -> list[DocumentRemoval]:
    """The removals of one batch in input order (shard, position), optionally of one reason."""
    query = select(DocumentRemoval).where(DocumentRemoval.batch_id == batch_id)
    if reason is not None:
        query = query.where(DocumentRemoval.reason == reason)
    query = query.order_by(DocumentRemoval.shard, DocumentRemoval.position).limit(limit).offset(offset)
    return list(session.scalars(query))


def count_removals(session: Session, batch_id: int) -> dict[str, int]:
    """Removals of one batch per reason."""
    rows = session.execute(select(DocumentRemoval.reason, func.count()).where(DocumentRemoval.batch_id == batch_id)
                           .group_by(DocumentRemoval.reason))
    return {reason: count for reason, count in rows}


def removal_dict(removal: DocumentRemoval) -> dict[str, Any]:
    return {"batch_id": removal.batch_id, **{k: getattr(removal, k) for k in REMOVAL_FIELDS}}


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"


def describe_removal(removal: Mapping[str, Any]) -> str:
    """One sentence a person reads: "near duplicate: 91% like document d7 (part-0.jsonl #12) of batch 3"."""
    reason = removal["reason"]
    if removal.get("similarity") is not None:
        twin = removal.get("twin_doc_id") or "without id"
        where = f" ({removal['twin_shard']} #{removal['twin_position']})" if removal.get("twin_shard") else ""
        batch = f" of batch {removal['twin_batch_id']}" if removal.get("twin_batch_id") is not None else ""
        if reason == "exact_duplicate":
            return f"exact duplicate: the same text as document {twin}{where}{batch}"
        if removal.get("containment") is not None:
            return (f"near duplicate: {removal['containment']:.0%} of it is contained in document {twin}{where}{batch} "
                    f"({removal['similarity']:.0%} alike as a whole)")
        return f"near duplicate: {removal['similarity']:.0%} like document {twin}{where}{batch}"
    if removal.get("rule") is not None:
        score, low, high = removal["score"], removal.get("bound_min"), removal.get("bound_max")
        if low is not None and score < low:
            crossed = f"below the minimum {_number(low)}"
        elif high is not None and score > high:
            crossed = f"above the maximum {_number(high)}"
        else:
            crossed = f"outside [{_number(low) if low is not None else '-inf'}, " \
                      f"{_number(high) if high is not None else 'inf'}]"
        return f"filter {removal['rule']}: score {_number(score)} is {crossed}"
    detail = removal.get("detail")
    return f"{reason.replace('_', ' ')}: {detail}" if detail else reason.replace("_", " ")
