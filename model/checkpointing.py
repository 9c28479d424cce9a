"""Training checkpoints: DeepSpeed state + RNG + loop position, a sha256 manifest, universal conversion.

Layout under ``<run_dir>/checkpoints``: one folder per tag (``step-000050``) written by DeepSpeed's
``save_checkpoint`` (model, optimizer, scheduler, our loop state as client state), plus
``rng-rank<r>.safetensors`` per process, ``weights/`` (consolidated fp32 safetensors + config, loadable
without DeepSpeed) and, written last by rank 0, ``manifest.json`` with the sha256 of every file. A tag
without a manifest is incomplete (the process died while writing) and is never resumed from.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.engine import import_deepspeed
from model.weights import sha256_file

MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that cannot be loaded."""


class CheckpointIntegrityError(CheckpointError):
    """A checkpoint file does not match the sha256 in its manifest."""


def tag_for(step: int) -> str:
    return f"step-{step:06d}"


def _files(tag_dir: Path) -> list[Path]:
    return sorted(p for p in tag_dir.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(tag_dir: Path, info: dict[str, Any]) -> dict[str, Any]:
    files = {str(p.relative_to(tag_dir)): sha256_file(p) for p in _files(tag_dir)}
    manifest = {**info, "files": files}
    tmp = tag_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, tag_dir / MANIFEST)
    return manifest


def read_manifest(tag_dir: Path) -> dict[str, Any]:
    path = tag_dir / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{tag_dir} has no {MANIFEST}: the checkpoint is incomplete")
    return json.loads(path.read_text())


def verify(tag_dir: Path) -> dict[str, Any]:
    """The manifest, after checking every listed file's sha256 (DeepSpeed's files are pickles: a
    tampered one must be refused before it is unpickled)."""
    manifest = read_manifest(tag_dir)
    for rel, expected in manifest["files"].items():
        path = tag_dir / rel
        if not path.is_file():
            raise CheckpointIntegrityError(f"checkpoint file {path} listed in {tag_dir / MANIFEST} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise CheckpointIntegrityError(
                f"checkpoint file {path}: sha256 {actual} does not match {expected} in its manifest; "
                "it was modified or corrupted: restore it from the artifact store or resume from another tag")
    return manifest


def complete_tags(root: Path) -> list[str]:
    """Tags with a manifest, oldest first (universal conversions excluded)."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and p.name.startswith("step-") and not p.name.endswith("-universal")
                  and (p / MANIFEST).is_file())


def latest_tag(root: Path) -> str | None:
    tags = complete_tags(root)
    return tags[-1] if tags else None


def prune(root: Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` complete tags locally (the artifact store keeps them all)."""
    removed = []
    for tag in complete_tags(root)[:-keep]:
        shutil.rmtree(root / tag, ignore_errors=True)
        shutil.rmtree(root / f"{tag}-universal", ignore_errors=True)
        removed.append(tag)
    return removed


def save_rng(tag_dir: Path, rank: int) -> None:
    tag_dir.mkdir(parents=True, exist_ok=True)
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(tag_dir / f"rng-rank{rank}.safetensors"))


def load_rng(tag_dir: Path, rank: int) -> bool:
    """Restore this rank's RNG; False when the checkpoint had no such rank (other process count)."""
    path = tag_dir / f"rng-rank{rank}.safetensors"
    if not path.is_file():
        return False
    tensors = load_file(str(path))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    return True


def to_universal(root: Path, tag: str) -> str:
    """Convert a ZeRO checkpoint to DeepSpeed's universal format (loadable on any process count);
    returns the universal tag. Idempotent."""
    import_deepspeed()
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    out_tag = f"{tag}-universal"
    out = root / out_tag
    if (out / ".complete").is_file():
        return out_tag
    shutil.rmtree(out, ignore_errors=True)
    with contextlib.redirect_stdout(sys.stderr):  # the converter print()s its progress
        ds_to_universal(Namespace(input_folder=str(root / tag), output_folder=str(out), num_extract_workers=1,
                                  num_merge_workers=1, keep_temp_folder=False, strict=True,
                                  inject_missing_state=True))
    (out / ".complete").write_text("")
    return out_tag
