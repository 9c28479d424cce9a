"""Retrying a quarantined batch: after the threshold is fixed in the settings, its shards run again as a new
batch, are accepted into a dataset version, and count once."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flows.cli import app
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import BatchStatus, SourceShard
from tasks.ingest.pipeline import run_ingest
from tasks.ingest.retry import RetryError, retry_batch


def shard_rows(rt) -> list[tuple[str, int, int, int]]:
    with rt.metadata.session() as session:
        return sorted((s.uri.rsplit("/", 1)[-1], s.batch_id, s.records_read, s.records_accepted)
                      for s in session.query(SourceShard).all())


def test_retry_after_relaxing_the_gate_accepts_the_shards_once(tmp_path, data_runtime_factory, make_prose,
                                                                jsonl_writer, monkeypatch) -> None:
    rt = data_runtime_factory(gate={"min_rows": 3, "max_reject_rate": 0.5})
    src = tmp_path / "src"
    tiny = [{"id": f"s{i}", "text": f"tiny record number {i}"} for i in range(12)]
    jsonl_writer(src / "a.jsonl", [*tiny, *({"id": f"d{s}", "text": make_prose(s)} for s in range(6))])
    jsonl_writer(src / "b.jsonl", [{"id": f"d{s}", "text": make_prose(s)} for s in range(6, 10)])
    failed = run_ingest(rt, str(src))
    assert failed.status == "quarantined"  # reject rate 12/22 = 0.55 > 0.5
    assert [f["column"] for f in failed.gate["failures"]] == ["reject_rate"]
    assert run_ingest(rt, str(src)).status == "nothing_new"  # its shards count as ingested

    with pytest.raises(RetryError, match="does not exist"):
        retry_batch(rt, failed.batch_id + 100)

    # the fix: a looser reject-rate bound, through the settings the CLI reads.
    for name, value in {"WORKSPACE": str(rt.settings.workspace), "DATA__WORKERS": "1",
                        "DATA__GATE__MIN_ROWS": "3", "DATA__GATE__MAX_REJECT_RATE": "0.6",
                        "DATA__TOKENIZER__VOCAB_SIZE": "400"}.items():
        monkeypatch.setenv(f"LMFORGE_{name}", value)
    out = CliRunner().invoke(app, ["ingest", "--retry", str(failed.batch_id), "--json"])
    assert out.exit_code == 0, out.output
    retried = json.loads(out.output)
    assert retried["status"] == "accepted" and retried["retry_of"] == failed.batch_id
    assert retried["batch_id"] != failed.batch_id and retried["dataset_version"] == "ds-000001"
    assert (retried["records_read"], retried["records_accepted"]) == (22, 10)
    assert retried["rejected"] == {"filter:word_count": 12}

    with rt.metadata.session() as session:
        earlier = repo.get_batch(session, failed.batch_id)
        later = repo.get_batch(session, retried["batch_id"])
        assert earlier.status is BatchStatus.QUARANTINED and earlier.stats["retried_by"] == later.id
        assert later.status is BatchStatus.ACCEPTED and later.stats["retry_of"] == earlier.id
        [dataset] = repo.list_dataset_versions(session)
        assert [link.batch_id for link in dataset.lineage] == [later.id] and dataset.documents == 10
    # each shard is recorded once, under the batch that accepted it.
    assert shard_rows(rt) == [("a.jsonl", retried["batch_id"], 18, 6), ("b.jsonl", retried["batch_id"], 4, 4)]
    assert run_ingest(rt, str(src)).status == "nothing_new"

    with pytest.raises(RetryError, match=f"already retried as batch {retried['batch_id']}"):
        retry_batch(rt, failed.batch_id)
    out = CliRunner().invoke(app, ["ingest", "--retry", str(retried["batch_id"])])
    assert out.exit_code == 1 and "was accepted (dataset version ds-000001)" in str(out.exception)
