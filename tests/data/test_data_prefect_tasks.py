"""The Prefect entry points of the ingest stage, run as tasks of a flow against a temporary Prefect API."""

from __future__ import annotations

import pytest
from prefect import flow

from lmforge_core.metadata import repository as repo
from tasks.ingest import prefect_tasks as steps
from tasks.ingest.ingest_lock import ingest_lock
from tasks.ingest.pipeline import accept_batch, run_ingest
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


def test_the_ingest_steps_run_as_tasks_of_a_flow(prefect_harness, tmp_path, data_runtime_factory, make_prose,
                                                 jsonl_writer) -> None:
    """The steps composed as a flow would (the order of `ingest_shards`), each a task run: the same outcome as
    `run_ingest`, accepted and quarantined alike, and the task runs are recorded under their step names."""
    rt = data_runtime_factory()
    accepted_src, rejected_src = tmp_path / "good", tmp_path / "bad"
    jsonl_writer(accepted_src / "a.jsonl", [{"id": f"d{s}", "text": make_prose(s)} for s in range(8)])
    jsonl_writer(rejected_src / "a.jsonl", [*({"id": f"t{i}", "text": f"tiny record {i}"} for i in range(12)),
                                            *({"id": f"e{s}", "text": make_prose(s)} for s in range(100, 104))])

    @flow(name="ingest-by-steps")
    def ingest_by_steps(source_uri: str) -> dict:
        with ingest_lock(rt) as confirm:
            plan = steps.plan_shards_task(rt, source_uri)
            dedup = steps.load_dedup_index_task(rt)
            staged = steps.assess_and_deduplicate_task(rt, plan, dedup)
            try:
                gate = steps.gate_batch_task(rt, staged)
                if gate.passed:
                    choice = steps.choose_tokenizer_task(rt, staged)
                    decision = accept_batch(staged, choice, steps.build_dataset_version_task(rt, staged, choice))
                else:
                    decision = steps.quarantine_batch_task(rt, staged, gate)
                return steps.commit_batch_task(rt, staged, gate, decision, dedup, confirm)
            finally:
                staged.discard()

    good = ingest_by_steps(str(accepted_src))
    assert (good["status"], good["records_accepted"], good["dataset_version"]) == ("accepted", 8, "ds-000001")
    bad = ingest_by_steps(str(rejected_src))  # 12 of 16 filtered: the reject rate fails the gate
    assert bad["status"] == "quarantined" and bad["rejected"]["quality_gate_failed"] == 4
    assert bad["removals_recorded"] == 12 and {r["reason"] for r in bad["removals"]} == {"filter:word_count"}
    assert run_ingest(rt, str(accepted_src)).status == "nothing_new"  # the flow's batch was committed for real
    with rt.metadata.session() as session:
        statuses = [(b.id, b.status.value) for b in repo.list_batches(session, limit=10)]
    assert sorted(statuses) == [(good["batch_id"], "accepted"), (bad["batch_id"], "quarantined")]
