"""The continual-learning study's settings and its arms (light: the CLI reads the defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass

from model.configs import get_config

BASE_ARMS = ("naive", "replay", "replay_reg", "replay_drift", "scratch_all")
SWEEP_PREFIX = "replay_at_"  # the fixed-fraction sweep arms: replay_at_NN replays NN%


def sweep_arm(percent: int) -> str:
    return f"{SWEEP_PREFIX}{percent:02d}"


def sweep_percent(arm: str) -> int | None:
    """The replay percent of a sweep arm (``replay_at_NN``); None for any other arm."""
    return int(arm[len(SWEEP_PREFIX):]) if arm.startswith(SWEEP_PREFIX) else None


class StudyError(ValueError):
    """The study cannot run on this input; the message says why."""


@dataclass(frozen=True)
class StudyConfig:
    """The defaults fit the study in under 30 minutes on 2 CPU cores: the ``micro`` network, 192 steps of
    8 x 128 tokens a day, so that each day is learned well enough for forgetting to show."""

    days: int = 4
    network: str = "micro"
    tokens_per_day: int = 196_608
    seeds: tuple[int, ...] = (1, 2, 3)
    regularization: str = "ewc"
    lr: float = 3e-3
    batch: int = 8
    fixed_fractions: tuple[float, ...] = (0.1, 0.5)
    max_eval_windows: int = 64

    def validate(self) -> None:
        if self.days < 2:
            raise StudyError(f"--days must be at least 2 (a day to learn and one to forget it); got {self.days}")
        if not self.seeds:
            raise StudyError("at least one seed is needed")
        if self.regularization not in ("l2", "ewc"):
            raise StudyError(f"regularization must be l2 or ewc, not {self.regularization!r}")
        if self.tokens_per_day <= 0 or self.batch <= 0 or self.lr <= 0:
            raise StudyError(f"--tokens-per-day, --batch and --lr must be positive; got {self.tokens_per_day}, "
                             f"{self.batch} and {self.lr}")
        bad = [f for f in self.fixed_fractions if not 0 <= f <= 0.99 or abs(f * 100 - round(f * 100)) > 1e-9]
        if bad:
            raise StudyError(f"a fixed replay fraction must be a whole percent from 0 to 0.99 (it names its arm, "
                             f"replay_at_NN); got {bad}")
        get_config(self.network)  # an unknown name fails here, before any ingest

    def arms(self, configured_fraction: float) -> tuple[str, ...]:
        """Every arm: the base ones, then one per swept fraction (the configured one is arm ``replay``)."""
        percents = sorted(p for p in {round(f * 100) for f in self.fixed_fractions}
                          if abs(p - configured_fraction * 100) > 1e-9)
        return BASE_ARMS + tuple(sweep_arm(p) for p in percents)
