"""Output head fused with cross-entropy, computed in chunks of rows.

The plain path materialises the full (tokens x vocab) logits, their softmax and its gradient: three
buffers of 64 MiB each for a batch of 8 x 256 tokens and a vocabulary of 8192. Here each chunk's
logits are turned into the loss *and* the gradients for the hidden states and the head weight in the
forward pass itself (the loss is the last op, so its gradient is known up to the scalar ``grad_output``);
backward only rescales. Peak memory drops to one chunk of logits, and the softmax/one-hot subtraction
happens in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int):
        n_rows = hidden.shape[0]
        mask = targets != IGNORE_INDEX
        n_valid = mask.sum().clamp(min=1)
        safe_targets = targets.clamp(min=0)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, n_rows, chunk):
            h = hidden[start : start + chunk]
            t = safe_targets[start : start + chunk]
            m = mask[start : start + chunk].to(torch.float32)
            logits = (h @ weight.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, t[:, None]).squeeze(1)
            total += ((lse - picked) * m).sum()
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place
            probs.scatter_add_(1, t[:, None], torch.full_like(picked[:, None], -1.0))
            probs.mul_(m[:, None])
            g = probs.to(hidden.dtype)
            grad_hidden[start : start + chunk] = g @ weight
            grad_weight.addmm_(g.t().float(), h.float())
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype), n_valid)
        return total / n_valid

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight, n_valid = ctx.saved_tensors
        scale = (grad_output / n_valid).to(grad_hidden.dtype)
        return grad_hidden * scale, grad_weight * scale, None, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 1024
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` (``-100`` ignored)."""
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _FusedLinearCrossEntropy.apply(hidden, weight, targets, chunk)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk):
        logits = (hidden[start : start + chunk] @ weight.t()).float()
        total += F.cross_entropy(logits, targets[start : start + chunk], reduction="sum",
                                 ignore_index=IGNORE_INDEX)
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)
