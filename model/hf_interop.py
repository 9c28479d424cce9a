"""Hugging Face Llama format in and out: ``config.json`` + safetensors with Llama tensor names.

Our layout already matches Llama's (rotate-half rotary), so conversion is a rename plus splitting the
fused ``wqkv`` / ``w13`` projections (and concatenating them on import). Pickled checkpoints
(``pytorch_model.bin``) are refused: only safetensors are read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmforge_core.fileio import atomic_path, atomic_write
from model.configs import ModelConfig
from model.hf_tokenizer import TOKENIZER_FILE, read_hf_tokenizer, special_ids, write_hf_tokenizer
from model.tokenizer import TokenizerRef
from model.weights import WeightsError, load_state_dict, save_weights

HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"


def hf_config(config: ModelConfig, special_tokens: dict[str, int] | None = None) -> dict[str, Any]:
    tokens = special_tokens or {}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "intermediate_size": config.hidden,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.context,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "tie_word_embeddings": config.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": config.init_std,
        "torch_dtype": "float32",
        "bos_token_id": tokens.get("bos_id"),
        "eos_token_id": tokens.get("eos_id"),
        "pad_token_id": tokens.get("pad_id"),
    }


def config_from_hf(cfg: dict[str, Any], source: str = "config.json") -> ModelConfig:
    if cfg.get("model_type") != "llama":
        raise WeightsError(f"{source}: model_type {cfg.get('model_type')!r} is not 'llama'")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise WeightsError(f"{source}: rope scaling {rope.get('rope_type') or rope.get('type')!r} is not supported")
    if cfg.get("hidden_act", "silu") != "silu" or cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise WeightsError(f"{source}: only silu activations without biases are supported")
    dim, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    if cfg.get("head_dim") not in (None, dim // heads):
        raise WeightsError(f"{source}: head_dim {cfg['head_dim']} != hidden_size / num_attention_heads")
    return ModelConfig(
        vocab_size=cfg["vocab_size"], dim=dim, n_layers=cfg["num_hidden_layers"], n_heads=heads,
        n_kv_heads=cfg.get("num_key_value_heads") or heads, ffn_hidden=cfg["intermediate_size"],
        context=cfg.get("max_position_embeddings", 2048), norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope_theta=rope.get("rope_theta", cfg.get("rope_theta", 10000.0)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        init_std=cfg.get("initializer_range", 0.02),
    )


# One block's modules: ours -> the Hugging Face Llama modules it holds, in the order a fused projection
# stacks them (rows of ``wqkv`` are q, k, v; rows of ``w13`` are gate, up). Weights and LoRA adapters
# (model/adapters.py) are renamed through this one table.
LAYER_MODULES: dict[str, tuple[str, ...]] = {
    "attn.wqkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attn.wo": ("self_attn.o_proj",),
    "mlp.w13": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.w2": ("mlp.down_proj",),
    "attn_norm": ("input_layernorm",),
    "mlp_norm": ("post_attention_layernorm",),
}


def fused_sizes(module: str, config: ModelConfig) -> list[int]:
    """Output rows of each Hugging Face part of one of our fused projections (``attn.wqkv``, ``mlp.w13``)."""
    q, kv = config.n_heads * config.head_dim, config.kv_heads * config.head_dim
    return {"attn.wqkv": [q, kv, kv], "mlp.w13": [config.hidden, config.hidden]}[module]


def to_hf_state_dict(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    out = {"model.embed_tokens.weight": state["tok_embeddings.weight"], "model.norm.weight": state["norm.weight"]}
    if not config.tie_embeddings:
        out["lm_head.weight"] = state["output.weight"]
    for i in range(config.n_layers):
        for ours, theirs in LAYER_MODULES.items():
            weight = state[f"layers.{i}.{ours}.weight"]
            parts = weight.split(fused_sizes(ours, config), dim=0) if len(theirs) > 1 else (weight,)
            out |= {f"model.layers.{i}.{name}.weight": part for name, part in zip(theirs, parts, strict=True)}
    return {k: v.contiguous() for k, v in out.items()}


def from_hf_state_dict(hf: dict[str, torch.Tensor], config: ModelConfig, source: str) -> dict[str, torch.Tensor]:
    def take(name: str) -> torch.Tensor:
        try:
            return hf[name]
        except KeyError:
            raise WeightsError(f"{source}: tensor {name!r} is missing") from None

    out = {"tok_embeddings.weight": take("model.embed_tokens.weight"), "norm.weight": take("model.norm.weight")}
    if not config.tie_embeddings:
        out["output.weight"] = take("lm_head.weight")
    for i in range(config.n_layers):
        for ours, theirs in LAYER_MODULES.items():
            parts = [take(f"model.layers.{i}.{name}.weight") for name in theirs]
            out[f"layers.{i}.{ours}.weight"] = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
    return out


def export_hf(weights_dir: Path, out_dir: Path, tokenizer: TokenizerRef | None = None) -> Path:
    """Write an lmforge weights directory as a Hugging Face Llama checkpoint (loads with transformers);
    with ``tokenizer`` the folder is complete: tokenizer files and special token ids in the configs."""
    state, config = load_state_dict(weights_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        if tokenizer.vocab_size > config.vocab_size:
            raise WeightsError(f"tokenizer {tokenizer.version} has {tokenizer.vocab_size} tokens, the model "
                               f"{config.vocab_size}: they do not belong together")
        write_hf_tokenizer(tokenizer, out_dir, config.context)
    tokens = special_ids(tokenizer) if tokenizer is not None else {}
    with atomic_path(out_dir / HF_WEIGHTS) as tmp:
        save_file(to_hf_state_dict(state, config), str(tmp), metadata={"format": "pt"})
    atomic_write(out_dir / "config.json", json.dumps(hf_config(config, tokens), indent=2))
    generation = {"do_sample": False} | {f"{k[:-3]}_token_id": v for k, v in tokens.items()}
    atomic_write(out_dir / "generation_config.json", json.dumps(generation, indent=2))
    return out_dir


def read_hf(hf_dir: Path) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """Our state dict and config from a Llama checkpoint directory (single file or sharded)."""
    hf_dir = Path(hf_dir)
    cfg_path = hf_dir / "config.json"
    if not cfg_path.is_file():
        raise WeightsError(f"{cfg_path} does not exist: not a Hugging Face checkpoint directory")
    config = config_from_hf(json.loads(cfg_path.read_text()), str(cfg_path))
    if (hf_dir / HF_INDEX).is_file():
        index = json.loads((hf_dir / HF_INDEX).read_text())
        files = sorted(set(index["weight_map"].values()))
    elif (hf_dir / HF_WEIGHTS).is_file():
        files = [HF_WEIGHTS]
    else:
        raise WeightsError(
            f"{hf_dir} has no {HF_WEIGHTS} or {HF_INDEX}; pickled checkpoints (pytorch_model.bin) are not "
            "loaded for safety: convert them to safetensors first")
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        if Path(name).name != name:
            raise WeightsError(f"{hf_dir / HF_INDEX}: shard name {name!r} is not a plain file name")
        tensors |= load_file(str(hf_dir / name))
    state = from_hf_state_dict({k: v.float() for k, v in tensors.items()}, config, str(hf_dir))
    return state, config


def import_hf(hf_dir: Path, out_dir: Path) -> str:
    """Convert a Llama checkpoint into an lmforge weights directory; returns the weights' sha256.

    A ``tokenizer.json`` in the folder is checked against the config's special token ids, copied beside
    the weights and recorded (sha256, special tokens and ids) under ``tokenizer`` in our ``config.json``.
    """
    state, config = read_hf(hf_dir)
    hf_cfg = json.loads((Path(hf_dir) / "config.json").read_text())
    tokenizer = read_hf_tokenizer(Path(hf_dir), hf_cfg, config.vocab_size)
    extra: dict[str, Any] = {"imported_from": str(Path(hf_dir).resolve())}
    if tokenizer is not None:
        atomic_write(Path(out_dir) / TOKENIZER_FILE, (Path(hf_dir) / TOKENIZER_FILE).read_bytes())
        extra["tokenizer"] = tokenizer
    return save_weights(state, config, out_dir, extra=extra)
