"""``import_model``: a pretrained Llama-family checkpoint (Hugging Face folder or ``.gguf`` file) becomes a
registered model version, with its own tokenizer and chat template recorded as its tokenizer version.

Importing the same weights again finds the version registered before (keyed by the weights' sha256).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import Runtime
from model.hf_interop import import_hf
from model.hf_tokenizer import TOKENIZER_FILE
from model.tokenizer import load_recorded
from model.weights import WEIGHTS_FILE, WeightsError, read_weights_config
from tasks.dataset.tokenizers import register_imported_tokenizer
from tasks.dataset.versions import dataset_for_tokenizer
from tasks.train.recording import upload_tree


@dataclass
class ImportedModel:
    model_version: str  # e.g. "lmforge:v1"
    model_version_id: int
    weights_sha256: str
    tokenizer: str | None  # tokenizer version, None when the checkpoint carries no tokenizer
    model: dict[str, Any]  # the network's shape
    found: bool  # True: these weights were imported before; nothing new was registered


def _registered(session: Any, name: str, digest: str) -> Any:
    for version in repo.list_model_versions(session, name):
        if version.artifacts.get("imported_sha256") == digest:
            return version
    return None


def import_model(runtime: Runtime, source: Path) -> ImportedModel:
    """Convert ``source``, record its tokenizer version and register it as the next model version of the
    configured model name (no alias is set: see ``lmforge promote`` or the configured base model)."""
    source = Path(source).expanduser()
    name = runtime.settings.model_name
    with tempfile.TemporaryDirectory(prefix="lmforge-import-") as tmp:
        out = Path(tmp)
        digest = import_hf(source, out)
        meta = read_weights_config(out)
        with runtime.metadata.session() as session:
            found = _registered(session, name, digest)
            if found is not None:
                return ImportedModel(found.label, found.id, digest, found.artifacts.get("tokenizer"),
                                     meta["model"], found=True)
        tokenizer = None
        if meta.get("tokenizer"):
            tokenizer = register_imported_tokenizer(runtime, out / TOKENIZER_FILE, meta["tokenizer"],
                                                    str(source.resolve())).version
        prefix = f"models/{name}/import-{digest[:16]}"
        files = upload_tree(runtime, out, prefix)
    if WEIGHTS_FILE not in files:
        raise WeightsError(f"importing {source} wrote no {WEIGHTS_FILE}")
    with runtime.metadata.session() as session:
        version = repo.register_model_version(
            session, name=name, training_run_pk=None, parent_id=None,
            artifacts={"weights": prefix, "sha256": files, "tokenizer": tokenizer, "imported_from": str(source.resolve()),
                       "imported_sha256": digest, "model_config": meta["model"]})
        return ImportedModel(version.label, version.id, digest, tokenizer, meta["model"], found=False)


@dataclass
class BaseModel:
    imported: ImportedModel
    production: str  # the production model version after the call
    installed: bool  # True: the base became production now


def install_base(runtime: Runtime, source: str | Path) -> BaseModel:
    """The configured base model (``[model] base``, ``lmforge init --base-model``): imported (once) and made
    the first ``production`` version when there is none yet. Where production exists it stays (the nightly
    loop continues from it), so a configured base never replaces what the nights have trained since."""
    imported = import_model(runtime, Path(source))
    name = runtime.settings.model_name
    with runtime.metadata.session() as session:
        production = repo.get_alias(session, name, repo.PRODUCTION)
        if production is not None:
            return BaseModel(imported, production.label, installed=False)
        repo.set_alias(session, name=name, alias=repo.PRODUCTION, model_version_id=imported.model_version_id,
                       actor="lmforge:base-model", reason=f"base model imported from {Path(source).resolve()}")
    return BaseModel(imported, imported.model_version, installed=True)


def base_dataset(runtime: Runtime, imported: ImportedModel, dataset: str) -> str:
    """``dataset`` tokenized by the imported model's own tokenizer (itself when the model has none)."""
    if imported.tokenizer is None:
        return dataset
    with runtime.metadata.session() as session:
        record = repo.get_tokenizer_version(session, imported.tokenizer)
        tokenizer = load_recorded(runtime.artifacts, record, runtime.settings.data.tokenizer)
    return dataset_for_tokenizer(runtime, dataset, tokenizer)
