"""The continual-learning study: on dated drops of drifting text, train day by day with equal token budgets
under several strategies, and measure every resulting model on every day's validation split.

Arms (each with its own model name in one study workspace, so each has its own lineage and ``production``):
- ``naive``: continued training, no replay, no re-warm (constant learning rate at the previous run's final
  one);
- ``replay``: continued training with replay (``train.replay_fraction``) and learning-rate re-warming and
  re-decay (``rewarm_*``), the platform's default;
- ``replay_reg``: ``replay`` plus an L2 or EWC pull towards the previous model;
- ``replay_drift``: ``replay`` with the drift replay planner (tasks/train/replay_plan.py);
- ``replay_at_NN``: ``replay`` at a fixed replay fraction of NN% (the sweep the drift planner is judged
  against: it has to beat the best fixed fraction, not only the configured one);
- ``scratch_all``: from scratch on all data so far (day d: d budgets, the earlier days replayed evenly),
  the upper reference.
Day 1 is the same for every arm (scratch on day 1); it is trained once per seed and registered under
every arm's name. Everything goes through the platform's own stages: `run_ingest` (one shared tokenizer,
trained on day 1's batch and recorded), `run_training`, `load_model_version` and the evaluation stage's
perplexity. The study workspace is separate from the platform's (its own metadata database and artifacts),
so a study never touches the production registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge_core.config.evaluate import EvaluateConfig
from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import Runtime, open_runtime
from lmforge_core.settings import Settings, load_settings
from model.configs import get_config
from model.registry import load_model_version
from tasks.evaluate.perplexity import perplexities
from tasks.ingest.pipeline import run_ingest
from tasks.study.config import StudyConfig, StudyError, sweep_percent
from tasks.train.run import run_training

DAY_ONE_ARM = "replay"  # day 1 (scratch on day 1's data) runs with the platform's default settings
_DROP = re.compile(r"^day-(\d{2,})-")
Emit = Callable[..., None]


@dataclass
class StudyData:
    drops: list[str]
    datasets: list[str]
    tokenizer: str | None
    steps_per_day: int
    arms: tuple[str, ...]
    drift: list[float | None] = field(default_factory=list)


def day_drops(source: Path, days: int) -> list[Path]:
    """The first ``days`` drops (``day-NN-*`` folders) of ``source``, in day order."""
    if not source.is_dir():
        raise StudyError(f"source {source} is not a folder of day-NN-* drops")
    drops = sorted((int(m.group(1)), p) for p in source.iterdir() if p.is_dir() and (m := _DROP.match(p.name)))
    if len(drops) < days:
        raise StudyError(f"{source} holds {len(drops)} day-NN-* drops; the study asked for {days}")
    return [p for _, p in drops[:days]]


def study_data_settings(base: Settings, network: str) -> dict[str, Any]:
    """The data settings of a study on ``network``: the tokenizer's vocabulary and the training windows
    follow the network's shape (a 1,024-token network gets a 1,024-token tokenizer and 129-token windows)."""
    shape = get_config(network)
    tokenizer = base.data.tokenizer.model_copy(update={"vocab_size": shape.vocab_size})
    return base.data.model_copy(update={"tokenizer": tokenizer, "window": shape.context + 1}).model_dump()


def _settings(base: Settings, workspace: Path, cfg: StudyConfig, model_name: str, train: dict[str, Any]) -> Settings:
    """The study's own embedded stores, whatever database or bucket the platform's settings name."""
    return load_settings(workspace=workspace, database_url=f"sqlite:///{workspace / 'metadata.db'}",
                         artifact_uri=str(workspace / "artifacts"), model_name=model_name,
                         data=study_data_settings(base, cfg.network), train=base.train.model_copy(update=train))


def _arm_train(cfg: StudyConfig, arm: str, seed: int, day: int, data: StudyData) -> tuple[dict[str, Any], int, str]:
    """(train overrides, steps, starting point) of ``arm`` on ``day`` (1-based). Warm-up and re-warm take
    1/25 of a day's steps, whatever the budget."""
    steps = data.steps_per_day
    warm = max(1, steps // 25)
    common: dict[str, Any] = {"seed": seed * 1000 + day, "lr": cfg.lr, "network": cfg.network,
                              "global_batch": cfg.batch, "micro_batch": cfg.batch, "warmup_steps": warm,
                              "rewarm_steps": warm, "checkpoint_every": 10**6, "replay_planner": "fixed",
                              "regularization": "none"}
    if (percent := sweep_percent(arm)) is not None:
        return common | {"replay_fraction": percent / 100}, steps, "production"
    if arm == "naive":
        # rewarm peak = min_lr_ratio and a flat floor: the previous run's final learning rate, held.
        return common | {"replay_fraction": 0.0, "rewarm_steps": 0, "rewarm_lr_ratio": 0.1,
                         "min_lr_ratio": 1.0}, steps, "production"
    if arm == "replay_reg":
        return common | {"regularization": cfg.regularization}, steps, "production"
    if arm == "replay_drift":
        return common | {"replay_planner": "drift"}, steps, "production"
    if arm == "scratch_all":
        return common | {"replay_fraction": (day - 1) / day}, steps * day, "scratch"
    return common, steps, "production"


def ingest_days(runtime: Runtime, drops: list[Path], cfg: StudyConfig, emit: Emit) -> StudyData:
    """One batch and one dataset version per drop; the tokenizer is trained on day 1's batch."""
    datasets, drift, tokenizer = [], [], None
    for drop in drops:
        result = run_ingest(runtime, str(drop))
        if result.dataset_version is None:
            raise StudyError(f"ingesting {drop.name} made no dataset version ({result.status}: {result.message})")
        datasets.append(result.dataset_version)
        drift.append(result.figures.get("token_jsd"))
        tokenizer = tokenizer or result.tokenizer_version
        emit("ingested", drop=drop.name, dataset=result.dataset_version, token_jsd=drift[-1])
    steps = max(1, cfg.tokens_per_day // (cfg.batch * get_config(cfg.network).context))
    arms = cfg.arms(runtime.settings.train.replay_fraction)
    return StudyData([d.name for d in drops], datasets, tokenizer, steps, arms, drift)


def _promote(runtime: Runtime, model_version: str) -> None:
    name, _, number = model_version.partition(":v")
    with runtime.metadata.session() as session:
        version = repo.get_model_version(session, name, int(number))
        repo.set_alias(session, name=name, alias="production", model_version_id=version.id, actor="study",
                       reason="continual-learning study: each day's model serves the next day")


def _share_day_one(runtime: Runtime, base: str, arms: list[str]) -> None:
    """Register day 1's model (trained once) under every arm's name and make it that arm's production."""
    name, _, number = base.partition(":v")
    with runtime.metadata.session() as session:
        source = repo.get_model_version(session, name, int(number))
        for arm_name in arms:
            copy = repo.register_model_version(session, name=arm_name, training_run_pk=source.training_run_id,
                                               parent_id=None, artifacts=dict(source.artifacts))
            repo.set_alias(session, name=arm_name, alias="production", model_version_id=copy.id, actor="study",
                           reason=f"day 1 is shared: {base}")


def evaluate_model(runtime: Runtime, name: str, datasets: list[str], cfg: StudyConfig) -> list[float]:
    """Perplexity of ``name``'s production model on every day's validation split."""
    loaded = load_model_version(runtime.metadata, runtime.artifacts, name, "production")
    results = perplexities(runtime, loaded.model, datasets, EvaluateConfig(max_windows=cfg.max_eval_windows),
                           lambda *a, **k: None)
    return [float(results[d]["perplexity"]) for d in datasets]


def _evaluate_day(base: Settings, workspace: Path, cfg: StudyConfig, names: dict[str, str], data: StudyData,
                  matrix: dict[str, list[list[float]]], shared: bool) -> None:
    """Append each arm's perplexities after this day (day 1's model is one model: scored once)."""
    rt = open_runtime(_settings(base, workspace, cfg, names[DAY_ONE_ARM], {}))
    try:
        row = evaluate_model(rt, names[DAY_ONE_ARM], data.datasets, cfg) if shared else None
        for arm in data.arms:
            matrix[arm].append(row if row is not None else evaluate_model(rt, names[arm], data.datasets, cfg))
    finally:
        rt.metadata.dispose()


def run_seed(base: Settings, workspace: Path, cfg: StudyConfig, seed: int, data: StudyData,
             emit: Emit) -> dict[str, list[list[float]]]:
    """``{arm: [perplexities on every day after day 1, after day 2, ...]}`` for one seed."""
    names = {arm: f"{arm.replace('_', '-')}-s{seed}" for arm in data.arms}
    matrix: dict[str, list[list[float]]] = {arm: [] for arm in data.arms}
    for day in range(1, cfg.days + 1):
        for arm in ((DAY_ONE_ARM,) if day == 1 else data.arms):
            train, steps, start = _arm_train(cfg, arm, seed, day, data)
            rt = open_runtime(_settings(base, workspace, cfg, names[arm], train))
            try:
                result = run_training(rt, dataset=data.datasets[day - 1], steps=steps, source=start)
                if result.model_version is None:
                    raise StudyError(f"run {result.run_id} ({arm}, seed {seed}, day {day}) ended {result.status} "
                                     "without a model version")
                if day == 1:
                    _share_day_one(rt, result.model_version, [names[a] for a in data.arms if a != DAY_ONE_ARM])
                _promote(rt, result.model_version)
                emit("trained", seed=seed, day=day, arm=arm, model_version=result.model_version, steps=steps)
            finally:
                rt.metadata.dispose()
        _evaluate_day(base, workspace, cfg, names, data, matrix, shared=day == 1)
        emit("evaluated", seed=seed, day=day, perplexities={arm: matrix[arm][-1] for arm in data.arms})
    return matrix


def run_study(base: Settings, workspace: Path, source: Path, cfg: StudyConfig,
              emit: Emit) -> dict[str, Any]:
    """Ingest the drops, run every arm for every seed; the raw matrices and what the study ran on."""
    cfg.validate()
    drops = day_drops(source, cfg.days)
    rt = open_runtime(_settings(base, workspace, cfg, "study", {}))
    try:
        data = ingest_days(rt, drops, cfg, emit)
    finally:
        rt.metadata.dispose()
    runs = {seed: run_seed(base, workspace, cfg, seed, data, emit) for seed in cfg.seeds}
    config = {**cfg.__dict__, "seeds": list(cfg.seeds), "fixed_fractions": list(cfg.fixed_fractions),
              "steps_per_day": data.steps_per_day, "replay_fraction": rt.settings.train.replay_fraction}
    return {"config": config, "arms": list(data.arms),
            "drops": data.drops, "datasets": data.datasets, "tokenizer": data.tokenizer, "drift": data.drift,
            "perplexity": {arm: [runs[s][arm] for s in cfg.seeds] for arm in data.arms}}
