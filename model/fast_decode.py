"""The fast greedy path: a static preallocated KV cache and a fixed-shape decode step.

Every step has the same tensor shapes (one token per row, attention over the whole preallocated cache
with a mask of the filled slots) and takes its position as a tensor, so the step compiles once with
``torch.compile`` (no recompilation per position) and on a GPU could be captured as a CUDA graph.
The prompt is prefilled with the network's own forward writing into the same buffers. Greedy tokens
equal :func:`model.decoding.generate` (temperature 0) up to float rounding; the library path stays the
reference for every sampling option, this one exists for throughput (see benchmarks/bench_generate.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from model.decoding import left_pad
from model.fused_ops import rotary_qkv
from model.network import KVCache, Transformer


class StaticGreedyDecoder:
    """Greedy decoding for batches of up to ``batch`` prompts within ``max_len`` positions."""

    def __init__(self, model: Transformer, batch: int, max_len: int, *, compile_step: bool = False) -> None:
        cfg = model.config
        if max_len > cfg.context:
            raise ValueError(f"max_len {max_len} exceeds the context length {cfg.context}")
        self.model, self.batch, self.max_len = model, batch, max_len
        weight = model.tok_embeddings.weight
        self.cache = KVCache(cfg, batch, max_len, weight.device, weight.dtype)
        self.step: Callable[..., torch.Tensor] = self._step
        if compile_step:
            self.step = torch.compile(self._step, dynamic=False, fullgraph=False)

    def _step(self, token: torch.Tensor, pos: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) of one new token per row at position ``pos`` (a 1-element tensor)."""
        m = self.model
        cfg = m.config
        x = m.tok_embeddings(token)
        cos, sin = m.rope_cos.index_select(0, pos), m.rope_sin.index_select(0, pos)
        mask = key_mask[:, None, None, :]
        for layer, cache in zip(m.layers, self.cache.layers, strict=True):
            q, k, v = rotary_qkv(layer.attn.wqkv(layer.attn_norm(x)), cos, sin, cfg.n_heads, cfg.kv_heads)
            cache.k.index_copy_(2, pos, k)
            cache.v.index_copy_(2, pos, v)
            y = F.scaled_dot_product_attention(q, cache.k, cache.v, attn_mask=mask,
                                               enable_gqa=cfg.kv_heads != cfg.n_heads)
            x = x + layer.attn.wo(y.transpose(1, 2).reshape(x.shape[0], 1, cfg.dim))
            x = x + layer.mlp(layer.mlp_norm(x))
        return m.output(m.norm(x))[:, -1]

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, pad_id: int = 0,
                 suppress_ids: Sequence[int] = ()) -> list[list[int]]:
        """``max_new_tokens`` greedy tokens per prompt (no early stop: a throughput path; ``suppress_ids``,
        e.g. EOS, are never chosen, as Hugging Face's ``min_new_tokens`` does)."""
        if len(prompts) > self.batch:
            raise ValueError(f"{len(prompts)} prompts exceed the decoder's batch of {self.batch}")
        device = self.model.tok_embeddings.weight.device
        ids, valid = left_pad([list(p) for p in prompts], pad_id, max_new_tokens, device)
        width = ids.shape[1]
        if width + max_new_tokens > self.max_len:
            raise ValueError(f"prompt {width} + {max_new_tokens} new tokens exceed max_len {self.max_len}")
        rows = len(prompts)
        key_mask = torch.zeros(rows, self.max_len, dtype=torch.bool, device=device)
        key_mask[:, :width] = valid[:, :width]
        view = self._view(rows)
        logits = self.model(ids, cache=view, start_pos=0, key_mask=key_mask[:, :width])[:, -1]
        banned = torch.tensor(list(suppress_ids), dtype=torch.long, device=device)
        out = torch.empty(rows, max_new_tokens, dtype=torch.long, device=device)
        pos = torch.tensor([width], dtype=torch.long, device=device)
        for step in range(max_new_tokens):
            if banned.numel():
                logits.index_fill_(1, banned, float("-inf"))
            token = logits.argmax(-1)
            out[:, step] = token
            if step == max_new_tokens - 1:
                break
            key_mask.index_fill_(1, pos, True)
            logits = self.step(token[:, None], pos, key_mask)
            pos += 1
        return out.tolist()

    def _view(self, rows: int) -> KVCache:
        """The static buffers for the first ``rows`` rows, shaped as the network's own cache for prefill."""
        if rows != self.batch:
            raise ValueError(f"this decoder serves batches of exactly {self.batch} rows (got {rows})")
        return self.cache
