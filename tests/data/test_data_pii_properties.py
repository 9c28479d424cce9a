"""Property-based PII tests (hypothesis): every kind is redacted whatever text and punctuation surround it,
and look-alikes of technical text in the same surroundings are left exactly as they were.

Values are built here from their definitions (Luhn check digit, ISO 13616 mod-97 check digits, SSA ranges,
`ipaddress`), independently of the redactor's own validators. Example counts are modest (the suite must stay
fast); `derandomize` makes a CI run reproducible.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.quality.pii import PII_TYPES, PLACEHOLDERS, redact_pii

EXAMPLES = 60
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True)

# real words of the sample's technical prose (no digits: a digit next to a number makes it another number).
WORDS = ("the", "socket", "returns", "a", "file", "descriptor", "see", "also", "value", "of", "address",
         "contact", "Send", "account", "number", "payment", "server", "is", "listening", "on", "Note", "that",
         "call", "host", "at", "written", "by", "user", "reported", "in", "log", "entry", "Python", "module")
OPENERS = ("", "(", "[", "{", "<", '"', "'", "`", "«", "“", "\u2018", "*", "/", "=", ":", "#", "-", ".", "...",
           "¿", "„", "((", '("')
CLOSERS = ("", ".", ",", ";", ":", "!", "?", ")", "]", "}", ">", '"', "'", "`", "»", "”", "\u2019", "*", "/", "...",
           "…", "-", ").", '".', "),", "]:", "?!")

text = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
# (text before, opener, closer, text after); the value sits between opener and closer.
surroundings = st.tuples(text, st.sampled_from(OPENERS), st.sampled_from(CLOSERS), text)


def place(value: str, around: tuple[str, str, str, str]) -> tuple[str, str, str]:
    """(the text holding `value`, the part before the value, the part after)."""
    before, opener, closer, after = around
    head = f"{before} {opener}" if before else opener
    tail = f"{closer} {after}" if after else closer
    return head + value + tail, head, tail


# ---------------------------------------------------------------- values, from their definitions ------
def luhn_check_digit(body: str) -> int:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return (10 - total % 10) % 10


def grouped(digits: str, sep: str) -> str:
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


@st.composite
def card_numbers(draw: st.DrawFn, valid: bool = True) -> str:
    length = draw(st.integers(13, 19))
    body = draw(st.sampled_from("3456")) + draw(st.text("0123456789", min_size=length - 2, max_size=length - 2))
    check = luhn_check_digit(body)
    if not valid:
        check = (check + draw(st.integers(1, 9))) % 10
    digits = body + str(check)
    if length == 16:
        return grouped(digits, draw(st.sampled_from(("", " ", "-"))))
    return digits


@st.composite
def ibans(draw: st.DrawFn, valid: bool = True) -> str:
    # (country, BBAN shape): letters where the country's bank code has letters.
    country, shape = draw(st.sampled_from((("DE", "9" * 18), ("GB", "AAAA" + "9" * 14), ("FR", "9" * 23),
                                           ("NL", "AAAA" + "9" * 10), ("NO", "9" * 11), ("CH", "9" * 17))))
    bban = "".join(draw(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c == "A" else "0123456789"))
                   for c in shape)
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    check = 98 - int(numeric) % 97
    if not valid:  # any other residue mod 97 fails the check
        check = (check + draw(st.integers(1, 96))) % 97
    compact = f"{country}{check:02d}{bban}"
    return grouped(compact, " ") if draw(st.booleans()) else compact


@st.composite
def ssns(draw: st.DrawFn) -> str:
    area = draw(st.integers(1, 899).filter(lambda a: a != 666))
    return f"{area:03d}-{draw(st.integers(1, 99)):02d}-{draw(st.integers(1, 9999)):04d}"


@st.composite
def emails(draw: st.DrawFn) -> str:
    local = draw(st.from_regex(r"[a-z][a-z0-9]{0,7}([._+-][a-z0-9]{1,6})?", fullmatch=True))
    domain = draw(st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4})?", fullmatch=True))
    return f"{local}@{domain}.{draw(st.sampled_from(('com', 'org', 'io', 'de', 'co.uk', 'example')))}"


@st.composite
def phones(draw: st.DrawFn) -> str:
    shape = draw(st.sampled_from(("intl", "paren", "plain")))
    sep = draw(st.sampled_from((" ", "-", ".") if shape != "plain" else ("-", ".")))
    local = f"{draw(st.integers(200, 999))}{sep}{draw(st.integers(1000, 9999))}"
    if shape == "intl":
        return f"+{draw(st.integers(1, 99))} {draw(st.integers(20, 999))} {local}"
    area = draw(st.integers(200, 999))
    return f"({area}) {local}" if shape == "paren" else f"{area}{sep}{local}"


ipv6 = st.ip_addresses(v=6).map(str).filter(lambda a: any(c.isdigit() for c in a))
VALUES = {
    "email": emails(),
    "iban": ibans(),
    "credit_card": card_numbers(),
    "ssn": ssns(),
    "ipv6": ipv6 | ipv6.map(lambda a: ipaddress.IPv6Address(a).exploded),
    "ipv4": st.ip_addresses(v=4).map(str),
    "phone": phones(),
}


@pytest.mark.parametrize("kind", PII_TYPES)
@PROPERTY
@given(data=st.data())
def test_each_kind_is_redacted_whatever_surrounds_it(kind: str, data: st.DataObject) -> None:
    value = data.draw(VALUES[kind], label="value")
    whole, head, tail = place(value, data.draw(surroundings, label="surroundings"))
    redacted, counts = redact_pii(whole)
    assert redacted == head + PLACEHOLDERS[kind] + tail
    assert counts == {k: int(k == kind) for k in PII_TYPES}


@PROPERTY
@given(values=st.permutations(PII_TYPES).flatmap(lambda kinds: st.tuples(*(st.tuples(st.just(k), VALUES[k])
                                                                          for k in kinds))),
       around=st.lists(surroundings, min_size=len(PII_TYPES), max_size=len(PII_TYPES)))
def test_every_kind_in_one_text_is_redacted_and_counted_once(values, around) -> None:
    pieces = [place(value, a)[0] for (_, value), a in zip(values, around, strict=True)]
    redacted, counts = redact_pii(" ".join(pieces))
    assert counts == dict.fromkeys(PII_TYPES, 1)
    for _, value in values:
        assert value not in redacted


# ---------------------------------------------------------------- look-alikes -------------------------
small = st.integers(0, 40)
year, month, day = st.integers(1970, 2099), st.integers(1, 12), st.integers(1, 28)
hour, minute = st.integers(0, 23), st.integers(0, 59)
hexdigits = "0123456789abcdef"
identifier = st.from_regex(r"[a-z_][a-z_]{0,7}", fullmatch=True)
LOOK_ALIKES = {
    "version": st.one_of(
        st.builds("{}.{}".format, small, small), st.builds("{}.{}.{}".format, small, small, small),
        st.builds("v{}.{}.{}.{}".format, small, small, small, small),
        st.builds("{}.{}.{}-rc.{}".format, small, small, small, small),
        st.builds("{}.{}.{}.post{}".format, small, small, small, small)),
    "date": st.one_of(st.builds("{:02d}/{:02d}/{}".format, day, month, year),
                      st.builds("{:02d}.{:02d}.{}".format, day, month, year)),
    "iso_date": st.one_of(
        st.builds("{}-{:02d}-{:02d}".format, year, month, day),
        st.builds("{}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z".format, year, month, day, hour, minute, minute),
        st.builds("{}-{:02d}-{:02d} {:02d}:{:02d}:{:02d}.{:03d}".format, year, month, day, hour, minute, minute,
                  st.integers(0, 999)),
        st.builds("{}-{:02d}-{:02d}T{:02d}:{:02d}+{:02d}:00".format, year, month, day, hour, minute, st.integers(0, 12))),
    "time": st.one_of(st.builds("{:02d}:{:02d}".format, hour, minute),
                      st.builds("{:02d}:{:02d}:{:02d}".format, hour, minute, minute),
                      st.builds("{:02d}:{:02d}:{:02d}.{:06d}".format, hour, minute, minute, st.integers(0, 999_999))),
    "uuid": st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()) | st.uuids().map(lambda u: u.hex),
    "hex_pointer": st.builds("0x{}".format, st.text(hexdigits, min_size=8, max_size=16)),
    "port": st.one_of(st.builds("localhost:{}".format, st.integers(1, 65535)),
                      st.builds("port {}".format, st.integers(1, 65535)),
                      st.builds("example.org:{}".format, st.integers(1, 65535))),
    "scope": st.builds("{}::{}".format, identifier, identifier),
    "luhn_failing": card_numbers(valid=False),
    "bad_iban_check": ibans(valid=False),
}


@pytest.mark.parametrize("kind", sorted(LOOK_ALIKES))
@PROPERTY
@given(data=st.data())
def test_look_alikes_survive_untouched(kind: str, data: st.DataObject) -> None:
    whole, _, _ = place(data.draw(LOOK_ALIKES[kind], label="look-alike"), data.draw(surroundings, label="around"))
    redacted, counts = redact_pii(whole)
    assert redacted == whole
    assert sum(counts.values()) == 0
