"""The training loop: DeepSpeed engine over the data mix, spike handling, checkpoints, events.

One function, :func:`train`, runs in every process (in-line as a world of one, or under ``torchrun`` /
``deepspeed`` via :mod:`model.launch`). Everything it needs is in a :class:`RunSpec` (JSON in the run
folder). Rank 0 reports through events (``events.jsonl`` in the run folder, and an optional callback):
``start``, ``step``, ``spike``, ``rollback``, ``checkpoint``, ``done``; the caller records them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmforge_core.config.train import TrainConfig
from model import checkpointing as ckpt
from model.configs import ModelConfig
from model.continual import Regularizer, TrainModule, diagonal_fisher
from model.data import DataMix
from model.engine import (
    create_engine,
    device,
    fit_micro_batch,
    import_deepspeed,
    init_distributed,
    load_checkpoint,
    resolve_precision,
)
from model.metrics import mfu, peak_flops
from model.network import Transformer, build_model
from model.weights import WeightsError, load_into, load_state_dict, save_weights

Event = dict[str, Any]


class TrainingDiverged(RuntimeError):
    """Loss spikes persisted past the allowed rollbacks, or came before any checkpoint."""


@dataclass
class RunSpec:
    """Everything a training process needs; written to ``<run_dir>/spec.json``."""

    run_dir: str
    data_root: str
    dataset_version: str
    model: dict[str, Any]
    train: dict[str, Any]
    replay_versions: list[str] = field(default_factory=list)
    init_weights: str | None = None  # weights folder the run starts from (production or an import)
    continuing: bool = False  # starts from a trained model: re-warm the learning rate
    resume_tag: str | None = None  # checkpoint tag under <run_dir>/checkpoints to resume from
    peak_flops: float | None = None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> RunSpec:
        return cls(**json.loads(path.read_text()))


@dataclass
class LoopState:
    """Saved in every checkpoint (DeepSpeed client state)."""

    step: int = 0  # optimizer updates applied
    data_step: int = 0  # global batches consumed (skipped spikes and rollbacks move on past bad data)
    spikes: int = 0
    skipped_steps: int = 0
    rollbacks: int = 0
    consecutive_spikes: int = 0
    recent_losses: list[float] = field(default_factory=list)


class EventLog:
    def __init__(self, path: Path | None, callback: Callable[[Event], None] | None) -> None:
        self.fh = open(path, "a", buffering=1) if path is not None else None
        self.callback = callback

    def emit(self, kind: str, **data: Any) -> None:
        if self.fh is None:
            return
        event = {"type": kind, "time": time.time(), **data}
        self.fh.write(json.dumps(event) + "\n")
        if self.callback is not None:
            self.callback(event)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def _global_mean(value: torch.Tensor, world: int) -> float:
    value = value.detach().float().clone()
    if world > 1:
        torch.distributed.all_reduce(value)
        value /= world
    return float(value)


def _is_spike(loss: float, recent: deque[float], cfg: TrainConfig) -> bool:
    if not math.isfinite(loss):
        return True
    warm = min(5, cfg.spike_window)
    return len(recent) >= warm and loss > cfg.spike_factor * (sum(recent) / len(recent))


def _consolidated_state(engine: Any, zero_stage: int) -> dict[str, torch.Tensor] | None:
    """Full fp32 weights of the transformer on rank 0 (gathered under ZeRO-3); None on other ranks."""
    model: Transformer = engine.module.model
    if zero_stage == 3:
        deepspeed = import_deepspeed()
        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    else:
        state = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    return state if torch.distributed.get_rank() == 0 else None


def _build_regularizer(cfg: TrainConfig, spec: RunSpec, model: Transformer, data: DataMix,
                       run_dir: Path, rank: int, world: int) -> Regularizer | None:
    if cfg.regularization == "none":
        return None
    if spec.init_weights is None:
        raise ValueError(f"{cfg.regularization} regularisation needs previous weights; this run starts from scratch")
    path = run_dir / "regularizer.safetensors"
    if not path.is_file() and rank == 0:
        anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
        weights = None
        if cfg.regularization == "ewc":
            old = [s for s in range(1, len(data.sources))] or [0]  # earlier data; the new data if none
            gen = torch.Generator().manual_seed(cfg.seed)
            batches = []
            for _ in range(cfg.ewc_batches):
                src = old[int(torch.randint(len(old), (1,), generator=gen))]
                idx = torch.randint(len(data.sources[src]), (cfg.micro_batch,), generator=gen).numpy()
                w = torch.from_numpy(data.sources[src].get(idx).astype("int64"))
                batches.append((w[:, :-1], w[:, 1:]))
            weights = diagonal_fisher(model, batches)
        Regularizer(anchor, weights, cfg.reg_strength).save(path)
    _barrier(world)
    return Regularizer.load(path, cfg.reg_strength)


def train(spec: RunSpec, on_event: Callable[[Event], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the training described by ``spec``; returns the summary of the ``done`` event."""
    cfg = TrainConfig.model_validate(spec.train)
    rank, world = init_distributed()
    cfg = fit_micro_batch(cfg, world)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(spec.run_dir)
    ckpt_root = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    events = EventLog(run_dir / "events.jsonl" if rank == 0 else None, on_event)
    try:
        return _train(spec, cfg, run_dir, ckpt_root, rank, world, events)
    finally:
        events.close()


def _train(spec: RunSpec, cfg: TrainConfig, run_dir: Path, ckpt_root: Path, rank: int, world: int,
           events: EventLog) -> dict[str, Any]:
    precision = resolve_precision(cfg.precision)
    mconf = dataclasses.replace(ModelConfig.from_dict(spec.model), dropout=cfg.dropout,
                                activation_checkpointing=cfg.activation_checkpointing)
    torch.manual_seed(cfg.seed)
    model = build_model(mconf)
    if spec.init_weights:
        state, wconf = load_state_dict(Path(spec.init_weights))
        if dataclasses.replace(wconf, dropout=0.0, activation_checkpointing=False) != dataclasses.replace(
                mconf, dropout=0.0, activation_checkpointing=False):
            raise WeightsError(f"weights in {spec.init_weights} have shape {wconf} but the run asks for {mconf}")
        load_into(model, state, spec.init_weights)
    data = DataMix.create(Path(spec.data_root), spec.dataset_version, spec.replay_versions,
                          cfg.replay_fraction, cfg.steps * cfg.global_batch, cfg.seed)
    if mconf.vocab_size < max((s.vocab_size for s in data.sources), default=0):
        raise ValueError(f"model vocabulary {mconf.vocab_size} is smaller than the dataset tokenizer's")
    if data.window - 1 > mconf.context:
        raise ValueError(f"dataset windows of {data.window - 1} tokens exceed the model context {mconf.context}")
    if rank == 0 and not (run_dir / "plan.npy").is_file():
        data.save_plan(run_dir)
    regularizer = _build_regularizer(cfg, spec, model, data, run_dir, rank, world)
    module = TrainModule(model, regularizer, partitioned=cfg.zero_stage == 3)

    manifest = None
    load_tag = spec.resume_tag
    if spec.resume_tag:
        manifest = ckpt.verify(ckpt_root / spec.resume_tag) if rank == 0 else ckpt.read_manifest(
            ckpt_root / spec.resume_tag)
        _barrier(world)
    universal = bool(manifest and manifest["world_size"] != world and manifest["zero_stage"] > 0)
    if universal:
        if rank == 0:
            ckpt.to_universal(ckpt_root, spec.resume_tag)
        _barrier(world)
        load_tag = f"{spec.resume_tag}-universal"
    engine = create_engine(module, cfg, world, spec.continuing, load_universal=universal)
    torch.manual_seed(cfg.seed + 7919 * (rank + 1))  # dropout streams differ per rank
    loop = LoopState()
    if load_tag:
        client = load_checkpoint(engine, str(ckpt_root), load_tag)
        if client is None:
            raise ckpt.CheckpointError(f"DeepSpeed could not load checkpoint {ckpt_root / load_tag}")
        loop = LoopState(**(client.get("lmforge") or manifest["loop"]))
        if not ckpt.load_rng(ckpt_root / spec.resume_tag, rank):
            torch.manual_seed(cfg.seed + 7919 * (rank + 1) + loop.step)
    accum = cfg.global_batch // (cfg.micro_batch * world)
    dev = device()
    tokens_per_step = cfg.global_batch * (data.window - 1)
    flops_per_token = mconf.matmul_flops_per_token(data.window - 1)
    peak = spec.peak_flops or peak_flops(precision, run_dir / "peak_flops.json")
    recent: deque[float] = deque(loop.recent_losses, maxlen=cfg.spike_window)
    events.emit("start", step=loop.step, data_step=loop.data_step, world_size=world, zero_stage=cfg.zero_stage,
                precision=precision, resumed_from=spec.resume_tag, universal=universal,
                replay_fraction=data.replay_fraction(), sources=data.versions,
                num_params=model.num_params(), peak_flops=peak)

    def save(reason: str) -> None:
        tag = ckpt.tag_for(loop.step)
        loop.recent_losses = list(recent)
        engine.save_checkpoint(str(ckpt_root), tag=tag, client_state={"lmforge": dataclasses.asdict(loop)})
        ckpt.save_rng(ckpt_root / tag, rank)
        full = _consolidated_state(engine, cfg.zero_stage)
        _barrier(world)
        if rank == 0:
            save_weights(full, mconf, ckpt_root / tag / "weights")
            info = {"step": loop.step, "world_size": world, "zero_stage": cfg.zero_stage, "reason": reason,
                    "loop": dataclasses.asdict(loop)}
            manifest = ckpt.write_manifest(ckpt_root / tag, info)
            ckpt.prune(ckpt_root, cfg.keep_checkpoints)
            events.emit("checkpoint", step=loop.step, tag=tag, path=str(ckpt_root / tag),
                        files=manifest["files"], reason=reason)
        _barrier(world)

    def rollback() -> None:
        tag = ckpt.latest_tag(ckpt_root)
        if tag is None:
            raise TrainingDiverged(f"loss spiked {loop.consecutive_spikes} times in a row at step {loop.step} "
                                   "before any checkpoint was written; lower the learning rate")
        if loop.rollbacks >= cfg.max_rollbacks:
            raise TrainingDiverged(f"loss kept spiking after {loop.rollbacks} rollbacks (step {loop.step})")
        data_step, spikes, skipped = loop.data_step, loop.spikes, loop.skipped_steps
        client = load_checkpoint(engine, str(ckpt_root), tag)
        engine.zero_grad()
        restored = LoopState(**client["lmforge"])
        engine.micro_steps = engine.global_steps * accum  # discard a half-accumulated step
        ckpt.load_rng(ckpt_root / tag, rank)
        loop.step, loop.recent_losses = restored.step, restored.recent_losses
        loop.data_step, loop.spikes, loop.skipped_steps = data_step, spikes, skipped  # move past bad data
        loop.rollbacks += 1
        loop.consecutive_spikes = 0
        recent.clear()
        recent.extend(restored.recent_losses)
        events.emit("rollback", to_step=loop.step, tag=tag, data_step=loop.data_step, rollbacks=loop.rollbacks)

    engine.train()
    while loop.step < cfg.steps:
        needed = (loop.data_step + 1) * cfg.global_batch
        if needed > len(data.plan):
            data.extend(needed + 64 * cfg.global_batch, cfg.replay_fraction, cfg.seed)
        started = time.perf_counter()
        losses: list[float] = []
        spike_at, grad_norm = None, None
        for micro in range(accum):
            x, y = data.micro_batch(loop.data_step, cfg.global_batch, micro, cfg.micro_batch, rank, world)
            loss = engine(x.to(dev), y.to(dev))
            value = _global_mean(loss, world)
            if _is_spike(value, recent, cfg):
                spike_at = micro
                break
            engine.backward(loss)
            if micro == accum - 1 and module.partitioned and module.regularizer is not None:
                module.last_penalty = module.regularizer.apply_to_partitions(model)
            if micro == accum - 1 and cfg.zero_stage == 0:  # DeepSpeed reports no norm without ZeRO
                grads = [p.grad for p in module.parameters() if p.grad is not None]
                grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
            engine.step()
            losses.append(value)
        loop.data_step += 1
        if spike_at is not None:
            loop.spikes += 1
            loop.skipped_steps += 1
            loop.consecutive_spikes += 1
            average = sum(recent) / len(recent) if recent else None
            events.emit("spike", step=loop.step, data_step=loop.data_step - 1, loss=value, moving_average=average,
                        spikes=loop.spikes, consecutive=loop.consecutive_spikes)
            # A spike after some micro-batches were back-propagated cannot be withdrawn from every
            # ZeRO stage's gradient buffers: roll back instead of skipping.
            if spike_at > 0 or loop.consecutive_spikes >= cfg.rollback_after:
                rollback()
            continue
        loop.consecutive_spikes = 0
        step_loss = sum(losses) / len(losses) + (module.last_penalty if module.partitioned else 0.0)
        recent.append(step_loss)
        loop.step += 1
        elapsed = time.perf_counter() - started
        if cfg.zero_stage > 0:
            grad_norm = engine.get_global_grad_norm()
        tokens_per_s = tokens_per_step / elapsed
        events.emit("step", step=loop.step, loss=step_loss, penalty=module.last_penalty,
                    lr=float(engine.get_lr()[0]), grad_norm=None if grad_norm is None else float(grad_norm),
                    tokens_per_s=tokens_per_s, mfu=mfu(flops_per_token, tokens_per_s, peak),
                    step_time=elapsed, data_step=loop.data_step)
        if loop.step % cfg.checkpoint_every == 0 or loop.step == cfg.steps:
            save("final" if loop.step == cfg.steps else "interval")
    final = ckpt_root / ckpt.tag_for(loop.step)
    summary = {"step": loop.step, "data_step": loop.data_step, "spikes": loop.spikes,
               "skipped_steps": loop.skipped_steps, "rollbacks": loop.rollbacks,
               "final_checkpoint": str(final), "final_weights": str(final / "weights"),
               "final_loss": recent[-1] if recent else None}
    events.emit("done", **summary)
    return summary
