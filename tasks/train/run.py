"""``run_training``: from a dataset version and a starting model to a recorded run and a candidate model.

1. the dataset version (latest by default) and every earlier version (the replay pool) are fetched from
   the artifact store into the workspace cache (sha256-verified);
2. the starting point: the ``production`` model, a checkpoint imported (and registered) now, or scratch; a
   model that has its own tokenizer trains on the same documents tokenized by it (`dataset_for_tokenizer`);
3. a run row, a run folder with ``job.json`` (the typed :class:`JobConfig`), and training in-line (one
   process) or under ``torchrun`` / ``deepspeed``; events are recorded as they come (metrics in batches,
   checkpoints uploaded);
4. the final weights are uploaded and registered as a new model version with the ``candidate`` alias.

Whatever fails after the run row exists goes through one path (:func:`_failure_recorded`): the row ends
``failed`` (``interrupted`` on Ctrl-C) with the error and what was recorded so far, and the error propagates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge_core.artifacts import ArtifactNotFound
from lmforge_core.config.train import TrainConfig
from lmforge_core.fileio import sha256_file
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import RunStatus
from lmforge_core.processes import process_identity
from lmforge_core.runtime import Runtime
from model import checkpointing as ckpt
from model.adapters import ADAPTER_DIR
from model.configs import ModelConfig, get_config
from model.engine import fit_micro_batch, init_single_process, resolve_precision
from model.job import JOB_FILE, DataMixConfig, JobConfig
from model.launch import HostfileError, read_error_file, spawn, world_size
from model.metrics import peak_flops
from model.registry import tokenizer_for_version
from model.token_shards import load_manifest, safe_key_path
from model.tokenizer import TokenizerRef
from model.train_loop import train
from model.weights import CONFIG_FILE, WEIGHTS_FILE, read_weights_config
from tasks.dataset.versions import dataset_for_tokenizer
from tasks.train.imports import import_model
from tasks.train.recording import Recorder, checkpoint_prefix, upload_tree
from tasks.train.replay_plan import planned_config

CANDIDATE = "candidate"
PRODUCTION = "production"


class TrainingError(RuntimeError):
    """The run could not start or did not finish; the message says why and what to do."""


class TrainingProcessError(TrainingError):
    """The launched training processes exited with an error (killed, crashed): the run can be resumed."""


@dataclass
class TrainResult:
    run_id: str
    status: str
    model_version: str | None
    run_dir: str
    checkpoint_key: str | None
    summary: dict[str, Any]


def _fetch(runtime: Runtime, key: str, cache: Path, sha256: str | None = None) -> Path:
    dest = safe_key_path(cache, key)
    if dest.is_file() and sha256 is not None and sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    runtime.artifacts.get_file(key, dest)
    return dest


def fetch_dataset(runtime: Runtime, version: str, cache: Path, splits: tuple[str, ...] = ("train",)) -> None:
    """Manifest and the shards of ``splits`` of ``version`` into ``cache`` (keys as paths)."""
    with runtime.metadata.session() as session:
        record = repo.get_dataset_version(session, version)
        manifest_key = record.manifest_key
    _fetch(runtime, manifest_key, cache)
    manifest = load_manifest(cache, version)
    for split in splits:
        for shard in manifest["splits"].get(split, []):
            _fetch(runtime, shard["key"], cache, shard.get("sha256"))


def _datasets(runtime: Runtime, version: str | None) -> tuple[str, int, list[str]]:
    """(the ingested version to train, its id, the earlier ingested versions: the replay pool). Versions that
    re-tokenize an ingested one for another tokenizer are not versions of their own here."""
    with runtime.metadata.session() as session:
        ingested = [d for d in repo.list_dataset_versions(session) if not repo.is_derived_dataset(d.version)]
        if version is None:
            if not ingested:
                raise TrainingError("no dataset version exists yet; run `lmforge ingest SOURCE` first")
            version = ingested[-1].version
        version = version.split(repo.DERIVED, 1)[0]  # a derived version names the same documents as its source
        record = repo.get_dataset_version(session, version)
        earlier = [d.version for d in ingested if d.id < record.id and d.version != version]
        return version, record.id, earlier


def _for_tokenizer(runtime: Runtime, tokenizer: TokenizerRef | None, versions: list[str]) -> list[str]:
    """``versions`` tokenized for the starting model's own tokenizer (as they are for a model from scratch)."""
    if tokenizer is None:
        return versions
    try:
        return [dataset_for_tokenizer(runtime, v, tokenizer) for v in versions]
    except ValueError as exc:
        raise TrainingError(f"the data cannot be tokenized for {tokenizer.version}: {exc}") from exc


def _fetch_model_weights(runtime: Runtime, artifacts: dict[str, Any], dest: Path) -> Path:
    prefix = artifacts.get("weights")
    if not prefix:
        raise TrainingError("the production model version has no 'weights' artifact recorded")
    dest.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        runtime.artifacts.get_file(f"{prefix}/{name}", dest / name)
    return dest


@dataclass
class StartingPoint:
    weights: str | None  # weights folder, None for scratch
    base_id: int | None  # the model version continued
    described: str
    tokenizer: TokenizerRef | None  # the model's own tokenizer; None: the dataset's (scratch)


def _starting_point(runtime: Runtime, source: str, run_dir: Path) -> StartingPoint:
    """``production``, ``scratch`` or a checkpoint to import (a Hugging Face folder or a .gguf file, registered
    as a model version first): what training starts from, and the tokenizer the data must be tokenized by."""
    name = runtime.settings.model_name
    if source == "scratch":
        return StartingPoint(None, None, "scratch", None)
    ref, described = PRODUCTION, None
    if source != PRODUCTION:
        path = Path(source).expanduser()
        if not (path.is_dir() or path.suffix == ".gguf"):
            raise TrainingError(f"--from {source!r} is neither 'production', 'scratch', a Hugging Face folder "
                                "nor a .gguf file")
        ref = import_model(runtime, path).model_version
        described = f"{ref} (imported {path.resolve()})"
    with runtime.metadata.session() as session:
        version = repo.get_alias(session, name, PRODUCTION) if ref == PRODUCTION else \
            repo.resolve_model_version(session, name, ref.rsplit(":", 1)[1])
        if version is None:
            return StartingPoint(None, None, "scratch (no production model yet)", None)
        artifacts, base_id, described = dict(version.artifacts), version.id, described or version.label
        tokenizer = tokenizer_for_version(session, runtime.artifacts, artifacts, runtime.settings.data.tokenizer)
    weights = str(_fetch_model_weights(runtime, artifacts, run_dir / "init"))
    return StartingPoint(weights, base_id, described, tokenizer)


def _execute(job: JobConfig, job_path: Path, processes: int, recorder: Recorder) -> None:
    if processes == 1 and job.train.hostfile is None:
        init_single_process()
        train(job, on_event=recorder.handle)
        return
    run_dir = Path(job.run_dir)
    started = int(time.time())
    log, error_file = run_dir / f"train-{started}.log", run_dir / f"error-{started}.json"
    tails = [EventTail(run_dir / "events.jsonl", recorder.handle), EventTail(log, recorder.handle, _launcher_line)]
    proc = spawn(job_path, processes, job.train.launcher, log, error_file, hostfile=job.train.hostfile)
    while proc.poll() is None:
        for tail in tails:
            tail.drain()
        time.sleep(0.5)
    for tail in tails:
        tail.drain()
    if proc.returncode != 0:
        cause = read_error_file(error_file)
        if cause is None:  # no error file: killed by a signal, or it died before the entry point ran
            cause = " | ".join(log.read_text(errors="replace").splitlines()[-3:])
        raise TrainingProcessError(f"training processes exited with code {proc.returncode}: {cause} (log {log})")


def _world(processes: int, hostfile: str | None) -> int:
    """The run's process count (``processes`` on each host of a hostfile); a bad hostfile is named here."""
    try:
        return world_size(processes, hostfile)
    except HostfileError as exc:
        raise TrainingError(str(exc)) from exc


def _launcher_line(line: bytes) -> dict[str, Any]:
    return {"type": "log", "line": line.decode(errors="replace").rstrip()}


class EventTail:
    """Hands each complete new line of a growing file to ``handle`` as an event: ``events.jsonl`` lines as
    they are, other files' lines through ``parse`` (the launcher's output as ``log`` events)."""

    def __init__(self, path: Path, handle: Callable[[dict[str, Any]], None],
                 parse: Callable[[bytes], dict[str, Any]] = json.loads) -> None:
        self.path, self.handle, self.parse = path, handle, parse
        self.offset = path.stat().st_size if path.is_file() else 0
        self.buffer = b""

    def drain(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        self.offset += len(chunk)
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")
        for line in lines:
            if line.strip():
                self.handle(self.parse(line))


@contextlib.contextmanager
def _failure_recorded(runtime: Runtime, run_id: str, recorder: Recorder | None = None) -> Iterator[None]:
    """The one failure path of a run: record how it ended (and what it recorded so far), then re-raise."""
    try:
        yield
    except BaseException as exc:
        summary = None
        if recorder is not None:
            recorder.flush()
            summary = {"checkpoints": recorder.checkpoints, "incidents": recorder.incidents[-50:]}
        status = RunStatus.INTERRUPTED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        with runtime.metadata.session() as session:
            repo.finish_run(session, run_id, status=status, error=error, summary=summary)
        raise


def _finish(runtime: Runtime, run_id: str, run_pk: int, base_id: int | None, recorder: Recorder,
            job: JobConfig, resumed_key: str | None) -> tuple[str, str]:
    done = recorder.done or {}
    weights = Path(done["final_weights"])
    prefix = f"models/{runtime.settings.model_name}/{run_id}"
    files = upload_tree(runtime, weights, prefix)
    checkpoint_key = recorder.checkpoints[-1]["key"] if recorder.checkpoints else resumed_key
    artifacts = {"weights": prefix, "sha256": files, "checkpoint": checkpoint_key,
                 "dataset_version": job.data.dataset_version, "model_config": job.model.to_dict(),
                 "method": job.train.method, "tokenizer": _dataset_tokenizer(runtime, job.data.dataset_version)}
    if (weights / ADAPTER_DIR).is_dir():
        artifacts["adapter"] = f"{prefix}/{ADAPTER_DIR}"
    summary = {k: v for k, v in done.items() if k not in ("type", "time")} | {
        "incidents": recorder.incidents[-50:], "checkpoints": recorder.checkpoints,
        "replay_fraction": (recorder.start or {}).get("replay_fraction"),
        "last_step": recorder.last_step,
    }
    with runtime.metadata.session() as session:
        version = repo.register_model_version(
            session, name=runtime.settings.model_name, training_run_pk=run_pk, parent_id=base_id, artifacts=artifacts)
        if "adapter" in artifacts:  # what the adapter applies to: the parent version (an import is one too)
            version.artifacts = artifacts | {"adapter_base": version.parent.label}
        repo.set_alias(session, name=runtime.settings.model_name, alias=CANDIDATE, model_version_id=version.id,
                       actor="train", reason=f"trained by {run_id}")
        repo.finish_run(session, run_id, status=RunStatus.SUCCEEDED, summary=summary | {"model_version": version.label})
        return version.label, checkpoint_key or ""


def _dataset_tokenizer(runtime: Runtime, version: str) -> str | None:
    """The tokenizer version a dataset version was tokenized by: the trained model's tokenizer."""
    with runtime.metadata.session() as session:
        tokenizer = repo.get_dataset_version(session, version).tokenizer
        return tokenizer.version if tokenizer is not None else None


def _run(runtime: Runtime, job: JobConfig, run_id: str, run_pk: int, base_id: int | None, processes: int,
         progress: Callable[[dict[str, Any]], None] | None, resumed_key: str | None = None) -> TrainResult:
    run_dir = Path(job.run_dir)
    job_path = run_dir / JOB_FILE
    job.save(job_path)
    recorder = Recorder(runtime, run_id, run_pk, job.train.metrics_flush_every, progress, run_dir)
    with _failure_recorded(runtime, run_id, recorder):
        fit_micro_batch(job.train, _world(processes, job.train.hostfile))  # refuse a bad count before spawning
        _execute(job, job_path, processes, recorder)
        runtime.artifacts.put_file(f"runs/{run_id}/events.jsonl", run_dir / "events.jsonl")
        label, checkpoint_key = _finish(runtime, run_id, run_pk, base_id, recorder, job, resumed_key)
    return TrainResult(run_id, "succeeded", label, str(run_dir), checkpoint_key,
                       {k: v for k, v in (recorder.done or {}).items() if k not in ("type", "time")})


def run_training(runtime: Runtime, *, dataset: str | None = None, steps: int | None = None,
                 network: str | None = None, source: str = PRODUCTION, processes: int | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None,
                 options: dict[str, Any] | None = None) -> TrainResult:
    """Train on ``dataset`` (latest by default) mixed with replay of all earlier versions, starting from
    ``source`` (``production``, ``scratch`` or a Hugging Face folder); record the run and a candidate.
    ``options`` overrides training settings (``method``, ``lora_rank``, ...), validated as the settings are."""
    settings = runtime.settings
    given = {"steps": steps, "network": network, "processes": processes} | (options or {})
    cfg = TrainConfig.model_validate(settings.train.model_dump() | {k: v for k, v in given.items() if v is not None})
    cfg = cfg.model_copy(update={"peak_flops": cfg.peak_flops or peak_flops(
        resolve_precision(cfg.precision), settings.workspace / "peak_flops.json")})
    requested, dataset_pk, earlier = _datasets(runtime, dataset)
    cache = settings.workspace / "cache"
    with runtime.metadata.session() as session:
        run = repo.create_run(session, config={"owner": process_identity()}, dataset_version_id=dataset_pk)
        run_id, run_pk = run.run_id, run.id
    run_dir = settings.workspace / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    with _failure_recorded(runtime, run_id):
        start = _starting_point(runtime, source, run_dir)
        init_weights, base_id, described = start.weights, start.base_id, start.described
        version, *earlier = _for_tokenizer(runtime, start.tokenizer, [requested, *earlier])
        for v in [version, *earlier]:
            fetch_dataset(runtime, v, cache)
        manifest = load_manifest(cache, version)
        if cfg.method == "lora" and init_weights is None:
            raise TrainingError(f"train.method lora adapts a trained model, but the run starts from {described}: "
                                "train a full model first, or start from a Hugging Face folder (--from DIR)")
        if init_weights:
            model = ModelConfig.from_dict(read_weights_config(Path(init_weights))["model"])
        else:
            model = get_config(cfg.network, vocab_size=int(manifest["tokenizer"]["vocab_size"]))
        cfg, plan = planned_config(runtime, cfg, version, continuing=init_weights is not None and bool(earlier))
    job = JobConfig(run_dir=str(run_dir), model=model, train=cfg,
                    data=DataMixConfig(root=str(cache), dataset_version=version, replay_versions=earlier),
                    init_weights=init_weights, continuing=init_weights is not None)
    with runtime.metadata.session() as session:
        record = repo.get_run(session, run_id)
        record.base_model_version_id = base_id
        record.config = {"owner": process_identity(), "job": job.to_dict(), "source": described,
                         "processes": cfg.processes, "replay_plan": plan.to_dict()}
    return _run(runtime, job, run_id, run_pk, base_id, cfg.processes, progress)


def _restore_run_folder(runtime: Runtime, old_run_id: str, tag: str, job: JobConfig) -> None:
    """Into the new run's folder: the datasets, the checkpoint ``tag`` of ``old_run_id`` (verified), and the
    files rebuilding the run needs (data plan, regulariser)."""
    settings, run_dir = runtime.settings, Path(job.run_dir)
    for v in [job.data.dataset_version, *job.data.replay_versions]:
        fetch_dataset(runtime, v, Path(job.data.root))
    prefix = checkpoint_prefix(old_run_id, tag)
    tag_dir = run_dir / "checkpoints" / tag
    for info in runtime.artifacts.list(prefix + "/"):
        runtime.artifacts.get_file(info.key, tag_dir / info.key[len(prefix) + 1 :])
    ckpt.verify(tag_dir)
    for name in ("regularizer.safetensors", "plan.npy", "plan_sources.json"):
        try:
            runtime.artifacts.get_file(f"runs/{old_run_id}/{name}", run_dir / name)
        except ArtifactNotFound:
            old_file = settings.workspace / "runs" / old_run_id / name
            if old_file.is_file():
                shutil.copy2(old_file, run_dir / name)
    if job.init_weights and not Path(job.init_weights).is_dir():
        raise TrainingError(f"the starting weights {job.init_weights} of run {old_run_id} are gone; "
                            "cannot rebuild the run")


def resume_training(runtime: Runtime, run_id: str, *, processes: int | None = None,
                    progress: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Continue ``run_id`` from its last recorded checkpoint as a new run (``resumed_from`` the old one),
    on ``processes`` processes (ZeRO checkpoints are converted to the universal format when it differs)."""
    with runtime.metadata.session() as session:
        old = repo.get_run(session, run_id)
        last = repo.latest_checkpoint(session, old.id)
        if last is None:
            raise TrainingError(f"run {run_id} recorded no checkpoint; start a new run instead")
        if "job" not in old.config:
            raise TrainingError(f"run {run_id} was recorded before runs kept their job configuration; "
                                "it cannot be resumed: start a new run from its dataset instead")
        old_job = JobConfig.from_dict(old.config["job"])
        base_id, procs = old.base_model_version_id, processes or int(old.config.get("processes", 1))
        last_key = last.artifact_key
        if old.status == RunStatus.RUNNING:  # it was killed: nothing recorded its end
            repo.finish_run(session, run_id, status=RunStatus.INTERRUPTED, error="ended without a record; resumed",
                            summary=old.summary)
        new = repo.create_run(session, config={"owner": process_identity()}, dataset_version_id=old.dataset_version_id,
                              base_model_version_id=base_id, resumed_from_id=old.id)
        new_id, new_pk = new.run_id, new.id
    tag = Path(last_key).parent.name
    cache = runtime.settings.workspace / "cache"
    job = dataclasses.replace(old_job, run_dir=str(runtime.settings.workspace / "runs" / new_id), resume_tag=tag,
                              data=dataclasses.replace(old_job.data, root=str(cache)))
    with _failure_recorded(runtime, new_id):
        _restore_run_folder(runtime, run_id, tag, job)
    with runtime.metadata.session() as session:
        record = repo.get_run(session, new_id)
        record.config = {"owner": process_identity(), "job": job.to_dict(), "source": f"resumed {run_id} at {tag}",
                         "processes": procs}
    return _run(runtime, job, new_id, new_pk, base_id, procs, progress, resumed_key=last_key)
