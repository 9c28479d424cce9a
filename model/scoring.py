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
import torch.nn.functional as F

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


def sequence_logliks(model: Transformer, sequences: Sequence[Sequence[int]], *, prefix: Sequence[int] = (),
                     batch: int = 32) -> np.ndarray:
    """Summed log-probability of each sequence's tokens given ``prefix`` (e.g. ``[bos_id]``) and the tokens
    before them. Rows are right-padded in a batch; with causal attention padding never reaches the scored
    positions, so a batched score equals the one-by-one score."""
    out = np.zeros(len(sequences), dtype=np.float64)
    device, context = _device(model), model.config.context
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(sequences), batch):
            rows = [list(prefix) + list(s) for s in sequences[start : start + batch]]
            if any(len(r) > context + 1 for r in rows):
                raise ValueError(f"a sequence is longer than the model's context of {context} tokens")
            if any(len(r) < 2 for r in rows):
                raise ValueError("every scored sequence needs a token to condition on (give a prefix)")
            width = max(len(r) for r in rows)
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            targets = torch.full((len(rows), width - 1), IGNORE_INDEX, dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r)
                targets[i, len(prefix) - 1 if prefix else 0 : len(r) - 1] = torch.tensor(r[max(len(prefix), 1):])
            with torch.no_grad():
                logits = model(ids[:, :-1].to(device)).float()
            nll = F.cross_entropy(logits.transpose(1, 2), targets.to(device), ignore_index=IGNORE_INDEX,
                                  reduction="none")
            out[start : start + len(rows)] = -nll.sum(dim=1).double().cpu().numpy()
    finally:
        model.train(was_training)
    return out
