"""The network: shapes, causality, KV-cache decoding, parameter counts, fused loss, overfitting."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from model.configs import NAMED_CONFIGS, ModelConfig, get_config
from model.losses import linear_cross_entropy
from model.network import KVCache, build_model

SMALL = ModelConfig(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96, context=32)


def small_model(dropout=0.0, activation_checkpointing=False, **overrides):
    torch.manual_seed(0)
    return build_model(dataclasses.replace(SMALL, **overrides), dropout=dropout,
                       activation_checkpointing=activation_checkpointing).eval()


def test_logits_shape_and_loss_is_scalar():
    model = small_model()
    idx = torch.randint(0, 97, (3, 20))
    assert model(idx).shape == (3, 20, 97)
    loss = model(idx, idx)
    assert loss.shape == () and torch.isfinite(loss)


@pytest.mark.parametrize("kv_heads", [None, 2, 1])
def test_changing_a_future_token_changes_no_earlier_logit(kv_heads):
    model = small_model(n_kv_heads=kv_heads)
    idx = torch.randint(0, 97, (2, 24))
    changed = idx.clone()
    changed[:, 15] = (changed[:, 15] + 1) % 97
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert torch.equal(a[:, :15], b[:, :15])
    assert not torch.allclose(a[:, 15:], b[:, 15:])


def test_kv_cache_decoding_equals_full_forward():
    model = small_model()
    idx = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(model.config, batch=2)
        steps = [model(idx[:, :8], cache=cache, start_pos=0)]  # prefill a prefix
        steps.append(model(idx[:, 8:11], cache=cache, start_pos=8))  # a multi-token chunk
        steps += [model(idx[:, p : p + 1], cache=cache, start_pos=p) for p in range(11, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_sequence_longer_than_context_is_refused():
    with pytest.raises(ValueError, match="context length"):
        small_model()(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize(("name", "target"), [("1b", 1e9), ("7b", 7e9), ("30b", 30e9)])
def test_large_configs_on_meta_device_count_within_3_percent(name, target):
    model = build_model(get_config(name), device="meta")
    count = model.num_params()
    assert count == get_config(name).num_params()
    assert abs(count - target) / target < 0.03
    assert next(model.parameters()).device.type == "meta"


@pytest.mark.parametrize("name", ["tiny", "20m"])
def test_small_config_counts_match_formula(name):
    model = build_model(NAMED_CONFIGS[name], device="meta")
    assert model.num_params() == NAMED_CONFIGS[name].num_params()


def test_tied_head_shares_the_embedding():
    model = small_model(tie_embeddings=True)
    assert model.output.head_weight() is model.tok_embeddings.weight
    assert model.num_params() == model.config.num_params()


def test_unknown_config_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model config 'huge'"):
        get_config("huge")


def test_fused_cross_entropy_matches_reference_values_and_gradients():
    torch.manual_seed(1)
    h = torch.randn(50, 16, requires_grad=True)
    w = torch.randn(40, 16, requires_grad=True)
    t = torch.randint(0, 40, (50,))
    t[3] = -100
    loss = linear_cross_entropy(h, w, t, chunk=7)
    loss.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = F.cross_entropy(h @ w.t(), t, ignore_index=-100)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(gh, h.grad)
    torch.testing.assert_close(gw, w.grad)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_tiny_model_overfits_a_tiny_batch(checkpointing):
    model = small_model(dropout=0.1, activation_checkpointing=checkpointing).train()
    torch.manual_seed(2)
    batch = torch.randint(0, 97, (4, 17))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = model(batch[:, :-1], batch[:, 1:])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 4.0 and loss.item() < 0.3
