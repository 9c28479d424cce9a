"""The orchestration's policy pieces without a Prefect server: settings, transient-failure retries, cache
keys from inputs, and the data-snapshot key of a trigger."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from lmforge_core.artifacts.base import ArtifactStoreUnavailable
from lmforge_core.runtime import open_runtime
from lmforge_core.settings import load_settings
from tasks.ingest.pipeline import run_ingest
from tasks.ingest.snapshot import snapshot_key
from tasks.prefect_policy import cache_key_from, is_transient, retry_options
from tasks.train.run import TrainingError, TrainingProcessError


def test_orchestration_settings_name_a_bad_timezone_and_read_the_environment(monkeypatch, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="unknown timezone 'Mars/Olympus'"):
        load_settings(workspace=tmp_path, orchestration={"timezone": "Mars/Olympus"})
    monkeypatch.setenv("LMFORGE_ORCHESTRATION__REVIEW__DEFAULT", "approve")
    monkeypatch.setenv("LMFORGE_ORCHESTRATION__TIMEZONE", "Europe/Berlin")
    cfg = load_settings(workspace=tmp_path).orchestration
    assert (cfg.review.default, cfg.timezone, cfg.training_slots) == ("approve", "Europe/Berlin", 1)


def test_only_outages_are_transient_also_when_wrapped() -> None:
    outage = OperationalError("SELECT 1", {}, Exception("connection refused"))
    try:
        try:
            raise ArtifactStoreUnavailable("s3 endpoint unreachable")
        except ArtifactStoreUnavailable as exc:
            raise TrainingError("could not fetch the dataset") from exc
    except TrainingError as wrapped:
        assert is_transient(wrapped)
    assert is_transient(outage) and is_transient(ConnectionRefusedError())
    assert not is_transient(ValueError("bad steps")) and not is_transient(TrainingError("no dataset"))
    assert not is_transient(TrainingProcessError("exited with code -9"))  # retried by the train step's own rule


def test_retry_options_back_off_exponentially_from_the_settings(tmp_path: Path) -> None:
    cfg = load_settings(workspace=tmp_path, orchestration={"retry": {"retries": 3, "backoff_s": 2}}).orchestration
    options = retry_options(cfg, timeout_s=60)
    assert (options["retries"], options["retry_delay_seconds"], options["timeout_seconds"]) == (3, [2, 4, 8], 60)


def test_cache_keys_follow_the_named_inputs_and_the_stores(tmp_path: Path) -> None:
    key = cache_key_from("dataset")
    one = SimpleNamespace(settings=load_settings(workspace=tmp_path / "a"))
    other = SimpleNamespace(settings=load_settings(workspace=tmp_path / "b"))
    context = SimpleNamespace(task=SimpleNamespace(name="train-dataset"), task_run=SimpleNamespace(flow_run_id="r1"))
    base = key(context, {"runtime": one, "dataset": "ds-000001", "steps": 5})
    assert base == key(context, {"runtime": one, "dataset": "ds-000001", "steps": 99})  # steps not named
    assert base != key(context, {"runtime": one, "dataset": "ds-000002"})
    assert base != key(context, {"runtime": other, "dataset": "ds-000001"})
    per_run = cache_key_from("dataset", per_run=True)
    other_run = SimpleNamespace(task=context.task, task_run=SimpleNamespace(flow_run_id="r2"))
    assert per_run(context, {"runtime": one, "dataset": "x"}) != per_run(other_run, {"runtime": one, "dataset": "x"})


def test_the_snapshot_key_changes_with_new_shards_and_after_an_ingest(tmp_path: Path, shard_writer) -> None:
    rt = open_runtime(load_settings(workspace=tmp_path / "ws", data={"workers": 1, "gate": {"min_rows": 3},
                                                                      "tokenizer": {"vocab_size": 300}}))
    try:
        source = shard_writer(tmp_path / "src", "a.jsonl", range(12))
        first = snapshot_key(rt, str(source))
        assert snapshot_key(rt, str(source)) == first  # a duplicate trigger: same key
        assert run_ingest(rt, str(source)).status == "accepted"
        after_ingest = snapshot_key(rt, str(source))
        assert after_ingest != first
        shard_writer(source, "b.jsonl", range(100, 112))
        assert snapshot_key(rt, str(source)) not in (first, after_ingest)
    finally:
        rt.metadata.dispose()
