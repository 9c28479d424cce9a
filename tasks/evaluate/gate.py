"""The champion/challenger promotion gate, in the manner of TFX's Evaluator blessing.

Pure functions: :func:`judge` turns a candidate's figures, the production model's figures (None for a
first model) and the parent's figures into checks and a verdict; :func:`record_gate` stores the decision
and, on a reject, marks the model version REJECTED for good (see
:func:`lmforge_core.metadata.evaluation_repository.assert_publishable`).

Check rules (bounds from :class:`lmforge_core.config.evaluate.GateThresholds`):
- value bound: pass within the bound, reject beyond;
- change bound (relative): pass within the bound, review within ``bound * (1 + review_margin)``, reject beyond;
- interval bound (bias): pass when the interval's upper end is within the bound, reject when its lower end
  is beyond, review when the interval straddles the bound;
- regression (bias vs production; value = candidate minus production): reject when the candidate's lower
  end exceeds production's value by more than the margin (surely worse), review when only its point
  estimate does, pass otherwise.
A first model (no production) is judged on the value and interval bounds only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmforge_core.config.evaluate import GateThresholds
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.metadata.models import GateDecision, GateVerdict, ModelStatus, ModelVersion
from model.eval_metrics import Interval, relative_change

PASS, REVIEW, REJECT = "pass", "needs_review", "reject"


@dataclass
class Figures:
    """What the gate reads of one model version: perplexity per dataset version, bias intervals by name
    (``loglik_gap/gender``, ``stereotype_deviation``, ``toxicity_rate``...)."""

    perplexity: dict[str, float] = field(default_factory=dict)
    bias: dict[str, Interval] = field(default_factory=dict)


def _check(name: str, metric: str, value: float, bound: float, kind: str, verdict: str, detail: str,
           **extra: Any) -> dict[str, Any]:
    return {"name": name, "metric": metric, "value": value, "bound": bound, "kind": kind,
            "passed": verdict == PASS, "verdict": verdict, "detail": detail, **extra}


def _change_verdict(change: float, bound: float, margin: float) -> str:
    if change <= bound:
        return PASS
    return REVIEW if change <= bound * (1 + margin) + 1e-12 else REJECT


def _bias_bounds(t: GateThresholds) -> dict[str, float]:
    return {"loglik_gap": t.max_loglik_gap, "sentiment_gap": t.max_sentiment_gap,
            "stereotype_deviation": t.max_stereotype_deviation, "toxicity_rate": t.max_toxicity_rate}


def bias_bound(name: str, t: GateThresholds) -> float:
    family = name.split("/", 1)[0]
    bounds = _bias_bounds(t)
    if family not in bounds:
        raise ValueError(f"no gate bound for bias metric {name!r}; known families: {', '.join(bounds)}")
    return bounds[family]


def perplexity_checks(new_dataset: str, cand: Figures, prod: Figures | None, parent: Figures | None,
                      t: GateThresholds) -> list[dict[str, Any]]:
    ppl = cand.perplexity[new_dataset]
    checks = [_check("new-data perplexity", f"perplexity/{new_dataset}", ppl, t.max_perplexity, "value",
                     PASS if ppl <= t.max_perplexity else REJECT, f"perplexity on {new_dataset}")]
    if prod is not None and new_dataset in prod.perplexity:
        change = relative_change(ppl, prod.perplexity[new_dataset])
        checks.append(_check("new-data perplexity vs production", f"perplexity_change/{new_dataset}", change,
                             t.max_new_perplexity_increase, "change",
                             _change_verdict(change, t.max_new_perplexity_increase, t.review_margin),
                             f"{ppl:.3f} against production's {prod.perplexity[new_dataset]:.3f}",
                             baseline=prod.perplexity[new_dataset]))
    earlier = {d: relative_change(cand.perplexity[d], parent.perplexity[d])
               for d in (parent.perplexity if parent else {}) if d != new_dataset and d in cand.perplexity}
    if prod is not None and earlier:
        worst = max(earlier, key=earlier.__getitem__)
        checks.append(_check("forgetting (earlier data, worst version)", f"forgetting/{worst}", earlier[worst],
                             t.max_forgetting, "change", _change_verdict(earlier[worst], t.max_forgetting,
                                                                         t.review_margin),
                             "relative perplexity change against the parent on "
                             + ", ".join(f"{d} {v:+.1%}" for d, v in sorted(earlier.items())),
                             baseline=parent.perplexity[worst] if parent else None))
    return checks


def _interval_verdict(iv: Interval, bound: float) -> str:
    if iv.high <= bound:
        return PASS
    return REJECT if iv.low > bound else REVIEW


def bias_checks(cand: Figures, prod: Figures | None, t: GateThresholds) -> list[dict[str, Any]]:
    checks = []
    for name, iv in sorted(cand.bias.items()):
        bound = bias_bound(name, t)
        checks.append(_check(f"bias {name}", name, iv.value, bound, "interval", _interval_verdict(iv, bound),
                             f"{iv.value:.3f} [{iv.low:.3f}, {iv.high:.3f}]", interval=[iv.low, iv.high]))
        if prod is None or name not in prod.bias:
            continue
        base = prod.bias[name].value
        verdict = (REJECT if iv.low > base + t.max_bias_regression
                   else REVIEW if iv.value > base + t.max_bias_regression else PASS)
        checks.append(_check(f"bias {name} vs production", f"{name}:regression", iv.value - base,
                             t.max_bias_regression, "regression", verdict,
                             f"interval [{iv.low:.3f}, {iv.high:.3f}] against production's {base:.3f}",
                             interval=[iv.low, iv.high], baseline=base))
    return checks


def verdict_of(checks: list[dict[str, Any]]) -> GateVerdict:
    verdicts = {c["verdict"] for c in checks}
    if REJECT in verdicts:
        return GateVerdict.REJECT
    return GateVerdict.NEEDS_REVIEW if REVIEW in verdicts else GateVerdict.PROMOTE


def judge(new_dataset: str, cand: Figures, prod: Figures | None, parent: Figures | None,
          t: GateThresholds) -> tuple[GateVerdict, list[dict[str, Any]]]:
    """The verdict and every check, perplexity first. ``prod`` None: a first model, absolute bounds only."""
    if new_dataset not in cand.perplexity:
        raise ValueError(f"the candidate has no perplexity on the newest dataset {new_dataset}")
    checks = perplexity_checks(new_dataset, cand, prod, parent, t) + bias_checks(cand, prod, t)
    return verdict_of(checks), checks


def record_gate(session: Any, version: ModelVersion, verdict: GateVerdict, checks: list[dict[str, Any]],
                baseline_id: int | None, report_key: str | None) -> GateDecision:
    """Store the decision; a reject makes the version REJECTED, a promote APPROVED. A version once
    rejected stays rejected whatever a later evaluation says."""
    decision = reviews.record_gate_decision(session, model_version_id=version.id, verdict=verdict, checks=checks,
                                            baseline_model_version_id=baseline_id, report_key=report_key)
    if version.status is ModelStatus.REJECTED:
        return decision
    if verdict is GateVerdict.REJECT:
        repo.set_model_status(session, version.id, ModelStatus.REJECTED)
    elif verdict is GateVerdict.PROMOTE and version.status is ModelStatus.CANDIDATE:
        repo.set_model_status(session, version.id, ModelStatus.APPROVED)
    return decision
