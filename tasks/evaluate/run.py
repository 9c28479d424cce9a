"""``run_evaluation``: a model version's whole evaluation, the promotion gate and the report.

1. the model version and its tokenizer are loaded (sha256-verified) by the model registry;
2. perplexity on the validation split of its training dataset version (the newest data) and of every
   earlier one; bias and fairness probes; the continuation task and sampled continuations;
3. the baselines: the production model (new-data perplexity, bias) and the parent (earlier data, for
   forgetting); what they lack for the current data and probe versions is computed and stored for them;
4. the gate judges, the report is stored, then one transaction writes the rows, the decision and status.
Progress goes through one event stream (``EventLog``, as in the train loop) to the caller's callback and
to ``events.jsonl``, which is stored with the report.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from lmforge_core.config.evaluate import EvaluateConfig
from lmforge_core.metadata import evaluation_repository as evals
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata import review_repository as reviews
from lmforge_core.metadata.evaluation_repository import EvaluationRow
from lmforge_core.metadata.models import ModelVersion
from lmforge_core.runtime import Runtime
from model.eval_metrics import Interval, WordListScorer
from model.registry import LoadedModel, load_model_version
from model.train_loop import EventLog
from tasks.evaluate import fairness
from tasks.evaluate.gate import Figures, judge, record_gate
from tasks.evaluate.generation import Generator, continuation_items, generation_quality, generation_rows
from tasks.evaluate.perplexity import (
    Emit,
    dataset_sources,
    forgetting_rows,
    perplexities,
    perplexity_rows,
    validation_split,
)
from tasks.evaluate.probes import (
    COUNTERFACTUAL,
    STEREOTYPE_PAIRS,
    TOXICITY_WORDS,
    CounterfactualSet,
    PairSet,
    load_counterfactual,
    load_crows_pairs_csv,
    load_stereoset_json,
    load_stereotype_pairs,
    load_word_list,
)
from tasks.evaluate.report import build_report, report_prefix, store_report

BIAS_METRICS = ("loglik_gap", "sentiment_gap", "stereotype_deviation", "toxicity_rate")


class EvaluationError(RuntimeError):
    """The evaluation cannot run on this model version; the message says why and what to do."""


@dataclass(frozen=True)
class ProbeSets:
    counterfactual: CounterfactualSet
    pairs: PairSet
    toxicity_version: str
    toxicity: WordListScorer

    @classmethod
    def load(cls, counterfactual: Path = COUNTERFACTUAL, pairs: Path | None = None,
             words: Path = TOXICITY_WORDS) -> ProbeSets:
        """The shipped sets; ``pairs`` may name an official CrowS-Pairs ``.csv`` or StereoSet ``.json``."""
        path = pairs or STEREOTYPE_PAIRS
        loader = {".csv": load_crows_pairs_csv, ".json": load_stereoset_json}.get(path.suffix, load_stereotype_pairs)
        version, word_set = load_word_list(words)
        return cls(load_counterfactual(counterfactual), loader(path), version, WordListScorer(word_set))

    @classmethod
    def configured(cls, cfg: EvaluateConfig, pairs: Path | None = None) -> ProbeSets:
        """The sets in effect: a file of ``cfg.probe_dir`` replaces the shipped one of the same name."""
        folder = Path(cfg.probe_dir).expanduser() if cfg.probe_dir else None
        if folder is not None and not folder.is_dir():
            raise EvaluationError(f"evaluate.probe_dir {folder} is not a folder")

        def pick(shipped: Path) -> Path:
            return folder / shipped.name if folder is not None and (folder / shipped.name).is_file() else shipped

        return cls.load(pick(COUNTERFACTUAL), pairs or pick(STEREOTYPE_PAIRS), pick(TOXICITY_WORDS))

    @property
    def ids(self) -> dict[str, str]:
        """The ``dataset`` name of each probe set's rows; it carries the set's version."""
        pairs = self.pairs.version if ":" in self.pairs.version else f"stereotype_pairs@{self.pairs.version}"
        return {"counterfactual": f"probes/counterfactual@{self.counterfactual.version}",
                "stereotype_pairs": f"probes/{pairs}", "toxicity": f"probes/toxicity_words@{self.toxicity_version}"}


@dataclass
class EvaluationResult:
    model_version: str
    verdict: str
    checks: list[dict[str, Any]]
    newest_dataset: str
    baseline: str | None
    parent: str | None
    report_key: str
    rows: int
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def figures_from_rows(rows: Iterable[Any], probe_ids: Iterable[str]) -> Figures:
    """The gate's view of stored or fresh rows: perplexity per dataset version, bias intervals of the
    current probe versions only (rows of other versions measure something else)."""
    figures, probes = Figures(), set(probe_ids)
    for r in rows:
        if r.metric == "perplexity" and r.slice == "all":
            figures.perplexity[r.dataset] = r.value
        elif r.metric in BIAS_METRICS and r.dataset in probes:
            name = r.metric if r.slice == "all" else f"{r.metric}/{r.slice}"
            details = r.details or {}
            figures.bias[name] = Interval(r.value, details.get("low", r.value), details.get("high", r.value))
    return figures


def probe_rows(runtime: Runtime, loaded: LoadedModel, newest: str, probes: ProbeSets, cfg: EvaluateConfig,
               emit: Emit) -> list[EvaluationRow]:
    """Bias and fairness rows, and the generation-quality rows on ``newest``'s held-out documents."""
    model, tok, ids = loaded.model, loaded.tokenizer, probes.ids
    assert tok is not None
    gen = Generator(model, tok, cfg)
    loglik = fairness.counterfactual_loglik(model, tok, probes.counterfactual, cfg)
    emit("probe", name="counterfactual log-likelihood", axes=len(loglik))
    sentiment, texts = fairness.counterfactual_sentiment(gen.sample_texts, probes.counterfactual, cfg)
    emit("probe", name="counterfactual sentiment", continuations=len(texts))
    pairs = fairness.stereotype_preference(model, tok, probes.pairs, cfg)
    emit("probe", name="stereotype pairs", pairs=pairs.pairs, share=pairs.share.value)
    quality = generation_quality(gen, continuation_items(validation_split(runtime, newest), tok.eos_id,
                                                         tok.pad_id, cfg))
    emit("generation", bleu=quality.bleu, rouge_l=quality.rouge_l, documents=quality.items)
    all_texts = texts + quality.sampled_texts
    tox = fairness.toxicity(all_texts, probes.toxicity, cfg)
    dev = pairs.deviation
    return (fairness.gap_rows(ids["counterfactual"], "loglik", loglik)
            + fairness.gap_rows(ids["counterfactual"], "sentiment", sentiment)
            + fairness.pair_rows(ids["stereotype_pairs"], pairs)
            + [EvaluationRow(ids["stereotype_pairs"], "stereotype_deviation", dev.value, "all",
                             {"low": dev.low, "high": dev.high}),
               EvaluationRow(ids["toxicity"], "toxicity_rate", tox.value, "all",
                             {"low": tox.low, "high": tox.high, "continuations": len(all_texts)})]
            + generation_rows(newest, quality))


def _tokenizer_version(loaded: LoadedModel) -> str | None:
    return loaded.tokenizer.version if loaded.tokenizer else None


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch threads (None: leave the setting alone), restored afterwards."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def evaluation_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise EvaluationError("evaluate.device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return setting


def _load(runtime: Runtime, version: int) -> LoadedModel:
    return load_model_version(runtime.metadata, runtime.artifacts, runtime.settings.model_name, str(version),
                              device=evaluation_device(runtime.settings.evaluate.device),
                              tokenizer_config=runtime.settings.data.tokenizer)


def _baseline(runtime: Runtime, version_id: int, versions: list[str], newest: str, with_bias: bool,
              probes: ProbeSets, emit: Emit) -> Figures:
    """A baseline's figures; what is missing for ``versions`` (and the probes) is computed and stored."""
    cfg = runtime.settings.evaluate
    with runtime.metadata.session() as session:
        record = session.get(ModelVersion, version_id)
        assert record is not None
        number, label = record.version, record.label
        figures = figures_from_rows(evals.evaluation_rows(session, version_id), probes.ids.values())
    missing = [d for d in versions if d not in figures.perplexity]
    if not missing and (figures.bias or not with_bias):
        return figures
    emit("baseline", model_version=label, datasets=missing, probes=with_bias and not figures.bias)
    loaded = _load(runtime, number)
    rows = perplexity_rows(perplexities(runtime, loaded.model, missing, cfg, emit, _tokenizer_version(loaded)),
                           dataset_sources(runtime))
    if with_bias and not figures.bias and loaded.tokenizer is not None:
        rows += probe_rows(runtime, loaded, newest, probes, cfg, emit)
    with runtime.metadata.session() as session:
        evals.replace_evaluations(session, version_id, rows)
        return figures_from_rows(evals.evaluation_rows(session, version_id), probes.ids.values())


def _dataset_plan(runtime: Runtime, artifacts: dict[str, Any]) -> tuple[list[str], str]:
    """(dataset versions to score, oldest first, ending with the newest data; the newest data): the
    model's training dataset version, or the latest one when the model does not record it."""
    versions = list(dataset_sources(runtime))
    if not versions:
        raise EvaluationError("no dataset version exists; run `lmforge ingest` first")
    newest = artifacts.get("dataset_version") or versions[-1]
    if newest not in versions:
        raise EvaluationError(f"the model's dataset version {newest} is not recorded in the metadata store")
    return versions[: versions.index(newest) + 1], newest


@dataclass(frozen=True)
class _Subject:
    id: int
    number: int
    label: str
    artifacts: dict[str, Any]
    parent_id: int | None
    parent_label: str | None
    production_id: int | None
    production_label: str | None


def _subject(runtime: Runtime, ref: str) -> _Subject:
    name = runtime.settings.model_name
    with runtime.metadata.session() as session:
        version = repo.resolve_model_version(session, name, ref)
        production = repo.get_alias(session, name, repo.PRODUCTION)
        if production is not None and production.id == version.id:
            production = None  # production judged against itself would prove nothing: absolute bounds only
        parent = version.parent
        return _Subject(version.id, version.version, version.label, dict(version.artifacts),
                        parent.id if parent else None, parent.label if parent else None,
                        production.id if production else None, production.label if production else None)


def _fingerprint(subject: _Subject, versions: list[str], probes: ProbeSets, cfg: EvaluateConfig) -> str:
    """What an evaluation depends on: the model, its baselines, the data, the probe sets' contents and the
    settings. The same fingerprint finds the earlier result instead of redoing it."""
    inputs = {"model": subject.id, "production": subject.production_id, "parent": subject.parent_id,
              "datasets": versions, "probes": [asdict(probes.counterfactual), asdict(probes.pairs),
                                               sorted(probes.toxicity.words)],
              "evaluate": cfg.model_dump(exclude={"probe_dir"})}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _earlier_result(runtime: Runtime, subject: _Subject, report_key: str) -> EvaluationResult | None:
    with runtime.metadata.session() as session:
        decision = reviews.latest_gate_decision(session, subject.id)
        if decision is None or decision.report_key != report_key or not runtime.artifacts.exists(report_key):
            return None
        rows = len(evals.evaluation_rows(session, subject.id))
    report = json.loads(runtime.artifacts.get_bytes(report_key))
    return EvaluationResult(subject.label, report["verdict"], report["checks"], report["newest_dataset"],
                            report["baseline"], report["parent"], report_key, rows, reused=True)


def _candidate_rows(runtime: Runtime, loaded: LoadedModel, versions: list[str], newest: str,
                    probes: ProbeSets, emit: Emit) -> list[EvaluationRow]:
    if loaded.tokenizer is None:
        raise EvaluationError(f"{loaded.model_version} has no tokenizer recorded (trained on synthetic tokens): "
                              "the probes and the continuation task need text; train on an ingested dataset")
    cfg = runtime.settings.evaluate
    rows = perplexity_rows(perplexities(runtime, loaded.model, versions, cfg, emit, _tokenizer_version(loaded)),
                           dataset_sources(runtime))
    return rows + probe_rows(runtime, loaded, newest, probes, cfg, emit)


def _measure_and_judge(runtime: Runtime, subject: _Subject, versions: list[str], newest: str, probes: ProbeSets,
                       emit: Emit) -> tuple[Any, list[dict[str, Any]], list[EvaluationRow], dict[str, Any]]:
    """(verdict, checks, the candidate's rows, the report) of one evaluation."""
    cfg = runtime.settings.evaluate
    rows = _candidate_rows(runtime, _load(runtime, subject.number), versions, newest, probes, emit)
    cand = figures_from_rows(rows, probes.ids.values())
    prod = (_baseline(runtime, subject.production_id, [newest], newest, True, probes, emit)
            if subject.production_id is not None else None)
    parent = (_baseline(runtime, subject.parent_id, versions, newest, False, probes, emit)
              if subject.parent_id is not None else None)
    if parent is not None and subject.parent_label is not None:
        rows += forgetting_rows(cand.perplexity, parent.perplexity, newest, subject.parent_label)
    verdict, checks = judge(newest, cand, prod, parent, cfg.gate)
    emit("gate", verdict=verdict.value, checks=len(checks), failed=[c["name"] for c in checks if not c["passed"]])
    report = build_report(
        label=subject.label, verdict=verdict.value, checks=checks, newest=newest,
        baseline=subject.production_label, parent=subject.parent_label, rows=rows, bias=cand.bias,
        parent_ppl=parent.perplexity if parent else {}, production_ppl=prod.perplexity if prod else {},
        probe_sets=probes.ids, thresholds=cfg.gate.model_dump(), created_at=datetime.now(UTC).isoformat())
    return verdict, checks, rows, report


def run_evaluation(runtime: Runtime, ref: str = "candidate", *, probes: ProbeSets | None = None, force: bool = False,
                   progress: Callable[[dict[str, Any]], None] | None = None) -> EvaluationResult:
    """Evaluate model version ``ref`` (number, ``vN`` or alias), judge it, store rows, decision and report.
    An evaluation with the same inputs as the one in force is found, not redone, unless ``force``."""
    cfg = runtime.settings.evaluate
    probes = probes or ProbeSets.configured(cfg)
    subject = _subject(runtime, ref)
    versions, newest = _dataset_plan(runtime, subject.artifacts)
    evaluation_id = _fingerprint(subject, versions, probes, cfg)
    prefix = report_prefix(runtime.settings.model_name, subject.number, evaluation_id)
    earlier = None if force else _earlier_result(runtime, subject, f"{prefix}/report.json")
    if earlier is not None:
        if progress is not None:
            progress({"type": "reused", "model_version": subject.label, "report_key": earlier.report_key})
        return earlier
    work = runtime.settings.workspace / "evaluations" / f"{runtime.settings.model_name}-v{subject.number}-{evaluation_id}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "events.jsonl").unlink(missing_ok=True)
    events = EventLog(work / "events.jsonl", progress)
    try:
        events.emit("start", model_version=subject.label, evaluation_id=evaluation_id)
        events.emit("plan", datasets=versions, newest=newest, production=subject.production_label,
                    parent=subject.parent_label)
        with torch_threads(cfg.threads):
            verdict, checks, rows, report = _measure_and_judge(runtime, subject, versions, newest, probes, events.emit)
        report_key = store_report(runtime.artifacts, prefix, report, work / "events.jsonl")
        with runtime.metadata.session() as session:
            evals.replace_evaluations(session, subject.id, rows)
            version = session.get(ModelVersion, subject.id)
            assert version is not None
            record_gate(session, version, verdict, checks, subject.production_id, report_key)
        events.emit("done", verdict=verdict.value, report_key=report_key)
    finally:
        events.close()
    return EvaluationResult(subject.label, verdict.value, checks, newest, subject.production_label,
                            subject.parent_label, report_key, len(rows))
