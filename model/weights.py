"""Model weights on disk: ``model.safetensors`` plus ``config.json`` (shape and sha256), no pickle.

A weights directory is self-describing: ``config.json`` holds the :class:`ModelConfig` and the sha256 of
every tensor file, and loading refuses a file whose hash does not match.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmforge_core.fileio import atomic_path, atomic_write, sha256_file
from model.configs import ModelConfig
from model.network import Transformer, build_model

FORMAT = "lmforge.model.v1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class WeightsError(ValueError):
    """A weights directory is missing, malformed or does not fit the model."""


class WeightsIntegrityError(WeightsError):
    """A weight file's content does not match the sha256 recorded next to it."""


def save_weights(
    state_dict: dict[str, torch.Tensor], config: ModelConfig, directory: Path,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write the weights and their config; returns the sha256 of the safetensors file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        digest = sha256_file(tmp)
    meta = {"format": FORMAT, "model": config.to_dict(), "files": {WEIGHTS_FILE: digest}, **(extra or {})}
    atomic_write(directory / CONFIG_FILE, json.dumps(meta, indent=2, sort_keys=True))
    return digest


def save_model(model: Transformer, directory: Path, extra: dict[str, Any] | None = None) -> str:
    return save_weights(model.state_dict(), model.config, directory, extra)


def read_weights_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"{path} does not exist: not an lmforge weights directory")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path} is not valid JSON: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_state_dict(directory: Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """Tensors and config of a weights directory, with the sha256 check unless ``verify=False``."""
    directory = Path(directory)
    meta = read_weights_config(directory)
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    if verify:
        actual, expected = sha256_file(path), meta["files"].get(WEIGHTS_FILE)
        if actual != expected:
            raise WeightsIntegrityError(
                f"{path}: sha256 {actual} does not match {expected} recorded in {directory / CONFIG_FILE}; "
                "the file was modified or corrupted, restore it from the artifact store"
            )
    return load_file(str(path)), ModelConfig.from_dict(meta["model"])


def load_model(directory: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Transformer:
    state, config = load_state_dict(directory)
    model = build_model(config, device=device)
    load_into(model, state, source=str(directory))
    return model.to(dtype)


def load_into(model: Transformer, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model``, naming missing/unexpected tensors and shape mismatches."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
           for k in set(own) & set(state) if state[k].shape != own[k].shape]
    if missing or unexpected or bad:
        raise WeightsError(
            f"weights from {source} do not fit the model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatches {bad[:5]}"
        )
    model.load_state_dict(state)
