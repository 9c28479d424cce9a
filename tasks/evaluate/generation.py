"""Generation quality: a continuation task built from held-out documents, and sampled continuations.

Held-out documents are the validation split's token stream cut at end-of-text tokens; a document long
enough gives prompt = its first ``k`` tokens and reference = the next ``m``. The greedy continuation of
``m`` tokens is scored against the reference with BLEU (sacrebleu) and ROUGE-L (rouge-score); sampled
continuations (seeded) give distinct-n and the repetition rate. A few are kept for side-by-side reading.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmforge_core.config.evaluate import EvaluateConfig
from lmforge_core.metadata.evaluation_repository import EvaluationRow
from model.chat_template import chat_template_of, render_chat
from model.decoding import SamplingParams, generate
from model.eval_metrics import corpus_bleu, distinct_n, mean_rouge_l, repetition_rate
from model.network import Transformer
from model.token_shards import TokenWindows
from model.tokenizer import TokenizerRef


@dataclass(frozen=True)
class ContinuationItem:
    prompt: list[int]
    reference: list[int]


def held_out_documents(split: TokenWindows, eos_id: int, pad_id: int | None) -> Iterator[list[int]]:
    """Documents of a split's token stream (windows in order), without their end-of-text token."""
    current: list[int] = []
    for index in range(len(split)):
        for token in split.get(np.array([index]))[0].tolist():
            if token == eos_id:
                if current:
                    yield current
                current = []
            elif token != pad_id:
                current.append(token)
    if current:
        yield current


def continuation_items(split: TokenWindows, eos_id: int, pad_id: int | None, cfg: EvaluateConfig,
                       ) -> list[ContinuationItem]:
    k, m = cfg.prompt_tokens, cfg.reference_tokens
    items = []
    for doc in held_out_documents(split, eos_id, pad_id):
        if len(doc) >= k + m:
            items.append(ContinuationItem(doc[:k], doc[k : k + m]))
            if len(items) == cfg.continuation_documents:
                break
    return items


def row_seeds(base: int, purpose: str, rows: int) -> list[int]:
    """One seed per row of a sampling call, from the configured seed, the call's purpose and the row's place
    in the call (not in a batch): a row's samples do not depend on how the rows are batched."""
    return [int.from_bytes(hashlib.sha256(f"{base}/{purpose}/{i}".encode()).digest()[:8], "big") >> 1
            for i in range(rows)]


class Generator:
    """The decoding library bound to one model and tokenizer: greedy and seeded sampled continuations,
    decoded in length-sorted batches of ``cfg.batch_rows`` prompts over the KV cache."""

    def __init__(self, model: Transformer, tokenizer: TokenizerRef, cfg: EvaluateConfig) -> None:
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.chat_template = chat_template_of(tokenizer) if cfg.chat_template else None

    def _run(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int] | None = None,
             ) -> list[list[int]]:
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # little left padding per batch
        out: list[list[int]] = [[] for _ in prompts]
        for first in range(0, len(order), self.cfg.batch_rows):
            chunk = order[first : first + self.cfg.batch_rows]
            tokens = generate(self.model, [prompts[i] for i in chunk], params, eos_id=self.tokenizer.eos_id,
                              pad_id=self.tokenizer.pad_id, seeds=None if seeds is None else [seeds[i] for i in chunk])
            for i, row in zip(chunk, tokens, strict=True):
                out[i] = row
        return out

    def greedy(self, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        return self._run(prompts, SamplingParams(max_new_tokens=new_tokens, temperature=0.0))

    def sampled(self, prompts: list[list[int]], per_prompt: int, purpose: str) -> list[list[list[int]]]:
        """``per_prompt`` continuations of each prompt, each row seeded by :func:`row_seeds`."""
        rows = [p for p in prompts for _ in range(per_prompt)]
        params = SamplingParams(max_new_tokens=self.cfg.sample_new_tokens, temperature=self.cfg.temperature,
                                top_p=self.cfg.top_p)
        out = self._run(rows, params, row_seeds(self.cfg.seed, purpose, len(rows)))
        return [out[i * per_prompt : (i + 1) * per_prompt] for i in range(len(prompts))]

    def probe_prompt(self, text: str) -> list[int]:
        """A probe's prompt: the user's turn in the model's chat template where it has one (the template
        writes its own special tokens), else the text after end-of-text, as training saw documents start."""
        if self.chat_template is None:
            return [self.tokenizer.eos_id, *self.tokenizer.encode(text)]
        rendered = render_chat(self.chat_template, [{"role": "user", "content": text}],
                               self.tokenizer.special_tokens())
        return self.tokenizer.encode(rendered)

    def sample_texts(self, prompts: list[str], per_prompt: int) -> list[list[str]]:
        """The fairness probes' sampler: text prompts in, decoded continuations out."""
        encoded = [self.probe_prompt(p) for p in prompts]
        return [[self.tokenizer.decode(c) for c in per] for per in self.sampled(encoded, per_prompt, "probes")]


@dataclass
class GenerationResult:
    bleu: float
    rouge_l: float
    distinct_1: float
    distinct_2: float
    repetition: float
    items: int
    samples: list[dict[str, str]]
    sampled_texts: list[str]


def generation_quality(gen: Generator, items: list[ContinuationItem]) -> GenerationResult:
    if not items:
        raise ValueError("no held-out document is long enough for the continuation task "
                         f"(needs {gen.cfg.prompt_tokens} + {gen.cfg.reference_tokens} tokens)")
    tok = gen.tokenizer
    prompts = [[tok.eos_id, *it.prompt] for it in items]
    greedy = gen.greedy(prompts, gen.cfg.reference_tokens)
    sampled = [s[0] for s in gen.sampled(prompts, 1, "continuation")]
    hyps, refs = [tok.decode(g) for g in greedy], [tok.decode(it.reference) for it in items]
    texts = [tok.decode(s) for s in sampled]
    samples = [{"prompt": tok.decode(it.prompt), "reference": ref, "greedy": hyp, "sampled": text}
               for it, ref, hyp, text in zip(items, refs, hyps, texts, strict=True)][: gen.cfg.stored_samples]
    return GenerationResult(corpus_bleu(hyps, refs), mean_rouge_l(hyps, refs), distinct_n(sampled, 1),
                            distinct_n(sampled, 2), repetition_rate(sampled, 3), len(items), samples, texts)


def generation_rows(dataset: str, r: GenerationResult) -> list[EvaluationRow]:
    details: dict[str, Any] = {"items": r.items}
    return [EvaluationRow(dataset, "bleu", r.bleu, "continuation", details),
            EvaluationRow(dataset, "rouge_l", r.rouge_l, "continuation", details),
            EvaluationRow(dataset, "distinct_1", r.distinct_1, "sampled", details),
            EvaluationRow(dataset, "distinct_2", r.distinct_2, "sampled", details),
            EvaluationRow(dataset, "repetition_rate", r.repetition, "sampled", details),
            EvaluationRow(dataset, "samples", float(len(r.samples)), "side_by_side", {"samples": r.samples})]
