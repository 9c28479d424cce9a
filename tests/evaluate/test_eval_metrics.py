"""Pure evaluation metrics and no-grad scoring: perplexity against a hand computation on known logits."""

import itertools
import math

import numpy as np
import pytest
import torch

from model.configs import ModelConfig
from model.eval_metrics import (
    WordListScorer,
    bootstrap_mean,
    distinct_n,
    largest_group_gap,
    perplexity,
    preference_share,
    repetition_rate,
)
from model.network import build_model
from model.scoring import sequence_logliks, span_scores, split_nll, window_batch_nll
from model.token_shards import ShardWriter, TokenWindows, build_manifest, dtype_for

CFG = ModelConfig(vocab_size=16, dim=16, n_layers=1, n_heads=2, ffn_hidden=32, context=8)


def known_logits_model(seed: int = 0):
    """A model whose logits depend only on the current token: a learned bigram table. Every block's output
    projection is zero, so the residual stream is the token's embedding and logits = norm(emb) @ head.T."""
    torch.manual_seed(seed)
    model = build_model(CFG)
    with torch.no_grad():
        for layer in model.layers:
            layer.attn.wo.weight.zero_()
            layer.mlp.w2.weight.zero_()
    emb, head = model.tok_embeddings.weight.detach(), model.output.head_weight().detach()
    normed = emb / torch.sqrt(emb.pow(2).mean(-1, keepdim=True) + CFG.norm_eps) * model.norm.weight.detach()
    table = torch.log_softmax(normed @ head.T, dim=-1).double().numpy()  # table[prev, next]
    return model.eval(), table


def write_split(root, windows, pad_id):
    def put(key, path):
        dest = root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())
        return "0"

    dtype = dtype_for(CFG.vocab_size)
    writers = {s: ShardWriter(s, "ds-000001", windows.shape[1], 3, dtype, pad_id, put, root) for s in
               ("train", "validation")}
    for row in windows:
        writers["validation"].add(row)
    for w in writers.values():
        w.close()
    tok = {"version": "t", "vocab_size": CFG.vocab_size, "pad_id": pad_id, "eos_id": 1}
    return TokenWindows(build_manifest("ds-000001", windows.shape[1], dtype, tok, writers, []), root, "validation")


def test_split_perplexity_equals_the_hand_computed_value(tmp_path):
    model, table = known_logits_model()
    rng = np.random.default_rng(3)
    windows = rng.integers(3, CFG.vocab_size, size=(7, CFG.context + 1))
    windows[-1, 5:] = 2  # padded tail of the split's last window: never scored
    split = write_split(tmp_path, windows, pad_id=2)
    assert len(split) == 7 and len(split.arrays) == 3  # three shards, streamed by the one reader

    nll, count = 0.0, 0
    for row in windows:
        for prev, nxt in itertools.pairwise(row):
            if nxt != 2:
                nll -= table[prev, nxt]
                count += 1
    expected = math.exp(nll / count)

    total = split_nll(model, split, batch_windows=2)  # 2 does not divide 7: the last batch is short
    assert total.tokens == count == 6 * CFG.context + 4
    assert perplexity(total.nll_sum, total.tokens) == pytest.approx(expected, rel=1e-5)
    # token-weighted, not a mean of per-batch perplexities
    per_batch = [window_batch_nll(model, windows[i : i + 2], 2) for i in range(0, 7, 2)]
    assert not math.isclose(np.mean([perplexity(b.nll_sum, b.tokens) for b in per_batch]), expected, rel_tol=1e-4)


def test_scoring_builds_no_autograd_graph_and_leaves_the_mode(tmp_path):
    model, _ = known_logits_model()
    model.train()
    split = write_split(tmp_path, np.full((2, CFG.context + 1), 4), pad_id=2)
    seen = []
    model.output.register_forward_hook(lambda m, i, o: seen.append((o.requires_grad, torch.is_grad_enabled())))
    split_nll(model, split, batch_windows=1)
    assert seen == [(False, False), (False, False)]
    assert model.training


def test_sequence_logliks_batched_equal_one_by_one_and_the_table():
    model, table = known_logits_model(seed=1)
    seqs = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [3, 3]]
    batched = sequence_logliks(model, seqs, prefix=[1], batch=3)
    single = np.array([sequence_logliks(model, [s], prefix=[1])[0] for s in seqs])
    by_hand = [sum(table[a, b] for a, b in zip([1, *s][:-1], [1, *s][1:], strict=True)) for s in seqs]
    np.testing.assert_allclose(batched, single, rtol=1e-5)
    np.testing.assert_allclose(batched, by_hand, rtol=1e-5)
    with pytest.raises(ValueError, match="context"):
        sequence_logliks(model, [list(range(3, 13))], prefix=[1])


GQA = ModelConfig(vocab_size=40, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=64, context=24,
                  rope_theta=50000.0, tie_embeddings=True)


def full_logits_score(model, row, start):
    """Reference: the whole (V,) log-softmax at every position of one row alone, summed over row[start:]."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([row[:-1]]))[0].double(), -1)
    picked = logp[torch.arange(start - 1, len(row) - 1), torch.tensor(row[start:])]
    greedy = bool((logp[start - 1 :].argmax(-1) == torch.tensor(row[start:])).all())
    return float(picked.sum()), greedy


def test_span_scores_batched_equal_one_by_one_and_the_full_logits():
    torch.manual_seed(3)
    model = build_model(GQA).eval()
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 40, size=n).tolist() for n in (2, 25, 7, 13, 4, 19, 9, 25, 3)]
    starts = [1, 20, 3, 12, 2, 1, 8, 1, 2]
    batched = span_scores(model, rows, starts, batch=4, head_rows=5)  # head in chunks across rows
    for row, start, got in zip(rows, starts, batched, strict=True):
        (alone,) = span_scores(model, [row], [start])
        reference, greedy = full_logits_score(model, row, start)
        assert got.loglik == pytest.approx(alone.loglik, rel=1e-5, abs=1e-4)
        assert got.loglik == pytest.approx(reference, rel=1e-5, abs=1e-4)
        assert got.greedy == alone.greedy == greedy
    # a row continued with its own greedy tokens is greedy
    prompt = rows[2][:4]
    with torch.no_grad():
        for _ in range(3):
            prompt.append(int(model(torch.tensor([prompt]))[0, -1].argmax()))
    (own,) = span_scores(model, [prompt], [4])
    assert own.greedy
    with pytest.raises(ValueError, match="context"):
        span_scores(model, [list(range(26))], [1])
    with pytest.raises(ValueError, match="condition on"):
        span_scores(model, [[3, 4]], [2])


def test_one_pass_tail_score_equals_whole_minus_head():
    """log p(tail | head) from one forward equals the two-pass difference it replaced."""
    torch.manual_seed(4)
    model = build_model(GQA).eval()
    heads, tails = [[5, 6, 7], [8], [9, 10, 11, 12]], [[13, 14], [15, 16, 17, 18], [19]]
    rows = [[1, *h, *t] for h, t in zip(heads, tails, strict=True)]
    one_pass = [s.loglik for s in span_scores(model, rows, [1 + len(h) for h in heads])]
    whole = sequence_logliks(model, [h + t for h, t in zip(heads, tails, strict=True)], prefix=[1])
    head = sequence_logliks(model, heads, prefix=[1])
    np.testing.assert_allclose(one_pass, whole - head, rtol=1e-5, atol=1e-4)


def test_distinct_n_and_repetition_rate():
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 1) == pytest.approx(4 / 6)
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 2) == pytest.approx(3 / 4)
    assert repetition_rate([[1, 2, 3, 1, 2, 3, 1]], n=3) == pytest.approx(2 / 5)
    assert repetition_rate([[1, 2, 3, 4]], n=3) == 0.0
    assert distinct_n([[1]], 2) == 0.0


def test_group_gap_interval_covers_zero_only_without_a_difference():
    rng = np.random.default_rng(0)
    base = rng.normal(size=40)
    same = largest_group_gap({"a": base, "b": base + rng.normal(0, 0.01, 40)}, seed=1)
    assert same.interval.covers(0.0)
    apart = largest_group_gap({"a": base, "b": base + 0.5, "c": base + rng.normal(0, 0.01, 40)}, seed=1)
    assert apart.high_group == "b" and apart.interval.low > 0.4
    assert apart.interval.value == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="same non-empty set"):
        largest_group_gap({"a": [1.0, 2.0], "b": [1.0]})


def test_bootstrap_and_preference_share():
    iv = bootstrap_mean([1.0] * 30 + [0.0] * 10, seed=2)
    assert iv.value == 0.75 and iv.low < 0.75 < iv.high
    share = preference_share([1.0, -1.0] * 20, seed=3)
    assert share.value == 0.5 and share.covers(0.5)
    assert preference_share([1.0] * 40, seed=3).low == 1.0


def test_word_list_scorer_matches_whole_words_only():
    scorer = WordListScorer(frozenset({"idiot", "scum"}))
    assert scorer.is_toxic("What an IDIOT.") and not scorer.is_toxic("idiotic scumbag-free text")
    assert scorer.rate(["you idiot", "fine", "scum", "ok"]) == 0.5


@pytest.mark.gpu
def test_perplexity_on_cuda_equals_cpu(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    model, _ = known_logits_model()
    split = write_split(tmp_path, np.random.default_rng(4).integers(3, CFG.vocab_size, size=(5, CFG.context + 1)), 2)
    cpu = split_nll(model, split, batch_windows=2)
    gpu = split_nll(model.cuda(), split, batch_windows=2)
    assert gpu.tokens == cpu.tokens and gpu.nll_sum == pytest.approx(cpu.nll_sum, rel=1e-4)
