"""The publish stage: export a model version, verify it in a throw-away Triton, publish it atomically,
switch the serving Triton to it, and record what serves (deployments + the serving alias's history).

Only a version the promotion gate passed (or a reviewer approved after it asked for review) is published:
the evaluation stage's :func:`assert_publishable` is asked before anything is written. The repository is a
local folder or ``s3://bucket/prefix`` (``serving.repository``); either way the version is staged and
verified on this machine first. Publishing is idempotent: a version already in the repository with the
same ONNX graph (sha256) is found, not redone, and the no-op is in the audit trail; the same version
number with another graph is refused, both hashes named.

Also the way back: :func:`rollback_serving` points the serving alias at the version it held before
(``rollback_alias``, so the move is in the alias history) and switches the server back to it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import serving
from lmforge_core.artifacts.base import ArtifactNotFound
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.metadata.evaluation_repository import NotPublishableError, assert_publishable
from lmforge_core.metadata.locks import LockHeldError, LockKey, store_lock
from lmforge_core.metadata.models import ModelVersion
from lmforge_core.runtime import Runtime
from model.registry import LoadedModel, load_model_version
from serving.client import ServingError
from serving.onnx_export import OnnxExport, export_onnx
from serving.s3_repository import S3Repository
from serving.triton_config import ServingOptions
from serving.triton_repository import LocalRepository, ModelRepository, RepositoryError, stage_version
from serving.triton_server import read_state
from serving.verify import switch_version, verify_staged


class PublishError(RuntimeError):
    """The version may not or could not be published; the message says why."""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _one_at_a_time(change: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``change(runtime, ...)`` holding the publish lock of the metadata store, or refuse at once, naming the
    holder. Two publishes of one version would export, stage and verify into the same folders, and the second
    would then be told that its version "already exists", as if the version were at fault."""

    @functools.wraps(change)
    def locked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        runtime: Runtime = args[0] if args else kwargs["runtime"]  # type: ignore[assignment]
        with ExitStack() as stack:
            try:
                stack.enter_context(store_lock(runtime.metadata, LockKey.PUBLISH, "publish",
                                               runtime.settings.workspace))
            except LockHeldError as exc:
                raise PublishError(
                    f"another publish or rollback is running on this metadata store ({exc.where}): {exc.holder}; "
                    "nothing was done. Wait for it to finish, then run again (if it crashed, just run again)"
                ) from None
            return change(*args, **kwargs)

    return locked


@dataclass
class PublishResult:
    model_version: str
    triton_version: int
    repository: str
    parity_max_abs: float
    verification: dict[str, Any]
    served_by: str | None  # gRPC URL of the server switched to it, None when none was running
    versions_on_disk: list[int] = field(default_factory=list)
    reused: bool = False  # already published with the same graph: not exported to the repository again
    switched: bool = False  # the server was switched to it


def model_repository(runtime: Runtime) -> ModelRepository:
    """The configured repository: ``serving.repository`` (a folder or ``s3://bucket/prefix``), by default
    ``<workspace>/triton/repository``. Versions for an S3 repository are staged in ``<workspace>/triton/staging``."""
    configured = runtime.settings.serving.repository
    if configured.startswith("s3://"):
        try:
            return S3Repository(configured, runtime.settings.workspace / "triton" / "staging")
        except RepositoryError as exc:
            raise PublishError(f"serving.repository: {exc}") from exc
    return LocalRepository(Path(configured) if configured else runtime.settings.workspace / "triton" / "repository")


def repository_path(runtime: Runtime) -> Path:
    """The repository folder, for what reads it as local files (the OpenAI endpoint's tokenizer)."""
    repository = model_repository(runtime)
    if not isinstance(repository, LocalRepository):
        raise PublishError(f"the model repository is {repository.uri}, not a local folder; this reads the served "
                           "version's files from a local repository (set serving.repository to a folder)")
    return repository.path


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


def _assert_publishable(runtime: Runtime, version_id: int) -> None:
    with runtime.metadata.session() as session:
        try:
            assert_publishable(session, version_id)
        except NotPublishableError as exc:
            raise PublishError(f"{exc}; nothing was published") from exc


def _smoke_prompts(runtime: Runtime, loaded: LoadedModel) -> list[list[int]]:
    if loaded.tokenizer is None:  # synthetic-data models: token ids straight from the vocabulary
        return [[(7 * i + 3) % loaded.config.vocab_size for i in range(n)] for n in (3, 8)]
    return [loaded.tokenizer.encode(text) or [loaded.tokenizer.bos_id] for text in runtime.settings.serving.smoke_prompts]


@_one_at_a_time
def publish_model(runtime: Runtime, ref: str, *, actor: str = "system", switch_server: bool = True) -> PublishResult:
    """Export ``ref``, verify it in a throw-away server, publish it and (if one runs) switch the server.
    A version already published with the same graph is not redone; if it is not the served one (a failed
    switch, a rollback), the server is switched to it."""
    loaded = load_model_version(runtime.metadata, runtime.artifacts, runtime.settings.model_name, ref)
    _assert_publishable(runtime, loaded.model_version_id)
    if loaded.tokenizer is None:
        raise PublishError(f"{loaded.model_version} has no tokenizer recorded; the Triton tokenizer model needs one")
    number = int(loaded.model_version.rsplit(":v", 1)[1])
    repository = model_repository(runtime)
    prompts = _smoke_prompts(runtime, loaded)
    export_dir = runtime.settings.workspace / "exports" / "onnx" / loaded.model_version.replace(":", "-")
    export = export_onnx(loaded.model, export_dir, max(prompts, key=len), runtime.settings.serving.onnx_tolerance,
                         extra={"model_version": loaded.model_version})
    served = recorded_number(runtime)
    try:
        recorded = repository.version_record(number)
        if recorded is not None:
            noop = served == number or not switch_server
            earlier = _already_published(runtime, repository, loaded.model_version, number, recorded, export, actor,
                                         noop=noop)
            if noop:
                return earlier
            verification, on_disk = earlier.verification, earlier.versions_on_disk
        else:
            verification, on_disk = _stage_and_publish(runtime, repository, loaded, number, export, prompts)
    except RepositoryError as exc:
        raise PublishError(f"{loaded.model_version}: {exc}") from exc
    url = serving_grpc_url(runtime) if switch_server else None
    if url is not None:
        _switch_or_undo(repository, url, served if served in on_disk else None, number)
    _record(runtime, loaded.model_version_id, repository, number, actor,
            f"published; verified {verification.get('prompts', 0)} prompts")
    result = PublishResult(loaded.model_version, number, repository.uri, export.parity.max_abs, verification, url,
                           on_disk, reused=recorded is not None, switched=url is not None)
    key = f"triton/{runtime.settings.model_name}/{number}"
    runtime.artifacts.put_bytes(f"{key}/publish.json", json.dumps(dataclasses.asdict(result), indent=2).encode())
    return result


def recorded_number(runtime: Runtime) -> int | None:
    """The Triton version of the model version the store records as served (the serving alias), if any."""
    with runtime.metadata.session() as session:
        current = repo.get_alias(session, runtime.settings.model_name, runtime.settings.serving.alias)
        return current.version if current is not None else None


def _stage_and_publish(runtime: Runtime, repository: ModelRepository, loaded: LoadedModel, number: int,
                       export: OnnxExport, prompts: list[list[int]]) -> tuple[dict[str, Any], list[int]]:
    """Stage version ``number``, verify it in a throw-away server, publish it; (verification, versions on disk)."""
    options = serving_options(runtime)
    staged = stage_version(repository.staging_root, number, export.directory, loaded.tokenizer,
                           {"model_version": loaded.model_version, "onnx_sha256": export.sha256})
    report = verify_staged(staged, options, loaded.model, prompts,
                           max_tokens=runtime.settings.serving.verify_max_tokens, eos_id=loaded.eos_id)
    on_disk = repository.publish(staged, options)
    key = f"triton/{runtime.settings.model_name}/{number}"
    runtime.artifacts.put_file(f"{key}/model.onnx", export.onnx_path)
    runtime.artifacts.put_bytes(f"{key}/verification.json", json.dumps(report.to_dict(), indent=2).encode())
    return report.to_dict(), on_disk


def _switch_or_undo(repository: ModelRepository, url: str, old: int | None, new: int) -> None:
    """Switch the server at ``url`` from ``old`` to ``new``; if that fails, the configs serve ``old`` again
    and the server is asked to load it back, so the store (still recording ``old``) and Triton agree."""
    try:
        switch_version(repository, url, old, new)
        return
    except ServingError as exc:
        failure = str(exc)
    if old is None:
        raise PublishError(f"{failure}; no version was served before, none is recorded as served")
    try:
        switch_version(repository, url, None, old)
        undone = f"the server serves version {old} again"
    except ServingError as exc:
        undone = (f"the repository serves version {old} again, but the server did not reload it ({exc}); run "
                  "`lmforge serve reconcile` once it runs")
    raise PublishError(f"{failure}; the switch was undone: {undone}")


def _already_published(runtime: Runtime, repository: ModelRepository, label: str, number: int,
                       recorded: dict[str, Any], export: OnnxExport, actor: str, noop: bool) -> PublishResult:
    """The earlier result when version ``number`` holds this very graph (a ``noop`` is audited); refused
    when it holds another one (a version, once published, never changes)."""
    if recorded.get("onnx_sha256") != export.sha256:
        raise PublishError(
            f"Triton version {number} in {repository.uri} is already published from {recorded.get('model_version')} "
            f"with ONNX sha256 {recorded.get('onnx_sha256')}, but {label} exports to sha256 {export.sha256}: "
            "versions are immutable; register and publish the model as a new version")
    try:
        stored = json.loads(runtime.artifacts.get_bytes(f"triton/{runtime.settings.model_name}/{number}/publish.json"))
    except ArtifactNotFound:  # published by another workspace into a shared repository
        stored = {"model_version": recorded.get("model_version", label), "triton_version": number,
                  "repository": repository.uri, "parity_max_abs": export.parity.max_abs, "verification": {},
                  "served_by": None}
    result = PublishResult(**stored | {"versions_on_disk": repository.published_versions(), "reused": True,
                                       "switched": False})
    if not noop:
        return result
    with runtime.metadata.session() as session:
        reviews.record_audit(session, actor=actor, action="serve.publish.noop", target=label, source="publish",
                             details={"triton_version": number, "repository": repository.uri,
                                      "onnx_sha256": export.sha256, "reason": "already published, same graph"})
    return result


def _record(runtime: Runtime, version_id: int, repository: ModelRepository, number: int, actor: str, reason: str,
            rollback: bool = False) -> None:
    name, alias = runtime.settings.model_name, runtime.settings.serving.alias
    with runtime.metadata.session() as session:
        repo.add_deployment(session, model_version_id=version_id, repository_uri=repository.uri,
                            triton_model_name="generate", triton_version=number)
        if rollback:
            repo.rollback_alias(session, name=name, alias=alias, actor=actor, reason=reason)
        else:
            repo.set_alias(session, name=name, alias=alias, model_version_id=version_id, actor=actor, reason=reason)


@_one_at_a_time
def rollback_serving(runtime: Runtime, *, actor: str, reason: str = "") -> dict[str, Any]:
    """Serve the version the serving alias held before the current one (recorded as a rollback)."""
    name, alias = runtime.settings.model_name, runtime.settings.serving.alias
    repository = model_repository(runtime)
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
    try:
        if url is not None:
            switch_version(repository, url, current_number, target_number)
        else:
            repository.serve_versions([target_number])
    except RepositoryError as exc:
        raise PublishError(f"rolling back to {label} failed: {exc}") from exc
    _record(runtime, target_id, repository, target_number, actor, reason or "rollback", rollback=True)
    return {"model_version": label, "triton_version": target_number, "from_version": current_number,
            "served_by": url}
