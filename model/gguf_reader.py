"""Read a llama.cpp ``.gguf`` file of a Llama-architecture model as a Hugging Face checkpoint would be read:
a ``config.json``-style dict, tensors under Hugging Face Llama names (dequantized to fp32), and the tokenizer
the file embeds (vocabulary, merges, special tokens, chat template), rebuilt as a `tokenizers` tokenizer.

llama.cpp stores the query and key projections with their rows permuted for its interleaved rotary layout;
they are permuted back here (as transformers does when it loads a GGUF file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from model.weights import WeightsError

# GGUF metadata key (after the ``<arch>.`` prefix) -> Hugging Face LlamaConfig field
CONFIG_KEYS = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "rope.freq_base": "rope_theta",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
}
# features a Llama-architecture GGUF file may declare that the network does not implement
REFUSED_KEYS = {"expert_count": "mixture of experts", "attention.sliding_window": "sliding-window attention",
                "rope.scaling.type": "rope scaling"}
LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
CONTROL_TOKEN = 3  # llama.cpp's token type of special (control) tokens
SPECIAL_ROLES = {"bos": "bos_token_id", "eos": "eos_token_id", "pad": "padding_token_id"}


@dataclass
class GgufCheckpoint:
    """What a GGUF file holds, in Hugging Face terms."""

    config: dict[str, Any]  # LlamaConfig fields
    tensors: dict[str, torch.Tensor]  # Hugging Face Llama names, fp32
    tokenizer: Tokenizer
    special_tokens: dict[str, str]  # role (bos, eos, pad) -> token text
    chat_template: str | None


def _open(path: Path) -> Any:
    try:
        from gguf import GGUFReader
    except ImportError as exc:  # declared as a dependency; a broken environment is named, not a traceback
        raise WeightsError("reading .gguf files needs the `gguf` package: pip install gguf") from exc
    try:
        return GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise WeightsError(f"{path} is not a readable GGUF file: {exc}") from exc


def _metadata(reader: Any) -> dict[str, Any]:
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


def gguf_config(meta: dict[str, Any], source: str) -> dict[str, Any]:
    """The LlamaConfig fields of a GGUF file's metadata; refuses what the network does not implement."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise WeightsError(f"{source}: general.architecture {arch!r} is not supported (only 'llama')")
    for key, what in REFUSED_KEYS.items():
        if meta.get(f"llama.{key}") not in (None, 0, "none"):
            raise WeightsError(f"{source}: llama.{key} = {meta[f'llama.{key}']!r} ({what}) is not supported")
    config: dict[str, Any] = {"model_type": "llama", "hidden_act": "silu"}
    for key, field in CONFIG_KEYS.items():
        if f"llama.{key}" in meta:
            config[field] = meta[f"llama.{key}"]
    missing = [f"llama.{k}" for k in ("embedding_length", "block_count", "feed_forward_length",
                                      "attention.head_count") if f"llama.{k}" not in meta]
    if missing:
        raise WeightsError(f"{source}: metadata {', '.join(missing)} missing; not a complete Llama GGUF file")
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    for key in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        if meta.get(f"llama.{key}") not in (None, head_dim):
            raise WeightsError(f"{source}: llama.{key} = {meta[f'llama.{key}']} differs from the head dimension "
                               f"{head_dim} (embedding_length / head_count); not supported")
    for role, key in SPECIAL_ROLES.items():
        config[f"{role}_token_id"] = meta.get(f"tokenizer.ggml.{key}")
    return config


def _unpermute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's row permutation of a query or key projection (``heads`` of its own)."""
    w = weight.reshape(heads, weight.shape[0] // heads // 2, 2, *weight.shape[1:])
    return w.swapaxes(1, 2).reshape(weight.shape)


def _hf_name(name: str, source: str) -> str:
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in LAYER_NAMES:
        return f"model.layers.{parts[1]}.{LAYER_NAMES[parts[2]]}.{parts[3]}"
    raise WeightsError(f"{source}: tensor {name!r} is not part of a Llama network (refused, not ignored)")


def gguf_tensors(reader: Any, config: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """Every tensor of the file, dequantized to fp32, under its Hugging Face name."""
    from gguf.quants import dequantize

    out: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        weight = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        if tensor.name.endswith("attn_q.weight"):
            weight = _unpermute(weight, config["num_attention_heads"])
        elif tensor.name.endswith("attn_k.weight"):
            weight = _unpermute(weight, config.get("num_key_value_heads") or config["num_attention_heads"])
        out[_hf_name(tensor.name, source)] = torch.from_numpy(weight.copy())
    if "model.embed_tokens.weight" not in out:
        raise WeightsError(f"{source}: tensor 'token_embd.weight' is missing")
    config["tie_word_embeddings"] = "lm_head.weight" not in out
    config["vocab_size"] = out["model.embed_tokens.weight"].shape[0]  # the rows, as transformers reads them
    return out


def gguf_tokenizer(meta: dict[str, Any], source: str) -> Tokenizer:
    """The byte-level BPE tokenizer embedded in the file (``tokenizer.ggml.model = "gpt2"``), built the way
    transformers builds it from a GGUF file; its control tokens are special tokens."""
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise WeightsError(f"{source}: tokenizer.ggml.model {kind!r} is not supported (only byte-level BPE, 'gpt2')")
    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    tokenizer = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    types = meta.get("tokenizer.ggml.token_type") or []
    tokenizer.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                                  for i, kind in enumerate(types) if kind == CONTROL_TOKEN])
    return tokenizer


def read_gguf(path: Path) -> GgufCheckpoint:
    """Config, fp32 tensors and tokenizer of a Llama-architecture GGUF file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    reader = _open(path)
    meta = _metadata(reader)
    config = gguf_config(meta, str(path))
    tensors = gguf_tensors(reader, config, str(path))
    tokenizer = gguf_tokenizer(meta, str(path))
    special = {role: tokenizer.id_to_token(config[f"{role}_token_id"]) for role in SPECIAL_ROLES
               if config.get(f"{role}_token_id") is not None}
    return GgufCheckpoint(config, tensors, tokenizer, special, meta.get("tokenizer.chat_template"))
