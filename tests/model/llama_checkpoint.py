"""Tiny Llama-family checkpoints built with transformers, shaped like the open models people keep current
(grouped-query attention, tied embeddings, rope theta != 10,000, a tokenizer of their own with a chat template),
saved as Hugging Face folders. ``pretrain`` teaches one the sample text first, so that its own loss on that text
is far below ln(vocabulary): what a continued model must start from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tasks.ingest.sample import write_sample

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SHAPE = {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 128}


def sample_texts(root: Path, days: int = 1, docs_per_drop: int = 30) -> tuple[Path, list[str]]:
    """The built-in sample source (``days`` drops) and the texts of its documents."""
    sample = root / "sample"
    write_sample(sample, days, docs_per_drop=docs_per_drop)
    texts = [json.loads(line)["text"] for path in sorted(sample.rglob("*.jsonl"))
             for line in path.read_text().splitlines()]
    return sample, texts


def own_tokenizer(texts: list[str], vocab_size: int = 320) -> Tokenizer:
    """A byte-level BPE with ChatML-style special tokens, unlike the house tokenizer's."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, folder: Path) -> Any:
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                 unk_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)
    hf.save_pretrained(folder)
    return hf


def llama_config(vocab_size: int, **fields: Any) -> Any:
    from transformers import LlamaConfig

    fields = {"tie_word_embeddings": True, "rope_theta": 50_000.0, "bos_token_id": 1, "eos_token_id": 2} | fields
    rope = fields.pop("rope_scaling", None) or {"rope_type": "default"}
    rope_parameters = rope | {"rope_theta": fields.pop("rope_theta")}
    return LlamaConfig(vocab_size=vocab_size, rope_parameters=rope_parameters, **SHAPE | fields)


def windows(tokenizer: Tokenizer, texts: list[str], length: int = 64) -> torch.Tensor:
    eos = tokenizer.token_to_id("<|im_end|>")
    stream = [t for text in texts for t in [*tokenizer.encode(text, add_special_tokens=False).ids, eos]]
    n = len(stream) // length
    return torch.tensor(stream[: n * length]).view(n, length)


def pretrain(model: Any, data: torch.Tensor, steps: int = 120, seed: int = 0) -> float:
    """A few AdamW steps of transformers' own training on ``data``; returns the last loss."""
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        batch = data[torch.randint(len(data), (8,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return float(loss.detach())


def build_llama(folder: Path, texts: list[str], *, pretrain_steps: int = 0, seed: int = 0,
                max_shard_size: str | None = None, **config: Any) -> Any:
    """Save a tiny LlamaForCausalLM (random, or ``pretrain_steps`` steps on ``texts``) and its tokenizer in
    ``folder``; returns the transformers model (eval mode)."""
    from transformers import LlamaForCausalLM

    tokenizer = own_tokenizer(texts)
    hf_tok = save_tokenizer(tokenizer, folder)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(tokenizer.get_vocab_size(), bos_token_id=hf_tok.bos_token_id,
                                          eos_token_id=hf_tok.eos_token_id, **config)).float().eval()
    if pretrain_steps:
        pretrain(model, windows(tokenizer, texts), pretrain_steps, seed)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    return model


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order of a query/key projection (its converter's ``permute``)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def _gguf_tensors(model: Any) -> dict[str, np.ndarray]:
    cfg, out = model.config, {}
    for name, tensor in model.state_dict().items():
        array = tensor.detach().float().numpy()
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = array
        elif name == "model.norm.weight":
            out["output_norm.weight"] = array
        elif name == "lm_head.weight" and not cfg.tie_word_embeddings:
            out["output.weight"] = array
        elif name.startswith("model.layers."):
            _, _, i, *rest = name.split(".")
            kind = GGUF_NAMES[".".join(rest[:-1])]
            if kind in ("attn_q", "attn_k"):
                array = _permute(array, cfg.num_attention_heads if kind == "attn_q" else cfg.num_key_value_heads)
            out[f"blk.{i}.{kind}.weight"] = array
    return out


def write_gguf(model: Any, tokenizer_dir: Path, path: Path, **extra: Any) -> Path:
    """``model`` (a transformers Llama) and the tokenizer saved in ``tokenizer_dir`` as a GGUF file, laid out
    as llama.cpp's converter writes one (fp32 tensors); ``extra`` adds ``llama.*`` metadata."""
    from gguf import GGUFWriter

    cfg = model.config
    data = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    vocab = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    writer = GGUFWriter(str(path), "llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    for key, value in extra.items():
        writer.add_uint32(f"llama.{key}", value)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([3 if token in SPECIALS else 1 for token, _ in vocab])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(cfg.bos_token_id)
    writer.add_eos_token_id(cfg.eos_token_id)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, array in _gguf_tensors(model).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
