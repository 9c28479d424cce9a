"""The decoder-only transformer, readable top to bottom.

Token embedding -> n x [RMSNorm -> causal self-attention (RoPE, optional grouped-query) -> residual,
RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> output head (optionally tied to the embedding).
Tensor layout follows Hugging Face Llama (rotate-half rotary), so interop is a rename plus a split of
the fused projections.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.configs import ModelConfig, RopeScaling
from model.fused_ops import rms_norm, rotary_qkv, swiglu
from model.losses import linear_cross_entropy


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def scaled_frequencies(inv_freq: torch.Tensor, scaling: RopeScaling) -> torch.Tensor:
    """Llama 3's frequency scaling, as transformers computes it (``_compute_llama3_parameters``)."""
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = ((scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor)
              / (scaling.high_freq_factor - scaling.low_freq_factor))
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


def rope_tables(head_dim: int, length: int, theta: float,
                scaling: RopeScaling | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (length, 1, head_dim / 2) for rotate-half rotary embeddings (Llama layout:
    both halves of a head share the frequencies, so half-width tables serve both)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    if scaling is not None:
        inv_freq = scaled_frequencies(inv_freq, scaling)
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return freqs.cos()[:, None], freqs.sin()[:, None]


class LayerCache:
    """Preallocated keys/values of one layer for incremental decoding."""

    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.k = torch.zeros(batch, kv_heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.shape[2]
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache holds {self.k.shape[2]} positions; asked to write up to {end}")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class KVCache:
    """One :class:`LayerCache` per layer; pass to :meth:`Transformer.forward` with ``start_pos``."""

    def __init__(self, config: ModelConfig, batch: int, max_len: int | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        length = max_len or config.context
        self.layers = [
            LayerCache(batch, config.kv_heads, length, config.head_dim, torch.device(device), dtype)
            for _ in range(config.n_layers)
        ]


def attention_mask(key_mask: torch.Tensor, t: int, s: int, start_pos: int) -> torch.Tensor:
    """Boolean (B, 1, t, s) mask: causal, restricted to valid keys (``key_mask`` (B, >= s), False = padding).

    A query always sees its own position, so a padding query never has an all-masked row (which would
    make softmax NaN and leak NaN into the cache); padding outputs are garbage that no real query reads.
    """
    q_pos = torch.arange(t, device=key_mask.device)[:, None] + start_pos
    k_pos = torch.arange(s, device=key_mask.device)[None, :]
    allowed = (q_pos >= k_pos) & key_mask[:, None, None, :s]
    return allowed | (q_pos == k_pos)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads, self.kv_heads, self.head_dim = config.n_heads, config.kv_heads, config.head_dim
        self.wqkv = nn.Linear(config.dim, (self.n_heads + 2 * self.kv_heads) * self.head_dim, bias=False)
        self.wo = nn.Linear(config.dim, config.dim, bias=False)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: LayerCache | None = None, start_pos: int = 0,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = rotary_qkv(self.wqkv(x), cos, sin, self.n_heads, self.kv_heads)
        if cache is not None:
            k, v = cache.update(k, v, start_pos)
        mask, causal = None, True
        if key_mask is not None:
            causal, mask = False, attention_mask(key_mask, t, k.shape[2], start_pos)
        elif k.shape[2] != t:  # decoding after a prefix: queries see the whole prefix
            causal = False
            if t > 1:
                q_pos = torch.arange(t, device=x.device)[:, None] + start_pos
                mask = q_pos >= torch.arange(k.shape[2], device=x.device)[None, :]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.kv_heads != self.n_heads,
        )
        return self.resid_dropout(self.wo(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)))


class SwiGLU(nn.Module):
    def __init__(self, config: ModelConfig, dropout: float = 0.0) -> None:
        super().__init__()
        self.w13 = nn.Linear(config.dim, 2 * config.hidden, bias=False)  # gate and up, fused
        self.w2 = nn.Linear(config.hidden, config.dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(swiglu(self.w13(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = Attention(config, dropout)
        self.mlp_norm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = SwiGLU(config, dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: LayerCache | None = None, start_pos: int = 0,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, start_pos, key_mask)
        return x + self.mlp(self.mlp_norm(x))


class OutputHead(nn.Module):
    """Final projection; with targets it returns the fused chunked cross-entropy instead of logits.

    Being its own module matters under ZeRO-3: the weight is gathered around this module's forward.
    """

    def __init__(self, config: ModelConfig, tied: nn.Embedding | None) -> None:
        super().__init__()
        self.tied = [tied] if tied is not None else None  # a list keeps it out of the module tree
        self.weight = None if tied is not None else nn.Parameter(torch.empty(config.vocab_size, config.dim))

    def head_weight(self) -> torch.Tensor:
        return self.tied[0].weight if self.tied else self.weight

    def forward(self, h: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        if targets is None:
            return F.linear(h, self.head_weight())
        return linear_cross_entropy(h, self.head_weight(), targets)


class Transformer(nn.Module):
    """``dropout`` and ``activation_checkpointing`` are how it is trained, not its shape: they are not part
    of :class:`ModelConfig` (nor of the saved weights)."""

    def __init__(self, config: ModelConfig, dropout: float = 0.0, activation_checkpointing: bool = False) -> None:
        super().__init__()
        self.config = config
        self.activation_checkpointing = activation_checkpointing
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(Block(config, dropout) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = OutputHead(config, self.tok_embeddings if config.tie_embeddings else None)
        cos, sin = rope_tables(config.head_dim, config.context, config.rope_theta, config.rope_scaling)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.init_std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(("wo.weight", "w2.weight")):  # residual projections, GPT-2 scaling
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.config.n_layers))
            else:
                nn.init.normal_(p, 0.0, std)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                cache: KVCache | None = None, start_pos: int = 0,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V), or the mean loss when ``targets`` is given.

        ``key_mask`` (B, S) marks the valid (non-padding) positions of the whole sequence so far, cache
        included; with left padding it makes a batch of prompts of different lengths exact (RoPE scores
        depend only on relative positions, so a shifted start changes nothing but rounding).
        """
        t = idx.shape[1]
        if start_pos + t > self.config.context:
            raise ValueError(f"sequence end {start_pos + t} exceeds the context length {self.config.context}")
        cos = self.rope_cos[start_pos : start_pos + t].to(self.tok_embeddings.weight.dtype)
        sin = self.rope_sin[start_pos : start_pos + t].to(self.tok_embeddings.weight.dtype)
        x = self.dropout(self.tok_embeddings(idx))
        use_ckpt = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            layer_cache = cache.layers[i] if cache is not None else None
            if use_ckpt and cache is None:
                x = checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin, layer_cache, start_pos, key_mask)
        return self.output(self.norm(x), targets)


def build_model(config: ModelConfig, device: torch.device | str = "cpu", *, dropout: float = 0.0,
                activation_checkpointing: bool = False) -> Transformer:
    """Instantiate on ``device`` (``"meta"`` allocates nothing: for counting large configs)."""
    with torch.device(device):
        return Transformer(config, dropout, activation_checkpointing)
