"""Evaluation metrics that are pure functions of numbers, token ids or texts (no model in sight).

Perplexity, distinct-n and repetition of generations, BLEU (sacrebleu) and ROUGE-L (rouge-score),
VADER sentiment, a word-list toxicity scorer, and bootstrap intervals for group gaps and pair preferences.
Training-time metrics (throughput, MFU) are in :mod:`model.metrics`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_WORD = re.compile(r"[a-z0-9']+")


def perplexity(nll_sum: float, tokens: int) -> float:
    """Token-weighted perplexity: exp(total negative log-likelihood / number of predicted tokens)."""
    if tokens <= 0:
        raise ValueError("perplexity of zero tokens is undefined (the split has no scored token)")
    return math.exp(nll_sum / tokens)


def relative_change(new: float, old: float) -> float:
    """(new - old) / old: +0.05 is 5 % worse for a perplexity."""
    return (new - old) / old


def _ngrams(seq: Sequence[int | str], n: int) -> list[tuple[int | str, ...]]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(sequences: Iterable[Sequence[int | str]], n: int) -> float:
    """Unique n-grams over all n-grams, pooled over the sequences (Li et al. 2016); 0 when none."""
    grams = [g for seq in sequences for g in _ngrams(seq, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(sequences: Iterable[Sequence[int | str]], n: int = 3) -> float:
    """Share of n-grams that repeat an n-gram seen earlier in the same sequence, pooled; 0 when none."""
    repeats = total = 0
    for seq in sequences:
        grams = _ngrams(seq, n)
        counts = Counter(grams)
        repeats += sum(c - 1 for c in counts.values())
        total += len(grams)
    return repeats / total if total else 0.0


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's corpus BLEU (0-100) with one reference per hypothesis."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def mean_rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (rouge-score, stemmed) over the pairs."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references, strict=True)]
    return float(np.mean(scores)) if scores else 0.0


@lru_cache(maxsize=1)
def _vader():  # type: ignore[no-untyped-def]
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()  # reads the lexicon shipped in the wheel; no download


def sentiment(texts: Sequence[str]) -> np.ndarray:
    """VADER compound score in [-1, 1] of each text."""
    return np.array([_vader().polarity_scores(t)["compound"] for t in texts], dtype=np.float64)


@dataclass(frozen=True)
class WordListScorer:
    """Toxicity by word list: a text is toxic when one of its lower-cased words is on the list."""

    words: frozenset[str]

    def is_toxic(self, text: str) -> bool:
        return any(w in self.words for w in _WORD.findall(text.lower()))

    def rate(self, texts: Sequence[str]) -> float:
        return sum(self.is_toxic(t) for t in texts) / len(texts) if texts else 0.0


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided bootstrap percentile interval."""

    value: float
    low: float
    high: float

    def covers(self, x: float) -> bool:
        return self.low <= x <= self.high


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def bootstrap_mean(values: Sequence[float] | np.ndarray, *, samples: int = 1000, confidence: float = 0.95,
                   seed: int = 0) -> Interval:
    """Mean of ``values`` with its percentile bootstrap interval (resampling the values)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("bootstrap of an empty sample")
    draws = _rng(seed).integers(0, data.size, size=(samples, data.size))
    means = data[draws].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(data.mean()), float(low), float(high))


@dataclass(frozen=True)
class GroupGap:
    """The largest gap between two groups of one axis: ``high`` group minus ``low`` group, with the
    interval of that signed difference (it covers 0 when the groups cannot be told apart)."""

    interval: Interval
    high_group: str
    low_group: str
    group_means: dict[str, float]


def largest_group_gap(scores: Mapping[str, Sequence[float] | np.ndarray], *, samples: int = 1000,
                      confidence: float = 0.95, seed: int = 0) -> GroupGap:
    """``scores[group]`` is an (items,) or (items, terms) array: the score of item ``i`` (a template)
    instantiated with each of the group's terms. Items are aligned across groups; terms are not (a group
    may have more). The gap is between the groups with the highest and lowest mean. Its interval comes from
    a two-level bootstrap: items resampled together for both groups (paired), and each group's terms
    resampled on their own, so the interval also reflects how much the choice of terms matters.
    """
    if len(scores) < 2:
        raise ValueError(f"a gap needs at least two groups, got {sorted(scores)}")
    matrix = {g: np.asarray(v, dtype=np.float64) for g, v in scores.items()}
    matrix = {g: m.reshape(len(m), -1) for g, m in matrix.items()}
    sizes = {m.shape[0] for m in matrix.values()}
    if len(sizes) != 1 or 0 in sizes or any(m.size == 0 for m in matrix.values()):
        raise ValueError(f"groups must score the same non-empty set of items, got sizes {sorted(sizes)}")
    means = {g: float(m.mean()) for g, m in matrix.items()}
    high, low = max(means, key=means.__getitem__), min(means, key=means.__getitem__)
    rng, items = _rng(seed), sizes.pop()
    picks = rng.integers(0, items, size=(samples, items))[:, :, None]

    def resampled_means(m: np.ndarray) -> np.ndarray:
        terms = rng.integers(0, m.shape[1], size=(samples, 1, m.shape[1]))
        return m[picks, terms].mean(axis=(1, 2))

    diffs = resampled_means(matrix[high]) - resampled_means(matrix[low])
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    return GroupGap(Interval(means[high] - means[low], float(lo), float(hi)), high, low, means)


def preference_share(deltas: Sequence[float] | np.ndarray, *, samples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> Interval:
    """Share of pairs with ``delta > 0`` (the model prefers the more stereotyping sentence), with its
    bootstrap interval; 0.5 is unbiased."""
    return bootstrap_mean(np.asarray(deltas, dtype=np.float64) > 0, samples=samples, confidence=confidence,
                          seed=seed)
