"""``nightly_retrain``: the recipe of one night, as a flow.

ingest new shards -> quality gate (failed: the run fails, naming the expectations) -> nothing new: a
recorded no-op -> dataset version -> (a configured base model, the first night: imported as production and
evaluated as the first champion) -> continual training from production -> evaluation -> promotion gate -> optional human
review -> export -> verify in a throw-away Triton -> publish to the Triton repository -> load it in the
serving Triton.

A night that finds the training of the latest dataset version cut off (its process killed, or stopped with
Ctrl-C) finishes that one instead of ingesting: it resumes it from its last checkpoint and takes its model
through the rest of the night; the next drop waits for the next night, so no later model continues from a
champion that missed a dataset version.

Each step is a task with retries on transient failures, a timeout and a cache key from its inputs, so a
retry of a crashed run skips the finished steps and resumes training from its checkpoint. Review pauses
(local run) or suspends (deployed run) the flow; both are the same step (`flows.review`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows import steps
from flows.support import open_flow_runtime
from lmforge_core.runtime import Runtime

INGEST_FIELDS = ("status", "message", "batch_id", "drop", "records_read", "records_accepted", "rejected",
                 "dataset_version", "data_docs_key", "remaining_drops")


def _summary(status: str, message: str, **fields: Any) -> dict[str, Any]:
    get_run_logger().info("night ends %s: %s", status, message)
    return {"status": status, "message": message, "flow_run_id": str(flow_run.id)} | fields


def _after_training(rt: Runtime, trained: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """Evaluation, gate, review and publish of the night's candidate (each stage behind its check)."""
    label = trained["model_version"]
    missing = steps.missing_stages()
    if "evaluate" in missing:
        return _summary("trained", f"{label} trained; not evaluated: {missing['evaluate']}", **fields,
                        missing_stages=missing)
    evaluation = steps.evaluate_step(rt, label)
    fields |= {"evaluation": evaluation}
    verdict = evaluation["verdict"]
    if verdict == "reject":
        return _summary("rejected", f"the promotion gate rejected {label}: {evaluation['explanation']}", **fields)
    if verdict == "needs_review" or rt.settings.orchestration.review.required:
        from flows.review import review_step  # Prefect's pause/suspend only when a person must decide

        review = review_step(rt, label, reason=evaluation["explanation"] if verdict == "needs_review"
                             else "review required by configuration")
        fields |= {"review": review}
        if review["decision"] != "approve":
            return _summary("review_rejected", f"{label} was not approved by {review['reviewer']}: "
                            f"{review['comment']}", **fields)
    why = (f"approved by {fields['review']['reviewer']}" if "review" in fields
           else f"the promotion gate said {verdict}")
    if "publish" in missing:
        fields |= {"promotion": steps.promote_step(rt, label, why)}
        return _summary("approved", f"{label} passed the gate; not published: {missing['publish']}", **fields,
                        missing_stages=missing)
    published = steps.publish_step(rt, label)
    fields |= {"promotion": steps.promote_step(rt, label, why)}
    where = (f"loaded by the serving Triton at {published['served_by']}" if published["served_by"]
             else "no serving Triton runs (`lmforge triton up` starts one)")
    return _summary("published", f"{label} published as Triton version {published['triton_version']}; {where}",
                    **fields, publish=published)


@flow(name="nightly-retrain")
def nightly_retrain(source: str | None = None, train_steps: int | None = None, processes: int | None = None,
                    config: str | None = None) -> dict[str, Any]:
    """One night: see the module docstring. Returns the night's summary (what `lmforge nightly` prints)."""
    rt = open_flow_runtime(config)
    try:
        later = steps.catch_up_task(rt)
        if later is not None:
            return _summary("superseded", f"a later night ({later}) is due; catch-up policy runs only the latest",
                            superseded_by=later)
        fields: dict[str, Any] = {}
        interrupted = steps.interrupted_training_task(rt)
        if interrupted is not None:  # a crashed night's training comes first; the next drop waits a night
            get_run_logger().info("resuming the interrupted training %s of %s (it was %s) before ingesting",
                                  interrupted["run_id"], interrupted["dataset_version"], interrupted["was"])
            fields["resumed_training"] = interrupted
            dataset = interrupted["dataset_version"]
        else:
            ingest = steps.ingest_step(rt, source)
            fields["ingest"] = {k: ingest.get(k) for k in INGEST_FIELDS}
            dataset = steps.dataset_to_train(rt, ingest)
            if dataset is None:
                return _summary("nothing_new", ingest["message"], **fields)
        base = steps.base_model_step(rt, dataset)
        if base is not None:
            fields |= {"base_model": base}
        trained = steps.train_step(rt, dataset, train_steps, processes)
        fields |= {"dataset_version": dataset, "model_version": trained["model_version"],
                   "training": {k: trained[k] for k in ("run_id", "status", "checkpoint_key", "summary")}}
        return _after_training(rt, trained, fields)
    finally:
        rt.metadata.dispose()
