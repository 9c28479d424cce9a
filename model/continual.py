"""Continual-learning regularisers: L2 to the previous weights, or EWC (Fisher-weighted L2).

The penalty ``strength/2 * sum_i w_i (theta_i - theta*_i)^2`` is added to the language-model loss
inside :class:`TrainModule`, so DeepSpeed sees one loss. ``w`` is 1 for L2; for EWC it is the diagonal
empirical Fisher of the previous model on earlier data, normalised to mean 1 so that ``strength`` has the
same scale in both modes. Under ZeRO stage <= 2 every process holds whole parameters and autograd
differentiates the penalty. Under ZeRO-3 each process holds a slice of each parameter, so the penalty and its
gradient ``strength * w * (theta - theta*)`` are computed on the local fp32 slices and added to the local
gradient slices between backward and the optimizer step (:meth:`Regularizer.apply_to_partitions`).
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
        self.sliced = False  # ZeRO-3: set once the buffers hold only this process's slices

    def penalty(self, model: Transformer) -> torch.Tensor:
        params = dict(model.named_parameters())
        total = torch.zeros((), device=next(model.parameters()).device)
        for i, name in enumerate(self.names):
            diff = params[name] - getattr(self, f"anchor_{i}")
            sq = diff * diff
            total = total + ((sq * getattr(self, f"weight_{i}")).sum() if self.weighted else sq.sum())
        return 0.5 * self.strength * total

    def apply_to_partitions(self, model: Transformer) -> float:
        """ZeRO-3: add the penalty's gradient to this process's gradient slices; returns the global penalty.

        Call after the backward of the last micro-batch of a step, before ``engine.step()``. A parameter's
        flat element ``i`` lives on rank ``i // slice`` (the last slice zero-padded), as DeepSpeed partitions it.
        """
        import torch.distributed as dist
        from deepspeed.utils import safe_get_local_fp32_param, safe_get_local_grad, safe_set_local_grad

        rank = dist.get_rank() if dist.is_initialized() else 0
        params = dict(model.named_parameters())
        total = torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for i, name in enumerate(self.names):
                param = params[name]
                theta = safe_get_local_fp32_param(param)
                if not self.sliced:  # keep only this process's slices: the whole tensors are a model copy each
                    start = rank * theta.numel()
                    for kind in ("anchor", "weight") if self.weighted else ("anchor",):
                        whole = getattr(self, f"{kind}_{i}")
                        setattr(self, f"{kind}_{i}", self._local_slice(whole, start, theta.numel()).to(theta).clone())
                diff = theta - getattr(self, f"anchor_{i}")
                weighted = diff * getattr(self, f"weight_{i}") if self.weighted else diff
                total += float((weighted * diff).sum())
                grad = safe_get_local_grad(param)
                safe_set_local_grad(param, grad + self.strength * weighted)
        self.sliced = True
        if dist.is_initialized():
            dist.all_reduce(total)
        return 0.5 * self.strength * float(total)

    @staticmethod
    def _local_slice(full: torch.Tensor, start: int, size: int) -> torch.Tensor:
        flat = full.reshape(-1)[start : start + size]
        return torch.nn.functional.pad(flat, (0, size - flat.numel())) if flat.numel() < size else flat

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

    def __init__(self, model: Transformer, regularizer: Regularizer | None = None,
                 partitioned: bool = False) -> None:
        super().__init__()
        self.model = model
        self.regularizer = regularizer
        self.partitioned = partitioned  # ZeRO-3: the penalty is applied to the gradient slices instead
        self.last_penalty = 0.0

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.model(x, y)
        if self.regularizer is not None and not self.partitioned:
            penalty = self.regularizer.penalty(self.model)
            self.last_penalty = float(penalty.detach())
            loss = loss + penalty
        return loss
