"""Heuristic document quality filters (Gopher / C4 style), each producing a score per document.

`score_document` computes every score; `failed_filters` compares the scores with the thresholds of
`FilterThresholds`. Scores are kept for every document (accepted or not) so the quality gate and a
person reading the quarantine can see how close a document came to a bound.
"""

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from lmforge_core.config.data import FilterThresholds

# a bullet is a bullet character followed by whitespace: ``- item`` and ``• item`` are, ``--port=N``, ``-v`` and
# ``*args`` are not.
_BULLET = re.compile(r"[•‣◦▪·*\-\u2013\u2014]\s")
_ELLIPSES = ("...", "…")
_LINE_RATIOS = ("bullet_line_fraction", "ellipsis_line_fraction", "dup_line_fraction", "dup_line_char_fraction")


_P = np.uint64(0x100000001B3)
_NON_ALNUM = re.compile(r"[^\w\s]|_")


def _ngram_keys(ids: np.ndarray, n: int) -> np.ndarray:
    """One 64-bit key per n-gram start (polynomial hash of the word ids; collisions are negligible)."""
    count = len(ids) - n + 1
    keys = ids[:count].copy()
    for k in range(1, n):
        keys = keys * _P + ids[k : k + count]
    return keys


def _covered_chars(dup_starts: np.ndarray, n: int, word_lengths: np.ndarray) -> int:
    """Characters of the words covered by at least one of the n-grams starting at `dup_starts`."""
    diff = np.zeros(len(word_lengths) + 1, dtype=np.int32)
    np.add.at(diff, dup_starts, 1)
    np.add.at(diff, dup_starts + n, -1)
    covered = np.cumsum(diff[:-1]) > 0
    return int(word_lengths[covered].sum())


def repetition_scores(words: list[str], top_ns: list[int], dup_ns: list[int]) -> dict[str, float]:
    """Gopher repetition scores over words.

    top_<n>gram_fraction: characters of the most frequent n-gram (times its count) over all word characters.
    dup_<n>gram_fraction: characters of words inside any n-gram that occurs more than once, over all
    word characters (each word counted once).
    """
    scores: dict[str, float] = {}
    vocab: dict[str, int] = {}
    ids = np.array([vocab.setdefault(w, len(vocab)) for w in words], dtype=np.uint64)
    word_lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    total = int(word_lengths.sum()) or 1
    for n in top_ns:
        key = f"top_{n}gram_fraction"
        if len(ids) < n:
            scores[key] = 0.0
            continue
        _, first, counts = np.unique(_ngram_keys(ids, n), return_index=True, return_counts=True)
        best = int(np.argmax(counts))
        count = int(counts[best])
        chars = int(word_lengths[first[best] : first[best] + n].sum())
        scores[key] = chars * count / total if count > 1 else 0.0
    no_dups = False
    for n in sorted(dup_ns):
        key = f"dup_{n}gram_fraction"
        if no_dups or len(ids) < n:
            # a repeated (n+1)-gram contains a repeated n-gram: none at n means none above.
            scores[key] = 0.0
            continue
        _, inverse, counts = np.unique(_ngram_keys(ids, n), return_inverse=True, return_counts=True)
        repeated = counts[inverse] > 1
        if not repeated.any():
            no_dups = True
            scores[key] = 0.0
            continue
        scores[key] = _covered_chars(np.flatnonzero(repeated), n, word_lengths) / total
    return scores


def line_scores(text: str, min_lines: int = 1) -> dict[str, float]:
    """Line count, and bullet, ellipsis and duplicate-line fractions over the non-empty lines; the fractions are 0
    for a document of fewer than `min_lines` lines (a ratio over one or two lines says nothing)."""
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    if len(lines) < min_lines or not lines:
        return {"line_count": float(len(lines)), **dict.fromkeys(_LINE_RATIOS, 0.0)}
    counts = Counter(lines)
    dup_lines = sum(c - 1 for c in counts.values() if c > 1)
    dup_chars = sum(len(line) * (c - 1) for line, c in counts.items() if c > 1)
    total_chars = sum(len(line) for line in lines) or 1
    return {
        "line_count": float(len(lines)),
        "bullet_line_fraction": sum(_BULLET.match(line) is not None for line in lines) / len(lines),
        "ellipsis_line_fraction": sum(line.endswith(_ELLIPSES) for line in lines) / len(lines),
        "dup_line_fraction": dup_lines / len(lines),
        "dup_line_char_fraction": dup_chars / total_chars,
    }


def score_document(text: str, thresholds: FilterThresholds) -> dict[str, float]:
    """Every filter score of one (cleaned) document."""
    words = text.split()
    n_words = len(words)
    word_chars = sum(map(len, words))
    non_space = len(text) - text.count(" ") - text.count("\n") - text.count("\t")
    non_alnum = len(_NON_ALNUM.findall(text))
    symbols = text.count("#") + text.count("...") + text.count("…")
    scores: dict[str, float] = {
        "word_count": float(n_words),
        "mean_word_length": word_chars / n_words if n_words else 0.0,
        "symbol_word_ratio": symbols / n_words if n_words else 0.0,
        "non_alnum_fraction": non_alnum / non_space if non_space else 1.0,
        "longest_word": float(max(map(len, words), default=0)),
    }
    scores.update(line_scores(text, thresholds.min_lines_for_line_ratios))
    scores.update(
        repetition_scores(
            words,
            sorted(thresholds.max_top_ngram_fraction),
            sorted(thresholds.max_dup_ngram_fraction),
        )
    )
    return scores


@dataclass(frozen=True)
class Bound:
    """One filter: the score it reads (named like the filter) and the range it must stay in (None: open)."""

    name: str
    low: float | None = None
    high: float | None = None

    def check(self, scores: dict[str, float]) -> bool:
        value = scores[self.name]
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def explain(self, scores: dict[str, float]) -> dict[str, float | str | None]:
        """Why a document failed this filter: the rule, its score and the bound it crossed."""
        return {"rule": self.name, "score": round(scores[self.name], 6), "min": self.low, "max": self.high}


def bounds(t: FilterThresholds) -> list[Bound]:
    """The filters in the order their failures are reported (the first failure names the rejection)."""
    result = [
        Bound("word_count", t.min_words, t.max_words),
        Bound("mean_word_length", t.min_mean_word_length, t.max_mean_word_length),
        Bound("longest_word", high=t.max_word_length),
        Bound("symbol_word_ratio", high=t.max_symbol_word_ratio),
        Bound("non_alnum_fraction", high=t.max_non_alnum_fraction),
        Bound("bullet_line_fraction", high=t.max_bullet_line_fraction),
        Bound("ellipsis_line_fraction", high=t.max_ellipsis_line_fraction),
        Bound("dup_line_fraction", high=t.max_dup_line_fraction),
        Bound("dup_line_char_fraction", high=t.max_dup_line_char_fraction),
    ]
    result += [Bound(f"top_{n}gram_fraction", high=limit) for n, limit in sorted(t.max_top_ngram_fraction.items())]
    result += [Bound(f"dup_{n}gram_fraction", high=limit) for n, limit in sorted(t.max_dup_ngram_fraction.items())]
    return result


def failed_filters(scores: dict[str, float], checks: list[Bound]) -> list[str]:
    """Names of the filters whose score is out of bounds, in report order."""
    return [b.name for b in checks if not b.check(scores)]
