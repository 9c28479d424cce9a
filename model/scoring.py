"""Scoring text with a model, without gradients: token-weighted loss over dataset windows and the
log-likelihood of short sequences (probe sentences).

Everything runs under ``torch.no_grad``, so the output head takes the chunked inference path of
:func:`model.losses.linear_cross_entropy` and never builds the fused loss's gradient buffers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.losses import IGNORE_INDEX
from model.network import Transformer
from model.token_shards import TokenWindows


@dataclass
class NllTotal:
    """Summed negative log-likelihood (nats) over ``tokens`` predicted tokens."""

    nll_sum: float = 0.0
    tokens: int = 0

    def add(self, other: NllTotal) -> None:
        self.nll_sum += other.nll_sum
        self.tokens += other.tokens


def _device(model: Transformer) -> torch.device:
    return next(model.parameters()).device


def window_batch_nll(model: Transformer, windows: np.ndarray, pad_id: int | None) -> NllTotal:
    """Loss of (B, window) token windows: each window predicts its tokens 2..window from the ones before
    (the training convention); targets equal to ``pad_id`` are not scored."""
    batch = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.int64)).to(_device(model))
    inputs, targets = batch[:, :-1], batch[:, 1:].clone()
    if pad_id is not None:
        targets[targets == pad_id] = IGNORE_INDEX
    count = int((targets != IGNORE_INDEX).sum())
    if count == 0:
        return NllTotal()
    with torch.no_grad():
        mean = model(inputs, targets)
    return NllTotal(float(mean.double()) * count, count)


def split_nll(model: Transformer, split: TokenWindows, *, batch_windows: int, max_windows: int | None = None,
              on_batch: Callable[[int, int], None] | None = None) -> NllTotal:
    """Token-weighted loss of a whole split, streamed from its memory-mapped shards ``batch_windows`` at a
    time (``max_windows`` caps how many, from the start). ``on_batch(done, total)`` reports progress."""
    total_windows = len(split) if max_windows is None else min(len(split), max_windows)
    was_training = model.training
    model.eval()
    total = NllTotal()
    try:
        for start in range(0, total_windows, batch_windows):
            idx = np.arange(start, min(start + batch_windows, total_windows))
            total.add(window_batch_nll(model, split.get(idx), split.pad_id))
            if on_batch is not None:
                on_batch(int(idx[-1]) + 1, total_windows)
    finally:
        model.train(was_training)
    return total


@dataclass(frozen=True)
class SpanScore:
    """Summed log-probability of a row's scored tokens, and whether each of them is the arg-max."""

    loglik: float
    greedy: bool


def span_scores(model: Transformer, rows: Sequence[Sequence[int]], starts: Sequence[int], *, batch: int = 32,
                head_rows: int = 1024) -> list[SpanScore]:
    """Score tokens ``row[start:]`` of every row, each given the tokens before it.

    Rows are sorted by length and scored ``batch`` at a time, right-padded (with causal attention the
    padding never reaches a scored position, so a row's score equals its one-by-one score up to float
    rounding); the output head runs on the scored positions only, ``head_rows`` at a time.
    """
    if len(rows) != len(starts):
        raise ValueError(f"{len(rows)} rows but {len(starts)} starts")
    context = model.config.context
    for row, start in zip(rows, starts, strict=True):
        if len(row) > context + 1:
            raise ValueError(f"a sequence is longer than the model's context of {context} tokens")
        if not 1 <= start < len(row):
            raise ValueError("every scored sequence needs a token to condition on and one to score (give a prefix)")
    out: list[SpanScore] = [SpanScore(0.0, True)] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    was_training = model.training
    model.eval()
    try:
        for first in range(0, len(order), batch):
            chunk = order[first : first + batch]
            scores = _score_batch(model, [rows[i] for i in chunk], [starts[i] for i in chunk], head_rows)
            for i, score in zip(chunk, scores, strict=True):
                out[i] = score
    finally:
        model.train(was_training)
    return out


def _score_batch(model: Transformer, rows: list[Sequence[int]], starts: list[int], head_rows: int
                 ) -> list[SpanScore]:
    device = _device(model)
    width = max(len(r) for r in rows) - 1
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    where, targets, owner = [], [], []
    for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
        ids[i, : len(row) - 1] = torch.tensor(row[:-1], dtype=torch.long)
        where += [i * width + p for p in range(start - 1, len(row) - 1)]  # position p predicts token p + 1
        targets += row[start:]
        owner += [i] * (len(row) - start)
    target = torch.tensor(targets, dtype=torch.long, device=device)
    logp, hit = torch.empty(len(targets), dtype=torch.float64), torch.empty(len(targets), dtype=torch.bool)
    with torch.inference_mode():
        hidden = model.hidden_states(ids.to(device)).flatten(0, 1)[torch.tensor(where, device=device)]
        for lo in range(0, len(targets), head_rows):
            logits = model.output(hidden[lo : lo + head_rows]).float()
            t = target[lo : lo + head_rows, None]
            logp[lo : lo + head_rows] = (logits.gather(1, t) - logits.logsumexp(-1, keepdim=True))[:, 0].double().cpu()
            hit[lo : lo + head_rows] = (logits.argmax(-1, keepdim=True) == t)[:, 0].cpu()
    rows_of = torch.tensor(owner)
    sums = torch.zeros(len(rows), dtype=torch.float64).index_add_(0, rows_of, logp)
    misses = torch.zeros(len(rows), dtype=torch.long).index_add_(0, rows_of, (~hit).long())
    return [SpanScore(float(total), int(miss) == 0) for total, miss in zip(sums, misses, strict=True)]


def sequence_logliks(model: Transformer, sequences: Sequence[Sequence[int]], *, prefix: Sequence[int] = (),
                     batch: int = 32) -> np.ndarray:
    """Summed log-probability of each sequence's tokens given ``prefix`` (e.g. ``[bos_id]``) and the tokens
    before them (see :func:`span_scores`)."""
    rows = [list(prefix) + list(s) for s in sequences]
    scores = span_scores(model, rows, [max(len(prefix), 1)] * len(rows), batch=batch)
    return np.array([s.loglik for s in scores], dtype=np.float64)
