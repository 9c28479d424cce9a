"""The tokenizer wrapper: byte-level BPE training, versioned storage, loading, encode/decode.

Shared by ingestion (training and packing), training, evaluation and serving (the Triton tokenizer
model), so it lives in the model library rather than in a stage.

Special tokens come first in the vocabulary (BOS, EOS, PAD = ids 0, 1, 2 with the default config).
A tokenizer version is stored as ``tokenizers/<version>/tokenizer.json`` and recorded in the
metadata store; ingestion reuses the newest trained one, and a new one is trained only on explicit request.

An imported model keeps its own tokenizer: it is recorded as a tokenizer version too (never retrained), with
its provenance, its special tokens and its chat template (`IMPORTED` in the record's ``trained_on``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lmforge_core.artifacts import ArtifactStore
from lmforge_core.config.data import TokenizerConfig


@dataclass
class TokenizerRef:
    """A tokenizer version and the facts the dataset manifest records about it."""

    version: str
    key: str
    sha256: str
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    tokenizer: Tokenizer
    record_id: int | None = None
    chat_template: str | None = None  # Jinja, as in a Hugging Face tokenizer_config.json

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset((self.bos_id, self.eos_id, self.pad_id))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (the packing and prompt convention)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # the fast variant skips character offsets, which are not needed and cost memory per token.
        return [enc.ids for enc in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special)

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "key": self.key,
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
        }


def tokenizer_key(version: str) -> str:
    return f"tokenizers/{version}/tokenizer.json"


def train_bpe(texts: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """Train a byte-level BPE with the configured vocabulary size and special tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[cfg.bos, cfg.eos, cfg.pad],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


IMPORTED = "imported_from"  # the key of ``trained_on`` that marks an imported model's tokenizer


def special_tokens(cfg: TokenizerConfig, imported: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Role -> token text: the configured house tokens, or an imported tokenizer's own (a model without a
    BOS or PAD token uses its EOS token for them: packing joins documents with EOS and pads the last window)."""
    if not imported:
        return {"bos": cfg.bos, "eos": cfg.eos, "pad": cfg.pad}
    eos = imported.get("eos_token")
    if not eos:
        raise ValueError(f"the imported tokenizer from {imported.get(IMPORTED)} has no end-of-sequence token")
    return {"bos": imported.get("bos_token") or eos, "eos": eos, "pad": imported.get("pad_token") or eos}


def make_ref(tokenizer: Tokenizer, version: str, cfg: TokenizerConfig, record_id: int | None = None,
             imported: Mapping[str, Any] | None = None) -> TokenizerRef:
    """The reference of a tokenizer; ``imported`` is the record of an imported model's tokenizer (its special
    tokens and chat template), None for a house tokenizer."""
    data = tokenizer.to_str().encode()
    tokens = special_tokens(cfg, imported)
    ids = {name: tokenizer.token_to_id(tok) for name, tok in tokens.items()}
    missing = [name for name, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"tokenizer {version} lacks the special tokens {missing}; train a new one")
    return TokenizerRef(
        version=version,
        key=tokenizer_key(version),
        sha256=hashlib.sha256(data).hexdigest(),
        vocab_size=tokenizer.get_vocab_size(),
        bos_id=ids["bos"],
        eos_id=ids["eos"],
        pad_id=ids["pad"],
        tokenizer=tokenizer,
        record_id=record_id,
        chat_template=(imported or {}).get("chat_template"),
    )


def store_tokenizer(artifacts: ArtifactStore, ref: TokenizerRef) -> None:
    artifacts.put_bytes(ref.key, ref.tokenizer.to_str().encode())


def load_tokenizer(artifacts: ArtifactStore, version: str, key: str, cfg: TokenizerConfig,
                   record_id: int | None = None, imported: Mapping[str, Any] | None = None) -> TokenizerRef:
    """Load a stored tokenizer (the store verifies its sha256); ``imported`` as in `make_ref`."""
    tokenizer = Tokenizer.from_str(artifacts.get_bytes(key).decode())
    return make_ref(tokenizer, version, cfg, record_id, imported)


def load_recorded(artifacts: ArtifactStore, record: Any, cfg: TokenizerConfig) -> TokenizerRef:
    """Load the tokenizer of a ``TokenizerVersion`` record (house or imported)."""
    imported = record.trained_on if IMPORTED in (record.trained_on or {}) else None
    return load_tokenizer(artifacts, record.version, record.artifact_key, cfg, record.id, imported)
