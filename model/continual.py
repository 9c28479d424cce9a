"""Continual-learning regularisers: L2 to the previous weights, or EWC (Fisher-weighted L2).

The penalty ``strength/2 * sum_i w_i (theta_i - theta*_i)^2`` is added to the language-model loss
inside :class:`TrainModule`, so DeepSpeed sees one loss. ``w`` is 1 for L2; for EWC it is the diagonal
empirical Fisher of the previous model on earlier data, normalised to mean 1 so that ``strength`` has the
same scale in both modes. Parameters must be whole on every process, so this needs ZeRO stage <= 2.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from model.network import Transformer


class Regularizer(nn.Module):
    def __init__(self, anchor: dict[str, torch.Tensor], weights: dict[str, torch.Tensor] | None,
                 strength: float) -> None:
        super().__init__()
        self.strength = strength
        self.names = sorted(anchor)
        for i, name in enumerate(self.names):
            self.register_buffer(f"anchor_{i}", anchor[name].detach().clone(), persistent=False)
            if weights is not None:
                self.register_buffer(f"weight_{i}", weights[name].detach().clone(), persistent=False)
        self.weighted = weights is not None

    def penalty(self, model: Transformer) -> torch.Tensor:
        params = dict(model.named_parameters())
        total = torch.zeros((), device=next(model.parameters()).device)
        for i, name in enumerate(self.names):
            diff = params[name] - getattr(self, f"anchor_{i}")
            sq = diff * diff
            total = total + ((sq * getattr(self, f"weight_{i}")).sum() if self.weighted else sq.sum())
        return 0.5 * self.strength * total

    def save(self, path: Path) -> None:
        tensors = {f"anchor/{n}": getattr(self, f"anchor_{i}") for i, n in enumerate(self.names)}
        if self.weighted:
            tensors |= {f"weight/{n}": getattr(self, f"weight_{i}") for i, n in enumerate(self.names)}
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, strength: float) -> Regularizer:
        tensors = load_file(str(path))
        anchor = {k.removeprefix("anchor/"): v for k, v in tensors.items() if k.startswith("anchor/")}
        weights = {k.removeprefix("weight/"): v for k, v in tensors.items() if k.startswith("weight/")}
        return cls(anchor, weights or None, strength)


def diagonal_fisher(model: Transformer, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean squared gradient of the loss per parameter over ``batches``, normalised to mean 1."""
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    count = 0
    was_training = model.training
    model.eval()
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        model(x, y).backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
        count += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    mean = float(sum(f.sum() for f in fisher.values()) / sum(f.numel() for f in fisher.values()))
    if count == 0 or mean <= 0.0:
        raise ValueError("EWC needs at least one batch with a non-zero gradient to estimate the Fisher")
    return {n: f / mean for n, f in fisher.items()}


class TrainModule(nn.Module):
    """What DeepSpeed trains: the transformer's loss plus the optional regulariser's penalty."""

    def __init__(self, model: Transformer, regularizer: Regularizer | None = None) -> None:
        super().__init__()
        self.model = model
        self.regularizer = regularizer
        self.last_penalty = 0.0

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.model(x, y)
        if self.regularizer is not None:
            penalty = self.regularizer.penalty(self.model)
            self.last_penalty = float(penalty.detach())
            loss = loss + penalty
        return loss
