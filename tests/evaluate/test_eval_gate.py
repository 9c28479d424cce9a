"""The promotion gate: every rule promotes, sends to review and rejects on constructed cases; decisions are
stored with every check; a rejected model can never be published."""

import pytest

from lmforge_core.config.evaluate import GateThresholds
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.metadata.evaluation_repository import NotPublishableError, assert_publishable
from lmforge_core.metadata.models import GateVerdict, ModelStatus, ReviewDecision
from lmforge_core.settings import load_settings
from model.eval_metrics import Interval
from tasks.evaluate.gate import Figures, judge, record_gate

T = GateThresholds(max_new_perplexity_increase=0.02, max_forgetting=0.10, max_perplexity=100.0,
                   max_loglik_gap=1.0, max_bias_regression=0.05, review_margin=0.5)
NEW, OLD = "ds-000002", "ds-000001"
V = {"pass": GateVerdict.PROMOTE, "needs_review": GateVerdict.NEEDS_REVIEW, "reject": GateVerdict.REJECT}


def figures(new=50.0, old=40.0, **bias):
    return Figures({NEW: new, OLD: old}, {k: Interval(*v) for k, v in bias.items()})


def verdict_of(name, cand, prod=None, parent=None, t=T):
    verdict, checks = judge(NEW, cand, prod, parent, t)
    by_name = {c["name"]: c for c in checks}
    return verdict, by_name[name]


@pytest.mark.parametrize(("ppl", "expected"), [(99.0, "pass"), (101.0, "reject")])
def test_absolute_perplexity_bound(ppl, expected):
    verdict, check = verdict_of("new-data perplexity", figures(new=ppl))
    assert check["verdict"] == expected and check["bound"] == 100.0 and check["value"] == ppl
    assert verdict is (GateVerdict.PROMOTE if expected == "pass" else GateVerdict.REJECT)


@pytest.mark.parametrize(("new", "expected", "verdict"), [
    (50.5, "pass", GateVerdict.PROMOTE),         # +1 %: within 2 %
    (51.25, "needs_review", GateVerdict.NEEDS_REVIEW),  # +2.5 %: within 2 % x 1.5
    (52.5, "reject", GateVerdict.REJECT),        # +5 %
    (45.0, "pass", GateVerdict.PROMOTE),         # better
])
def test_new_data_perplexity_against_production(new, expected, verdict):
    prod = figures(new=50.0)
    got, check = verdict_of("new-data perplexity vs production", figures(new=new), prod, prod)
    assert check["verdict"] == expected and got is verdict
    assert check["value"] == pytest.approx(new / 50.0 - 1) and check["baseline"] == 50.0


@pytest.mark.parametrize(("old", "expected"), [(42.0, "pass"), (44.8, "needs_review"), (48.0, "reject")])
def test_forgetting_against_the_parent(old, expected):
    parent = figures(new=50.0, old=40.0)
    got, check = verdict_of("forgetting (earlier data, worst version)", figures(new=50.0, old=old), parent, parent)
    assert check["verdict"] == expected and check["metric"] == f"forgetting/{OLD}" and got is V[expected]
    assert check["value"] == pytest.approx(old / 40.0 - 1)


@pytest.mark.parametrize(("interval", "expected"), [
    ((0.5, 0.2, 0.9), "pass"),           # upper end within 1.0
    ((0.9, 0.6, 1.3), "needs_review"),   # straddles the bound
    ((1.4, 1.1, 1.7), "reject"),         # lower end beyond
    ((1.2, 0.8, 1.6), "needs_review"),   # point estimate beyond, interval not: judged on the interval
])
def test_bias_bound_is_judged_on_the_interval(interval, expected):
    got, check = verdict_of("bias loglik_gap/gender", figures(**{"loglik_gap/gender": interval}))
    assert check["verdict"] == expected and check["interval"] == [interval[1], interval[2]] and got is V[expected]


@pytest.mark.parametrize(("interval", "expected"), [
    ((0.32, 0.1, 0.5), "pass"),           # point 0.32 <= 0.3 + 0.05
    ((0.40, 0.2, 0.6), "needs_review"),   # point worse than production + margin, interval reaches back
    ((0.60, 0.4, 0.8), "reject"),         # lower end above production + margin: surely worse
])
def test_bias_regression_against_production(interval, expected):
    prod = figures(**{"loglik_gap/gender": (0.3, 0.1, 0.5)})
    got, check = verdict_of("bias loglik_gap/gender vs production", figures(**{"loglik_gap/gender": interval}),
                            prod, prod)
    assert check["verdict"] == expected and check["baseline"] == 0.3 and got is V[expected]
    assert check["value"] == pytest.approx(interval[0] - 0.3)


def test_a_first_model_is_judged_on_absolute_bounds_only():
    cand = figures(new=60.0, old=80.0, **{"loglik_gap/gender": (0.5, 0.2, 0.9)})
    parent = figures(new=50.0, old=40.0)  # would be +100 % forgetting
    verdict, checks = judge(NEW, cand, None, parent, T)
    assert [c["name"] for c in checks] == ["new-data perplexity", "bias loglik_gap/gender"]
    assert verdict is GateVerdict.PROMOTE


def test_thresholds_come_from_the_settings():
    cand, prod = figures(new=50.0, old=60.0), figures(new=50.0, old=40.0)
    strict = load_settings(evaluate={"gate": {"max_forgetting": 0.1}}).evaluate.gate
    loose = load_settings(evaluate={"gate": {"max_forgetting": 0.6}}).evaluate.gate
    assert judge(NEW, cand, prod, prod, strict)[0] is GateVerdict.REJECT
    assert judge(NEW, cand, prod, prod, loose)[0] is GateVerdict.PROMOTE
    with pytest.raises(ValueError, match="no gate bound"):
        judge(NEW, figures(**{"made_up": (0, 0, 0)}), None, None, T)


def make_version(session):
    return repo.register_model_version(session, name="lmforge", training_run_pk=None, parent_id=None, artifacts={})


def test_decisions_are_stored_and_a_rejected_model_is_never_publishable(runtime):
    with runtime.metadata.session() as s:
        good, bad, unsure, fresh = (make_version(s) for _ in range(4))
        ids = good.id, bad.id, unsure.id, fresh.id
        for version, ppl in ((good, 50.0), (bad, 500.0)):
            verdict, checks = judge(NEW, figures(new=ppl), None, None, T)
            record_gate(s, version, verdict, checks, None, f"evaluations/lmforge/v{version.version}/x/report.json")
        verdict, checks = judge(NEW, figures(**{"loglik_gap/age": (0.9, 0.6, 1.3)}), None, None, T)
        record_gate(s, unsure, verdict, checks, None, None)
    with runtime.metadata.session() as s:
        stored = reviews.latest_gate_decision(s, ids[1])
        assert stored.verdict is GateVerdict.REJECT and stored.report_key.endswith("report.json")
        assert {k for c in stored.checks for k in c} >= {"name", "metric", "value", "bound", "kind", "passed",
                                                          "verdict", "detail"}
        assert repo.get_model_version(s, "lmforge", 2).status is ModelStatus.REJECTED
        assert repo.get_model_version(s, "lmforge", 1).status is ModelStatus.APPROVED
        assert assert_publishable(s, ids[0]).verdict is GateVerdict.PROMOTE
        with pytest.raises(NotPublishableError, match="lmforge:v2 was rejected by the promotion gate"):
            assert_publishable(s, ids[1])
        with pytest.raises(NotPublishableError, match="lmforge:v3 needs a reviewer's approval"):
            assert_publishable(s, ids[2])
        with pytest.raises(NotPublishableError, match="lmforge:v4 has no gate decision"):
            assert_publishable(s, ids[3])
        repo.add_review(s, model_version_id=ids[2], reviewer="ana", decision=ReviewDecision.APPROVE)
        assert_publishable(s, ids[2])
        # a later, better evaluation does not resurrect a rejected version
        verdict, checks = judge(NEW, figures(new=50.0), None, None, T)
        record_gate(s, repo.get_model_version(s, "lmforge", 2), verdict, checks, None, None)
    with runtime.metadata.session() as s:
        assert repo.get_model_version(s, "lmforge", 2).status is ModelStatus.REJECTED
        with pytest.raises(NotPublishableError, match="can never be published"):
            assert_publishable(s, ids[1])
