"""The network as an export-friendly graph with an explicit KV cache (the shape ONNX and Triton want).

The training network keeps its cache in preallocated buffers and uses hand-written autograd functions;
neither traces into a portable graph. This module computes the same function from the same parameters
with plain tensor ops, taking the cache as inputs and returning the grown cache as outputs:

    inputs : input_ids (B, T) int64, position_ids (B, T) int64, attention_mask (B, P + T) int64,
             past_key_<i>, past_value_<i> (B, kv_heads, P, head_dim) float, one pair per layer
    outputs: logits (B, T, vocab) float, present_key_<i>, present_value_<i> (B, kv_heads, P + T, head_dim)

``attention_mask`` marks the valid cache entries (0 = padding). With left padding, sequences of different
lengths share one batch: what continuous batching needs. Every export is checked against the training
network itself (:mod:`serving.onnx_export`), so a divergence of this graph cannot go unnoticed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.network import Transformer
from serving.onnx_files import input_names, output_names  # noqa: F401 (re-exported)

# large negative instead of -inf: a fully padded query row (left padding) then softmaxes to a uniform
# distribution instead of NaN; its output is never read.
_MASKED = -1e9


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on (B, T, H, D) with half-width (B, T, 1, D / 2) tables."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class CachedLM(nn.Module):
    """Wraps a :class:`Transformer` (sharing its parameters) as ``(ids, positions, mask, *past) -> (logits, *present)``."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model.eval()
        cfg = model.config
        self.n_heads, self.kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim

    def _bias(self, attention_mask: torch.Tensor, t: int) -> torch.Tensor:
        total = attention_mask.shape[1]
        q_abs = torch.arange(t, device=attention_mask.device) + (total - t)
        causal = torch.arange(total, device=attention_mask.device)[None, :] <= q_abs[:, None]
        allowed = causal[None, None] & (attention_mask[:, None, None, :] > 0)
        zero = torch.zeros((), dtype=self.model.tok_embeddings.weight.dtype)
        return torch.where(allowed, zero, zero + _MASKED)

    def _attention(self, block: nn.Module, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   bias: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor):
        b, t, _ = h.shape
        hd, nh, kh = self.head_dim, self.n_heads, self.kv_heads
        q, k, v = block.attn.wqkv(h).split([nh * hd, kh * hd, kh * hd], dim=-1)
        q = _rotate(q.reshape(b, t, nh, hd), cos, sin).transpose(1, 2)
        k = torch.cat((past_k, _rotate(k.reshape(b, t, kh, hd), cos, sin).transpose(1, 2)), dim=2)
        v = torch.cat((past_v, v.reshape(b, t, kh, hd).transpose(1, 2)), dim=2)
        k_rep, v_rep = k, v
        if kh != nh:
            k_rep, v_rep = k.repeat_interleave(nh // kh, dim=1), v.repeat_interleave(nh // kh, dim=1)
        scores = torch.matmul(q, k_rep.transpose(2, 3)) * (hd ** -0.5) + bias
        y = torch.matmul(F.softmax(scores, dim=-1), v_rep)
        return block.attn.wo(y.transpose(1, 2).reshape(b, t, nh * hd)), k, v

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        eps = m.config.norm_eps
        x = m.tok_embeddings(input_ids)
        cos = m.rope_cos[position_ids].to(x.dtype)  # (B, T, 1, D / 2)
        sin = m.rope_sin[position_ids].to(x.dtype)
        bias = self._bias(attention_mask, input_ids.shape[1])
        presents: list[torch.Tensor] = []
        for i, block in enumerate(m.layers):
            out, k, v = self._attention(block, _rms_norm(x, block.attn_norm.weight, eps), cos, sin, bias,
                                        past[2 * i], past[2 * i + 1])
            x = x + out
            gate, up = block.mlp.w13(_rms_norm(x, block.mlp_norm.weight, eps)).chunk(2, dim=-1)
            x = x + block.mlp.w2(F.silu(gate) * up)
            presents += [k, v]
        logits = F.linear(_rms_norm(x, m.norm.weight, eps), m.output.head_weight())
        return (logits, *presents)


def empty_past(model: Transformer, batch: int, length: int = 0, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    cfg = model.config
    shape = (batch, cfg.kv_heads, length, cfg.head_dim)
    return [torch.zeros(shape, dtype=dtype) for _ in range(2 * cfg.n_layers)]
