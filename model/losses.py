"""Output head fused with cross-entropy, computed in chunks of rows.

The plain path materialises the full (tokens x vocab) logits, their softmax and its gradient: three
buffers of 64 MiB each for a batch of 8 x 256 tokens and a vocabulary of 8192. Here each chunk's
logits are turned into the loss *and* the gradients for the hidden states and the head weight in the
forward pass itself (the loss is the last op, so its gradient is known up to the scalar ``grad_output``);
backward only rescales, and not even that when ``grad_output`` is 1. Peak memory drops to one chunk of logits, and the softmax/one-hot subtraction
happens in place.

Chunks of 512 rows keep each logits buffer at 16 MiB: glibc serves blocks under its 32 MiB mmap ceiling
from the reused heap, while larger ones are mapped fresh and page-faulted on every step. Measured on
2 cores (tokens 2048, dim 256, vocab 8192, forward + backward): 171 ms at 512 rows against 475 ms at
1024 rows and 385 ms for the unfused ``F.cross_entropy`` path; the three matmuls alone take ~170 ms.
Under bf16/fp16 the logits, the loss and the head-weight gradient are accumulated in fp32.
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
        all_valid = bool(mask.all())
        n_valid = mask.sum().clamp(min=1)
        inv_n = 1.0 / n_valid.float()
        safe_targets = targets.clamp(min=0)
        grad_hidden = torch.empty_like(hidden)
        # fp32 accumulation under bf16/fp16; in fp32 the first chunk's product is written in place (no zero fill)
        grad_weight = (torch.empty_like if n_rows else torch.zeros_like)(weight, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, n_rows, chunk):
            h = hidden[start : start + chunk]
            t = safe_targets[start : start + chunk, None]
            logits = (h @ weight.t()).float()
            # softmax in place, keeping what the loss needs: loss = log(sum exp(l - max)) - (l[t] - max)
            picked = logits.gather(1, t).squeeze(1)
            peak = logits.amax(dim=-1, keepdim=True)
            probs = logits.sub_(peak).exp_()
            norm = probs.sum(dim=-1, keepdim=True)
            row_loss = norm.log().squeeze(1) - (picked - peak.squeeze(1))
            # gradient of the mean loss: (softmax - onehot) / n_valid, the 1/n folded into the normalisation
            probs.div_(norm * n_valid)
            probs.scatter_add_(1, t, (-inv_n).expand(t.shape).to(probs.dtype))
            if not all_valid:
                m = mask[start : start + chunk]
                row_loss = row_loss * m
                probs.mul_(m[:, None].to(probs.dtype))
            total += row_loss.sum()
            g = probs.to(hidden.dtype)
            torch.mm(g, weight, out=grad_hidden[start : start + chunk])
            if start == 0 and g.dtype == torch.float32:
                torch.mm(g.t(), h, out=grad_weight)
            elif start == 0:
                grad_weight.copy_(g.t() @ h)
            elif grad_weight.dtype == g.dtype:
                grad_weight.addmm_(g.t(), h)
            else:
                grad_weight += (g.t() @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total * inv_n

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        # the loss is almost always the last op (grad_output == 1): then the forward's gradients are final.
        # Only checked on CPU, where reading the value costs no device synchronisation.
        if grad_output.device.type == "cpu" and bool(grad_output == 1):
            return grad_hidden, grad_weight, None, None
        scale = grad_output.to(grad_hidden.dtype)
        return grad_hidden * scale, grad_weight * scale, None, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 512
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
