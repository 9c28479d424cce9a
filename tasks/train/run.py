"""``run_training``: from a dataset version and a starting model to a recorded run and a candidate model.

1. the dataset version (latest by default) and every earlier version (the replay pool) are fetched from
   the artifact store into the workspace cache (sha256-verified);
2. the starting point: the ``production`` model, an imported Hugging Face checkpoint, or scratch;
3. a run row, a run folder with ``spec.json``, and training in-line (one process) or under ``torchrun`` /
   ``deepspeed``; events are recorded as they come (metrics in batches, checkpoints uploaded);
4. the final weights are uploaded and registered as a new model version with the ``candidate`` alias.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge_core.artifacts import ArtifactNotFound
from lmforge_core.config.train import TrainConfig
from lmforge_core.fileio import sha256_file
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import RunStatus
from lmforge_core.runtime import Runtime
from model import checkpointing as ckpt
from model.configs import get_config
from model.engine import fit_micro_batch, init_single_process, resolve_precision
from model.hf_interop import import_hf
from model.launch import spawn
from model.metrics import peak_flops
from model.token_shards import load_manifest, safe_key_path
from model.train_loop import RunSpec, train
from model.weights import CONFIG_FILE, WEIGHTS_FILE, read_weights_config
from tasks.train.recording import Recorder, checkpoint_prefix, upload_tree

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
    with runtime.metadata.session() as session:
        if version is None:
            latest = repo.latest_dataset_version(session)
            if latest is None:
                raise TrainingError("no dataset version exists yet; run `lmforge dataset build` first")
            version = latest.version
        record = repo.get_dataset_version(session, version)
        earlier = [d.version for d in repo.list_dataset_versions(session) if d.id < record.id]
        return version, record.id, earlier


def _fetch_model_weights(runtime: Runtime, artifacts: dict[str, Any], dest: Path) -> Path:
    prefix = artifacts.get("weights")
    if not prefix:
        raise TrainingError("the production model version has no 'weights' artifact recorded")
    dest.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        runtime.artifacts.get_file(f"{prefix}/{name}", dest / name)
    return dest


def _starting_point(runtime: Runtime, source: str, run_dir: Path) -> tuple[str | None, int | None, str]:
    """(weights folder or None for scratch, base model version id, description)."""
    name = runtime.settings.model_name
    if source == "scratch":
        return None, None, "scratch"
    if source == PRODUCTION:
        with runtime.metadata.session() as session:
            production = repo.get_alias(session, name, PRODUCTION)
            if production is None:
                return None, None, "scratch (no production model yet)"
            artifacts, base_id, label = dict(production.artifacts), production.id, production.label
        return str(_fetch_model_weights(runtime, artifacts, run_dir / "init")), base_id, label
    hf_dir = Path(source).expanduser()
    if not hf_dir.is_dir():
        raise TrainingError(f"--from {source!r} is neither 'production', 'scratch' nor a Hugging Face folder")
    import_hf(hf_dir, run_dir / "init")
    return str(run_dir / "init"), None, f"imported {hf_dir.resolve()}"


def _execute(spec: RunSpec, spec_path: Path, processes: int, launcher: str, recorder: Recorder) -> None:
    if processes == 1:
        init_single_process()
        train(spec, on_event=recorder.handle)
        return
    events_path = Path(spec.run_dir) / "events.jsonl"
    offset = events_path.stat().st_size if events_path.is_file() else 0
    log = Path(spec.run_dir) / f"train-{int(time.time())}.log"
    proc = spawn(spec_path, processes, launcher, log)
    buffer = b""

    def drain() -> None:
        nonlocal offset, buffer
        if not events_path.is_file():
            return
        with open(events_path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
        offset += len(chunk)
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                recorder.handle(json.loads(line))

    while proc.poll() is None:
        drain()
        time.sleep(0.5)
    drain()
    if proc.returncode != 0:
        lines = log.read_text(errors="replace").splitlines()
        errors = [line for line in lines if re.match(r"^(\[rank\d+\]: )?[A-Za-z_.]*(Error|Exception|Diverged): ", line)]
        cause = errors[-1] if errors else " | ".join(lines[-3:])
        raise TrainingProcessError(f"training processes exited with code {proc.returncode}: {cause} (log {log})")


def _finish(runtime: Runtime, run_id: str, run_pk: int, base_id: int | None, recorder: Recorder,
            spec: RunSpec, resumed_key: str | None) -> tuple[str, str]:
    done = recorder.done or {}
    weights = Path(done["final_weights"])
    prefix = f"models/{runtime.settings.model_name}/{run_id}"
    files = upload_tree(runtime, weights, prefix)
    checkpoint_key = recorder.checkpoints[-1]["key"] if recorder.checkpoints else resumed_key
    summary = {k: v for k, v in done.items() if k not in ("type", "time")} | {
        "incidents": recorder.incidents[-50:], "checkpoints": recorder.checkpoints,
        "replay_fraction": (recorder.start or {}).get("replay_fraction"),
        "last_step": recorder.last_step,
    }
    with runtime.metadata.session() as session:
        version = repo.register_model_version(
            session, name=runtime.settings.model_name, training_run_pk=run_pk, parent_id=base_id,
            artifacts={"weights": prefix, "sha256": files, "checkpoint": checkpoint_key,
                       "dataset_version": spec.dataset_version, "model_config": spec.model})
        repo.set_alias(session, name=runtime.settings.model_name, alias=CANDIDATE, model_version_id=version.id,
                       actor="train", reason=f"trained by {run_id}")
        repo.finish_run(session, run_id, status=RunStatus.SUCCEEDED, summary=summary | {"model_version": version.label})
        return version.label, checkpoint_key or ""


def _run(runtime: Runtime, spec: RunSpec, run_id: str, run_pk: int, base_id: int | None, processes: int,
         progress: Callable[[dict[str, Any]], None] | None, resumed_key: str | None = None) -> TrainResult:
    cfg = runtime.settings.train
    run_dir = Path(spec.run_dir)
    spec_path = run_dir / "spec.json"
    spec.save(spec_path)
    recorder = Recorder(runtime, run_id, run_pk, cfg.metrics_flush_every, progress, run_dir)
    try:
        fit_micro_batch(TrainConfig.model_validate(spec.train), processes)  # refuse a bad count before spawning
        _execute(spec, spec_path, processes, cfg.launcher, recorder)
        runtime.artifacts.put_file(f"runs/{run_id}/events.jsonl", run_dir / "events.jsonl")
        label, checkpoint_key = _finish(runtime, run_id, run_pk, base_id, recorder, spec, resumed_key)
    except BaseException as exc:
        recorder.flush()
        status = RunStatus.INTERRUPTED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED
        with runtime.metadata.session() as session:
            repo.finish_run(session, run_id, status=status, error="".join(
                traceback.format_exception_only(type(exc), exc)).strip(),
                summary={"checkpoints": recorder.checkpoints, "incidents": recorder.incidents[-50:]})
        raise
    return TrainResult(run_id, "succeeded", label, str(run_dir), checkpoint_key,
                       {k: v for k, v in (recorder.done or {}).items() if k not in ("type", "time")})


def run_training(runtime: Runtime, *, dataset: str | None = None, steps: int | None = None,
                 network: str | None = None, source: str = PRODUCTION, processes: int | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train on ``dataset`` (latest by default) mixed with replay of all earlier versions, starting from
    ``source`` (``production``, ``scratch`` or a Hugging Face folder); record the run and a candidate."""
    settings = runtime.settings
    cfg = settings.train.model_copy(update={k: v for k, v in {"steps": steps, "network": network,
                                                              "processes": processes}.items() if v is not None})
    version, dataset_pk, earlier = _datasets(runtime, dataset)
    cache = settings.workspace / "cache"
    for v in [version, *earlier]:
        fetch_dataset(runtime, v, cache)
    manifest = load_manifest(cache, version)
    with runtime.metadata.session() as session:
        run = repo.create_run(session, config={}, dataset_version_id=dataset_pk)
        run_id, run_pk = run.run_id, run.id
    run_dir = settings.workspace / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        init_weights, base_id, described = _starting_point(runtime, source, run_dir)
        if init_weights:
            model = read_weights_config(Path(init_weights))["model"]
        else:
            model = get_config(cfg.network, vocab_size=int(manifest["tokenizer"]["vocab_size"])).to_dict()
    except BaseException as exc:
        with runtime.metadata.session() as session:
            repo.finish_run(session, run_id, status=RunStatus.FAILED, error=str(exc))
        raise
    spec = RunSpec(
        run_dir=str(run_dir), data_root=str(cache), dataset_version=version, model=model,
        train=cfg.model_dump(), replay_versions=earlier, init_weights=init_weights,
        continuing=init_weights is not None, peak_flops=cfg.peak_flops or peak_flops(
            resolve_precision(cfg.precision), settings.workspace / "peak_flops.json"))
    with runtime.metadata.session() as session:
        record = repo.get_run(session, run_id)
        record.base_model_version_id = base_id
        record.config = {"spec": dataclasses.asdict(spec), "source": described, "processes": cfg.processes}
    return _run(runtime, spec, run_id, run_pk, base_id, cfg.processes, progress)


def resume_training(runtime: Runtime, run_id: str, *, processes: int | None = None,
                    progress: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Continue ``run_id`` from its last recorded checkpoint as a new run (``resumed_from`` the old one),
    on ``processes`` processes (ZeRO checkpoints are converted to the universal format when it differs)."""
    with runtime.metadata.session() as session:
        old = repo.get_run(session, run_id)
        last = repo.latest_checkpoint(session, old.id)
        if last is None:
            raise TrainingError(f"run {run_id} recorded no checkpoint; start a new run instead")
        old_spec = dict(old.config["spec"])
        old_pk, base_id, dataset_pk = old.id, old.base_model_version_id, old.dataset_version_id
        old_procs = int(old.config.get("processes", 1))
        last_key = last.artifact_key
        if old.status == RunStatus.RUNNING:  # it was killed: nothing recorded its end
            repo.finish_run(session, run_id, status=RunStatus.INTERRUPTED, error="ended without a record; resumed",
                            summary=old.summary)
        new = repo.create_run(session, config={}, dataset_version_id=dataset_pk, base_model_version_id=base_id,
                              resumed_from_id=old_pk)
        new_id, new_pk = new.run_id, new.id
    settings = runtime.settings
    run_dir = settings.workspace / "runs" / new_id
    tag = Path(last_key).parent.name
    prefix = checkpoint_prefix(run_id, tag)
    try:
        cache = settings.workspace / "cache"
        for v in [old_spec["dataset_version"], *old_spec["replay_versions"]]:
            fetch_dataset(runtime, v, cache)
        tag_dir = run_dir / "checkpoints" / tag
        for info in runtime.artifacts.list(prefix + "/"):
            dest = tag_dir / info.key[len(prefix) + 1 :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            runtime.artifacts.get_file(info.key, dest)
        ckpt.verify(tag_dir)
        for name in ("regularizer.safetensors", "plan.npy", "plan_sources.json"):
            try:
                runtime.artifacts.get_file(f"runs/{run_id}/{name}", run_dir / name)
            except ArtifactNotFound:
                old_file = settings.workspace / "runs" / run_id / name
                if old_file.is_file():
                    shutil.copy2(old_file, run_dir / name)
        init = old_spec.get("init_weights")
        if init and not Path(init).is_dir():
            raise TrainingError(f"the starting weights {init} of run {run_id} are gone; cannot rebuild the run")
    except BaseException as exc:
        with runtime.metadata.session() as session:
            repo.finish_run(session, new_id, status=RunStatus.FAILED, error=str(exc))
        raise
    procs = processes or old_procs
    spec = RunSpec(**(old_spec | {"run_dir": str(run_dir), "data_root": str(cache), "resume_tag": tag}))
    with runtime.metadata.session() as session:
        record = repo.get_run(session, new_id)
        record.config = {"spec": dataclasses.asdict(spec), "source": f"resumed {run_id} at {tag}",
                         "processes": procs}
    return _run(runtime, spec, new_id, new_pk, base_id, procs, progress, resumed_key=last_key)
