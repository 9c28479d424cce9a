"""PII redaction: e-mail addresses, phone numbers, IPv4/IPv6 addresses, credit-card numbers.

Patterns are deliberately conservative so that ordinary technical text survives: a phone number
needs a leading ``+`` country code or the North-American ``(555) 123-4567`` shape (a bare run of
digits, a date or a version number is not a phone number); an IP address must parse with
`ipaddress`; a card number must have 13-19 digits and pass the Luhn check.
Redaction order matters: e-mail, card, IPv6, IPv4, phone (each pattern sees the text the previous
ones left, so a card number is never half-redacted as a phone).
"""

import ipaddress
import re
from collections.abc import Callable

PII_TYPES = ("email", "credit_card", "ipv6", "ipv4", "phone")
PLACEHOLDERS = {
    "email": "<EMAIL>",
    "credit_card": "<CREDIT_CARD>",
    "ipv6": "<IP_ADDRESS>",
    "ipv4": "<IP_ADDRESS>",
    "phone": "<PHONE>",
}

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}\b"
)
_CARD = re.compile(r"(?<![\d.-])(?:\d[ -]?){12,18}\d(?![\d.-]|-\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.\d)")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"  # international, leading +
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"  # (555) 123-4567
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-123-4567
    r")(?![\w-]|\.\d)"
)


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


def _is_card(match: str) -> bool:
    digits = re.sub(r"[ -]", "", match)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _is_ipv6(match: str) -> bool:
    if not any(c.isdigit() for c in match) or match.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(match)
    except ValueError:
        return False
    return True


def _is_ipv4(match: str) -> bool:
    try:
        ipaddress.IPv4Address(match)
    except ValueError:
        return False
    return True


def _is_phone(match: str) -> bool:
    digits = sum(c.isdigit() for c in match)
    return 8 <= digits <= 15


_RULES: tuple[tuple[str, re.Pattern[str], Callable[[str], bool] | None, str | None], ...] = (
    # (type, pattern, validator, cheap precondition: a character the text must contain)
    ("email", _EMAIL, None, "@"),
    ("credit_card", _CARD, _is_card, None),
    ("ipv6", _IPV6, _is_ipv6, ":"),
    ("ipv4", _IPV4, _is_ipv4, "."),
    ("phone", _PHONE, _is_phone, None),
)


def redact_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace every PII match with its placeholder; return the new text and counts per type."""
    counts = dict.fromkeys(PII_TYPES, 0)
    for kind, pattern, valid, needs in _RULES:
        if needs is not None and needs not in text:
            continue

        def replace(m: re.Match[str], kind: str = kind, valid: Callable[[str], bool] | None = valid) -> str:
            if valid is not None and not valid(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        text = pattern.sub(replace, text)
    return text, counts
