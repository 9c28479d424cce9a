"""Model shapes: one dataclass and the named configurations, all in one place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

TRAINING_OPTIONS = ("dropout", "activation_checkpointing")


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3's rotary frequency scaling (``rope_scaling.rope_type = "llama3"`` in a Hugging Face config):
    long wavelengths are slowed by ``factor``, short ones kept, the band between interpolated."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int

    def __post_init__(self) -> None:
        if self.factor <= 0 or self.high_freq_factor <= self.low_freq_factor:
            raise ValueError(f"rope scaling needs factor > 0 and high_freq_factor > low_freq_factor, got {self}")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the decoder-only transformer (Llama-style: RoPE, RMSNorm pre-norm, SwiGLU, GQA)."""

    vocab_size: int = 8192
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: as many key/value heads as query heads (plain MHA)
    ffn_hidden: int | None = None  # None: 8/3 * dim rounded up to ``multiple_of``
    multiple_of: int = 256
    context: int = 256
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None  # None: plain RoPE
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if (self.head_dim % 2) != 0:
            raise ValueError(f"head dimension {self.head_dim} must be even for rotary embeddings")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.kv_heads}")
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "context"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def hidden(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        raw = int(8 * self.dim / 3)
        return self.multiple_of * ((raw + self.multiple_of - 1) // self.multiple_of)

    def num_params(self, include_embedding: bool = True) -> int:
        """Exact parameter count, computed from the shape (equals the instantiated module's count)."""
        d, kv = self.dim, self.kv_heads * self.head_dim
        attn = d * d + 2 * d * kv + d * d
        mlp = 3 * d * self.hidden
        per_layer = attn + mlp + 2 * d
        embed = self.vocab_size * d
        head = 0 if self.tie_embeddings else self.vocab_size * d
        total = self.n_layers * per_layer + d + head
        return total + (embed if include_embedding else 0)

    def matmul_flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token counting every matmul (projections, attention scores/values, head).

        Forward is 2 FLOPs per multiply-add, backward twice that: 6 per weight per token, plus the
        attention score and value products (causal: half of the T x T matrix is computed by SDPA's
        kernels only approximately, so the full T is counted as the usual convention does).
        """
        t = seq_len or self.context
        weights = self.num_params(include_embedding=False) - (self.n_layers * 2 + 1) * self.dim
        if self.tie_embeddings:
            weights += self.vocab_size * self.dim  # the tied head still does its matmul
        attention = self.n_layers * 2 * 2 * t * self.dim  # QK^T and AV per token, forward
        return 6 * weights + 3 * attention

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """The config of ``data``; weights saved before training options left the shape still carry
        ``dropout`` and ``activation_checkpointing``, which are dropped here (see ``TrainConfig``)."""
        data = {k: v for k, v in data.items() if k not in TRAINING_OPTIONS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config fields: {', '.join(unknown)}")
        if isinstance(data.get("rope_scaling"), dict):
            data["rope_scaling"] = RopeScaling(**data["rope_scaling"])
        return cls(**data)


NAMED_CONFIGS: dict[str, ModelConfig] = {
    # studies that train dozens of models on 2 CPU cores (the continual-learning study): 0.69M parameters.
    "micro": ModelConfig(vocab_size=1024, dim=128, n_layers=2, n_heads=4, ffn_hidden=384, context=128),
    # CPU demo: trains at a useful speed on 2 cores in fp32.
    "tiny": ModelConfig(vocab_size=8192, dim=256, n_layers=4, n_heads=4, context=256),
    # ~20M parameters: the second benchmark shape.
    "20m": ModelConfig(vocab_size=8192, dim=384, n_layers=8, n_heads=6, ffn_hidden=1024, context=256),
    "125m": ModelConfig(vocab_size=32768, dim=768, n_layers=12, n_heads=12, ffn_hidden=1792, context=1024),
    "1b": ModelConfig(vocab_size=32768, dim=2048, n_layers=20, n_heads=16, n_kv_heads=8,
                      ffn_hidden=5632, context=2048, tie_embeddings=True),
    "7b": ModelConfig(vocab_size=32768, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                      ffn_hidden=13824, context=4096),
    "30b": ModelConfig(vocab_size=32768, dim=6656, n_layers=60, n_heads=52, n_kv_heads=4,
                       ffn_hidden=19968, context=4096),
}


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The named configuration, with field overrides (e.g. ``vocab_size`` from the tokenizer)."""
    try:
        base = NAMED_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model config {name!r}; choose one of {', '.join(NAMED_CONFIGS)}") from None
    return dataclasses.replace(base, **overrides) if overrides else base
