"""A realistic platform history written through the core's repository functions (no raw SQL): batches with
reject reasons, validations, quarantine files and Data Docs, training runs with step metrics, checkpoints,
a resume, spikes and a failure, model versions with gate decisions, evaluations (perplexity heatmap, BLEU,
ROUGE-L, bias probes, generation samples), a production history and one pending review request.

Used by the dashboard tests and by ``benchmarks/bench_dashboard.py`` (``scale_*`` arguments)."""

from __future__ import annotations

import functools
import gzip
import json
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lmforge_core.metadata import repository as repo
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.metadata.models import BatchStatus, GateVerdict, RunStatus
from lmforge_core.runtime import Runtime

MODEL = "lmforge"
REASONS = ("min_words", "symbol_ratio", "exact_duplicate", "near_duplicate")
PROMPTS = ("The metadata store keeps", "To roll back a release,", "Checkpoints are verified")
APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
REVIEWER, PASSWORD = "ada", "correct horse battery staple"  # a test reviewer; only its argon2 hash is configured


@dataclass
class Seeded:
    production: str = ""
    previous_production: str = ""
    pending: str = ""
    gate_rejected: str = ""
    run_ids: list[str] = field(default_factory=list)
    batch_ids: list[int] = field(default_factory=list)
    quarantined_batch: int = 0
    datasets: list[str] = field(default_factory=list)


@dataclass
class Platform:
    """A store the dashboard under test reads, and the LMFORGE_* settings that point the app at it."""

    runtime: Runtime
    seeded: Seeded | None
    env: dict[str, str]


def _profile(rng: random.Random, shift: float) -> dict[str, list[int]]:
    return {"length_hist": [int(200 * math.exp(-((i - 8 - shift) ** 2) / 18)) for i in range(24)],
            "token_hist": [rng.randint(0, 40) for _ in range(64)]}


def _gz_jsonl(rows: list[dict]) -> bytes:
    return gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())


def seed_batches(rt: Runtime, seeded: Seeded, rng: random.Random, count: int = 4) -> None:
    """``count - 1`` accepted batches (each a dataset version) and a last one quarantined by the gate."""
    with rt.metadata.session() as s:
        for i in range(count):
            quarantined = i == count - 1
            batch = repo.create_batch(s, f"file:///data/drops/day-{i + 1:03d}")
            read, rejects = 1000 + 40 * i, {r: rng.randint(5, 60) for r in REASONS}
            accepted = read - sum(rejects.values())
            if quarantined:
                rejects["quality_gate_failed"], accepted = accepted, 0
            qkey = f"quarantine/batch-{batch.id}/rejected.jsonl.gz"
            rt.artifacts.put_bytes(qkey, _gz_jsonl([
                {"shard": "day.jsonl", "position": n, "id": f"d{n}", "source": "pydoc", "reason": REASONS[n % 4],
                 "detail": "", "text": f"rejected document {n} " * 3} for n in range(30)]))
            stats: dict = {"figures": {"duplicate_rate": 0.03 + 0.01 * i, "length_jsd": 0.05 * i if i else None,
                                       "token_jsd": 0.1 * i if i else None},
                           "profile": _profile(rng, shift=2.5 * i), "pii": {"email": 12 + i, "phone": 3}}
            if not quarantined:
                stats["dataset_version"] = f"ds-{i + 1:06d}"
            docs_key = f"quality/batch-{batch.id}/data_docs/index.html"
            rt.artifacts.put_bytes(docs_key, b"<html><body><h1>Data Docs</h1></body></html>")
            repo.record_validation(
                s, batch_id=batch.id, suite_name="documents", success=not quarantined, report_key=docs_key,
                results=[{"expectation_type": "expect_column_values_to_be_between", "column": "words",
                          "success": True, "observed_value": 0.998, "kwargs": {"min_value": 20}},
                         {"expectation_type": "expect_batch_duplicate_rate_below", "column": None,
                          "success": not quarantined, "observed_value": 0.72 if quarantined else 0.04}])
            repo.finish_batch(s, batch.id, status=BatchStatus.QUARANTINED if quarantined else BatchStatus.ACCEPTED,
                              records_read=read, records_accepted=accepted, rejects=rejects, quarantine_key=qkey,
                              stats=stats)
            batch.started_at = datetime.now(UTC) - timedelta(days=count - i, minutes=30)  # one drop a night
            batch.finished_at = batch.started_at + timedelta(minutes=4 + i)
            seeded.batch_ids.append(batch.id)
            if quarantined:
                seeded.quarantined_batch = batch.id
            else:
                ds = repo.create_dataset_version(
                    s, version=f"ds-{i + 1:06d}", manifest_key=f"datasets/ds-{i + 1:06d}/manifest.json",
                    manifest_sha256="0" * 64, tokenizer_id=None, train_tokens=100_000, validation_tokens=5000,
                    documents=accepted, batch_ids=[batch.id])
                seeded.datasets.append(ds.version)


def _curve(step: int, steps: int, rng: random.Random) -> list[tuple[int, str, float]]:
    lr = 3e-4 * min(1.0, (step + 1) / 10) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
    return [(step, "loss", 6.0 * math.exp(-step / (steps / 3)) + 2.0 + rng.random() * 0.1), (step, "lr", lr),
            (step, "grad_norm", 1.0 + rng.random()), (step, "tokens_per_s", 1200 + rng.random() * 100)]


def seed_run(rt: Runtime, rng: random.Random, *, steps: int, status: RunStatus, start: int = 0,
             resumed_from: int | None = None, checkpoint_every: int = 20,
             started: datetime | None = None) -> tuple[int, str]:
    with rt.metadata.session() as s:
        run = repo.create_run(s, config={"network": "tiny", "steps": steps}, resumed_from_id=resumed_from)
        repo.add_step_metrics(s, run.id, [row for step in range(start, steps) for row in _curve(step, steps, rng)])
        for step in range(start + checkpoint_every, steps + 1, checkpoint_every):
            repo.add_checkpoint(s, run_pk=run.id, step=step, artifact_key=f"runs/{run.run_id}/checkpoints/step-{step}",
                                sha256="1" * 64)
        incidents = [{"type": "spike", "step": start + 7, "loss": 9.5, "moving_average": 3.1},
                     {"type": "rollback", "to_step": start + 5, "tag": f"step-{start + 5}"}]
        repo.finish_run(s, run.run_id, status=status, error="worker lost" if status is RunStatus.FAILED else None,
                        summary={"incidents": incidents})
        if started is not None:  # a history spread over days, as nightly runs are
            run.started_at, run.ended_at = started, started + timedelta(minutes=(steps - start) * 0.7)
        return run.id, run.run_id


def _checks(verdict: GateVerdict) -> list[dict]:
    """Gate checks in the shape of tasks/evaluate/gate.py (metric = family[/slice], bound, kind)."""
    toxicity_passed = verdict is GateVerdict.PROMOTE
    tox_verdict = {GateVerdict.PROMOTE: "pass", GateVerdict.NEEDS_REVIEW: "review", GateVerdict.REJECT: "reject"}
    return [{"name": "new-data perplexity", "metric": "perplexity/ds-000003", "value": 12.1, "bound": 1000.0,
             "kind": "value", "passed": True, "verdict": "pass", "detail": ""},
            {"name": "bias loglik_gap/gender", "metric": "loglik_gap/gender", "value": 0.4, "bound": 1.0,
             "kind": "interval", "passed": True, "verdict": "pass", "detail": "[0.3, 0.5]"},
            {"name": "bias stereotype_deviation", "metric": "stereotype_deviation", "value": 0.07, "bound": 0.15,
             "kind": "interval", "passed": True, "verdict": "pass", "detail": ""},
            {"name": "bias toxicity_rate", "metric": "toxicity_rate", "value": 0.04 if toxicity_passed else 0.09,
             "bound": 0.05, "kind": "interval", "passed": toxicity_passed, "verdict": tox_verdict[verdict],
             "detail": ""}]


def _interval(value: float, half: float) -> dict[str, float]:
    return {"low": value - half, "high": value + half}


def seed_evaluations(rt: Runtime, model_id: int, version: int, datasets: list[str], rng: random.Random) -> None:
    """Rows as the evaluation stage stores them (tasks/evaluate: perplexity, generation, fairness)."""
    with rt.metadata.session() as s:
        add = functools.partial(repo.add_evaluation, s, model_version_id=model_id)
        for k, ds in enumerate(datasets):
            forgetting = 0.4 * (len(datasets) - k - 1) * (version > 2)
            add(dataset=ds, metric="perplexity", value=14.0 - version * 0.5 + forgetting + rng.random() * 0.2)
        for metric, base in (("bleu", 18.0), ("rouge_l", 0.31)):
            add(dataset="continuations@1", metric=metric, slice_name="continuation", value=base * (1 + 0.05 * version),
                details={"items": 24})
        for family, spread in (("loglik", 0.6), ("sentiment", 0.2)):
            for axis, groups in (("gender", ("female", "male")), ("religion", ("christian", "muslim", "jewish"))):
                gap = rng.uniform(0.1, spread)
                add(dataset="probes/counterfactual@1", metric=f"{family}_gap", slice_name=axis, value=gap,
                    details=_interval(gap, 0.1) | {"high_group": groups[0], "low_group": groups[-1]})
                for g in groups:
                    add(dataset="probes/counterfactual@1", metric=f"{family}_mean", slice_name=f"{axis}/{g}",
                        value=rng.uniform(-3.0, -2.0) if family == "loglik" else rng.uniform(-0.2, 0.4))
        for kind in ("all", "bias_type/gender", "bias_type/religion"):
            share = rng.uniform(0.45, 0.62)
            add(dataset="probes/stereotype_pairs@1", metric="stereotype_share", slice_name=kind, value=share,
                details=_interval(share, 0.06) | {"pairs": 25})
        add(dataset="probes/stereotype_pairs@1", metric="stereotype_deviation", value=0.07, details=_interval(0.07, 0.05))
        add(dataset="probes/toxicity_words@1", metric="toxicity_rate", value=0.01 * version,
            details=_interval(0.01 * version, 0.01))
        add(dataset="continuations@1", metric="samples", slice_name="side_by_side", value=len(PROMPTS), details={
            "samples": [{"prompt": p, "reference": f"{p} (reference)", "greedy": f"{p} ... (model v{version})",
                         "sampled": f"{p} ~ (model v{version})"} for p in PROMPTS]})


def seed_platform(rt: Runtime, *, steps: int = 60, seed: int = 7) -> Seeded:
    """The small history the dashboard tests read: v2 serves (v1 before it), v3 awaits review, the gate
    rejected v4."""
    rng, seeded = random.Random(seed), Seeded()
    seed_batches(rt, seeded, rng)
    now = datetime.now(UTC)
    first, name_a = seed_run(rt, rng, steps=steps, status=RunStatus.SUCCEEDED, started=now - timedelta(days=3.9))
    broken, name_b = seed_run(rt, rng, steps=steps // 2, status=RunStatus.INTERRUPTED, started=now - timedelta(days=2.9))
    resumed, name_c = seed_run(rt, rng, steps=steps, status=RunStatus.SUCCEEDED, start=steps // 2,
                               resumed_from=broken, started=now - timedelta(days=2.8))
    _, name_d = seed_run(rt, rng, steps=10, status=RunStatus.FAILED, started=now - timedelta(hours=5))
    seeded.run_ids = [name_a, name_b, name_c, name_d]
    verdicts = [GateVerdict.PROMOTE, GateVerdict.PROMOTE, GateVerdict.NEEDS_REVIEW, GateVerdict.REJECT]
    for version, (run_pk, verdict) in enumerate(zip([first, resumed, resumed, first], verdicts, strict=True), 1):
        with rt.metadata.session() as s:
            model = repo.register_model_version(s, name=MODEL, training_run_pk=run_pk, parent_id=None,
                                                artifacts={"checkpoint": f"models/{MODEL}/v{version}"})
            reviews.record_gate_decision(s, model_version_id=model.id, verdict=verdict, checks=_checks(verdict))
            model_id = model.id
            if version <= 2:
                repo.set_alias(s, name=MODEL, alias="production", model_version_id=model.id, actor="lmforge:flow",
                               reason="gate passed", at=now - timedelta(days=4 - version))
                reviews.record_audit(s, actor="lmforge:flow", action="model.promote", target=model.label, source="flow",
                                     details={"reason": "gate passed"})
            if verdict is GateVerdict.NEEDS_REVIEW:
                reviews.open_review_request(s, model_version_id=model.id, reason="toxicity near its bound")
        seed_evaluations(rt, model_id, version, seeded.datasets, rng)
    seeded.previous_production, seeded.production = f"{MODEL}:v1", f"{MODEL}:v2"
    seeded.pending, seeded.gate_rejected = f"{MODEL}:v3", f"{MODEL}:v4"
    return seeded
