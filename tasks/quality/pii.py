"""PII redaction: e-mail addresses, IBANs, credit-card numbers, US social security numbers, IPv4/IPv6
addresses, phone numbers.

Patterns are deliberately conservative so that ordinary technical text survives: a phone number
needs a leading ``+`` country code or the North-American ``(555) 123-4567`` shape (a bare run of
digits, a date or a version number is not a phone number); an IP address must parse with
`ipaddress`; a card number must have 13-19 digits and pass the Luhn check; an IBAN must have its
country's length and pass the ISO 13616 mod-97 check; an SSN is ``AAA-GG-SSSS`` with the ranges the
Social Security Administration never issues (area 000, 666, 900-999; group 00; serial 0000) excluded.

Boundaries: a value is found whatever punctuation, bracket or quote stands before or after it
(``(4111 1111 1111 1111).``, ``"10.0.0.1",`` ``<a@b.io>``); what keeps look-alikes out is that a value
must not continue a longer token: no letter, digit or underscore touches it, and a number is not
extended by ``.``/``,``/``:``/``/``/``-`` followed by a digit (``1.2.3.4.5``, ``2024-01-15``).
Redaction order matters: e-mail, IBAN, card, SSN, IPv6, IPv4, phone (each pattern sees the text the
previous ones left, so an IBAN's digits are never taken for a card, nor a card's for a phone).
"""

import ipaddress
import re
from collections.abc import Callable

PII_TYPES = ("email", "iban", "credit_card", "ssn", "ipv6", "ipv4", "phone")
PLACEHOLDERS = {
    "email": "<EMAIL>",
    "iban": "<IBAN>",
    "credit_card": "<CREDIT_CARD>",
    "ssn": "<SSN>",
    "ipv6": "<IP_ADDRESS>",
    "ipv4": "<IP_ADDRESS>",
    "phone": "<PHONE>",
}

# A value starts where no word character precedes it, and not right after "<digit><separator>"; each pattern
# consumes its first character before looking behind it (``\d(?<!\w\d)`` rather than ``(?<!\w)\d``), so the
# regex engine can skip ahead to that character instead of trying every position of the text.
_DIGIT = r"\d(?<!\w\d)(?<!\d[.,:/-]\d)"
# ... and ends where no word character follows, nor "<separator><digit>".
_END = r"(?!\w)(?![.,:/-]\d)"

_EMAIL = re.compile(
    r"[A-Za-z0-9](?<!\w[A-Za-z0-9])[A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?!\w)"
)
_IBAN = re.compile(r"[A-Z](?<!\w[A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?!\w)")
# 13-19 digits written as cards are: contiguous, in groups of four (``4111 1111 1111 1111``, a shorter last
# group) or Amex's 4-6-5, one separator throughout, so neighbouring numbers do not join one run. A run after "+"
# is a phone number; the digits of a spaced IBAN-shaped token that failed its check (``DE37 0000 ...``,
# ``GB82 WEST 1234 ...``, from whichever of its first groups) are not a card.
_AFTER_IBAN = "".join(rf"(?<![A-Z]{{2}}\d{{2}}(?: [A-Z0-9]{{4}}){{{k}}} \d)" for k in range(4))
_CARD = re.compile(
    _DIGIT + r"(?<!\+\d)" + _AFTER_IBAN +
    r"(?:\d{12,18}|\d{3}([ -])\d{6}\1\d{5}|\d{3}([ -])\d{4}(?:\2\d{4}){1,3}(?:\2\d{1,3})?)" + _END
)
_SSN = re.compile(_DIGIT + r"\d{2}-\d{2}-\d{4}" + _END)
_IPV6 = re.compile(
    # not inside a longer token; a single ':' may stand before it (``IP:2001:db8::1``) unless a digit precedes
    # that (``10:20:30``).
    r"(?:(?<![\w:])(?<!\d\.)|(?<=[^\d:]:)|(?<=^:))"
    r"(?:[0-9A-Fa-f]{1,4}|(?=::))(?::[0-9A-Fa-f]{0,4}){2,8}(?:(?<=:)(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?![\w:])(?![.,/-]\d)"
)
# two colons with at most 4 hex digits between them: what every IPv6 address holds (a cheap test first).
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
# a port (``10.0.0.1:8080``) or a range (``10.0.0.1-10.0.0.9``) may follow an address.
_IPV4 = re.compile(r"\d(?<!\w\d)(?<!\d\.\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?!\w)(?!\.\d)")
_PHONE = re.compile(
    r"(?:"
    r"\+(?<![\w+]\+)(?<!\d[.,:/-]\+)\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"  # +1 415 ...
    r"|\((?<![\w+]\()(?<!\d[.,:/-]\()\d{3}\)[ .-]?\d{3}[ .-]\d{4}"  # (555) 123-4567
    r"|\d(?<![\w+]\d)(?<!\d[.,:/-]\d)\d{2}[.-]\d{3}[.-]\d{4}"  # 555-123-4567
    r")" + _END
)

# ISO 13616 IBAN length per country (SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}

Span = tuple[int, int]


def luhn_valid(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(compact: str) -> bool:
    """True for an IBAN without spaces of its country's length whose mod-97 check (ISO 7064) gives 1."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum() or not compact.isascii():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _whole(valid: Callable[[str], bool]) -> Callable[[str], Span | None]:
    """A finder that takes the whole candidate or nothing."""
    return lambda match: (0, len(match)) if valid(match) else None


def _find_card(match: str) -> Span | None:
    """The longest run of whole digit groups with 13-19 digits passing Luhn (a grouped run may carry a number
    on either side: ``4111 1111 1111 1111 2024``)."""
    groups = [(m.start(), m.end()) for m in re.finditer(r"\d+", match)]
    best: Span | None = None
    for i in range(len(groups)):
        for j in range(i, len(groups)):
            digits = re.sub(r"\D", "", match[groups[i][0] : groups[j][1]])
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn_valid(digits):
                span = (groups[i][0], groups[j][1])
                if best is None or span[1] - span[0] > best[1] - best[0]:
                    best = span
    return best


def _find_iban(match: str) -> Span | None:
    """The IBAN at the start of the candidate: its country's length of characters (spaces aside), which
    must end the candidate or a group of it (a following group of digits is not part of it)."""
    length = IBAN_LENGTHS.get(match[:2])
    if length is None:
        return None
    seen = 0
    for end, ch in enumerate(match, start=1):
        seen += ch != " "
        if seen == length:
            if end < len(match) and match[end] != " ":
                return None
            return (0, end) if iban_valid(match[:end].replace(" ", "")) else None
    return None


def _is_ssn(match: str) -> bool:
    area, group, serial = match.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _is_ipv6(match: str) -> bool:
    if not any(c.isdigit() for c in match) or match.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(match)
    except ValueError:
        return False
    return True


def _find_ipv6(match: str) -> Span | None:
    """The address, or the address before a colon that punctuates it (``2001:db8::1: up``, ``64:ff9b:::``)."""
    if _is_ipv6(match):
        return 0, len(match)
    if match.endswith(":") and _is_ipv6(match[:-1]):
        return 0, len(match) - 1
    return None


def _is_ipv4(match: str) -> bool:
    try:
        ipaddress.IPv4Address(match)
    except ValueError:
        return False
    return True


def _is_phone(match: str) -> bool:
    digits = sum(c.isdigit() for c in match)
    return 8 <= digits <= 15


_RULES: tuple[tuple[str, re.Pattern[str], Callable[[str], Span | None], re.Pattern[str] | None], ...] = (
    # (type, candidate pattern, finder of the value inside a candidate, what the text must contain)
    ("email", _EMAIL, lambda m: (0, len(m)), re.compile("@")),
    ("iban", _IBAN, _find_iban, None),
    ("credit_card", _CARD, _find_card, None),
    ("ssn", _SSN, _whole(_is_ssn), re.compile("-")),
    ("ipv6", _IPV6, _find_ipv6, _IPV6_HINT),
    ("ipv4", _IPV4, _whole(_is_ipv4), re.compile(r"\.")),
    ("phone", _PHONE, _whole(_is_phone), None),
)


def redact_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace every PII value with its placeholder; return the new text and counts per type."""
    counts = dict.fromkeys(PII_TYPES, 0)
    for kind, pattern, find, needs in _RULES:
        if needs is not None and needs.search(text) is None:
            continue

        def replace(m: re.Match[str], kind: str = kind, find: Callable[[str], Span | None] = find) -> str:
            candidate = m.group(0)
            span = find(candidate)
            if span is None:
                return candidate
            counts[kind] += 1
            return candidate[: span[0]] + PLACEHOLDERS[kind] + candidate[span[1] :]

        text = pattern.sub(replace, text)
    return text, counts


# longer than any value a rule finds (an e-mail address is at most 64 + 1 + 253 characters): a value that a cut
# would split lies whole inside the margin.
_EXCERPT_MARGIN = 320


def redact_excerpt(text: str, chars: int) -> tuple[str, dict[str, int]]:
    """The first ``chars`` characters of ``text`` with every PII value in them replaced by its placeholder, and
    the counts per type. Redacted before the cut, over a margin, so that a value the cut splits is found whole
    (a cut first would keep the half of a card number that no rule recognises any more)."""
    redacted, counts = redact_pii(text[: chars + _EXCERPT_MARGIN])
    return redacted[:chars], counts
