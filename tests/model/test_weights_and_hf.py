"""Safetensors weights with sha256 checks, and the Hugging Face Llama round trip."""

import json

import pytest
import torch
import transformers

from model.configs import ModelConfig
from model.hf_interop import export_hf, import_hf
from model.network import build_model
from model.weights import WeightsError, WeightsIntegrityError, load_model, save_model

CONFIGS = [
    ModelConfig(vocab_size=101, dim=64, n_layers=2, n_heads=4, ffn_hidden=96, context=48),
    ModelConfig(vocab_size=101, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96, context=48,
                tie_embeddings=True, rope_theta=500000.0),
]


def random_model(config):
    torch.manual_seed(3)
    model = build_model(config)
    with torch.no_grad():  # perturb norms too, so a wrong norm mapping cannot pass
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def test_save_and_load_roundtrip_is_exact(tmp_path):
    model = random_model(CONFIGS[0])
    save_model(model, tmp_path / "w")
    loaded = load_model(tmp_path / "w")
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_tampered_weights_fail_with_a_clear_error(tmp_path):
    save_model(random_model(CONFIGS[0]), tmp_path / "w")
    path = tmp_path / "w" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match=r"model\.safetensors: sha256 .* does not match"):
        load_model(tmp_path / "w")


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="not an lmforge weights directory"):
        load_model(tmp_path / "nope")


@pytest.mark.parametrize("config", CONFIGS, ids=["mha-untied", "gqa-tied"])
def test_export_matches_transformers_llama_and_imports_back(tmp_path, config):
    model = random_model(config)
    save_model(model, tmp_path / "ours")
    export_hf(tmp_path / "ours", tmp_path / "hf")
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    idx = torch.randint(0, config.vocab_size, (2, 40))
    with torch.no_grad():
        ours, theirs = model(idx), hf(idx).logits
    assert (ours - theirs).abs().max().item() < 1e-4

    import_hf(tmp_path / "hf", tmp_path / "back")
    back = load_model(tmp_path / "back")
    for (k, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_import_of_a_transformers_saved_model_gives_the_same_logits(tmp_path):
    cfg = transformers.LlamaConfig(vocab_size=120, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
                                   num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=64)
    torch.manual_seed(4)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "ours")
    model = load_model(tmp_path / "ours").eval()
    idx = torch.randint(0, 120, (1, 30))
    with torch.no_grad():
        assert (model(idx) - hf(idx).logits).abs().max().item() < 1e-4


def test_import_refuses_pickle_only_checkpoints(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64,
                                                       "num_attention_heads": 4, "num_hidden_layers": 1,
                                                       "intermediate_size": 64, "vocab_size": 10}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(WeightsError, match="pickled checkpoints"):
        import_hf(tmp_path, tmp_path / "out")
