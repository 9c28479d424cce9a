"""Cleaning, each heuristic filter, and each PII pattern on hand-made examples."""

from __future__ import annotations

import pytest

from lmforge_core.config.data import FilterThresholds
from tasks.quality.cleaning import clean_text, dedup_normal_form
from tasks.quality.filters import bounds, failed_filters, score_document
from tasks.quality.pii import iban_valid, luhn_valid, redact_pii

T = FilterThresholds()
CHECKS = bounds(T)


def failures(text: str) -> list[str]:
    return failed_filters(score_document(clean_text(text), T), CHECKS)


def test_cleaning_normalizes_unicode_controls_and_whitespace() -> None:
    raw = "Cafe\u0301 menu\x00\x07\r\nline two \u00a0with\u200b nbsp   \n\n\n\n\nend\t \n"
    assert clean_text(raw) == "Café menu\nline two  with nbsp\n\nend"
    assert dedup_normal_form("  Hello\n\tWORLD  ") == "hello world"


def test_good_prose_passes_every_filter_and_records_every_score(make_prose) -> None:
    text = make_prose(1, 150)
    scores = score_document(text, T)
    assert failures(text) == []
    expected = {"word_count", "mean_word_length", "symbol_word_ratio", "non_alnum_fraction", "longest_word",
                "bullet_line_fraction", "ellipsis_line_fraction", "dup_line_fraction", "dup_line_char_fraction"}
    expected |= {f"top_{n}gram_fraction" for n in (2, 3, 4)} | {f"dup_{n}gram_fraction" for n in range(5, 11)}
    assert expected <= scores.keys()
    assert scores["word_count"] >= 150


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("word_count", lambda p: "Too short to be a document."),
        ("mean_word_length", lambda p: " ".join(["a b c d e f g h i j"] * 10)),
        ("longest_word", lambda p: p + " " + "x" * 1200),
        ("symbol_word_ratio", lambda p: p.replace(".", " ### ...")),
        ("non_alnum_fraction", lambda p: p.replace(" ", " %%==>> ")),
        ("bullet_line_fraction", lambda p: "\n".join("• " + s for s in p.replace("\n\n", " ").split(". "))),
        ("ellipsis_line_fraction", lambda p: "\n".join(s + " ..." for s in p.split(". "))),
        ("dup_line_fraction", lambda p: p + "\n" + "\n".join(["same line again"] * 40)),
        ("top_2gram_fraction", lambda p: p + " " + " ".join(["alpha beta"] * 60)),
        ("dup_5gram_fraction", lambda p: p + "\n\n" + p),
    ],
)
def test_each_filter_rejects_text_built_to_fail_it(name: str, build, make_prose) -> None:
    text = build(make_prose(2, 150))
    assert name in failures(text)


def test_filter_bounds_come_from_the_config(make_prose) -> None:
    text = make_prose(3, 150)
    strict = FilterThresholds(min_words=10_000)
    assert failed_filters(score_document(text, strict), bounds(strict)) == ["word_count"]


@pytest.mark.parametrize(
    ("text", "kind", "placeholder"),
    [
        ("write to jane.doe+news@example.co.uk today", "email", "<EMAIL>"),
        ("call +1 (555) 123-4567 now", "phone", "<PHONE>"),
        ("call 555-123-4567 now", "phone", "<PHONE>"),
        ("call +44 20 7946 0958 now", "phone", "<PHONE>"),
        ("host 192.168.10.254 is up", "ipv4", "<IP_ADDRESS>"),
        ("host 2001:db8::8a2e:370:7334 is up", "ipv6", "<IP_ADDRESS>"),
        ("mapped ::ffff:192.0.2.1 too", "ipv6", "<IP_ADDRESS>"),
        ("card 4111 1111 1111 1111 charged", "credit_card", "<CREDIT_CARD>"),
        ("card 5500-0000-0000-0004 charged", "credit_card", "<CREDIT_CARD>"),
        ("amex 378282246310005 charged", "credit_card", "<CREDIT_CARD>"),
        ("It was charged to 4111 1111 1111 1111.", "credit_card", "<CREDIT_CARD>"),
        ('the card ("4111-1111-1111-1111") was', "credit_card", "<CREDIT_CARD>"),
        ("card 4111 1111 1111 1111 2024 expires", "credit_card", "<CREDIT_CARD>"),
        ("SSN: 078-05-1120.", "ssn", "<SSN>"),
        ("pay to DE89 3704 0044 0532 0130 00, please", "iban", "<IBAN>"),
        ("IBAN GB82WEST12345698765432.", "iban", "<IBAN>"),
        ("[10.0.0.1]:8080 answered", "ipv4", "<IP_ADDRESS>"),
        ("IP:2001:db8::1; down", "ipv6", "<IP_ADDRESS>"),
        ("(mail <jane@example.org>).", "email", "<EMAIL>"),
    ],
)
def test_pii_is_redacted_and_counted(text: str, kind: str, placeholder: str) -> None:
    redacted, counts = redact_pii(text)
    assert placeholder in redacted
    assert counts[kind] == 1
    assert sum(counts.values()) == 1


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails the Luhn check",
        "Python 3.11.7 was released on 2024-01-15 at 12:30:45",
        "version 1.2.3 and ratio 3.14159 and 1234567890123 items",
        "std::vector<int> and a::b in C++, dict['x'] in Python",
        "the MAC address 00:1A:2B:3C:4D:5E is not an IP address",
        "999.1.1.1 is not an address and neither is 1.2.3.4.5",
        "use @decorator syntax; user@localhost has no domain",
        "ISBN 978-3-16-148410-0 and order number 20240115",
        "SSA never issues 000-12-3456, 666-12-3456, 900-12-3456, 123-00-4567 or 123-45-0000",
        "DE89 3704 0044 0532 0130 01 has a wrong check digit; XX89 3704 0044 0532 0130 00 no country",
        "uuid 123e4567-e89b-12d3-a456-426614174000 at 0x7ffd5c3a1b20 on port :8080 (localhost:8080).",
    ],
)
def test_text_that_must_not_be_redacted_is_left_alone(text: str) -> None:
    redacted, counts = redact_pii(text)
    assert redacted == text
    assert sum(counts.values()) == 0


def test_luhn_and_iban_checks() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000") and iban_valid("NO9386011117947")
    assert not iban_valid("DE89370400440532013001")  # check digits
    assert not iban_valid("DE8937040044053201300")  # Germany's length is 22


def test_several_kinds_in_one_text_are_counted_separately() -> None:
    text = "a@b.io, c@d.org, 10.0.0.1, +1 415 555 2671 and 4111111111111111"
    redacted, counts = redact_pii(text)
    assert counts == {"email": 2, "iban": 0, "credit_card": 1, "ssn": 0, "ipv6": 0, "ipv4": 1, "phone": 1}
    assert "@" not in redacted and "10.0.0.1" not in redacted


def test_a_failed_filter_explains_its_rule_score_and_bound() -> None:
    from lmforge_core.metadata.removal_repository import describe_removal
    from tasks.ingest.batch import removal_row

    checks = {b.name: b for b in CHECKS}
    listy = "\n".join(f"- item {i} of the list" for i in range(60))
    scores = score_document(clean_text(listy), T)
    assert "bullet_line_fraction" in failed_filters(scores, CHECKS)
    why = checks["bullet_line_fraction"].explain(scores)
    assert why == {"rule": "bullet_line_fraction", "score": 1.0, "min": None, "max": T.max_bullet_line_fraction}
    row = removal_row({"shard": "s.jsonl", "position": 4, "id": "x", "reason": "filter:bullet_line_fraction",
                       "filter": why})
    assert describe_removal(row) == f"filter bullet_line_fraction: score 1 is above the maximum {T.max_bullet_line_fraction:g}"
    short = score_document("a few words only", T)
    assert checks["word_count"].explain(short) == {"rule": "word_count", "score": 4.0, "min": T.min_words,
                                                   "max": T.max_words}


def test_a_twin_reference_round_trips_and_old_references_still_name_their_batch() -> None:
    from tasks.ingest.records import DocRef

    ref = DocRef(3, "day-1/part:0.jsonl", 12, 'id with "quotes", [brackets] and :colons')
    assert DocRef.decode(ref.encode()) == ref
    assert DocRef.decode(DocRef(4, "a.jsonl", 1, None).encode()).to_dict() == {
        "batch_id": 4, "shard": "a.jsonl", "position": 1, "id": None}
    assert DocRef.decode("batch-7:doc:with:colons") == DocRef(7, None, None, "doc:with:colons")  # before twins had shards
    assert DocRef.decode("legacy") == DocRef(None, None, None, "legacy")


def test_a_duplicate_removal_reads_as_a_sentence_naming_its_twin() -> None:
    from lmforge_core.metadata.removal_repository import describe_removal
    from tasks.ingest.batch import removal_row

    twin = {"batch_id": 3, "shard": "day-2/a.jsonl", "position": 17, "id": "X"}
    near = removal_row({"shard": "b.jsonl", "position": 1, "id": "y", "reason": "near_duplicate",
                        "duplicate_of": twin, "similarity": 0.9134})
    assert describe_removal(near) == "near duplicate: 91% like document X (day-2/a.jsonl #17) of batch 3"
    excerpt = removal_row({"shard": "b.jsonl", "position": 2, "id": "z", "reason": "near_duplicate",
                           "duplicate_of": twin, "similarity": 0.42, "containment": 0.97})
    assert describe_removal(excerpt) == ("near duplicate: 97% of it is contained in document X (day-2/a.jsonl #17) "
                                         "of batch 3 (42% alike as a whole)")
