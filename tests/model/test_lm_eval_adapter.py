"""The lm-eval adapter: its scores equal our own scoring, and lm-eval's CLI runs tasks defined here."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from model.decoding import SamplingParams, generate
from model.registry import load_model_version
from model.scoring import sequence_logliks

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402

from model.lm_eval_adapter import LmforgeLM  # noqa: E402

TASKS = Path(__file__).parent / "lm_eval_tasks"
DOCS = [json.loads(line) for line in (TASKS / "docs.jsonl").read_text().splitlines()]


def request(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


@pytest.fixture(scope="module")
def adapter(text_model):
    rt = text_model.runtime
    return LmforgeLM(loaded=load_model_version(rt.metadata, rt.artifacts, "lmforge", "candidate"), batch_size=3)


def own_continuation_loglik(loaded, context, continuation):
    """log p(continuation | context) from model.scoring, via two whole-sequence scores (lm-eval's
    convention: the context's trailing spaces are scored with the continuation)."""
    stripped = context.rstrip()
    context, continuation = stripped, context[len(stripped):] + continuation
    tok = loaded.tokenizer
    ctx = tok.encode(context)
    whole = tok.encode(context + continuation)
    full, prefix = sequence_logliks(loaded.model, [whole, whole[: len(ctx)]], prefix=[tok.eos_id])
    return full - prefix


def test_loglikelihoods_equal_our_scoring(adapter):
    pairs = [(d["context"], " " + c) for d in DOCS for c in d["choices"]] + [("Wrap text ", "to a width")]
    got = adapter.loglikelihood([request("loglikelihood", *p) for p in pairs])
    ours = [own_continuation_loglik(adapter.loaded, *p) for p in pairs]
    np.testing.assert_allclose([g[0] for g in got], ours, rtol=1e-5, atol=1e-4)
    assert all(isinstance(g[1], bool) for g in got)


def test_greedy_flag_is_true_exactly_for_the_greedy_continuation(adapter):
    loaded = adapter.loaded
    prompt = loaded.prompt_ids(DOCS[0]["context"])
    greedy = generate(loaded.model, [prompt], SamplingParams(max_new_tokens=3, temperature=0.0),
                      eos_id=None, pad_id=loaded.pad_id)[0]
    text = loaded.tokenizer.decode(greedy)
    (_, is_greedy), = adapter.loglikelihood([request("loglikelihood", DOCS[0]["context"], text)])
    (_, other), = adapter.loglikelihood([request("loglikelihood", DOCS[0]["context"], " banana mountain")])
    if loaded.tokenizer.encode(DOCS[0]["context"] + text)[-3:] == greedy:  # the tokenization round-trips
        assert is_greedy
    assert not other


def test_rolling_loglikelihood_equals_whole_text_score(adapter):
    tok = adapter.loaded.tokenizer
    texts = [d["text"] for d in DOCS]
    got = adapter.loglikelihood_rolling([request("loglikelihood_rolling", t) for t in texts])
    ours = sequence_logliks(adapter.loaded.model, [tok.encode(t) for t in texts], prefix=[tok.eos_id])
    np.testing.assert_allclose(got, ours, rtol=1e-5, atol=1e-4)
    long_text = " ".join(texts * 12)  # longer than the context: several windows
    assert len(tok.encode(long_text)) > adapter.context
    (total,) = adapter.loglikelihood_rolling([request("loglikelihood_rolling", long_text)])
    assert np.isfinite(total) and total < got[0] * 10


def _stop_inside(text: str) -> str | None:
    """A two-character stop whose first occurrence is past the start of ``text`` (so the cut is visible), or None
    when the text has none (a continuation of one repeated character, which a barely trained model can give)."""
    return next((text[i:i + 2] for i in range(1, len(text) - 1) if text.index(text[i:i + 2]) == i), None)


def test_generate_until_is_greedy_decoding_cut_at_the_stop(adapter):
    loaded = adapter.loaded
    cases = []
    for doc in DOCS:
        free = loaded.tokenizer.decode(generate(loaded.model, [loaded.prompt_ids(doc["context"])],
                                                SamplingParams(max_new_tokens=10, temperature=0.0),
                                                eos_id=loaded.eos_id, pad_id=loaded.pad_id)[0])
        if (stop := _stop_inside(free)) is not None:
            cases.append((doc["context"], free, stop))
    assert cases, "no document's greedy continuation has a stop to cut at"
    got = adapter.generate_until([request("generate_until", ctx, {"until": [stop], "max_gen_toks": 10})
                                  for ctx, _, stop in cases])
    assert got == [free[: free.index(stop)] for _, free, stop in cases]  # each cut is non-empty and short of the end


def test_lm_eval_cli_runs_the_repository_tasks(text_model, adapter, tmp_path, monkeypatch):
    from flows.cli import app

    monkeypatch.setenv("LMFORGE_WORKSPACE", str(text_model.runtime.settings.workspace))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(TASKS)
    out = CliRunner().invoke(app, [
        "lm-eval", "--model", "lmforge", "--model_args", "version=candidate", "--batch_size", "4",
        "--tasks", "lmforge_docs_mc,lmforge_docs_rolling,lmforge_docs_gen", "--include_path", str(TASKS),
        "--output_path", str(tmp_path / "out")])
    assert out.exit_code == 0, out.output
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]
    picks = [int(np.argmax([own_continuation_loglik(adapter.loaded, d["context"], " " + c) for c in d["choices"]]))
             for d in DOCS]
    assert results["lmforge_docs_mc"]["acc,none"] == pytest.approx(np.mean([p == d["label"] for p, d in zip(picks, DOCS)]))
    assert results["lmforge_docs_rolling"]["word_perplexity,none"] > 1
    assert 0 <= results["lmforge_docs_gen"]["exact_match,none"] <= 1
