"""Hugging Face Llama format in and out: ``config.json`` + safetensors with Llama tensor names (import also
reads llama.cpp ``.gguf`` files, through `model.gguf_reader`).

Our layout already matches Llama's (rotate-half rotary), so conversion is a rename plus splitting the
fused ``wqkv`` / ``w13`` projections (and concatenating them on import). Pickled checkpoints
(``pytorch_model.bin``) are refused: only safetensors are read. A config asking for what the network does not
implement (mixture of experts, sliding windows, query/key norms, biases, another rope scaling or model type) is
refused with the field named, never silently imported as something else.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmforge_core.fileio import atomic_path, atomic_write
from model.configs import ModelConfig, RopeScaling
from model.gguf_reader import read_gguf
from model.hf_tokenizer import (
    ROLES,
    TOKENIZER_FILE,
    read_hf_tokenizer,
    special_ids,
    tokenizer_record,
    write_hf_tokenizer,
)
from model.tokenizer import TokenizerRef
from model.weights import WeightsError, load_state_dict, save_weights

HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"


def _rope_parameters(config: ModelConfig) -> dict[str, Any]:
    scaling = dataclasses.asdict(config.rope_scaling) if config.rope_scaling else {}
    return {"rope_type": "llama3" if scaling else "default", "rope_theta": config.rope_theta} | scaling


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
        "rope_parameters": _rope_parameters(config),
        "rope_scaling": _rope_parameters(config) if config.rope_scaling else None,  # transformers 4 reads this
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


# fields of other architectures' configs that name something this network does not implement
UNSUPPORTED_FIELDS = {
    "num_local_experts": "mixture of experts", "num_experts": "mixture of experts",
    "n_routed_experts": "mixture of experts", "num_experts_per_tok": "mixture of experts",
    "sliding_window": "sliding-window attention", "use_sliding_window": "sliding-window attention",
    "qk_norm": "query/key normalisation", "use_qk_norm": "query/key normalisation",
    "qk_layernorm": "query/key normalisation", "attention_bias": "attention projection biases",
    "mlp_bias": "MLP biases",
}


def _refuse_unsupported(cfg: dict[str, Any], source: str) -> None:
    """Refuse, naming the field, a config that asks for something the network does not implement."""
    if cfg.get("model_type") != "llama":
        raise WeightsError(f"{source}: model_type {cfg.get('model_type')!r} is not supported (only 'llama')")
    for field, what in UNSUPPORTED_FIELDS.items():
        if cfg.get(field) not in (None, False, 0):
            raise WeightsError(f"{source}: {field} = {cfg[field]!r} asks for {what}, which lmforge's network "
                               "does not implement")
    if cfg.get("hidden_act", "silu") != "silu":
        raise WeightsError(f"{source}: hidden_act {cfg['hidden_act']!r} is not supported (only 'silu')")
    dim, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    if cfg.get("head_dim") not in (None, dim // heads):
        raise WeightsError(f"{source}: head_dim {cfg['head_dim']} != hidden_size / num_attention_heads "
                           f"({dim // heads}); not supported")


def rope_from_hf(cfg: dict[str, Any], source: str) -> tuple[float, RopeScaling | None]:
    """(theta, scaling) from ``rope_theta`` + ``rope_scaling`` (transformers 4) or ``rope_parameters`` (5)."""
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    theta = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise WeightsError(f"{source}: rope_scaling.rope_type {kind!r} is not supported (only 'default', 'llama3')")
    try:
        return theta, RopeScaling(float(rope["factor"]), float(rope["low_freq_factor"]),
                                  float(rope["high_freq_factor"]), int(rope["original_max_position_embeddings"]))
    except KeyError as exc:
        raise WeightsError(f"{source}: llama3 rope_scaling lacks {exc.args[0]!r}") from None


def config_from_hf(cfg: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Our shape of a Hugging Face LlamaConfig; anything the network does not implement is refused by name."""
    _refuse_unsupported(cfg, source)
    theta, scaling = rope_from_hf(cfg, source)
    heads = cfg["num_attention_heads"]
    return ModelConfig(
        vocab_size=cfg["vocab_size"], dim=cfg["hidden_size"], n_layers=cfg["num_hidden_layers"], n_heads=heads,
        n_kv_heads=cfg.get("num_key_value_heads") or heads, ffn_hidden=cfg["intermediate_size"],
        context=cfg.get("max_position_embeddings", 2048), norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope_theta=theta, rope_scaling=scaling, tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        init_std=cfg.get("initializer_range", 0.02),
    )


def to_hf_state_dict(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    q, kv = config.n_heads * config.head_dim, config.kv_heads * config.head_dim
    out = {"model.embed_tokens.weight": state["tok_embeddings.weight"], "model.norm.weight": state["norm.weight"]}
    if not config.tie_embeddings:
        out["lm_head.weight"] = state["output.weight"]
    for i in range(config.n_layers):
        src, dst = f"layers.{i}.", f"model.layers.{i}."
        wq, wk, wv = state[src + "attn.wqkv.weight"].split([q, kv, kv], dim=0)
        gate, up = state[src + "mlp.w13.weight"].split(config.hidden, dim=0)
        out |= {
            dst + "self_attn.q_proj.weight": wq, dst + "self_attn.k_proj.weight": wk,
            dst + "self_attn.v_proj.weight": wv, dst + "self_attn.o_proj.weight": state[src + "attn.wo.weight"],
            dst + "mlp.gate_proj.weight": gate, dst + "mlp.up_proj.weight": up,
            dst + "mlp.down_proj.weight": state[src + "mlp.w2.weight"],
            dst + "input_layernorm.weight": state[src + "attn_norm.weight"],
            dst + "post_attention_layernorm.weight": state[src + "mlp_norm.weight"],
        }
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
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        out[dst + "attn.wqkv.weight"] = torch.cat(
            [take(src + f"self_attn.{p}_proj.weight") for p in ("q", "k", "v")], dim=0)
        out[dst + "attn.wo.weight"] = take(src + "self_attn.o_proj.weight")
        out[dst + "mlp.w13.weight"] = torch.cat(
            [take(src + "mlp.gate_proj.weight"), take(src + "mlp.up_proj.weight")], dim=0)
        out[dst + "mlp.w2.weight"] = take(src + "mlp.down_proj.weight")
        out[dst + "attn_norm.weight"] = take(src + "input_layernorm.weight")
        out[dst + "mlp_norm.weight"] = take(src + "post_attention_layernorm.weight")
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


def _safetensors_files(hf_dir: Path) -> list[str]:
    if (hf_dir / HF_INDEX).is_file():
        files = sorted(set(json.loads((hf_dir / HF_INDEX).read_text())["weight_map"].values()))
    elif (hf_dir / HF_WEIGHTS).is_file():
        files = [HF_WEIGHTS]
    else:
        raise WeightsError(
            f"{hf_dir} has no {HF_WEIGHTS} or {HF_INDEX}; pickled checkpoints (pytorch_model.bin) are not "
            "loaded for safety: convert them to safetensors first")
    for name in files:
        if Path(name).name != name:
            raise WeightsError(f"{hf_dir / HF_INDEX}: shard name {name!r} is not a plain file name")
    return files


def read_hf(hf_dir: Path) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """Our state dict and config from a Llama checkpoint directory (single file or sharded)."""
    hf_dir = Path(hf_dir)
    cfg_path = hf_dir / "config.json"
    if not cfg_path.is_file():
        raise WeightsError(f"{cfg_path} does not exist: not a Hugging Face checkpoint directory")
    config = config_from_hf(json.loads(cfg_path.read_text()), str(cfg_path))
    tensors: dict[str, torch.Tensor] = {}
    for name in _safetensors_files(hf_dir):
        tensors |= load_file(str(hf_dir / name))
    state = from_hf_state_dict({k: v.float() for k, v in tensors.items()}, config, str(hf_dir))
    return state, config


def _import_folder(hf_dir: Path, out_dir: Path) -> tuple[dict[str, torch.Tensor], ModelConfig, dict | None]:
    state, config = read_hf(hf_dir)
    hf_cfg = json.loads((hf_dir / "config.json").read_text())
    tokenizer = read_hf_tokenizer(hf_dir, hf_cfg, config.vocab_size)
    if tokenizer is not None:
        atomic_write(out_dir / TOKENIZER_FILE, (hf_dir / TOKENIZER_FILE).read_bytes())
    return state, config, tokenizer


def _import_gguf(path: Path, out_dir: Path) -> tuple[dict[str, torch.Tensor], ModelConfig, dict | None]:
    checkpoint = read_gguf(path)
    config = config_from_hf(checkpoint.config, str(path))
    state = from_hf_state_dict(checkpoint.tensors, config, str(path))
    tok_path = out_dir / TOKENIZER_FILE
    atomic_write(tok_path, checkpoint.tokenizer.to_str())
    declared = {role: checkpoint.config.get(f"{role}_token_id") for role in ROLES}
    record = tokenizer_record(checkpoint.tokenizer, tok_path, checkpoint.special_tokens, declared,
                              checkpoint.chat_template)
    return state, config, record


def import_hf(source: Path, out_dir: Path) -> str:
    """Convert a Llama checkpoint (a Hugging Face folder of safetensors, or a ``.gguf`` file) into an lmforge
    weights directory; returns the weights' sha256.

    The model's tokenizer (the folder's ``tokenizer.json``, or the one a GGUF file embeds) is written beside
    the weights and recorded under ``tokenizer`` in our ``config.json``: file sha256, special tokens and ids
    (checked against the model's config) and the chat template.
    """
    source, out_dir = Path(source), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if source.is_file() and source.suffix == ".gguf":
        state, config, tokenizer = _import_gguf(source, out_dir)
    elif source.is_dir():
        state, config, tokenizer = _import_folder(source, out_dir)
    else:
        raise WeightsError(f"{source} is neither a Hugging Face checkpoint folder nor a .gguf file")
    extra: dict[str, Any] = {"imported_from": str(source.resolve())}
    if tokenizer is not None:
        extra["tokenizer"] = tokenizer
    return save_weights(state, config, out_dir, extra=extra)
