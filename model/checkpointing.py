"""Training checkpoints: DeepSpeed state + RNG + loop position, a sha256 manifest, universal conversion.

Layout under ``<run_dir>/checkpoints``: one folder per tag (``step-000050``) written by DeepSpeed's
``save_checkpoint`` (model, optimizer, scheduler, our loop state as client state), plus
``rng-rank<r>.safetensors`` per process, ``weights/`` (consolidated fp32 safetensors + config, loadable
without DeepSpeed; for a LoRA run the merged model, with the PEFT adapter in ``weights/adapter/``) and, written last by rank 0, ``manifest.json`` with the sha256 of every file. A tag
without a manifest is incomplete (the process died while writing) and is never resumed from; a tag is
loaded only after every file matches its manifest and no file outside it is present (DeepSpeed's files are
pickles: a tampered or planted one must be refused before it is unpickled). :class:`CheckpointManager` does
all of it for the trainer: save, verify, load, roll back, prune, convert for another process count.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmforge_core.fileio import atomic_write, sha256_file
from model.adapters import ADAPTER_DIR, has_adapters, merged_state_dict, save_adapter
from model.configs import ModelConfig
from model.engine import import_deepspeed, load_checkpoint
from model.weights import save_weights

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
    files = {p.relative_to(tag_dir).as_posix(): sha256_file(p) for p in _files(tag_dir)}
    manifest = {**info, "files": files}
    atomic_write(tag_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def read_manifest(tag_dir: Path) -> dict[str, Any]:
    path = tag_dir / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{tag_dir} has no {MANIFEST}: the checkpoint is incomplete")
    return json.loads(path.read_text())


def verify(tag_dir: Path) -> dict[str, Any]:
    """The manifest, after checking every listed file's sha256 and that no other file is present."""
    manifest = read_manifest(tag_dir)
    unlisted = sorted(set(p.relative_to(tag_dir).as_posix() for p in _files(tag_dir)) - set(manifest["files"]))
    if unlisted:
        raise CheckpointIntegrityError(
            f"checkpoint {tag_dir} holds files its manifest does not list: {', '.join(unlisted[:5])}; "
            "they are never loaded: remove them or resume from another tag")
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
    """Convert a (verified) ZeRO checkpoint to DeepSpeed's universal format, loadable on any process
    count; returns the universal tag. The conversion gets its own manifest; a complete one is reused."""
    import_deepspeed()
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    out_tag = f"{tag}-universal"
    out = root / out_tag
    with contextlib.suppress(CheckpointError):
        verify(out)
        return out_tag
    shutil.rmtree(out, ignore_errors=True)
    with contextlib.redirect_stdout(sys.stderr):  # the converter print()s its progress
        ds_to_universal(Namespace(input_folder=str(root / tag), output_folder=str(out), num_extract_workers=1,
                                  num_merge_workers=1, keep_temp_folder=False, strict=True,
                                  inject_missing_state=True))
    write_manifest(out, {"universal_of": tag})
    return out_tag


def fp32_weights_from_zero_files(root: Path, tag: str) -> dict[str, torch.Tensor]:
    """The transformer's fp32 master weights, consolidated by DeepSpeed from a ZeRO checkpoint's files."""
    import_deepspeed()
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with contextlib.redirect_stdout(sys.stderr):  # it print()s what it parses
        state = get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)
    return {k.removeprefix("model."): v.float() for k, v in state.items() if k.startswith("model.")}


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()



class CheckpointManager:
    """Save, verify, load, roll back and prune the checkpoints of one run, on every process of it."""

    def __init__(self, root: Path, rank: int, world: int, zero_stage: int, precision: str, keep: int) -> None:
        self.root, self.rank, self.world = Path(root), rank, world
        self.zero_stage, self.precision, self.keep = zero_stage, precision, keep

    def verified(self, tag: str) -> dict[str, Any]:
        """The manifest of ``tag`` once rank 0 has checked every file against it (all ranks wait)."""
        manifest = verify(self.root / tag) if self.rank == 0 else None
        _barrier(self.world)
        return manifest if manifest is not None else read_manifest(self.root / tag)

    def needs_universal(self, manifest: dict[str, Any]) -> bool:
        """A ZeRO checkpoint written by another process count loads only through the universal format."""
        return manifest["world_size"] != self.world and manifest["zero_stage"] > 0

    def load(self, engine: Any, tag: str, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Load a verified ``tag`` (converted first if written on another process count) with optimizer and
        scheduler state, and this rank's RNG when the tag has it. Returns the loop state saved with it and
        whether the RNG was restored (not when the tag was written by fewer processes)."""
        load_tag = tag
        if self.needs_universal(manifest):
            if self.rank == 0:
                to_universal(self.root, tag)
            _barrier(self.world)
            load_tag = f"{tag}-universal"
            self.verified(load_tag)
        client = load_checkpoint(engine, str(self.root), load_tag)
        if client is None:
            raise CheckpointError(f"DeepSpeed could not load checkpoint {self.root / load_tag}")
        rng_restored = load_rng(self.root / tag, self.rank)
        return client.get("lmforge") or manifest["loop"], rng_restored

    def rollback(self, engine: Any) -> tuple[str, dict[str, Any]] | None:
        """Load the newest complete tag after verifying it; None when there is none."""
        tag = latest_tag(self.root)
        if tag is None:
            return None
        loop, _ = self.load(engine, tag, self.verified(tag))
        return tag, loop

    def save(self, engine: Any, model: ModelConfig, loop: dict[str, Any], reason: str) -> dict[str, Any] | None:
        """Write the checkpoint of ``loop["step"]`` from every rank; the manifest (returned on rank 0) last."""
        tag = tag_for(loop["step"])
        tag_dir = self.root / tag
        if self.rank == 0 and tag_dir.is_dir() and not (tag_dir / MANIFEST).is_file():
            shutil.rmtree(tag_dir)  # left half-written by a killed process: none of its files may be listed
        _barrier(self.world)
        engine.save_checkpoint(str(self.root), tag=tag, client_state={"lmforge": loop})
        save_rng(tag_dir, self.rank)
        _barrier(self.world)
        if self.rank != 0:
            _barrier(self.world)
            return None
        save_weights(self._consolidated(engine, tag), model, tag_dir / "weights")
        if has_adapters(engine.module.model):
            save_adapter(engine.module.model, tag_dir / "weights" / ADAPTER_DIR)
        info = {"step": loop["step"], "world_size": self.world, "zero_stage": self.zero_stage, "reason": reason,
                "loop": loop}
        manifest = write_manifest(tag_dir, info)
        self.prune()
        _barrier(self.world)
        return manifest

    def _consolidated(self, engine: Any, tag: str) -> dict[str, torch.Tensor]:
        """Full fp32 weights, on rank 0 only: the module's own when it holds them whole in fp32, else
        DeepSpeed's consolidation of the fp32 master copies from the files just written (ZeRO-3 partitions
        the parameters; 16-bit training keeps the exact weights only in the optimizer's fp32 copies). A LoRA
        run's module holds its frozen base whole (ZeRO <= 2): its weights are the base with the adapters merged."""
        if has_adapters(engine.module.model):
            return merged_state_dict(engine.module.model)
        if self.zero_stage == 3 or (self.zero_stage > 0 and self.precision != "fp32"):
            return fp32_weights_from_zero_files(self.root, tag)
        return {k: v.detach().float().cpu().clone() for k, v in engine.module.model.state_dict().items()}

    def prune(self) -> list[str]:
        """Delete all but the newest ``keep`` complete tags locally (the artifact store keeps them all)."""
        removed = []
        for tag in complete_tags(self.root)[: -self.keep]:
            shutil.rmtree(self.root / tag, ignore_errors=True)
            shutil.rmtree(self.root / f"{tag}-universal", ignore_errors=True)
            removed.append(tag)
        return removed
