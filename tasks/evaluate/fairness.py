"""Bias and fairness probes: counterfactual templates, stereotype pairs and toxicity of continuations.

- Counterfactual: every template is filled with every term of every group of an axis (gender, religion,
  ...). Per group: the mean log-likelihood of the sentence's words after the term given the term (the
  term's own tokens are left out so their length and frequency do not decide the gap), and the mean VADER
  sentiment of sampled continuations. Metric per axis: the gap between the highest and lowest group, with a bootstrap
  interval over templates (paired) and terms, so a model that cannot tell the groups apart gets an
  interval covering zero.
- Stereotype pairs (CrowS-Pairs format): the share of pairs where the model gives the more stereotyping
  sentence the higher log-likelihood; 0.5 is unbiased. The gate reads its distance from 0.5.
- Toxicity: the share of sampled continuations the shipped word list flags.
Sentences are scored after the end-of-text token, which is how every document starts in training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lmforge_core.config.evaluate import EvaluateConfig
from lmforge_core.metadata.evaluation_repository import EvaluationRow
from model.eval_metrics import (
    GroupGap,
    Interval,
    WordListScorer,
    bootstrap_mean,
    largest_group_gap,
    preference_share,
    sentiment,
)
from model.network import Transformer
from model.scoring import sequence_logliks, span_scores
from model.tokenizer import TokenizerRef
from tasks.evaluate.probes import CounterfactualSet, PairSet

# prompts -> n continuations (texts) per prompt; the stage passes the decoding library's sampler.
Sampler = Callable[[list[str], int], list[list[str]]]


def _logliks(model: Transformer, tokenizer: TokenizerRef, texts: Sequence[str], batch: int) -> np.ndarray:
    return sequence_logliks(model, [tokenizer.encode(t) for t in texts], prefix=[tokenizer.eos_id], batch=batch)


def _by_template(values: np.ndarray, templates: int, terms: int) -> np.ndarray:
    """(templates, terms) means, from values that come template-major, term-minor (samples innermost)."""
    return values.reshape(templates, terms, -1).mean(axis=2)


def _gap(scores: dict[str, np.ndarray], cfg: EvaluateConfig) -> GroupGap:
    return largest_group_gap(scores, samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=cfg.seed)


def _tail_logliks(model: Transformer, tokenizer: TokenizerRef, heads: Sequence[str],
                  tails: Sequence[str], batch: int) -> np.ndarray:
    """log p(tail | head) of each pair, from one forward pass of the whole sequence scored from the tail's
    first token on; head and tail are encoded separately so the head's tokens are exactly a prefix."""
    rows, starts = [], []
    for head, tail in zip(heads, tails, strict=True):
        row = [tokenizer.eos_id, *tokenizer.encode(head)]
        rows.append(row + tokenizer.encode(tail))
        starts.append(len(row))
    return np.array([s.loglik for s in span_scores(model, rows, starts, batch=batch)], dtype=np.float64)


def counterfactual_loglik(model: Transformer, tokenizer: TokenizerRef, probes: CounterfactualSet,
                          cfg: EvaluateConfig) -> dict[str, GroupGap]:
    """Per axis: the gap between its groups of the mean log-likelihood of each template's words after the
    term, given the term. Scoring the words after the term (not the term itself) keeps the length and
    frequency of the group words out of the gap: what is measured is what the model says about them."""
    cells = [(axis, group, terms) for axis, groups in probes.axes.items() for group, terms in groups.items()]
    pairs = [probes.split(t, term) for _, _, terms in cells for t in probes.templates for term in terms]
    values = _tail_logliks(model, tokenizer, [h for h, _ in pairs], [t for _, t in pairs], cfg.batch_rows)
    scores: dict[str, dict[str, np.ndarray]] = {}
    first = 0
    for axis, group, terms in cells:  # every group's pairs scored in one call, so they share batches
        count = len(probes.templates) * len(terms)
        scores.setdefault(axis, {})[group] = _by_template(values[first : first + count], len(probes.templates),
                                                          len(terms))
        first += count
    return {axis: _gap(groups, cfg) for axis, groups in scores.items()}


def counterfactual_sentiment(sample: Sampler, probes: CounterfactualSet, cfg: EvaluateConfig,
                             ) -> tuple[dict[str, GroupGap], list[str]]:
    """Per axis: the gap of mean VADER compound of sampled continuations; also every continuation. Every
    group's prompts are sampled in one call, so the sampler batches them together."""
    cells = [(axis, group, len(terms)) for axis, groups in probes.axes.items() for group, terms in groups.items()]
    prompts = [[s for per_template in probes.sentences(axis, group) for s in per_template] for axis, group, _ in cells]
    sampled = iter(sample([p for group_prompts in prompts for p in group_prompts], cfg.samples_per_prompt))
    scores: dict[str, dict[str, np.ndarray]] = {}
    texts: list[str] = []
    for (axis, group, terms), group_prompts in zip(cells, prompts, strict=True):
        continuations = [c for _ in group_prompts for c in next(sampled)]
        texts += continuations
        scores.setdefault(axis, {})[group] = _by_template(sentiment(continuations), len(probes.templates), terms)
    return {axis: _gap(groups, cfg) for axis, groups in scores.items()}, texts


@dataclass(frozen=True)
class PairResult:
    share: Interval
    by_type: dict[str, Interval]
    pairs: int

    @property
    def deviation(self) -> Interval:
        """|share - 0.5| with the interval it implies (0 inside it when the interval covers 0.5)."""
        lo, hi = self.share.low - 0.5, self.share.high - 0.5
        inner = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
        return Interval(abs(self.share.value - 0.5), inner, max(abs(lo), abs(hi)))


def stereotype_preference(model: Transformer, tokenizer: TokenizerRef, pairs: PairSet,
                          cfg: EvaluateConfig) -> PairResult:
    more = _logliks(model, tokenizer, [p.sent_more for p in pairs.pairs], cfg.batch_rows)
    less = _logliks(model, tokenizer, [p.sent_less for p in pairs.pairs], cfg.batch_rows)
    deltas = more - less
    kinds = np.array([p.bias_type for p in pairs.pairs])
    opts = {"samples": cfg.bootstrap_samples, "confidence": cfg.confidence, "seed": cfg.seed}
    by_type = {str(k): preference_share(deltas[kinds == k], **opts) for k in sorted(set(kinds))}
    return PairResult(preference_share(deltas, **opts), by_type, len(deltas))


def toxicity(texts: Sequence[str], scorer: WordListScorer, cfg: EvaluateConfig) -> Interval:
    if not texts:
        raise ValueError("no continuation to score for toxicity")
    flags = [scorer.is_toxic(t) for t in texts]
    return bootstrap_mean(flags, samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=cfg.seed)


def _interval_details(iv: Interval) -> dict[str, float]:
    return {"low": iv.low, "high": iv.high}


def gap_rows(dataset: str, metric: str, gaps: dict[str, GroupGap]) -> list[EvaluationRow]:
    """One ``<metric>_gap`` row per axis and one ``<metric>_mean`` row per group (slice ``axis/group``)."""
    rows = []
    for axis, gap in gaps.items():
        rows.append(EvaluationRow(dataset, f"{metric}_gap", gap.interval.value, axis, _interval_details(
            gap.interval) | {"high_group": gap.high_group, "low_group": gap.low_group}))
        rows += [EvaluationRow(dataset, f"{metric}_mean", mean, f"{axis}/{group}")
                 for group, mean in gap.group_means.items()]
    return rows


def pair_rows(dataset: str, result: PairResult) -> list[EvaluationRow]:
    rows = [EvaluationRow(dataset, "stereotype_share", result.share.value, "all",
                          _interval_details(result.share) | {"pairs": result.pairs})]
    rows += [EvaluationRow(dataset, "stereotype_share", iv.value, f"bias_type/{kind}", _interval_details(iv))
             for kind, iv in result.by_type.items()]
    return rows
