"""The Prefect entry points of the ingest stage, run as tasks of a flow against a temporary Prefect API."""

from __future__ import annotations

import pytest
from prefect import flow

from tasks.ingest.pipeline import run_ingest
from tasks.ingest.prefect_tasks import retry_batch_task
from tasks.ingest.retry import RetryError


def test_retry_batch_task_reruns_a_quarantined_batch_in_a_flow(prefect_harness, tmp_path, data_runtime_factory,
                                                                make_prose, jsonl_writer) -> None:
    strict = data_runtime_factory(gate={"min_rows": 3, "max_reject_rate": 0.5})
    src = tmp_path / "src"
    tiny = [{"id": f"s{i}", "text": f"tiny record number {i}"} for i in range(12)]
    jsonl_writer(src / "a.jsonl", [*tiny, *({"id": f"d{s}", "text": make_prose(s)} for s in range(10))])
    failed = run_ingest(strict, str(src))
    assert failed.status == "quarantined"  # reject rate 12/22 > 0.5
    relaxed = data_runtime_factory(gate={"min_rows": 3, "max_reject_rate": 0.6})

    @flow(name="retry-quarantined-batch")
    def retry_flow(batch_id: int) -> dict:
        return retry_batch_task(relaxed, batch_id)

    retried = retry_flow(failed.batch_id)
    assert (retried["status"], retried["retry_of"], retried["records_accepted"]) == ("accepted", failed.batch_id, 10)
    assert retried["dataset_version"] == "ds-000001" and retried["message"].startswith(f"retry of batch {failed.batch_id}")

    state = retry_flow(failed.batch_id, return_state=True)  # a batch is retried once: the task fails, named
    assert state.is_failed()
    with pytest.raises(RetryError, match=f"already retried as batch {retried['batch_id']}"):
        state.result()
