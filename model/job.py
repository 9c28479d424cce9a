"""The typed job configuration of one training run: model shape, training options, data mix, start point.

Each setting lives in exactly one section: the shape in :class:`ModelConfig`, how it is trained (including
dropout, activation checkpointing, fused ops, the replay fraction and the MFU peak) in ``TrainConfig``, where
the data come from in :class:`DataMixConfig`. Written to ``<run_dir>/job.json``; every training process
reads it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge_core.config.train import TrainConfig
from lmforge_core.fileio import atomic_write
from model.configs import ModelConfig

JOB_FILE = "job.json"


@dataclass
class DataMixConfig:
    """The dataset version trained on, the earlier versions replayed, and the folder holding both."""

    root: str
    dataset_version: str
    replay_versions: list[str] = field(default_factory=list)


@dataclass
class JobConfig:
    run_dir: str
    model: ModelConfig
    train: TrainConfig
    data: DataMixConfig
    init_weights: str | None = None  # weights folder the run starts from (production or an import)
    continuing: bool = False  # starts from a trained model: re-warm the learning rate
    resume_tag: str | None = None  # checkpoint tag under <run_dir>/checkpoints to resume from

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "model": self.model.to_dict(), "train": self.train.model_dump(),
                "data": dataclasses.asdict(self.data), "init_weights": self.init_weights, "continuing": self.continuing,
                "resume_tag": self.resume_tag}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobConfig:
        return cls(run_dir=data["run_dir"], model=ModelConfig.from_dict(data["model"]),
                   train=TrainConfig.model_validate(data["train"]), data=DataMixConfig(**data["data"]),
                   init_weights=data.get("init_weights"), continuing=bool(data.get("continuing", False)),
                   resume_tag=data.get("resume_tag"))

    def with_train(self, **updates: Any) -> JobConfig:
        """A copy with training options changed (validated again)."""
        train = TrainConfig.model_validate(self.train.model_dump() | updates)
        return dataclasses.replace(self, train=train)

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> JobConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
