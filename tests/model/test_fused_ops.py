"""The hand-written backward passes equal autograd's on the plain expressions they replace."""

import pytest
import torch
import torch.nn.functional as F

from model.configs import ModelConfig
from model.fused_ops import plain_rms_norm, plain_rotary_qkv, plain_swiglu, rms_norm, rotary_qkv, swiglu, use_fused_ops
from model.losses import linear_cross_entropy
from model.network import build_model, rope_tables


def _grads(fn, *inputs: torch.Tensor, seed: int = 3) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
    loss.backward()
    return torch.cat([o.reshape(-1) for o in outs]).detach(), [x.grad for x in leaves]


def _assert_same(fused, reference, atol: float) -> None:
    (out_f, grads_f), (out_r, grads_r) = fused, reference
    torch.testing.assert_close(out_f, out_r, atol=atol, rtol=0)
    for gf, gr in zip(grads_f, grads_r, strict=True):
        torch.testing.assert_close(gf, gr, atol=atol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rms_norm_matches_autograd(dtype):
    torch.manual_seed(0)
    x, w = torch.randn(3, 5, 32, dtype=dtype) * 3, torch.randn(32, dtype=dtype)
    fused = _grads(lambda a, b: rms_norm(a, b, 1e-5), x, w)
    formula = _grads(lambda a, b: b * (a * torch.rsqrt(a.pow(2).mean(-1, keepdim=True) + 1e-5)), x, w)
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    _assert_same(fused, formula, atol=atol)
    _assert_same(_grads(lambda a, b: plain_rms_norm(a, b, 1e-5), x, w), formula, atol=atol)


def test_rms_norm_gradcheck():
    torch.manual_seed(1)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: rms_norm(a, b, 1e-6), (x, w))


def test_swiglu_matches_autograd_and_returns_one_gradient_buffer():
    torch.manual_seed(2)
    gate_up = torch.randn(2, 7, 2 * 48)

    _assert_same(_grads(swiglu, gate_up), _grads(plain_swiglu, gate_up), atol=1e-6)
    gate, up = gate_up.chunk(2, dim=-1)
    torch.testing.assert_close(plain_swiglu(gate_up), gate * torch.sigmoid(gate) * up)
    assert torch.autograd.gradcheck(swiglu, (torch.randn(3, 8, dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize(("n_heads", "kv_heads"), [(4, 4), (4, 2)])
def test_rotary_qkv_matches_the_rotate_half_formulation(n_heads, kv_heads):
    torch.manual_seed(3)
    head_dim, t = 16, 9
    cos, sin = rope_tables(head_dim, t, 10000.0)
    qkv = torch.randn(2, t, (n_heads + 2 * kv_heads) * head_dim)
    fused = _grads(lambda x: rotary_qkv(x, cos, sin, n_heads, kv_heads), qkv)
    plain = _grads(lambda x: plain_rotary_qkv(x, cos, sin, n_heads, kv_heads), qkv)
    _assert_same(fused, plain, atol=1e-5)


def test_rotary_qkv_gradcheck():
    torch.manual_seed(4)
    cos, sin = (x.double() for x in rope_tables(4, 3, 10000.0))
    qkv = torch.randn(1, 3, (2 + 2 * 1) * 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: rotary_qkv(x, cos, sin, 2, 1), (qkv,))


@pytest.mark.parametrize("upstream", [1.0, 0.25])
def test_fused_cross_entropy_matches_autograd_for_any_upstream_gradient(upstream):
    torch.manual_seed(5)
    hidden, weight = torch.randn(37, 16), torch.randn(50, 16)
    targets = torch.randint(0, 50, (37,))
    targets[[3, 20]] = -100

    def fused(h, w):
        return linear_cross_entropy(h, w, targets, chunk=8) * upstream

    def plain(h, w):
        return F.cross_entropy(h @ w.t(), targets, ignore_index=-100) * upstream

    _assert_same(_grads(fused, hidden, weight), _grads(plain, hidden, weight), atol=1e-6)


def test_rms_norm_in_half_precision_on_cpu_takes_the_stock_path():
    x = torch.randn(2, 4, 16, dtype=torch.bfloat16, requires_grad=True)
    w = torch.ones(16, dtype=torch.bfloat16, requires_grad=True)
    rms_norm(x, w, 1e-5).sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(w.grad.float()).all()


def test_fused_cross_entropy_of_no_rows_has_zero_gradients():
    hidden = torch.randn(0, 8, requires_grad=True)
    weight = torch.randn(20, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(weight.grad, torch.zeros_like(weight))


def test_fused_ops_off_trains_through_the_plain_ops_to_the_same_gradients():
    config = ModelConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48, context=16)
    batch = torch.randint(0, 50, (2, 13), generator=torch.Generator().manual_seed(6))
    results = {}
    for mode in ("auto", "off"):
        torch.manual_seed(0)
        model = build_model(config)
        with use_fused_ops(mode):
            x = model.tok_embeddings(batch[:, :-1])
            normed = model.layers[0].attn_norm(x)
            loss = model(batch[:, :-1], batch[:, 1:])
        results[mode] = (type(normed.grad_fn).__name__, loss.detach(), torch.autograd.grad(loss, model.parameters()))
    assert "RMSNormCPU" in results["auto"][0] and "RMSNormCPU" not in results["off"][0]
    torch.testing.assert_close(results["auto"][1], results["off"][1], atol=1e-6, rtol=0)
    for fused, plain in zip(results["auto"][2], results["off"][2], strict=True):
        torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-5)


def test_unknown_fused_ops_mode_is_refused():
    with pytest.raises(ValueError, match="'auto' or 'off'"), use_fused_ops("fast"):
        pass
