"""Text normalization: Unicode NFC, control characters, whitespace.

Indentation is kept (code and tables in documentation depend on it); only trailing spaces,
exotic space characters, runs of blank lines and control characters are normalized.
"""

import re
import unicodedata

# C0/C1 controls except tab and newline, plus zero-width and bidi formatting characters.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_SPACES = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_TRAILING = re.compile(r"[ \t]+\n")
_BLANK_RUNS = re.compile(r"\n{3,}")
_WS_RUN = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Return `text` in NFC with control characters removed and whitespace normalized."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _TRAILING.sub("\n", text + "\n")
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip("\n").rstrip()


def dedup_normal_form(text: str) -> str:
    """Case-folded text with every whitespace run collapsed to one space: the key of exact dedup."""
    return _WS_RUN.sub(" ", text.casefold()).strip()
