"""Training data: memory-mapped token shards, a replay mixing plan, and per-rank batches.

A *plan* fixes, for every sample of a run, which dataset and which window it reads. Sample ``i`` is a
replay sample iff ``floor((i+1)*f) > floor(i*f)`` for replay fraction ``f`` (an exact, evenly spread
fraction); new and replay windows are drawn epoch by epoch from seeded permutations. The plan is a pure
function of (seed, sources, fraction), is saved with the run (``plan.npy`` + sources) so the mix is
reproducible and inspectable, and is indexed by *data step*: with a fixed global batch every process
count reads the same samples at the same step, which is what makes resuming on another count exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.losses import IGNORE_INDEX
from model.token_shards import DataError, TokenWindows, load_manifest

NEW, REPLAY = 0, 1


def _epoch_draws(n_items: int, count: int, seed: int, stream: int) -> np.ndarray:
    """``count`` indices into ``range(n_items)``: successive seeded permutations (epochs)."""
    out = np.empty(count, dtype=np.int64)
    filled, epoch = 0, 0
    while filled < count:
        perm = np.random.default_rng([seed, stream, epoch]).permutation(n_items)
        take = min(count - filled, n_items)
        out[filled : filled + take] = perm[:take]
        filled += take
        epoch += 1
    return out


def build_plan(n_samples: int, new_windows: int, replay_sizes: list[int], replay_fraction: float,
               seed: int) -> np.ndarray:
    """(n_samples, 2) int64: column 0 is the source (0 = new data, k = k-th replay dataset), column 1
    the window index inside that source's train split."""
    if not 0.0 <= replay_fraction < 1.0:
        raise DataError(f"replay fraction must be in [0, 1), got {replay_fraction}")
    if new_windows <= 0:
        raise DataError("the new dataset has no training windows")
    idx = np.arange(n_samples, dtype=np.float64)
    total_replay = sum(replay_sizes)
    fraction = replay_fraction if total_replay else 0.0
    is_replay = np.floor((idx + 1) * fraction) > np.floor(idx * fraction)
    plan = np.zeros((n_samples, 2), dtype=np.int64)
    plan[~is_replay, 1] = _epoch_draws(new_windows, int((~is_replay).sum()), seed, NEW)
    if is_replay.any():
        pooled = _epoch_draws(total_replay, int(is_replay.sum()), seed, REPLAY)
        bounds = np.cumsum([0, *replay_sizes])
        source = np.searchsorted(bounds, pooled, side="right") - 1
        plan[is_replay, 0] = source + 1
        plan[is_replay, 1] = pooled - bounds[source]
    return plan


@dataclass
class DataMix:
    """The new dataset plus replay sources, read through a plan."""

    sources: list[TokenWindows]  # sources[0] is the new dataset version
    plan: np.ndarray

    @classmethod
    def create(cls, root: Path, new_version: str, replay_versions: list[str], replay_fraction: float,
               n_samples: int, seed: int) -> DataMix:
        sources = [TokenWindows(load_manifest(root, v), root) for v in [new_version, *replay_versions]]
        windows = {s.window for s in sources}
        if len(windows) != 1:
            raise DataError(f"datasets have different window lengths {sorted(windows)}; cannot mix them")
        tokenizers = {s.tokenizer_version for s in sources}
        if len(tokenizers) != 1:
            raise DataError(
                f"datasets {[s.dataset_version for s in sources]} use different tokenizers {sorted(map(str, tokenizers))};"
                " their token ids mean different things, so they cannot be mixed"
            )
        plan = build_plan(n_samples, len(sources[0]), [len(s) for s in sources[1:]], replay_fraction, seed)
        return cls(sources, plan)

    @property
    def versions(self) -> list[str]:
        return [s.dataset_version for s in self.sources]

    @property
    def window(self) -> int:
        return self.sources[0].window

    def replay_fraction(self) -> float:
        return float((self.plan[:, 0] > 0).mean()) if len(self.plan) else 0.0

    def save_plan(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "plan.npy", self.plan)
        (directory / "plan_sources.json").write_text(json.dumps(self.versions))
        return directory / "plan.npy"

    def extend(self, n_samples: int, replay_fraction: float, seed: int) -> None:
        """Regrow the (deterministic) plan to cover ``n_samples`` when a resumed run asks for more steps."""
        if n_samples > len(self.plan):
            self.plan = build_plan(n_samples, len(self.sources[0]), [len(s) for s in self.sources[1:]],
                                   replay_fraction, seed)

    def samples(self, start: int, count: int) -> np.ndarray:
        if start + count > len(self.plan):
            raise DataError(f"plan has {len(self.plan)} samples; asked for {start}..{start + count}")
        rows = self.plan[start : start + count]
        out = np.empty((count, self.window), dtype=np.int64)
        for src in np.unique(rows[:, 0]):
            sel = rows[:, 0] == src
            out[sel] = self.sources[src].get(rows[sel, 1])
        return out

    def micro_batch(self, data_step: int, global_batch: int, micro: int, micro_batch: int, rank: int,
                    world: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of one rank's micro-batch of one step (the distributed sampler).

        The step's ``global_batch`` samples are split as [micro step][rank][row], so the union over
        ranks and micro steps is the same set for any process count.
        """
        start = data_step * global_batch + (micro * world + rank) * micro_batch
        windows = torch.from_numpy(self.samples(start, micro_batch))
        targets = windows[:, 1:].clone()
        pad_id = self.sources[0].pad_id
        if pad_id is not None:
            targets[targets == pad_id] = IGNORE_INDEX  # the packed split's last window is padded: no loss there
        return windows[:, :-1], targets
