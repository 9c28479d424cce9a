"""Load a registered model version for inference: weights (sha256-verified safetensors) and its tokenizer.

A model version (``lmforge:v3``) records its weights folder in the artifact store (``artifacts['weights']``,
with the sha256 of each file in ``artifacts['sha256']``), its tokenizer version (``artifacts['tokenizer']``)
and the dataset version it was trained on (versions recorded before the tokenizer was: that dataset's
tokenizer is the model's). ``ref`` is what people type: ``production``, ``candidate``, ``3``,
``v3`` or ``lmforge:v3``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmforge_core.artifacts import ArtifactStore
from lmforge_core.config.data import TokenizerConfig
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.store import MetadataStore
from model.configs import ModelConfig
from model.network import Transformer
from model.tokenizer import TokenizerRef, load_recorded
from model.weights import CONFIG_FILE, WEIGHTS_FILE, WeightsIntegrityError, load_model, sha256_file


@dataclass
class LoadedModel:
    """A model version ready for inference (``model`` is in eval mode)."""

    model: Transformer
    tokenizer: TokenizerRef | None  # None only for models trained on synthetic data without a tokenizer
    model_version: str  # label, e.g. "lmforge:v3"
    model_version_id: int
    config: ModelConfig
    artifacts: dict[str, Any]

    @property
    def eos_id(self) -> int | None:
        return self.tokenizer.eos_id if self.tokenizer else None

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id if self.tokenizer else 0

    @property
    def bos_id(self) -> int | None:
        return self.tokenizer.bos_id if self.tokenizer else None

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of a prompt as training saw a document start: after an EOS separator (packing joins
        documents with EOS and adds no BOS)."""
        if self.tokenizer is None:
            raise ValueError(f"model {self.model_version} was trained without a tokenizer; give token ids")
        return [self.tokenizer.eos_id, *self.tokenizer.encode(text)]


def split_ref(name: str, ref: str) -> tuple[str, str]:
    """``tiny:v3`` -> (``tiny``, ``v3``); a bare ``3`` or ``production`` keeps ``name``."""
    text = ref.strip()
    if not text:
        raise ValueError("model version reference is empty; give e.g. 'production', '3' or 'lmforge:v3'")
    if ":" in text:
        model_name, _, version = text.partition(":")
        if not model_name or not version:
            raise ValueError(f"model version reference {ref!r} is not NAME:VERSION (e.g. 'lmforge:v3')")
        return model_name, version
    return name, text


def fetch_weights(artifacts: ArtifactStore, record: dict[str, Any], dest: Path, label: str) -> Path:
    """Download the weights folder of a model version into ``dest`` and check each file against the
    sha256 recorded with the version (the artifact store checks its own record too)."""
    prefix = record.get("weights")
    if not prefix:
        raise ValueError(f"model {label} has no weights recorded; train a model first")
    expected = record.get("sha256") or {}
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        path = dest / name
        artifacts.get_file(f"{prefix}/{name}", path)
        if name in expected and sha256_file(path) != expected[name]:
            raise WeightsIntegrityError(
                f"{prefix}/{name} of {label} has sha256 {sha256_file(path)}, but {expected[name]} was recorded "
                "when the version was registered; the artifact was replaced or corrupted")
    return dest


def tokenizer_for_version(session: Any, artifacts: ArtifactStore, record: dict[str, Any],
                          cfg: TokenizerConfig) -> TokenizerRef | None:
    """The tokenizer recorded with a model version (``artifacts['tokenizer']``: an imported model and what
    was trained from it), else that of the dataset version it was trained on (None if it has none)."""
    if record.get("tokenizer"):
        return load_recorded(artifacts, repo.get_tokenizer_version(session, record["tokenizer"]), cfg)
    dataset = record.get("dataset_version")
    if not dataset:
        return None
    tok = repo.get_dataset_version(session, dataset).tokenizer
    if tok is None:
        return None
    return load_recorded(artifacts, tok, cfg)


def load_model_version(metadata: MetadataStore, artifacts: ArtifactStore, name: str, ref: str, *,
                       device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                       tokenizer_config: TokenizerConfig | None = None) -> LoadedModel:
    """Resolve ``ref`` (alias, number, ``vN`` or ``NAME:vN``) of model ``name`` and load it for inference.

    Raises ``NotFoundError`` for an unknown version or alias and ``WeightsIntegrityError`` when a weight
    file does not match its recorded sha256 (nothing is loaded then).
    """
    model_name, version_ref = split_ref(name, ref)
    with metadata.session() as session:
        version = repo.resolve_model_version(session, model_name, version_ref)
        record, label, version_id = dict(version.artifacts), version.label, version.id
        tokenizer = tokenizer_for_version(session, artifacts, record, tokenizer_config or TokenizerConfig())
    with tempfile.TemporaryDirectory(prefix="lmforge-model-") as tmp:
        model = load_model(fetch_weights(artifacts, record, Path(tmp), label), device=str(device), dtype=dtype)
    model.eval()
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"tokenizer {tokenizer.version} has {tokenizer.vocab_size} tokens but model {label} "
                         f"only {model.config.vocab_size}: they do not belong together")
    return LoadedModel(model=model, tokenizer=tokenizer, model_version=label, model_version_id=version_id,
                       config=model.config, artifacts=record)
