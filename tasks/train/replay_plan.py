"""The replay planner: how much old data to replay, and how high to re-warm, for a new dataset version.

With ``replay_planner = "drift"`` both follow the drift ingestion measured between the new batch and the
one before it (the Jensen-Shannon divergence of their token histograms, base 2, in [0, 1]): no drift plans
the low bounds (little replay, a gentle re-warm), ``drift_reference`` or more plans the high bounds, and
in between is linear. The idea: the further the new data moves, the more the model is pushed away from
what it knew (more replay to hold it), and the more it has to learn (a higher peak learning rate).
With ``"fixed"`` the configured values stand. The plan is recorded with the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lmforge_core.config.train import TrainConfig
from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import Runtime


@dataclass(frozen=True)
class ReplayPlan:
    planner: str
    replay_fraction: float
    rewarm_lr_ratio: float
    drift: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _between(bounds: tuple[float, float], share: float) -> float:
    low, high = bounds
    return low + (high - low) * share


def plan_replay(cfg: TrainConfig, drift: float | None) -> ReplayPlan:
    """The replay fraction and re-warm peak for a continued run on data that drifted by ``drift``."""
    if cfg.replay_planner == "fixed":
        return ReplayPlan("fixed", cfg.replay_fraction, cfg.rewarm_lr_ratio, drift, "configured values")
    if drift is None:
        return ReplayPlan("drift", cfg.replay_fraction, cfg.rewarm_lr_ratio, None,
                          "no drift measured (no earlier batch to compare with): configured values")
    share = min(max(drift / cfg.drift_reference, 0.0), 1.0)
    return ReplayPlan("drift", round(_between(cfg.replay_fraction_bounds, share), 4),
                      round(_between(cfg.rewarm_lr_ratio_bounds, share), 4), drift,
                      f"token JS divergence {drift:.3f} = {share:.0%} of the reference {cfg.drift_reference}")


def dataset_drift(runtime: Runtime, version: str) -> float | None:
    """The largest token JS divergence ingestion recorded for the batches of dataset ``version``."""
    with runtime.metadata.session() as session:
        record = repo.get_dataset_version(session, version)
        values = [(link.batch.stats or {}).get("figures", {}).get("token_jsd") for link in record.lineage]
    measured = [float(v) for v in values if v is not None]
    return max(measured) if measured else None


def planned_config(runtime: Runtime, cfg: TrainConfig, version: str, continuing: bool) -> tuple[TrainConfig, ReplayPlan]:
    """``cfg`` with the plan applied (only a continued run re-warms and replays by plan)."""
    plan = plan_replay(cfg, dataset_drift(runtime, version) if continuing else None)
    if not continuing or plan.planner == "fixed":
        return cfg, plan
    return cfg.model_copy(update={"replay_fraction": plan.replay_fraction,
                                  "rewarm_lr_ratio": plan.rewarm_lr_ratio}), plan
