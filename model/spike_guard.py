"""Loss spikes: detect them against a moving average, then skip the step or roll back to a checkpoint.

A spike is a non-finite loss, or one above ``spike_factor`` x the moving average of the last
``spike_window`` step losses (once five are known). A spike found before any micro-batch of the step was
back-propagated is skipped: nothing of it reached the gradients, the weights or the optimizer. A spike after
some micro-batches (gradient accumulation) cannot be withdrawn from every ZeRO stage's gradient buffers, so it
rolls back, as do ``rollback_after`` spikes in a row. The data position moves on past the bad batch either way.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from lmforge_core.config.train import TrainConfig

Decision = Literal["skip", "rollback"]


class TrainingDiverged(RuntimeError):
    """Loss spikes persisted past the allowed rollbacks, or came before any checkpoint."""


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint (DeepSpeed client state)."""

    step: int = 0  # optimizer updates applied
    data_step: int = 0  # global batches consumed (skipped spikes and rollbacks move on past bad data)
    spikes: int = 0
    skipped_steps: int = 0
    rollbacks: int = 0
    consecutive_spikes: int = 0
    recent_losses: list[float] = field(default_factory=list)


class SpikeGuard:
    """Keeps the moving average and the spike counters of ``loop``; decides skip or roll back."""

    def __init__(self, cfg: TrainConfig, loop: LoopState) -> None:
        self.factor, self.rollback_after, self.max_rollbacks = cfg.spike_factor, cfg.rollback_after, cfg.max_rollbacks
        self.loop = loop
        self.recent: deque[float] = deque(loop.recent_losses, maxlen=cfg.spike_window)
        self.warm = min(5, cfg.spike_window)

    @property
    def moving_average(self) -> float | None:
        return sum(self.recent) / len(self.recent) if self.recent else None

    def is_spike(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        return len(self.recent) >= self.warm and loss > self.factor * (sum(self.recent) / len(self.recent))

    def on_spike(self, after_micro_batches: int) -> Decision:
        """Count a spike found after ``after_micro_batches`` back-propagated micro-batches of its step."""
        self.loop.spikes += 1
        self.loop.skipped_steps += 1
        self.loop.consecutive_spikes += 1
        if after_micro_batches > 0 or self.loop.consecutive_spikes >= self.rollback_after:
            return "rollback"
        return "skip"

    def check_rollback(self, has_checkpoint: bool) -> None:
        """Raise :class:`TrainingDiverged` when a rollback cannot or may no longer help."""
        if not has_checkpoint:
            raise TrainingDiverged(f"loss spiked {self.loop.consecutive_spikes} times in a row at step "
                                   f"{self.loop.step} before any checkpoint was written; lower the learning rate")
        if self.loop.rollbacks >= self.max_rollbacks:
            raise TrainingDiverged(f"loss kept spiking after {self.loop.rollbacks} rollbacks (step {self.loop.step})")

    def rolled_back(self, restored: LoopState) -> None:
        """The checkpoint's step and losses; the data position and the counts stay (move past bad data)."""
        self.loop.step, self.loop.recent_losses = restored.step, list(restored.recent_losses)
        self.loop.rollbacks += 1
        self.loop.consecutive_spikes = 0
        self.recent.clear()
        self.recent.extend(restored.recent_losses)

    def accept(self, step_loss: float) -> None:
        self.loop.consecutive_spikes = 0
        self.recent.append(step_loss)

    def snapshot(self) -> dict[str, Any]:
        """The loop state as saved in a checkpoint."""
        self.loop.recent_losses = list(self.recent)
        return dataclasses.asdict(self.loop)
