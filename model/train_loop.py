"""The training loop in torchtitan's shape: a :class:`Trainer` built from one :class:`JobConfig`, one
:meth:`Trainer.train_step` per global batch, and the parts it delegates to: the DeepSpeed engine
(:mod:`model.engine`), checkpoints (:class:`CheckpointManager`), loss spikes (:class:`SpikeGuard`) and the
continual regulariser (:mod:`model.continual`).

:func:`train` runs in every process (in-line as a world of one, or under ``torchrun`` / ``deepspeed`` via
:mod:`model.launch`). Rank 0 reports through events (``events.jsonl`` in the run folder, and an optional
callback): ``start``, ``step``, ``spike``, ``rollback``, ``checkpoint``, ``done``; the caller records them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from model.adapters import apply_lora
from model.checkpointing import CheckpointManager, latest_tag, tag_for
from model.continual import TrainModule, build_regularizer
from model.data import DataMix
from model.engine import (
    create_engine,
    device,
    discard_gradients,
    fit_micro_batch,
    init_distributed,
    resolve_precision,
)
from model.fused_ops import use_fused_ops
from model.job import JobConfig
from model.metrics import mfu, peak_flops
from model.network import Transformer, build_model
from model.spike_guard import LoopState, SpikeGuard
from model.weights import WeightsError, load_into, load_state_dict

Event = dict[str, Any]
Outcome = Literal["step", "skipped", "rolled_back"]


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


def _global_mean(value: torch.Tensor, world: int) -> float:
    value = value.detach().float().clone()
    if world > 1:
        torch.distributed.all_reduce(value)
        value /= world
    return float(value)


def _dropout_seed(seed: int, rank: int) -> int:
    return seed + 7919 * (rank + 1)  # dropout streams differ per rank


class Trainer:
    """One run on this process: model, data, engine, checkpoints and spike guard, ready to step."""

    def __init__(self, job: JobConfig, rank: int, world: int, events: EventLog) -> None:
        self.job, self.rank, self.world, self.events = job, rank, world, events
        self.cfg = cfg = job.train
        self.run_dir = Path(job.run_dir)
        self.precision = resolve_precision(cfg.precision)
        torch.manual_seed(cfg.seed)
        self.model = self._build_model()
        self.data = self._build_data()
        regularizer = build_regularizer(cfg, self.model, self.data, self.run_dir / "regularizer.safetensors",
                                        job.init_weights is not None, rank, world)
        self.module = TrainModule(self.model, regularizer, partitioned=cfg.zero_stage == 3)
        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", rank, world, cfg.zero_stage,
                                             self.precision, cfg.keep_checkpoints)
        manifest = self.checkpoints.verified(job.resume_tag) if job.resume_tag else None
        self.universal = bool(manifest and self.checkpoints.needs_universal(manifest))
        self.engine = create_engine(self.module, cfg, world, job.continuing, load_universal=self.universal)
        self.module.attach(self.engine)
        torch.manual_seed(_dropout_seed(cfg.seed, rank))
        self.loop = self._resume(manifest) if manifest else LoopState()
        self.guard = SpikeGuard(cfg, self.loop)
        self.accum = cfg.global_batch // (cfg.micro_batch * world)
        self.device = device()
        self.tokens_per_step = cfg.global_batch * (self.data.window - 1)
        self.flops_per_token = job.model.matmul_flops_per_token(self.data.window - 1)
        self.peak = cfg.peak_flops or peak_flops(self.precision, self.run_dir / "peak_flops.json")

    def _build_model(self) -> Transformer:
        model = build_model(self.job.model, dropout=self.cfg.dropout,
                            activation_checkpointing=self.cfg.activation_checkpointing)
        if self.job.init_weights:
            state, shape = load_state_dict(Path(self.job.init_weights))
            if shape != self.job.model:
                raise WeightsError(f"weights in {self.job.init_weights} have shape {shape} but the run asks for "
                                   f"{self.job.model}")
            load_into(model, state, self.job.init_weights)
        if self.cfg.method == "lora":
            if not self.job.init_weights:
                raise ValueError("train.method lora adapts a trained model: give the run starting weights "
                                 "(production or an imported checkpoint), not scratch")
            apply_lora(model, self.cfg)
        return model

    def _build_data(self) -> DataMix:
        mix, cfg, shape = self.job.data, self.cfg, self.job.model
        data = DataMix.create(Path(mix.root), mix.dataset_version, mix.replay_versions, cfg.replay_fraction,
                              cfg.steps * cfg.global_batch, cfg.seed)
        if shape.vocab_size < max((s.vocab_size for s in data.sources), default=0):
            raise ValueError(f"model vocabulary {shape.vocab_size} is smaller than the dataset tokenizer's")
        if data.window - 1 > shape.context:
            raise ValueError(f"dataset windows of {data.window - 1} tokens exceed the model context {shape.context}")
        if self.rank == 0 and not (self.run_dir / "plan.npy").is_file():
            data.save_plan(self.run_dir)
        return data

    def _resume(self, manifest: dict[str, Any]) -> LoopState:
        restored, rng_restored = self.checkpoints.load(self.engine, self.job.resume_tag, manifest)
        loop = LoopState(**restored)
        if not rng_restored:  # written by fewer processes: a fresh, still deterministic stream
            torch.manual_seed(_dropout_seed(self.cfg.seed, self.rank) + loop.step)
        return loop

    def train_step(self) -> Outcome:
        """One global batch: applied (``step``, with a checkpoint when one is due), ``skipped`` (a spike before
        any backward) or ``rolled_back`` (a spike after some micro-batches, or too many in a row)."""
        cfg, loop = self.cfg, self.loop
        needed = (loop.data_step + 1) * cfg.global_batch
        if needed > len(self.data.plan):
            self.data.extend(needed + 64 * cfg.global_batch, cfg.replay_fraction, cfg.seed)
        started = time.perf_counter()
        losses: list[float] = []
        grad_norm = None
        for micro in range(self.accum):
            x, y = self.data.micro_batch(loop.data_step, cfg.global_batch, micro, cfg.micro_batch, self.rank,
                                         self.world)
            loss = self.engine(x.to(self.device), y.to(self.device))
            value = _global_mean(loss, self.world)
            if self.guard.is_spike(value):
                loop.data_step += 1
                return self._on_spike(value, micro)
            self.engine.backward(loss)
            if micro == self.accum - 1 and cfg.zero_stage == 0:  # DeepSpeed reports no norm without ZeRO
                grads = [p.grad for p in self.module.parameters() if p.grad is not None]
                grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
            self.engine.step()
            losses.append(value)
        loop.data_step += 1
        step_loss = sum(losses) / len(losses) + self.module.penalty_outside_loss
        self.guard.accept(step_loss)
        loop.step += 1
        self._report(step_loss, time.perf_counter() - started, grad_norm)
        if loop.step % cfg.checkpoint_every == 0 or loop.step == cfg.steps:
            self.save("final" if loop.step == cfg.steps else "interval")
        return "step"

    def _report(self, step_loss: float, elapsed: float, grad_norm: float | None) -> None:
        if self.cfg.zero_stage > 0:
            grad_norm = float(self.engine.get_global_grad_norm())
        tokens_per_s = self.tokens_per_step / elapsed
        self.events.emit("step", step=self.loop.step, loss=step_loss, penalty=self.module.last_penalty,
                         lr=float(self.engine.get_lr()[0]), grad_norm=grad_norm, tokens_per_s=tokens_per_s,
                         mfu=mfu(self.flops_per_token, tokens_per_s, self.peak), step_time=elapsed,
                         data_step=self.loop.data_step)

    def _on_spike(self, loss: float, micro: int) -> Outcome:
        decision = self.guard.on_spike(after_micro_batches=micro)
        self.events.emit("spike", step=self.loop.step, data_step=self.loop.data_step - 1, loss=loss,
                         moving_average=self.guard.moving_average, spikes=self.loop.spikes,
                         consecutive=self.loop.consecutive_spikes)
        if decision == "skip":
            return "skipped"
        self.rollback()
        return "rolled_back"

    def rollback(self) -> None:
        """Back to the newest verified checkpoint (weights, optimizer, schedule, RNG), past the bad data."""
        self.guard.check_rollback(latest_tag(self.checkpoints.root) is not None)
        tag, restored = self.checkpoints.rollback(self.engine)
        discard_gradients(self.engine, self.accum)
        self.guard.rolled_back(LoopState(**restored))
        self.events.emit("rollback", to_step=self.loop.step, tag=tag, data_step=self.loop.data_step,
                         rollbacks=self.loop.rollbacks)

    def save(self, reason: str) -> None:
        manifest = self.checkpoints.save(self.engine, self.job.model, self.guard.snapshot(), reason)
        if manifest is not None:
            tag = tag_for(self.loop.step)
            self.events.emit("checkpoint", step=self.loop.step, tag=tag, path=str(self.checkpoints.root / tag),
                             files=manifest["files"], reason=reason)

    def fit(self) -> dict[str, Any]:
        """Step until ``steps`` optimizer updates are applied; returns the summary of the ``done`` event."""
        loop = self.loop
        self.events.emit("start", step=loop.step, data_step=loop.data_step, world_size=self.world,
                         zero_stage=self.cfg.zero_stage, precision=self.precision, resumed_from=self.job.resume_tag,
                         universal=self.universal, replay_fraction=self.data.replay_fraction(),
                         sources=self.data.versions, num_params=self.model.num_params(),
                         trainable_params=sum(p.numel() for p in self.model.parameters() if p.requires_grad),
                         method=self.cfg.method, peak_flops=self.peak,
                         fused_ops=self.cfg.fused_ops)
        self.engine.train()
        while loop.step < self.cfg.steps:
            self.train_step()
        final = self.checkpoints.root / tag_for(loop.step)
        summary = {"step": loop.step, "data_step": loop.data_step, "spikes": loop.spikes,
                   "skipped_steps": loop.skipped_steps, "rollbacks": loop.rollbacks,
                   "final_checkpoint": str(final), "final_weights": str(final / "weights"),
                   "final_loss": self.guard.recent[-1] if self.guard.recent else None}
        self.events.emit("done", **summary)
        return summary


def train(job: JobConfig, on_event: Callable[[Event], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the training described by ``job``; returns the summary of the ``done`` event."""
    rank, world = init_distributed()
    job = job.with_train(micro_batch=fit_micro_batch(job.train, world).micro_batch)
    if job.train.threads:
        torch.set_num_threads(job.train.threads)
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    events = EventLog(run_dir / "events.jsonl" if rank == 0 else None, on_event)
    try:
        with use_fused_ops(job.train.fused_ops):
            return Trainer(job, rank, world, events).fit()
    finally:
        events.close()
