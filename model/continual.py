"""Continual-learning regularisers: L2 to the previous weights, or EWC (Fisher-weighted L2).

The penalty ``strength/2 * sum_i w_i (theta_i - theta*_i)^2`` is added to the language-model loss
inside :class:`TrainModule`, so DeepSpeed sees one loss. ``w`` is 1 for L2; for EWC it is the diagonal
empirical Fisher of the previous model on earlier data, normalised to mean 1 so that ``strength`` has the
same scale in both modes. Under ZeRO stage <= 2 every process holds whole parameters and autograd
differentiates the penalty. Under ZeRO-3 each process holds a slice of each parameter, so the penalty and its
gradient ``strength * w * (theta - theta*)`` are computed on the local fp32 slices and added to the local
gradient slices between backward and the optimizer step (:meth:`Regularizer.apply_to_partitions`), by a hook
:meth:`TrainModule.attach` puts on the engine's step. :func:`build_regularizer` samples the Fisher's batches
from the run's data mix and shares the result with every process through one file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lmforge_core.config.train import TrainConfig
from lmforge_core.fileio import atomic_path
from model.data import DataMix
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

        Call after the backward of the last micro-batch of a step, before the optimizer. A parameter's flat
        element ``i`` lives on rank ``i // slice``, as DeepSpeed partitions it; the last slices are padded to the
        common size, and the padding (whose content is undefined) is neither counted nor given a gradient: only
        the first ``anchor.numel()`` elements of a local slice are real.
        """
        import torch.distributed as dist
        from deepspeed.utils import safe_get_local_fp32_param, safe_get_local_grad, safe_set_local_grad

        rank = dist.get_rank() if dist.is_initialized() else 0
        params = dict(model.named_parameters())
        total = torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for i, name in enumerate(self.names):
                param = params[name]
                theta = safe_get_local_fp32_param(param).reshape(-1)
                if not self.sliced:  # keep only this process's slices: the whole tensors are a model copy each
                    start = rank * theta.numel()
                    for kind in ("anchor", "weight") if self.weighted else ("anchor",):
                        whole = getattr(self, f"{kind}_{i}").reshape(-1)
                        setattr(self, f"{kind}_{i}", whole[start : start + theta.numel()].to(theta).clone())
                anchor = getattr(self, f"anchor_{i}")
                diff = theta[: anchor.numel()] - anchor
                weighted = diff * getattr(self, f"weight_{i}") if self.weighted else diff
                total += float((weighted * diff).sum())
                grad = safe_get_local_grad(param)
                update = torch.zeros_like(theta)
                update[: anchor.numel()] = self.strength * weighted
                safe_set_local_grad(param, grad + update.view_as(grad))
        self.sliced = True
        if dist.is_initialized():
            dist.all_reduce(total)
        return 0.5 * self.strength * float(total)

    def save(self, path: Path) -> None:
        tensors = {f"anchor/{n}": getattr(self, f"anchor_{i}") for i, n in enumerate(self.names)}
        if self.weighted:
            tensors |= {f"weight/{n}": getattr(self, f"weight_{i}") for i, n in enumerate(self.names)}
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))

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


def earlier_data_batches(data: DataMix, count: int, micro_batch: int, seed: int
                         ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` random micro-batches of the replayed (earlier) versions, or of the new data when there
    are none: the data the previous model was trained on, which the Fisher is estimated on."""
    old = list(range(1, len(data.sources))) or [0]
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        src = old[int(torch.randint(len(old), (1,), generator=gen))]
        idx = torch.randint(len(data.sources[src]), (micro_batch,), generator=gen).numpy()
        w = torch.from_numpy(data.sources[src].get(idx).astype("int64"))
        batches.append((w[:, :-1], w[:, 1:]))
    return batches


def build_regularizer(cfg: TrainConfig, model: Transformer, data: DataMix, path: Path, has_previous: bool,
                      rank: int, world: int) -> Regularizer | None:
    """The run's regulariser, anchored at ``model``'s current (previous) weights. Rank 0 computes it once
    per run (a resumed run finds ``path``); every process loads it from there."""
    if cfg.regularization == "none":
        return None
    if not has_previous:
        raise ValueError(f"{cfg.regularization} regularisation needs previous weights; this run starts from scratch")
    if not path.is_file() and rank == 0:
        anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
        weights = None
        if cfg.regularization == "ewc":
            weights = diagonal_fisher(model, earlier_data_batches(data, cfg.ewc_batches, cfg.micro_batch, cfg.seed))
        Regularizer(anchor, weights, cfg.reg_strength).save(path)
    if world > 1:
        torch.distributed.barrier()
    return Regularizer.load(path, cfg.reg_strength)


class TrainModule(nn.Module):
    """What DeepSpeed trains: the transformer's loss plus the optional regulariser's penalty.

    ``last_penalty`` is the penalty of the last forward (ZeRO <= 2) or of the last optimizer step (ZeRO-3,
    set by the hook :meth:`attach` installs); ``penalty_outside_loss`` is what the loss does not contain.
    """

    def __init__(self, model: Transformer, regularizer: Regularizer | None = None,
                 partitioned: bool = False) -> None:
        super().__init__()
        self.model = model
        self.regularizer = regularizer
        self.partitioned = partitioned  # ZeRO-3: the penalty is applied to the gradient slices instead
        self.last_penalty = 0.0

    @property
    def penalty_outside_loss(self) -> float:
        return self.last_penalty if self.partitioned else 0.0

    def attach(self, engine: Any) -> None:
        """Under ZeRO-3, add the penalty's gradient to the local gradient slices at every step boundary,
        after the last micro-batch's backward and before the optimizer (so clipping sees it, as autograd's
        gradient of the penalty is seen under ZeRO <= 2)."""
        if not self.partitioned or self.regularizer is None:
            return
        step = engine.step

        def step_with_penalty(*args: Any, **kwargs: Any) -> Any:
            if engine.is_gradient_accumulation_boundary():
                self.last_penalty = self.regularizer.apply_to_partitions(self.model)
            return step(*args, **kwargs)

        engine.step = step_with_penalty

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.model(x, y)
        if self.regularizer is not None and not self.partitioned:
            penalty = self.regularizer.penalty(self.model)
            self.last_penalty = float(penalty.detach())
            loss = loss + penalty
        return loss
