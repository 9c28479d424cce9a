"""The versioned Triton model repository: stage a version, publish it atomically, choose what is served.

Layout (one Triton version number per published model version, the same number in all four models)::

    <repo>/lm/config.pbtxt, lm/configs/{onnxruntime_gpu,tensorrt}.pbtxt, lm/<v>/{model.onnx, export.json, model.py}
    <repo>/tokenizer/config.pbtxt, tokenizer/<v>/{tokenizer.json, tokenizer_meta.json, model.py}
    <repo>/generate/config.pbtxt, generate/<v>/model.py
    <repo>/generate_text/config.pbtxt, generate_text/<v>/model.py

Staging writes ``<model>/.staging-<v>`` (Triton ignores folders that are not numbers); publishing renames
each into ``<model>/<v>`` (atomic on one filesystem) and only then points the configs' version policy at
``v``, so a server never sees a half-written version; earlier versions stay on disk for rollback.
Every version folder carries ``lmforge.json`` with the sha256 of each file, checked before publishing.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.tokenizer import TokenizerRef
from model.weights import sha256_file
from serving.onnx_files import MANIFEST_FILE, ONNX_FILE, read_manifest
from serving.tensorrt import PLAN_FILE
from serving.triton_config import (
    GENERATE,
    LM,
    MODELS,
    TEXT,
    TOKENIZER,
    ServingOptions,
    generate_config,
    lm_configs,
    set_served_versions,
    text_config,
    tokenizer_config,
    write_config,
)
from serving.triton_models.common import TOKENIZER_FILE, TOKENIZER_META

SHIM = Path(__file__).parent / "triton_repo" / "model.py"
VERSION_MANIFEST = "lmforge.json"


class RepositoryError(RuntimeError):
    """The model repository is missing a version, holds a corrupt one, or cannot be written."""


@dataclass
class StagedVersion:
    repository: Path
    version: int

    def staging_dir(self, model: str) -> Path:
        return self.repository / model / f".staging-{self.version}"


def _write_manifest(directory: Path, extra: dict[str, Any]) -> None:
    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != VERSION_MANIFEST}
    (directory / VERSION_MANIFEST).write_text(json.dumps({"files": files, **extra}, indent=2, sort_keys=True))


def verify_version_dir(directory: Path) -> None:
    """Every file listed in ``lmforge.json`` is present with its sha256."""
    path = directory / VERSION_MANIFEST
    if not path.is_file():
        raise RepositoryError(f"{directory} has no {VERSION_MANIFEST}: not a complete lmforge version")
    for name, digest in json.loads(path.read_text())["files"].items():
        file = directory / name
        if not file.is_file() or sha256_file(file) != digest:
            raise RepositoryError(f"{file} is missing or does not match its recorded sha256; re-export the version")


def _tokenizer_meta(tokenizer: TokenizerRef) -> dict[str, Any]:
    special = {name: tokenizer.tokenizer.id_to_token(i) for name, i in
               (("bos", tokenizer.bos_id), ("eos", tokenizer.eos_id), ("pad", tokenizer.pad_id))}
    return tokenizer.manifest_entry() | special


def _fresh(directory: Path) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    shutil.copy2(SHIM, directory / "model.py")
    return directory


def stage_version(repository: Path, version: int, export_dir: Path, tokenizer: TokenizerRef,
                  record: dict[str, Any]) -> StagedVersion:
    """Write all four models' version ``version`` into staging folders of ``repository``."""
    if version < 1:
        raise RepositoryError(f"Triton versions are positive integers, got {version}")
    staged = StagedVersion(Path(repository).absolute(), version)
    lm_dir = _fresh(staged.staging_dir(LM))
    for name in (ONNX_FILE, MANIFEST_FILE, PLAN_FILE):
        if (Path(export_dir) / name).is_file():
            shutil.copy2(Path(export_dir) / name, lm_dir / name)
    tok_dir = _fresh(staged.staging_dir(TOKENIZER))
    (tok_dir / TOKENIZER_FILE).write_text(tokenizer.tokenizer.to_str())
    (tok_dir / TOKENIZER_META).write_text(json.dumps(_tokenizer_meta(tokenizer), indent=2, sort_keys=True))
    for model in (GENERATE, TEXT):
        _fresh(staged.staging_dir(model))
    for model in MODELS:
        _write_manifest(staged.staging_dir(model), {"model": model, "version": version} | record)
    return staged


def write_configs(version: int, options: ServingOptions, model_dirs: dict[str, Path]) -> None:
    """The generated configs of all four models, serving ``version`` (``model_dirs``: each model's folder;
    the export manifest in the lm version folder gives the graph's shapes)."""
    cfg = read_manifest(model_dirs[LM] / str(version))["model"]
    lm = lm_configs(version, options, cfg["n_layers"], cfg.get("n_kv_heads") or cfg["n_heads"], cfg["dim"] // cfg["n_heads"])
    write_config(model_dirs[LM] / "config.pbtxt", lm["config"])
    for name in ("onnxruntime_gpu", "tensorrt"):
        write_config(model_dirs[LM] / "configs" / f"{name}.pbtxt", lm[name])
    write_config(model_dirs[TOKENIZER] / "config.pbtxt", tokenizer_config(version, options))
    write_config(model_dirs[GENERATE] / "config.pbtxt", generate_config(version, options))
    write_config(model_dirs[TEXT] / "config.pbtxt", text_config(version, options))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def scratch_repository(staged: StagedVersion, target: Path, options: ServingOptions) -> Path:
    """A throw-away repository holding only the staged version (for verification before publishing)."""
    dirs = {}
    for model in MODELS:
        shutil.copytree(staged.staging_dir(model), target / model / str(staged.version), copy_function=_link_or_copy)
        dirs[model] = target / model
    write_configs(staged.version, options, dirs)
    return target


def publish_version(staged: StagedVersion, options: ServingOptions) -> list[int]:
    """Make the staged version visible: verify, rename into place, then serve it. Returns the versions on disk."""
    repo, v = staged.repository, staged.version
    for model in MODELS:
        verify_version_dir(staged.staging_dir(model))
        if (repo / model / str(v)).exists():
            raise RepositoryError(f"{repo / model / str(v)} already exists: versions are immutable, publish a new one")
    for model in MODELS:
        staged.staging_dir(model).rename(repo / model / str(v))
    write_configs(v, options, {m: repo / m for m in MODELS})
    return published_versions(repo)


def published_versions(repository: Path) -> list[int]:
    """Versions present in every model of the repository."""
    sets = [{int(p.name) for p in (Path(repository) / m).iterdir() if p.name.isdigit()}
            for m in MODELS if (Path(repository) / m).is_dir()]
    return sorted(set.intersection(*sets)) if len(sets) == len(MODELS) else []


def serve_versions(repository: Path, versions: list[int]) -> None:
    """Point every model's version policy at already published ``versions`` (switch, rollback)."""
    missing = sorted(set(versions) - set(published_versions(repository)))
    if missing:
        raise RepositoryError(f"versions {missing} are not published in {repository} "
                              f"(have {published_versions(repository)})")
    for model in MODELS:
        for version in versions:
            verify_version_dir(Path(repository) / model / str(version))
    for model in MODELS:
        set_served_versions(Path(repository) / model / "config.pbtxt", versions)
    for name in ("onnxruntime_gpu", "tensorrt"):
        set_served_versions(Path(repository) / LM / "configs" / f"{name}.pbtxt", versions)
