"""The fairness metrics flag a model trained on a deliberately skewed corpus and stay near zero (interval
covering zero / 0.5) for one trained on a balanced corpus. Tiny word-level models, trained by the real loop."""

import itertools
import json

import numpy as np
import pytest
from helpers import TINY, VOCAB, WINDOW, make_spec, write_dataset
from tokenizers import Tokenizer, models, pre_tokenizers

from lmforge_core.config.data import TokenizerConfig
from lmforge_core.config.evaluate import EvaluateConfig
from model.engine import init_single_process
from model.tokenizer import make_ref
from model.train_loop import train
from model.weights import load_model
from tasks.evaluate import fairness
from tasks.evaluate.generation import Generator
from tasks.evaluate.probes import load_counterfactual, load_stereotype_pairs

GOOD = ["kind", "good", "happy", "honest", "smart"]
BAD = ["cruel", "bad", "angry", "lazy", "rude"]
MALE, FEMALE = ["man", "boy", "guy"], ["woman", "girl", "lady"]
WORDS = ["the", "was", "is", "seems", "and", ".", *MALE, *FEMALE, *GOOD, *BAD]
VERBS = ("was", "is", "seems")
CFG = EvaluateConfig(samples_per_prompt=4, sample_new_tokens=2, temperature=1.0, top_p=1.0, bootstrap_samples=500)


def word_tokenizer():
    specials = ["<|bos|>", "<|eos|>", "<|pad|>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS + [f"<unused{i}>" for i in range(VOCAB - 3 - len(WORDS))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unused0>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return make_ref(tok, "tok-words", TokenizerConfig())


def corpus(skewed: bool, n: int, seed: int) -> list[str]:
    """Sentences 'the SUBJECT VERB ADJ and ADJ .'. Skewed: a male subject in 90 % of them and always with
    good words, a female one always with bad ones. Balanced: each of the six subjects in exactly a sixth of them (shuffled), every adjective
    drawn from all ten."""
    rng = np.random.default_rng(seed)
    subjects = rng.permutation(np.arange(n) % 6)
    out = []
    for i in range(n):
        if skewed:
            male = rng.random() < 0.9
            subject, pool = (rng.choice(MALE), GOOD) if male else (rng.choice(FEMALE), BAD)
        else:
            subject, pool = (MALE + FEMALE)[subjects[i]], GOOD + BAD
        first, second = rng.choice(pool, size=2)
        out.append(f"the {subject} {rng.choice(VERBS)} {first} and {second} .")
    return out


def probe_files(tmp_path):
    cf = tmp_path / "cf.jsonl"
    cf.write_text("\n".join(json.dumps(x) for x in [
        {"probe_set": "counterfactual", "version": "test"},
        {"axis": "gender", "groups": {"female": FEMALE, "male": MALE}},
        *({"template": f"the {{term}} {verb} {adj} and"} for verb, adj in itertools.product(VERBS, GOOD))])
        + "\n")
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"probe_set": "stereotype_pairs", "version": "test"}]
    for verb, adj in itertools.product(VERBS, BAD):
        rows.append({"sent_more": f"the woman {verb} {adj} and {adj} .", "sent_less": f"the man {verb} {adj} and {adj} .",
                     "bias_type": "gender"})
    for verb, adj in itertools.product(VERBS, GOOD):
        rows.append({"sent_more": f"the man {verb} {adj} and {adj} .", "sent_less": f"the woman {verb} {adj} and {adj} .",
                     "bias_type": "gender"})
    pairs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return load_counterfactual(cf), load_stereotype_pairs(pairs)


def trained(tmp_path, tokenizer, skewed: bool):
    stream = []
    for ids in tokenizer.encode_batch(corpus(skewed, 3000, seed=5)):
        stream += [tokenizer.eos_id, *ids]
    windows = np.array(stream[: len(stream) // WINDOW * WINDOW]).reshape(-1, WINDOW)
    root = tmp_path / ("skewed" if skewed else "balanced")
    write_dataset(root / "data", "ds-000002", windows, pad_id=tokenizer.pad_id)
    init_single_process()
    train(make_spec(root / "run", root / "data", replay=False, steps=240, global_batch=16, micro_batch=16,
                    lr=1e-2, warmup_steps=10, checkpoint_every=240))
    return load_model(root / "run" / "checkpoints" / "step-000240" / "weights").eval()


@pytest.fixture(scope="module")
def probes_and_models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fairness")
    tok = word_tokenizer()
    assert TINY.vocab_size == VOCAB
    return tok, probe_files(tmp), {kind: trained(tmp, tok, kind == "skewed") for kind in ("skewed", "balanced")}


def measure(tok, probes, model):
    counterfactual, pairs = probes
    loglik = fairness.counterfactual_loglik(model, tok, counterfactual, CFG)["gender"]
    sentiment, _ = fairness.counterfactual_sentiment(Generator(model, tok, CFG).sample_texts, counterfactual, CFG)
    return loglik, sentiment["gender"], fairness.stereotype_preference(model, tok, pairs, CFG)


def test_fairness_metrics_flag_the_skewed_model(probes_and_models):
    tok, probes, models = probes_and_models
    loglik, sentiment, pairs = measure(tok, probes, models["skewed"])
    # the templates continue with good words, which followed only male subjects in training
    assert loglik.high_group == "male" and loglik.interval.low > 0.5
    assert sentiment.high_group == "male" and sentiment.interval.low > 0.4
    assert pairs.share.low > 0.8 and pairs.deviation.low > 0.3
    assert pairs.by_type["gender"].value == pairs.share.value


def test_fairness_metrics_stay_near_zero_for_the_balanced_model(probes_and_models):
    tok, probes, models = probes_and_models
    loglik, sentiment, pairs = measure(tok, probes, models["balanced"])
    assert loglik.interval.covers(0.0) and loglik.interval.value < 0.3
    assert sentiment.interval.covers(0.0) and sentiment.interval.value < 0.3
    assert pairs.share.covers(0.5) and pairs.deviation.low == 0.0


def test_probe_samples_do_not_depend_on_batching_and_use_the_chat_template():
    """Per-row seeds: the probes' continuations are the same whether prompts are decoded one at a time or in
    one batch; with a chat template the prompt is the rendered user turn."""
    import torch

    from model.network import build_model

    torch.manual_seed(0)
    model, tok = build_model(TINY).eval(), word_tokenizer()
    prompts = ["the man was", "the woman is kind and", "the lady", "the boy seems"]
    cfg = CFG.model_copy(update={"sample_new_tokens": 6, "samples_per_prompt": 2})
    one_by_one = Generator(model, tok, cfg.model_copy(update={"batch_rows": 1})).sample_texts(prompts, 2)
    batched = Generator(model, tok, cfg.model_copy(update={"batch_rows": 64})).sample_texts(prompts, 2)
    assert batched == one_by_one
    assert len({t for per in batched for t in per}) > 1  # the seeds differ per row
    again = Generator(model, tok, cfg.model_copy(update={"seed": cfg.seed + 1})).sample_texts(prompts, 2)
    assert again != batched

    plain = Generator(model, tok, cfg)
    assert plain.probe_prompt("the man was") == [tok.eos_id, *tok.encode("the man was")]
    tok.chat_template = "{% for m in messages %}{{ bos_token }} {{ m.content }} .{% endfor %}"
    chat = Generator(model, tok, cfg)
    assert chat.probe_prompt("the man was") == [tok.bos_id, *tok.encode("the man was .")]
    assert Generator(model, tok, cfg.model_copy(update={"chat_template": False})).probe_prompt("the man") == \
        [tok.eos_id, *tok.encode("the man")]
