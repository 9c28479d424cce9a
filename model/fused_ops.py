"""Hand-written backward passes for the element-wise parts of a block: RMSNorm, SwiGLU, rotary embeddings.

On CPU the matmuls run near the machine's peak, so what is left to win is memory traffic: every pass
over an activation costs about as much as its arithmetic. Autograd's generic backward of these ops
makes passes and buffers a fused kernel would not:
- ``F.rms_norm`` on CPU squares into a temporary before its mean, and its backward is composed of ~10
  element-wise ops (CUDA has fused kernels for both, so on GPU the stock op is kept);
- splitting the fused ``w13`` / ``wqkv`` projections makes autograd ``cat`` the gradients of the
  pieces into a new buffer; here each piece's gradient is written straight into its slice of one buffer;
- rotate-half RoPE through ``flip`` copies every q/k twice per step; here the halves are combined directly.
The plain autograd expressions they replace are here too (``plain_*``): ``fused_ops="off"`` in the training
config (:func:`use_fused_ops`) makes the network use them, so ``benchmarks/bench_train.py`` measures the gain
of the hand-written passes on its own, and ``tests/model/test_fused_ops.py`` checks each pair agrees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F

FusedMode = Literal["auto", "off"]
_mode: FusedMode = "auto"


@contextlib.contextmanager
def use_fused_ops(mode: FusedMode) -> Iterator[None]:
    """Within the block, ``auto`` uses the hand-written passes where they apply, ``off`` the plain ops."""
    global _mode
    if mode not in ("auto", "off"):
        raise ValueError(f"fused_ops must be 'auto' or 'off', got {mode!r}")
    previous, _mode = _mode, mode
    try:
        yield
    finally:
        _mode = previous


def plain_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def plain_swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def plain_rotary_qkv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_heads: int,
                     kv_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The textbook Llama formulation: full-width tables and ``rotate_half(x) = [-x2, x1]``."""
    b, t, _ = qkv.shape
    head_dim = 2 * cos.shape[-1]
    cos_full, sin_full = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
    q, k, v = qkv.split([n_heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)

    def rotate(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return (x * cos_full + torch.cat((-x2, x1), dim=-1) * sin_full).transpose(1, 2)

    return (rotate(q.view(b, t, n_heads, head_dim)), rotate(k.view(b, t, kv_heads, head_dim)),
            v.view(b, t, kv_heads, head_dim).transpose(1, 2))


class _RMSNormCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        # one reduction pass (the stock CPU forward squares into a temporary, then takes the mean)
        rstd = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.shape[-1]).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, rstd)
        return torch.mul(x, rstd).mul_(weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # y = x * r * w with r = (mean(x^2) + eps)^-1/2 per row:
        #   dw = sum_rows(g * x * r),  dx = r * g * w - x * r^3 * sum_cols(g * w * x) / D
        x, weight, rstd = ctx.saved_tensors
        dim = x.shape[-1]
        x2, g2, r = x.reshape(-1, dim), grad.reshape(-1, dim), rstd.reshape(-1)
        buf = g2 * x2
        grad_weight = buf.t() @ r  # matrix-vector products: one read of the buffer, no temporary
        coef = ((buf @ weight) * r.pow(3)).div_(-dim)
        torch.mul(g2, weight, out=buf).mul_(r[:, None]).addcmul_(x2, coef[:, None])
        return buf.view_as(x), grad_weight, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``F.rms_norm`` over the last dimension, with a one-buffer backward on CPU in fp32/fp64."""
    if (_mode == "auto" and x.device.type == "cpu" and torch.is_grad_enabled() and x.dtype == weight.dtype
            and x.dtype in (torch.float32, torch.float64)):
        return _RMSNormCPU.apply(x, weight, eps)
    return plain_rms_norm(x, weight, eps)


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        act = F.silu(gate)
        ctx.save_for_backward(gate_up, act)
        return act * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate_up, act = ctx.saved_tensors
        out = torch.empty_like(gate_up)
        d_gate, d_up = out.chunk(2, dim=-1)
        gate, up = gate_up.chunk(2, dim=-1)
        torch.mul(grad, act, out=d_up)
        torch.mul(grad, up, out=d_gate)
        torch.ops.aten.silu_backward(d_gate, gate, grad_input=d_gate)  # same memory in and out: element-wise
        return out


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` of the fused projection's output ``[gate | up]``; its gradient is one buffer."""
    return _SwiGLU.apply(gate_up) if _mode == "auto" else plain_swiglu(gate_up)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor, sign: float) -> None:
    """``out = x * cos + sign * rotate_half(x) * sin`` on the halves, with ``cos``/``sin`` half-width."""
    x1, x2 = x.chunk(2, dim=-1)
    o1, o2 = out.chunk(2, dim=-1)
    torch.mul(x1, cos, out=o1).addcmul_(x2, sin, value=-sign)
    torch.mul(x2, cos, out=o2).addcmul_(x1, sin, value=sign)


class _RotaryQKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_heads: int, kv_heads: int):
        b, t, _ = qkv.shape
        head_dim = cos.shape[-1] * 2
        qk_heads = n_heads + kv_heads
        qk_in = qkv[..., : qk_heads * head_dim].view(b, t, qk_heads, head_dim)
        qk = torch.empty(b, t, qk_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
        _rotate(qk_in, cos, sin, qk, 1.0)
        v = qkv[..., qk_heads * head_dim :].view(b, t, kv_heads, head_dim)
        ctx.save_for_backward(cos, sin)
        ctx.shape = (b, t, n_heads, kv_heads, head_dim)
        q, k = qk.transpose(1, 2).split([n_heads, kv_heads], dim=1)
        return q, k, v.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad_q: torch.Tensor, grad_k: torch.Tensor, grad_v: torch.Tensor):
        cos, sin = ctx.saved_tensors
        b, t, n_heads, kv_heads, head_dim = ctx.shape
        out = torch.empty(b, t, (n_heads + 2 * kv_heads) * head_dim, dtype=grad_q.dtype, device=grad_q.device)
        q_out, k_out, v_out = out.split([n_heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
        # the rotation is orthogonal: its transpose is the rotation by -angle
        _rotate(grad_q.transpose(1, 2), cos, sin, q_out.view(b, t, n_heads, head_dim), -1.0)
        _rotate(grad_k.transpose(1, 2), cos, sin, k_out.view(b, t, kv_heads, head_dim), -1.0)
        v_out.view(b, t, kv_heads, head_dim).copy_(grad_v.transpose(1, 2))
        return out, None, None, None, None


def rotary_qkv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_heads: int,
               kv_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split the fused projection (B, T, (H + 2K) * D) into q (B, H, T, D), k and v (B, K, T, D), with q and k
    rotated by position. ``cos``/``sin`` are half-width (T, 1, D / 2) tables (both halves share frequencies)."""
    if _mode == "off":
        return plain_rotary_qkv(qkv, cos, sin, n_heads, kv_heads)
    return _RotaryQKV.apply(qkv, cos, sin, n_heads, kv_heads)
