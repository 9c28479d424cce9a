"""The versioned Triton model repository: stage a version, publish it atomically, choose what is served.

Layout (one Triton version number per published model version, the same number in all four models)::

    <repo>/lm/config.pbtxt, lm/configs/{onnxruntime_gpu,tensorrt}.pbtxt, lm/<v>/{model.onnx, export.json, model.py}
    <repo>/tokenizer/config.pbtxt, tokenizer/<v>/{tokenizer.json, tokenizer_meta.json, model.py}
    <repo>/generate/config.pbtxt, generate/<v>/{model.onnx, export.json, tokenizer_meta.json, model.py}
    <repo>/generate_text/config.pbtxt, generate_text/<v>/{tokenizer.json, tokenizer_meta.json, model.py}

Every version folder holds all that its model reads: a server on a cloud repository (s3://) downloads each
model into a temporary folder of its own, so no model can read a sibling's folder (in a local repository
``generate``'s graph is a hard link to ``lm``'s, no second copy on disk).

Staging writes ``<model>/.staging-<v>`` (Triton ignores folders that are not numbers); publishing renames
each into ``<model>/<v>`` (atomic on one filesystem) and only then points the configs' version policy at
``v``, so a server never sees a half-written version; earlier versions stay on disk for rollback.
Every version folder carries ``lmforge.json`` with the sha256 of each file, checked before publishing.
:class:`LocalRepository` is that folder behind the :class:`ModelRepository` interface the publish stage uses;
``serving.s3_repository.S3Repository`` is the same interface on S3.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tritonclient.grpc import model_config_pb2 as mc

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
    chat = {"chat_template": tokenizer.chat_template, "eos_ids": list(tokenizer.eos_ids)}
    return tokenizer.manifest_entry() | special | chat


def _fresh(directory: Path) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    shutil.copy2(SHIM, directory / "model.py")
    return directory


def _write_tokenizer(directory: Path, tokenizer: TokenizerRef, *, full: bool = True) -> None:
    """The version's tokenizer metadata (ids of the special tokens), and with ``full`` the tokenizer itself."""
    if full:
        (directory / TOKENIZER_FILE).write_text(tokenizer.tokenizer.to_str())
    (directory / TOKENIZER_META).write_text(json.dumps(_tokenizer_meta(tokenizer), indent=2, sort_keys=True))


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
    _write_tokenizer(_fresh(staged.staging_dir(TOKENIZER)), tokenizer)
    generate_dir = _fresh(staged.staging_dir(GENERATE))  # the in-process decode step runs the graph itself
    _link_or_copy(str(lm_dir / ONNX_FILE), str(generate_dir / ONNX_FILE))
    shutil.copy2(lm_dir / MANIFEST_FILE, generate_dir / MANIFEST_FILE)
    _write_tokenizer(generate_dir, tokenizer, full=False)
    _write_tokenizer(_fresh(staged.staging_dir(TEXT)), tokenizer)
    for model in MODELS:
        _write_manifest(staged.staging_dir(model), {"model": model, "version": version} | record)
    return staged


# every generated config, by its path in the repository; callees first (the order a writer makes them visible)
CONFIG_FILES = (f"{LM}/config.pbtxt", f"{LM}/configs/onnxruntime_gpu.pbtxt", f"{LM}/configs/tensorrt.pbtxt",
                f"{TOKENIZER}/config.pbtxt", f"{GENERATE}/config.pbtxt", f"{TEXT}/config.pbtxt")


def repository_configs(version: int, options: ServingOptions, graph: dict[str, Any]) -> dict[str, mc.ModelConfig]:
    """The configs of all four models serving ``version``, by path in the repository (:data:`CONFIG_FILES`);
    ``graph`` is the ``model`` section of the export manifest (the lm graph's shapes)."""
    lm = lm_configs(version, options, graph["n_layers"], graph.get("n_kv_heads") or graph["n_heads"],
                    graph["dim"] // graph["n_heads"])
    configs = [lm["config"], lm["onnxruntime_gpu"], lm["tensorrt"], tokenizer_config(version, options),
               generate_config(version, options), text_config(version, options)]
    return dict(zip(CONFIG_FILES, configs, strict=True))


def write_configs(repository: Path, version: int, options: ServingOptions) -> None:
    """Write the generated configs of all four models into ``repository``, serving its ``version``."""
    graph = read_manifest(repository / LM / str(version))["model"]
    for path, config in repository_configs(version, options, graph).items():
        write_config(repository / path, config)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def scratch_repository(staged: StagedVersion, target: Path, options: ServingOptions) -> Path:
    """A throw-away repository holding only the staged version (for verification before publishing)."""
    for model in MODELS:
        shutil.copytree(staged.staging_dir(model), target / model / str(staged.version), copy_function=_link_or_copy)
    write_configs(target, staged.version, options)
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
    write_configs(repo, v, options)
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
    for path in CONFIG_FILES:
        set_served_versions(Path(repository) / path, versions)


def record_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a version manifest records besides its files (model, version, model version, ONNX sha256...)."""
    return {k: v for k, v in manifest.items() if k != "files"}


class ModelRepository(Protocol):
    """A Triton model repository the publish stage writes: a local folder or an S3 prefix."""

    @property
    def uri(self) -> str:
        """Where it is, as recorded in the deployments (a folder path or ``s3://bucket/prefix``)."""
        ...

    @property
    def triton_path(self) -> str:
        """What ``tritonserver --model-repository`` takes to read it."""
        ...

    @property
    def staging_root(self) -> Path:
        """The local folder versions are staged (and verified) in before they are published."""
        ...

    def published_versions(self) -> list[int]: ...

    def version_record(self, version: int) -> dict[str, Any] | None:
        """The record of a published version (``lm``'s ``lmforge.json`` without the file list), None if absent."""
        ...

    def publish(self, staged: StagedVersion, options: ServingOptions) -> list[int]:
        """Make a staged version visible, last of all its configs; returns the published versions."""
        ...

    def serve_versions(self, versions: list[int]) -> None: ...


@dataclass(frozen=True)
class LocalRepository:
    """A model repository folder: staged in place, published by renaming (see the module docstring)."""

    path: Path

    @property
    def uri(self) -> str:
        return str(self.path)

    @property
    def triton_path(self) -> str:
        return str(Path(self.path).absolute())

    @property
    def staging_root(self) -> Path:
        return Path(self.path)

    def published_versions(self) -> list[int]:
        return published_versions(self.path)

    def version_record(self, version: int) -> dict[str, Any] | None:
        if version not in self.published_versions():
            return None
        return record_of(json.loads((Path(self.path) / LM / str(version) / VERSION_MANIFEST).read_text()))

    def publish(self, staged: StagedVersion, options: ServingOptions) -> list[int]:
        return publish_version(staged, options)

    def serve_versions(self, versions: list[int]) -> None:
        serve_versions(self.path, versions)
