"""The continual-learning study end to end on 2 tiny days, and the drift replay planner."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.cli import app
from lmforge_core.config.train import TrainConfig
from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import open_runtime
from lmforge_core.settings import load_settings
from tasks.ingest.sample import write_sample
from tasks.study.config import BASE_ARMS, StudyConfig, StudyError
from tasks.study.continual import day_drops
from tasks.train.replay_plan import plan_replay

TINY_RUN = {"LMFORGE_TRAIN__THREADS": "1"}


def test_drift_planner_follows_the_measured_drift_within_its_bounds() -> None:
    cfg = TrainConfig(replay_planner="drift", replay_fraction_bounds=(0.1, 0.5), rewarm_lr_ratio_bounds=(0.3, 1.0),
                      drift_reference=0.2)
    calm, half, wild = plan_replay(cfg, 0.0), plan_replay(cfg, 0.1), plan_replay(cfg, 0.9)
    assert (calm.replay_fraction, calm.rewarm_lr_ratio) == (0.1, 0.3)
    assert (half.replay_fraction, half.rewarm_lr_ratio) == (pytest.approx(0.3), pytest.approx(0.65))
    assert (wild.replay_fraction, wild.rewarm_lr_ratio) == (0.5, 1.0)  # capped at the high bounds
    unmeasured = plan_replay(cfg, None)
    assert (unmeasured.replay_fraction, unmeasured.rewarm_lr_ratio) == (cfg.replay_fraction, cfg.rewarm_lr_ratio)
    fixed = plan_replay(TrainConfig(replay_fraction=0.2), 0.9)
    assert (fixed.planner, fixed.replay_fraction) == ("fixed", 0.2)
    with pytest.raises(ValueError, match="replay_fraction_bounds"):
        TrainConfig(replay_fraction_bounds=(0.6, 0.2))


def test_a_source_without_enough_day_drops_is_refused(tmp_path: Path) -> None:
    (tmp_path / "day-01-a").mkdir()
    (tmp_path / "notes").mkdir()
    with pytest.raises(StudyError, match="holds 1 day-NN-\\* drops; the study asked for 2"):
        day_drops(tmp_path, 2)


@pytest.mark.slow
def test_the_whole_study_on_two_tiny_days(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "drops"
    write_sample(source, 2, docs_per_drop=60)
    for name, value in TINY_RUN.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["study", "continual", "--source", str(source), "--days", "2",
                                      "--tokens-per-day", "1024", "--batch", "2", "--seeds", "2",
                                      "--fixed-fraction", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["config"]["steps_per_day"] == 4 and report["config"]["seeds"] == [1, 2]  # 1024 / (2 x 128)
    assert report["drops"] == ["day-01-os-files", "day-02-networking-email"]
    arms = [*BASE_ARMS, "replay_at_50"]
    assert report["arms"] == arms and set(report["perplexity"]) == set(arms)
    for seeds in report["perplexity"].values():  # [seed][after day][on day]
        assert len(seeds) == 2 and all(len(days) == 2 and all(len(row) == 2 for row in days) for days in seeds)
        assert all(math.isfinite(p) and p > 1 for days in seeds for row in days for p in row)
    # day 1 is one model per seed, shared by every arm; day 2 differs between arms
    for seed in range(2):
        day_one = {tuple(report["perplexity"][arm][seed][0]) for arm in arms}
        assert len(day_one) == 1
        assert len({tuple(report["perplexity"][arm][seed][1]) for arm in arms}) == len(arms)
    assert report["summary"]["replay"]["average_forgetting"][0] is None
    assert {t["verdict"] for t in report["targets"]} <= {"met", "missed", "within the spread (no claim)",
                                                           "not applicable: (a) does not forget"}
    for name, path in report["files"].items():
        assert Path(path).stat().st_size > 0, name
    assert Path(report["files"]["study.png"]).read_bytes()[:4] == b"\x89PNG"
    # one tokenizer for the whole study, and the drift planner's plan recorded with its runs
    workspace = Path(report["files"]["study.json"]).parent / "workspace"
    study = load_settings(workspace=workspace, database_url=f"sqlite:///{workspace / 'metadata.db'}",
                          artifact_uri=str(workspace / "artifacts"))
    rt = open_runtime(study)
    try:
        with rt.metadata.session() as session:
            versions = repo.list_dataset_versions(session)
            assert len({v.tokenizer_id for v in versions}) == 1 and len(versions) == 2
            runs = repo.list_runs(session, limit=100)
            plans = [run.config.get("replay_plan") for run in runs]
            windows = {run.config["job"]["model"]["context"] for run in runs}
            vocab = {run.config["job"]["model"]["vocab_size"] for run in runs}
        assert windows == {128} and max(vocab) <= 1024  # the micro network, its tokenizer sized to it
        continued = [p for p in plans if p and p["drift"] is not None]  # scratch and day 1 measure no drift
        swept = [p for p in continued if p["planner"] == "fixed" and p["replay_fraction"] == 0.5]
        assert len(swept) == 2  # the sweep arm, one per seed
        drift_plans = [p for p in plans if p and p["planner"] == "drift"]
        assert len(drift_plans) == 2  # one per seed, day 2
        low, high = TrainConfig().replay_fraction_bounds
        assert all(p["drift"] is not None and low <= p["replay_fraction"] <= high for p in drift_plans)
    finally:
        rt.metadata.dispose()


def _cell(mean: float, spread: float = 0.01) -> dict[str, float]:
    return {"mean": mean, "spread": spread}


def _summary(forgetting_a: float, forgetting_b: float, seeds: int = 3) -> dict[str, Any]:
    arm = {"new_day_perplexity": [_cell(100.0)], "average_perplexity": [_cell(100.0)],
           "final_perplexity_per_day": [_cell(100.0)], "seeds": seeds}
    return {"naive": arm | {"average_forgetting": [_cell(forgetting_a)]},
            "replay": arm | {"average_forgetting": [_cell(forgetting_b)]},
            "scratch_all": arm | {"average_forgetting": [_cell(0.0)]},
            "replay_drift": arm | {"average_forgetting": [_cell(0.0)]}}


def test_the_forgetting_target_is_judged_only_where_the_naive_arm_forgets() -> None:
    from tasks.study.report import targets

    assert targets(_summary(0.40, 0.10))[0]["verdict"] == "met"  # cut 75%
    assert targets(_summary(0.40, 0.30))[0]["verdict"] == "missed"  # cut 25%
    backward = targets(_summary(-0.18, -0.28))[0]
    assert backward["verdict"] == "not applicable: (a) does not forget"
    assert "improved under (a) by 18%" in backward["detail"]
    wide = _summary(0.40, 0.19)  # a 52% cut, but only 31% with both spreads against it
    wide["naive"]["average_forgetting"] = [_cell(0.40, 0.05)]
    wide["replay"] = wide["replay"] | {"average_forgetting": [_cell(0.19, 0.05)]}
    assert targets(wide)[0]["verdict"] == "within the spread (no claim)"
    assert {t["verdict"] for t in targets(_summary(0.40, 0.10, seeds=1))} == {"one seed: no claim"}


def test_the_drift_planner_is_judged_against_the_best_fixed_fraction() -> None:
    from tasks.study.report import targets

    summary = _summary(0.4, 0.1) | {"replay_at_50": _summary(0.4, 0.1)["replay"]}
    summary["replay_at_50"] = summary["replay_at_50"] | {"average_perplexity": [_cell(80.0)]}
    summary["replay_drift"] = summary["replay_drift"] | {"average_perplexity": [_cell(90.0)]}
    claim = targets(summary)[-1]
    assert claim["verdict"] == "missed"  # beats the configured fraction (100), not the best fixed one (80)
    assert "the best of 2 fixed arms: (b) at fixed replay 50%" in claim["detail"]
    summary["replay_drift"]["average_perplexity"] = [_cell(70.0)]
    assert targets(summary)[-1]["verdict"] == "met"


def test_the_sweep_leaves_out_the_configured_fraction_and_refuses_bad_ones() -> None:
    cfg = StudyConfig(fixed_fractions=(0.1, 0.25, 0.5))
    assert cfg.arms(0.25) == (*BASE_ARMS, "replay_at_10", "replay_at_50")
    assert StudyConfig(fixed_fractions=(0.25, 0.0)).arms(0.249)[-2:] == ("replay_at_00", "replay_at_25")
    for bad in (1.5, 0.995, 0.005, -0.1):  # out of range, or not a whole percent (it would be rounded)
        with pytest.raises(StudyError, match=rf"fixed replay fraction must be a whole percent .*got \[{bad}\]"):
            StudyConfig(fixed_fractions=(0.1, bad)).validate()
    with pytest.raises(ValueError, match="unknown model config 'huge'"):
        StudyConfig(network="huge").validate()


def test_each_earlier_days_forgetting_after_the_last_day_is_reported(tmp_path: Path) -> None:
    from tasks.study.report import markdown_table, plot, summarize, targets

    # [seed][after day][on day]: day 1 rises from 10 to 15 (seed 1) or 12 (seed 2); day 2 falls from 20 to 18.
    naive = [[[10.0, 50, 60], [12, 20, 60], [15, 18, 30]], [[10.0, 50, 60], [11, 20, 60], [12, 18, 30]]]
    steady = [[[10.0, 50, 60], [10, 20, 60], [10, 20, 30]]] * 2
    raw = {"perplexity": {"naive": naive, "replay": steady, "scratch_all": steady, "replay_drift": steady}}
    summary = summarize(raw)
    day_one, day_two = summary["naive"]["final_forgetting_per_day"]
    assert day_one["mean"] == pytest.approx(0.35) and day_one["spread"] == pytest.approx(0.2121, abs=1e-4)
    assert day_two["mean"] == pytest.approx(-0.10) and day_two["spread"] == pytest.approx(0.0)
    assert summary["replay"]["final_forgetting_per_day"][0]["mean"] == 0.0
    table = markdown_table(summary, targets(summary))
    assert "| (a) naive | +35.0% ± 21.2% | -10.0% ± 0.0% |" in table
    assert plot(summary, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_a_bound_is_met_only_where_it_holds_at_the_spreads_worst() -> None:
    from tasks.study.report import targets

    def day_four(replay: dict[str, float], scratch: dict[str, float]) -> str:
        summary = _summary(0.4, 0.1)
        summary["replay"] = summary["replay"] | {"final_perplexity_per_day": [replay]}
        summary["scratch_all"] = summary["scratch_all"] | {"final_perplexity_per_day": [scratch]}
        return next(t for t in targets(summary) if t["target"] == "(b) within 5% of (d) on day 1")["verdict"]

    assert day_four(_cell(14.32, 0.11), _cell(14.50, 0.47)) == "met"  # -1.2%, at worst +2.9%
    assert day_four(_cell(18.0, 0.2), _cell(14.0, 0.2)) == "missed"  # +28.6%, at best +25%
    assert day_four(_cell(14.7, 0.4), _cell(14.0, 0.4)) == "within the spread (no claim)"  # +5.0%, -0.7%..+11%
