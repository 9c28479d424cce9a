"""The recipe's steps as the flows compose them: each calls its stage's Prefect tasks with the retries,
timeouts and cache keys of the settings, and publishes the step's artifact. The standalone flows
(ingest, train, evaluate, publish) and ``nightly_retrain`` share these, so a step is defined once."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import CacheKeyFnPolicy

from flows.artifacts import data_quality_artifact, evaluation_artifact, gate_artifact
from flows.support import catch_up, ensure_training_limit, stage_installed
from lmforge_core.runtime import Runtime
from tasks.ingest import prefect_tasks as ingest_tasks
from tasks.ingest.ingest_lock import ingest_lock
from tasks.ingest.pipeline import accept_batch, nothing_new
from tasks.prefect_policy import cache_key_from, retry_options, retry_when_transient_or
from tasks.train.run import TrainingProcessError
from tasks.train.task import interrupted_training, train_dataset_task, untrained_dataset_task


class QualityGateFailed(RuntimeError):
    """The new batch failed the quality gate; the message names the failed expectations."""


def _ingest_steps(runtime: Runtime, source_uri: str | None) -> dict[str, Any]:
    """The ingest stage's named steps, each its own task, under the ingest lock (see tasks.ingest.prefect_tasks)."""
    with ingest_lock(runtime) as confirm:
        plan = ingest_tasks.plan_shards_task(runtime, source_uri)
        dedup = ingest_tasks.load_dedup_index_task(runtime)
        staged = ingest_tasks.assess_and_deduplicate_task(runtime, plan, dedup)
        try:
            if staged.batch_id is None:
                return nothing_new(staged).to_dict()
            gate = ingest_tasks.gate_batch_task(runtime, staged)
            if gate.passed:
                choice = ingest_tasks.choose_tokenizer_task(runtime, staged)
                decision = accept_batch(staged, choice, ingest_tasks.build_dataset_version_task(runtime, staged, choice))
            else:
                decision = ingest_tasks.quarantine_batch_task(runtime, staged, gate)
            return ingest_tasks.commit_batch_task(runtime, staged, gate, decision, dedup, confirm)
        finally:
            staged.discard()


# The whole ingest once per flow run: its steps pass live objects and are never cached, so this task holds
# their outcome; a resumed (suspended) or retried run finds it instead of ingesting what arrived meanwhile.
ingest_night_task = task(_ingest_steps, name="ingest-night", persist_result=True,
                         cache_policy=CacheKeyFnPolicy(cache_key_fn=cache_key_from("source_uri", per_run=True)))


# The catch-up decision once per flow run (persisted): a run resumed after a review does not find itself
# superseded by the nights that came while it waited.
catch_up_task = task(catch_up, name="catch-up-policy", persist_result=True,
                     cache_policy=CacheKeyFnPolicy(cache_key_fn=cache_key_from(per_run=True)))


# Whether a crashed night left a training to finish, once per flow run (persisted): a resumed (suspended)
# run keeps the night it started as, and does not ingest a drop half-way through.
interrupted_training_task = task(interrupted_training, name="interrupted-training", persist_result=True,
                                 cache_policy=CacheKeyFnPolicy(cache_key_fn=cache_key_from(per_run=True)))


def ingest_step(rt: Runtime, source: str | None) -> dict[str, Any]:
    """Ingest the new shards of ``source`` (the next sample drop when None); a failed gate raises
    :class:`QualityGateFailed` after the data-quality artifact is published."""
    cfg = rt.settings.orchestration
    result = ingest_night_task.with_options(**retry_options(cfg, cfg.timeouts.ingest_s))(rt, source)
    if result["status"] in ("accepted", "quarantined"):
        data_quality_artifact(rt.artifacts, result)
    if result["status"] == "quarantined":
        raise QualityGateFailed(result["message"])
    return result


def base_model_step(rt: Runtime, dataset: str) -> dict[str, Any] | None:
    """With ``[model] base`` configured and no production model yet: the base is imported as production and,
    when the evaluation stage is installed, evaluated as the first champion (on the night's ``dataset``
    tokenized by its own tokenizer, before any challenger). None without a configured base."""
    if not rt.settings.model.base:
        return None
    from tasks.train.imports import base_dataset, install_base

    base = install_base(rt, rt.settings.model.base)
    base_dataset(rt, base.imported, dataset)
    out: dict[str, Any] = {"model_version": base.imported.model_version, "production": base.production,
                           "installed": base.installed}
    get_run_logger().info("base model %s; production is %s", base.imported.model_version, base.production)
    if base.installed and "evaluate" not in missing_stages():
        out["evaluation"] = evaluate_step(rt, base.imported.model_version)
    return out


def dataset_to_train(rt: Runtime, ingest: dict[str, Any]) -> str | None:
    """This night's dataset version, or the latest one whose training never finished (a crashed night)."""
    if ingest.get("dataset_version"):
        return str(ingest["dataset_version"])
    return untrained_dataset_task(rt)


def train_step(rt: Runtime, dataset: str, steps: int | None = None, processes: int | None = None) -> dict[str, Any]:
    """Train ``dataset`` once under the global training limit; a killed training process is retried and
    resumes from its last checkpoint."""
    cfg = rt.settings.orchestration
    ensure_training_limit(cfg)
    train = train_dataset_task.with_options(**retry_options(
        cfg, cfg.timeouts.train_s, condition=retry_when_transient_or(TrainingProcessError)))
    result = train(rt, dataset, steps, processes)
    get_run_logger().info("model %s from run %s (%s)", result["model_version"], result["run_id"],
                          "found, not retrained" if result["summary"].get("reused") else "trained")
    return result


# Stages built by their own issues; until installed, the flows stop before them and say what is missing.
OPTIONAL_STAGES = {
    "evaluate": ("tasks.evaluate.prefect_tasks", "the evaluation stage (tasks/evaluate/prefect_tasks.py) is not installed"),
    "publish": ("tasks.publish.prefect_tasks", "the publish stage (tasks/publish/prefect_tasks.py) is not installed"),
}


def missing_stages() -> dict[str, str]:
    """Optional stages absent from this installation, each with the reason the flow reports."""
    return {name: why for name, (module, why) in OPTIONAL_STAGES.items() if not stage_installed(module)}


def explain(verdict: str, checks: list[dict[str, Any]]) -> str:
    """One sentence naming the checks behind the gate's verdict."""
    failed = [f"{c['name']} ({c.get('detail') or c.get('verdict')})" for c in checks if not c.get("passed", True)]
    return f"{verdict}: " + ("; ".join(failed) if failed else f"all {len(checks)} checks passed")


def evaluate_step(rt: Runtime, model_version: str) -> dict[str, Any]:
    """Evaluate and gate the candidate (the decision is recorded by the stage); publish the report and the
    gate decision as artifacts. Returns the stage's result plus ``explanation``."""
    from tasks.evaluate.prefect_tasks import evaluate_task

    cfg = rt.settings.orchestration
    evaluate = evaluate_task.with_options(
        **retry_options(cfg, cfg.timeouts.evaluate_s), persist_result=True,
        cache_policy=CacheKeyFnPolicy(cache_key_fn=cache_key_from("model_version")))
    evaluation = evaluate(rt, model_version.rpartition(":")[2])  # "lmforge:v3" -> "v3", what the stage resolves
    evaluation["explanation"] = explain(evaluation["verdict"], evaluation["checks"])
    evaluation_artifact(rt.artifacts, evaluation)
    gate_artifact(evaluation)
    return evaluation


def publish_step(rt: Runtime, model_version: str) -> dict[str, Any]:
    """Export, verify in a throw-away Triton, publish to the repository, load in the serving Triton."""
    from tasks.publish.prefect_tasks import publish_task

    cfg = rt.settings.orchestration
    publish = publish_task.with_options(
        **retry_options(cfg, cfg.timeouts.publish_s), persist_result=True,
        cache_policy=CacheKeyFnPolicy(cache_key_fn=cache_key_from("model_version")))
    return publish(rt, model_version.rpartition(":")[2])


def promote_step(rt: Runtime, model_version: str, reason: str) -> dict[str, Any]:
    """The approved candidate becomes ``production``: the champion the next night trains from and is gated
    against."""
    from tasks.review.prefect_tasks import promote_task

    cfg = rt.settings.orchestration
    promote = promote_task.with_options(**retry_options(cfg, 300))
    return promote(rt, model_version, reason)
