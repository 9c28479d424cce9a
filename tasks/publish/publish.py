"""The publish stage: export a model version, verify it in a throw-away Triton, publish it atomically,
switch the serving Triton to it, and record what serves (deployments + the serving alias's history).

Also the way back: :func:`rollback_serving` points the serving alias at the version it held before
(``rollback_alias``, so the move is in the alias history) and switches the server back to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import serving
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import ModelStatus, ModelVersion
from lmforge_core.runtime import Runtime
from model.registry import LoadedModel, load_model_version
from serving.onnx_export import export_onnx
from serving.triton_config import ServingOptions
from serving.triton_repository import publish_version, published_versions, serve_versions, stage_version
from serving.triton_server import read_state
from serving.verify import switch_version, verify_staged


class PublishError(RuntimeError):
    """The version may not or could not be published; the message says why."""


@dataclass
class PublishResult:
    model_version: str
    triton_version: int
    repository: str
    parity_max_abs: float
    verification: dict[str, Any]
    served_by: str | None  # gRPC URL of the server switched to it, None when none was running
    versions_on_disk: list[int] = field(default_factory=list)


def repository_path(runtime: Runtime) -> Path:
    configured = runtime.settings.serving.repository
    if configured.startswith("s3://"):
        raise PublishError("publishing to an s3:// repository is not implemented yet; publish locally and sync")
    return Path(configured) if configured else runtime.settings.workspace / "triton" / "repository"


def server_dir(runtime: Runtime) -> Path:
    return runtime.settings.workspace / "triton" / "server"


def serving_options(runtime: Runtime, *, local_source: bool = True) -> ServingOptions:
    """The configs' settings; ``local_source`` makes the python stubs import this checkout of lmforge."""
    cfg = runtime.settings.serving
    source = str(Path(serving.__file__).resolve().parents[1]) if local_source else ""
    return ServingOptions(max_slots=cfg.max_slots, max_tokens_limit=cfg.max_tokens_limit,
                          decode_backend=cfg.decode_backend, threads=cfg.threads, project_source=source)


def serving_grpc_url(runtime: Runtime) -> str | None:
    if runtime.settings.serving.triton_grpc_url:
        return runtime.settings.serving.triton_grpc_url
    state = read_state(server_dir(runtime))
    return state.grpc_url if state is not None else None


def _refuse_unpublishable(runtime: Runtime, version_id: int, label: str) -> None:
    # The evaluation stage's gate marks a rejected version REJECTED for good; it is checked here through
    # the repository (the gate's own publish guard replaces this check once both stages are merged).
    with runtime.metadata.session() as session:
        status = session.get(ModelVersion, version_id).status
    if status is ModelStatus.REJECTED:
        raise PublishError(f"{label} was rejected by the promotion gate and cannot be published")


def _smoke_prompts(runtime: Runtime, loaded: LoadedModel) -> list[list[int]]:
    if loaded.tokenizer is None:  # synthetic-data models: token ids straight from the vocabulary
        return [[(7 * i + 3) % loaded.config.vocab_size for i in range(n)] for n in (3, 8)]
    return [loaded.tokenizer.encode(text) or [loaded.tokenizer.bos_id] for text in runtime.settings.serving.smoke_prompts]


def publish_model(runtime: Runtime, ref: str, *, actor: str = "system", switch_server: bool = True) -> PublishResult:
    """Export ``ref``, verify it in a throw-away server, publish it and (if one runs) switch the server."""
    loaded = load_model_version(runtime.metadata, runtime.artifacts, runtime.settings.model_name, ref)
    _refuse_unpublishable(runtime, loaded.model_version_id, loaded.model_version)
    if loaded.tokenizer is None:
        raise PublishError(f"{loaded.model_version} has no tokenizer recorded; the Triton tokenizer model needs one")
    number = int(loaded.model_version.rsplit(":v", 1)[1])
    repository = repository_path(runtime)
    if number in published_versions(repository):
        raise PublishError(f"{loaded.model_version} is already published as Triton version {number} in {repository}")
    prompts = _smoke_prompts(runtime, loaded)
    export_dir = runtime.settings.workspace / "exports" / "onnx" / loaded.model_version.replace(":", "-")
    export = export_onnx(loaded.model, export_dir, max(prompts, key=len), runtime.settings.serving.onnx_tolerance,
                         extra={"model_version": loaded.model_version})
    options = serving_options(runtime)
    staged = stage_version(repository, number, export.directory, loaded.tokenizer,
                           {"model_version": loaded.model_version, "onnx_sha256": export.sha256})
    report = verify_staged(staged, options, loaded.model, prompts,
                           max_tokens=runtime.settings.serving.verify_max_tokens, eos_id=loaded.eos_id)
    on_disk = publish_version(staged, options)
    key = f"triton/{runtime.settings.model_name}/{number}"
    runtime.artifacts.put_file(f"{key}/model.onnx", export.onnx_path)
    runtime.artifacts.put_bytes(f"{key}/verification.json", json.dumps(report.to_dict(), indent=2).encode())
    url = serving_grpc_url(runtime) if switch_server else None
    with runtime.metadata.session() as session:
        previous = repo.get_alias(session, runtime.settings.model_name, runtime.settings.serving.alias)
        old = previous.version if previous is not None else None
    if url is not None:
        switch_version(repository, url, old if old in on_disk else None, number)
    _record(runtime, loaded.model_version_id, repository, number, actor, f"published; verified {report.prompts} prompts")
    return PublishResult(loaded.model_version, number, str(repository), export.parity.max_abs, report.to_dict(), url,
                         on_disk)


def _record(runtime: Runtime, version_id: int, repository: Path, number: int, actor: str, reason: str,
            rollback: bool = False) -> None:
    name, alias = runtime.settings.model_name, runtime.settings.serving.alias
    with runtime.metadata.session() as session:
        repo.add_deployment(session, model_version_id=version_id, repository_uri=str(repository),
                            triton_model_name="generate", triton_version=number)
        if rollback:
            repo.rollback_alias(session, name=name, alias=alias, actor=actor, reason=reason)
        else:
            repo.set_alias(session, name=name, alias=alias, model_version_id=version_id, actor=actor, reason=reason)


def rollback_serving(runtime: Runtime, *, actor: str, reason: str = "") -> dict[str, Any]:
    """Serve the version the serving alias held before the current one (recorded as a rollback)."""
    name, alias = runtime.settings.model_name, runtime.settings.serving.alias
    repository = repository_path(runtime)
    with runtime.metadata.session() as session:
        current = repo.get_alias(session, name, alias)
        if current is None:
            raise PublishError(f"nothing is recorded as served ({name}@{alias}); publish a version first")
        current_number = current.version
        event = repo.rollback_alias(session, name=name, alias=alias, actor=actor, reason=reason or "rollback")
        target = session.get(ModelVersion, event.model_version_id)
        target_number, target_id, label = target.version, target.id, target.label
        session.rollback()  # switch the server first; the alias moves only once it serves the target
    url = serving_grpc_url(runtime)
    if url is not None:
        switch_version(repository, url, current_number, target_number)
    else:
        serve_versions(repository, [target_number])
    _record(runtime, target_id, repository, target_number, actor, reason or "rollback", rollback=True)
    return {"model_version": label, "triton_version": target_number, "from_version": current_number,
            "served_by": url}
