"""The decoding library: exact against brute force and against one-prompt-at-a-time decoding."""

import itertools
import math

import pytest
import torch
from helpers import TINY

from model.configs import ModelConfig
from model.decoding import (
    SamplingParams,
    adaptive_temperatures,
    generate,
    process_logits,
    stream_generate,
)
from model.network import build_model

EOS, PAD = 1, 0


def peaked_model(config: ModelConfig, seed: int = 0):
    """Random weights with a large scale: decisive arg-maxes, so float rounding cannot flip a greedy step."""
    torch.manual_seed(seed)
    return build_model(config.__class__(**(config.to_dict() | {"init_std": 0.2}))).eval()


@pytest.fixture(scope="module")
def model():
    return peaked_model(TINY)


def naive_greedy(model, prompt: list[int], n: int, stops: set[int]) -> list[int]:
    """Full forward over the whole sequence each step: no cache, no padding."""
    seq, out = list(prompt), []
    for _ in range(n):
        with torch.no_grad():
            token = int(model(torch.tensor([seq]))[0, -1].argmax())
        if token in stops:
            break
        out.append(token)
        seq.append(token)
    return out


def test_cached_greedy_equals_full_forward_greedy(model):
    prompt = [5, 9, 13, 2]
    got = generate(model, [prompt], SamplingParams(max_new_tokens=12, temperature=0.0), eos_id=None, pad_id=PAD)
    assert got == [naive_greedy(model, prompt, 12, set())]


@pytest.mark.parametrize("repetition_penalty", [1.0, 1.3])
def test_batched_mixed_lengths_equal_one_by_one(model, repetition_penalty):
    prompts = [[7], [3, 4, 5, 6, 8], [11, 2, 40, 33, 9, 17, 21, 5, 60], [50, 51]]
    params = SamplingParams(max_new_tokens=10, temperature=0.0, repetition_penalty=repetition_penalty)
    batched = generate(model, prompts, params, eos_id=None, pad_id=PAD)
    alone = [generate(model, [p], params, eos_id=None, pad_id=PAD)[0] for p in prompts]
    assert batched == alone
    assert all(len(row) == 10 for row in batched)
    assert len({tuple(row) for row in batched}) > 1  # the rows really differ (padding is not leaking)


def test_stop_token_ends_a_row_and_is_not_returned(model):
    prompt = [5, 9, 13]
    free = generate(model, [prompt], SamplingParams(max_new_tokens=10, temperature=0.0), eos_id=None, pad_id=PAD)[0]
    cut = next(i for i in range(1, len(free)) if free[i] not in free[:i])
    params = SamplingParams(max_new_tokens=10, temperature=0.0, stop_token_ids=(free[cut],))
    assert generate(model, [prompt], params, eos_id=None, pad_id=PAD) == [free[:cut]]
    as_eos = generate(model, [prompt], SamplingParams(max_new_tokens=10, temperature=0.0), eos_id=free[cut], pad_id=PAD)
    assert as_eos == [free[:cut]]
    steps = list(stream_generate(model, [prompt, [7, 8]], params, eos_id=None, pad_id=PAD))
    assert [s[0] for s in steps[:cut]] == free[:cut] and steps[cut][0] is None
    assert all(s[0] is None for s in steps[cut:])


def test_seeded_sampling_is_reproducible_and_seed_dependent(model):
    prompts = [[5, 9], [3]]
    params = SamplingParams(max_new_tokens=16, temperature=1.5, top_k=20, top_p=0.95, seed=123)
    first = generate(model, prompts, params, eos_id=None, pad_id=PAD)
    assert first == generate(model, prompts, params, eos_id=None, pad_id=PAD)
    other = generate(model, prompts, SamplingParams(**{**params.__dict__, "seed": 124}), eos_id=None, pad_id=PAD)
    assert other != first


# --- beam search ------------------------------------------------------------------------------------

BEAM_CFG = ModelConfig(vocab_size=5, dim=16, n_layers=1, n_heads=2, ffn_hidden=32, context=8)


def brute_force_best(model, prompt: list[int], steps: int, length_penalty: float) -> list[int]:
    """Score every continuation: ending in EOS (not returned) before ``steps``, or reaching ``steps``."""
    best, best_score = None, -math.inf
    vocab = model.config.vocab_size
    candidates = [(*c, EOS) for n in range(steps) for c in itertools.product(
        [t for t in range(vocab) if t != EOS], repeat=n)]
    candidates += [c for c in itertools.product(range(vocab), repeat=steps) if EOS not in c[:-1]]
    for cand in candidates:
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt + list(cand)]))[0].float(), -1)
        total = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(cand))
        score = total / len(cand) ** length_penalty
        if score > best_score:
            best, best_score = [t for t in cand if t != EOS] if cand[-1] == EOS else list(cand), score
    return best


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_beam_search_equals_brute_force_on_a_tiny_vocabulary(length_penalty, seed):
    model = peaked_model(BEAM_CFG, seed)
    with torch.no_grad():
        model.output.weight[EOS] *= 0.0  # EOS neither certain nor impossible: lengths compete
    prompt, steps = [2, 3], 3
    params = SamplingParams(max_new_tokens=steps, temperature=0.0, num_beams=25, length_penalty=length_penalty)
    got = generate(model, [prompt], params, eos_id=EOS, pad_id=PAD)[0]
    assert got == brute_force_best(model, prompt, steps, length_penalty)


def test_narrow_beam_is_at_least_as_likely_as_greedy():
    model = peaked_model(BEAM_CFG, 3)
    prompt = [2, 3]

    def logprob(seq):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt + seq]))[0].float(), -1)
        return sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(seq))

    greedy = generate(model, [prompt], SamplingParams(max_new_tokens=4, temperature=0.0), eos_id=None, pad_id=PAD)[0]
    beam = generate(model, [prompt], SamplingParams(max_new_tokens=4, temperature=0.0, num_beams=3),
                    eos_id=None, pad_id=PAD)[0]
    assert len(beam) == 4 and logprob(beam) >= logprob(greedy) - 1e-5


# --- logits processors ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("top_p", [0.3, 0.6, 0.9])
def test_top_p_keeps_exactly_the_smallest_set_reaching_p(seed, top_p):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, 7, generator=gen) * 2
    probs = torch.softmax(logits, -1)[0].tolist()
    kept = process_logits(logits, torch.empty(1, 0, dtype=torch.long), SamplingParams(top_p=top_p), None)
    kept_set = {i for i in range(7) if math.isfinite(kept[0, i])}
    sizes = [s for n in range(1, 8) for s in itertools.combinations(range(7), n) if sum(probs[i] for i in s) >= top_p]
    smallest = min(len(s) for s in sizes)
    best = max((s for s in sizes if len(s) == smallest), key=lambda s: sum(probs[i] for i in s))
    assert kept_set == set(best)


def test_top_k_min_p_and_repetition_penalty():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, -1.0, -2.0]])
    none = torch.empty(1, 0, dtype=torch.long)
    top2 = process_logits(logits, none, SamplingParams(top_k=2), None)
    assert torch.isfinite(top2).tolist() == [[True, True, False, False, False, False]]
    probs = torch.softmax(logits, -1)[0]
    minp = process_logits(logits, none, SamplingParams(min_p=0.2), None)
    assert torch.isfinite(minp)[0].tolist() == (probs >= 0.2 * probs.max()).tolist()
    seen = torch.tensor([[0, 4, -1]])  # -1 = padding, ignored
    rep = process_logits(logits, seen, SamplingParams(temperature=0.0, repetition_penalty=2.0), None)
    assert rep.tolist() == [[2.0, 3.0, 2.0, 1.0, -2.0, -2.0]]


def test_adaptive_temperature_is_colder_when_confident():
    params = SamplingParams(temperature=1.0, adaptive_temperature=True, adaptive_range=0.5)
    logits = torch.tensor([[10.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    temps = adaptive_temperatures(logits, params)[:, 0].tolist()
    assert temps[0] < 0.6 and temps[1] == pytest.approx(1.5)


@pytest.mark.parametrize(("field", "value"), [
    ("max_new_tokens", 0), ("temperature", -0.1), ("top_k", -1), ("top_p", 0.0), ("top_p", 1.5),
    ("min_p", 1.2), ("repetition_penalty", 0.0), ("num_beams", 0), ("seed", -3), ("stop_token_ids", (-1,)),
    ("length_penalty", math.inf), ("adaptive_range", -1.0),
])
def test_invalid_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value}).validate()


def test_invalid_combinations_and_prompts_are_refused(model):
    with pytest.raises(ValueError, match="adaptive_temperature"):
        SamplingParams(temperature=0.0, adaptive_temperature=True).validate()
    with pytest.raises(ValueError, match="beam search"):
        SamplingParams(num_beams=2, top_k=5).validate()
    with pytest.raises(ValueError, match="context length"):
        generate(model, [[1] * 30], SamplingParams(max_new_tokens=5), eos_id=None, pad_id=PAD)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, [[1], []], SamplingParams(max_new_tokens=4), eos_id=None, pad_id=PAD)
    with pytest.raises(ValueError, match="vocabulary"):
        generate(model, [[TINY.vocab_size]], SamplingParams(max_new_tokens=4), eos_id=None, pad_id=PAD)
    with pytest.raises(ValueError, match="beam search"):
        next(stream_generate(model, [[1]], SamplingParams(num_beams=2, temperature=0.0), eos_id=None, pad_id=PAD))


# --- per-row seeds and the top-p candidates ----------------------------------------------------------


def test_per_row_seeds_make_each_rows_samples_independent_of_the_batch(model):
    prompts = [[7], [3, 4, 5, 6, 8], [11, 2, 40, 33, 9, 17, 21, 5, 60], [50, 51]]
    seeds = [11, 12, 13, 14]
    params = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9)
    batched = generate(model, prompts, params, eos_id=None, pad_id=PAD, seeds=seeds)
    alone = [generate(model, [p], params, eos_id=None, pad_id=PAD, seeds=[s])[0] for p, s in zip(prompts, seeds)]
    assert batched == alone
    reversed_batch = generate(model, prompts[::-1], params, eos_id=None, pad_id=PAD, seeds=seeds[::-1])
    assert reversed_batch == batched[::-1]
    # a row alone with its seed also equals the one-generator path seeded the same way
    assert alone[0] == generate(model, [prompts[0]], SamplingParams(**{**params.__dict__, "seed": 11}),
                                eos_id=None, pad_id=PAD)[0]
    reseeded = generate(model, prompts, params, eos_id=None, pad_id=PAD, seeds=[21, 12, 13, 14])
    assert reseeded[0] != batched[0] and reseeded[1:] == batched[1:]
    with pytest.raises(ValueError, match="one integer"):
        generate(model, prompts, params, eos_id=None, pad_id=PAD, seeds=[1, 2])


@pytest.mark.parametrize("scales", [[0.5], [3.0], [12.0], [0.5, 12.0, 12.0, 0.5, 3.0, 12.0]])
def test_top_p_from_candidates_equals_the_full_sort(scales):
    """Flat rows need the full sort, peaked ones do not; a batch may hold both."""
    from model.decoding import top_p_mask

    scale = torch.tensor(scales * (6 // len(scales)))[:, None]
    logits = torch.randn(6, 3000, generator=torch.Generator().manual_seed(7)) * scale
    for top_p in (0.5, 0.9, 0.99):
        full = top_p_mask(logits, top_p, candidates=logits.shape[-1])
        assert torch.equal(top_p_mask(logits, top_p, candidates=32), full)
        assert (~full).sum(-1).min() >= 1
