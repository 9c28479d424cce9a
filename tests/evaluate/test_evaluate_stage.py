"""`lmforge evaluate` end to end on tiny models trained in the test: SQLite + local artifacts through the
CLI, and PostgreSQL + S3 (moto's server) through the stage function."""

import json
import math

import eval_workspace as workspace
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from lmforge_core.metadata import evaluation_repository as evals
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.metadata.models import GateVerdict, ModelStatus
from lmforge_core.runtime import open_runtime
from lmforge_core.settings import load_settings
from model.registry import load_model_version
from tasks.evaluate.gate import verdict_of
from tasks.evaluate.perplexity import validation_split
from tasks.evaluate.run import run_evaluation


@pytest.fixture(scope="module")
def sqlite_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    settings = workspace.SETTINGS | {"evaluate": workspace.EVALUATE | {
        "probe_dir": workspace.small_probes(root / "probes")}}
    runtime = open_runtime(load_settings(workspace=root / "ws", **settings))
    workspace.build(runtime)
    yield runtime
    runtime.metadata.dispose()


def cli_env(monkeypatch, runtime):
    monkeypatch.setenv("LMFORGE_WORKSPACE", str(runtime.settings.workspace))
    for key, value in runtime.settings.evaluate.model_dump(exclude={"gate"}).items():
        if value is not None:
            monkeypatch.setenv(f"LMFORGE_EVALUATE__{key.upper()}", str(value))


def json_out(text):
    return json.loads(text[text.index("{"):])


def direct_perplexity(runtime, label_number, dataset, max_windows):
    """exp(mean cross-entropy) from the plain logits, over the split's first ``max_windows`` windows."""
    loaded = load_model_version(runtime.metadata, runtime.artifacts, "lmforge", str(label_number))
    split = validation_split(runtime, dataset)
    windows = torch.from_numpy(split.get(np.arange(min(len(split), max_windows))).astype(np.int64))
    targets = windows[:, 1:].clone()
    targets[targets == split.pad_id] = -100
    with torch.no_grad():
        logits = loaded.model(windows[:, :-1])
    return math.exp(F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100).item())


def test_lmforge_evaluate_end_to_end_on_sqlite(sqlite_ws, monkeypatch):
    from flows.cli import app

    rt, runner = sqlite_ws, CliRunner()
    cli_env(monkeypatch, rt)
    out = runner.invoke(app, ["evaluate", "2", "--json"])
    result = json_out(out.stdout)
    assert not result["reused"]
    assert out.exit_code == (1 if result["verdict"] == "reject" else 0), out.output
    checks = {c["name"]: c for c in result["checks"]}
    assert result["verdict"] == verdict_of(result["checks"]).value
    assert result["baseline"] == result["parent"] == "lmforge:v1" and result["newest_dataset"] == "ds-000002"
    assert {"new-data perplexity", "new-data perplexity vs production", "forgetting (earlier data, worst version)",
            "bias loglik_gap/gender", "bias loglik_gap/age vs production", "bias sentiment_gap/gender",
            "bias stereotype_deviation", "bias toxicity_rate vs production"} <= set(checks)

    with rt.metadata.session() as s:
        v1, v2 = (repo.get_model_version(s, "lmforge", n) for n in (1, 2))
        ppl = {(r.dataset, r.slice): r.value for r in evals.evaluation_rows(s, v2.id, "perplexity")}
        parent_ppl = evals.evaluation_value(s, v1.id, "ds-000001", "perplexity").value
        forgetting = evals.evaluation_value(s, v2.id, "ds-000001", "forgetting").value
        assert evals.evaluation_value(s, v1.id, "ds-000002", "perplexity") is not None  # production's baseline
        assert evals.evaluation_value(s, v1.id, "probes/counterfactual@small-1", "loglik_gap", "gender")
        decision = reviews.latest_gate_decision(s, v2.id)
        assert decision.baseline_model_version_id == v1.id and decision.report_key == result["report_key"]
        decision_id = decision.id
        samples = evals.evaluation_value(s, v2.id, "ds-000002", "samples", "side_by_side").details["samples"]
    assert ppl[("ds-000002", "all")] == pytest.approx(direct_perplexity(rt, 2, "ds-000002", 40), rel=1e-4)
    assert ppl[("ds-000002", "source:day-02-containers")] == ppl[("ds-000002", "all")]
    assert checks["new-data perplexity"]["value"] == ppl[("ds-000002", "all")]
    assert forgetting == pytest.approx(ppl[("ds-000001", "all")] / parent_ppl - 1)
    assert len(samples) == 2 and {"prompt", "reference", "greedy", "sampled"} == set(samples[0])

    prefix = result["report_key"].rsplit("/", 1)[0]
    assert prefix.startswith("evaluations/lmforge/v2/")
    manifest = json.loads(rt.artifacts.get_bytes(f"{prefix}/manifest.json"))
    assert set(manifest["files"]) == {"report.json", "report.md", "events.jsonl"}
    for name, digest in manifest["files"].items():
        assert rt.artifacts.info(f"{prefix}/{name}").sha256 == digest
    md = rt.artifacts.get_bytes(f"{prefix}/report.md").decode()
    assert md.startswith("# Evaluation of lmforge:v2") and md.index("## Promotion gate") < md.index("## Perplexity")
    events = [json.loads(line)["type"] for line in rt.artifacts.get_bytes(f"{prefix}/events.jsonl").splitlines()]
    assert events[0] == "start" and "perplexity" in events and events[-1] == "gate"

    again = json_out(runner.invoke(app, ["evaluate", "2", "--json"]).stdout)  # same inputs: found, not redone
    assert again["reused"] and again["report_key"] == result["report_key"] and again["checks"] == result["checks"]
    with rt.metadata.session() as s:
        assert reviews.latest_gate_decision(s, v2.id).id == decision_id  # no second decision recorded

    listed = runner.invoke(app, ["evaluations", "--json"])
    data = json_out(listed.stdout)
    assert [e["model_version"] for e in data["evaluations"]] == ["lmforge:v1", "lmforge:v2"]
    assert data["perplexity_matrix"]["datasets"] == ["ds-000001", "ds-000002"]
    assert set(data["perplexity_matrix"]["values"]["lmforge:v1"]) == {"ds-000001", "ds-000002"}

    human = runner.invoke(app, ["evaluate", "1"])  # production itself: judged as a first model
    assert human.exit_code in (0, 1), human.output
    assert "promotion gate: lmforge:v1" in human.stdout and "new-data perplexity" in human.stdout
    assert "vs production" not in human.stdout and "first model" in human.stdout


def test_a_model_the_gate_rejects_is_marked_and_never_publishable(sqlite_ws, monkeypatch):
    from flows.cli import app

    cli_env(monkeypatch, sqlite_ws)
    monkeypatch.setenv("LMFORGE_EVALUATE__GATE__MAX_PERPLEXITY", "1.5")
    out = CliRunner().invoke(app, ["evaluate", "2"])
    assert out.exit_code == 1 and "reject" in out.stdout
    with sqlite_ws.metadata.session() as s:
        v2 = repo.get_model_version(s, "lmforge", 2)
        assert v2.status is ModelStatus.REJECTED
        assert reviews.latest_gate_decision(s, v2.id).verdict is GateVerdict.REJECT
        with pytest.raises(evals.NotPublishableError, match="lmforge:v2 was rejected"):
            evals.assert_publishable(s, v2.id)
    bad = CliRunner().invoke(app, ["evaluate", "9"])
    assert bad.exit_code != 0


def test_evaluation_on_postgresql_and_s3(tmp_path, postgres_url, s3_bucket):
    settings = workspace.SETTINGS | {"evaluate": workspace.EVALUATE | {
        "probe_dir": workspace.small_probes(tmp_path / "probes")}}
    rt = open_runtime(load_settings(workspace=tmp_path / "ws", database_url=postgres_url,
                                    artifact_uri=f"s3://{s3_bucket}/lmforge", **settings))
    try:
        workspace.build(rt, versions=1)
        seen = []
        result = run_evaluation(rt, "1", progress=seen.append)
        assert result.baseline is None and result.parent is None
        assert {c["kind"] for c in result.checks} == {"value", "interval"}  # a first model: absolute bounds
        assert seen[0]["type"] == "start" and seen[-1]["type"] == "done"
        with rt.metadata.session() as s:
            v1 = repo.get_model_version(s, "lmforge", 1)
            stored = evals.evaluation_value(s, v1.id, "ds-000001", "perplexity")
            assert stored.details["sources"] == ["day-01-text"]
            assert reviews.latest_gate_decision(s, v1.id).verdict.value == result.verdict
        keys = {i.key.rsplit("/", 1)[1] for i in rt.artifacts.list(result.report_key.rsplit("/", 1)[0] + "/")}
        assert keys == {"report.json", "report.md", "events.jsonl", "manifest.json"}
        assert json.loads(rt.artifacts.get_bytes(result.report_key))["perplexity"]["ds-000001"]["perplexity"] == \
            stored.value
    finally:
        rt.metadata.dispose()
