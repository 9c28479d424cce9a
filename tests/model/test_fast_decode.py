"""The static-cache greedy decoder equals the library's greedy decoding, token for token."""

import pytest
import torch
from helpers import TINY
from test_decoding import PAD, peaked_model

from model.decoding import SamplingParams, generate
from model.fast_decode import StaticGreedyDecoder


def test_static_decoder_equals_library_greedy_with_mixed_lengths():
    model = peaked_model(TINY, seed=4)
    prompts = [[7, 8, 9], [3], [11, 2, 40, 33, 9, 17], [50, 51]]
    decoder = StaticGreedyDecoder(model, batch=4, max_len=20)
    ref = generate(model, prompts, SamplingParams(max_new_tokens=10, temperature=0.0), eos_id=None, pad_id=PAD)
    assert decoder.generate(prompts, 10) == ref
    assert decoder.generate(prompts, 10) == ref  # the buffers are reused: a second call is not polluted


def test_suppressed_tokens_are_never_chosen():
    model = peaked_model(TINY, seed=4)
    free = StaticGreedyDecoder(model, 1, 20).generate([[5, 6]], 10)[0]
    banned = free[0]
    out = StaticGreedyDecoder(model, 1, 20).generate([[5, 6]], 10, suppress_ids=[banned])[0]
    assert banned not in out and out != free


def test_sizes_are_checked():
    model = peaked_model(TINY)
    with pytest.raises(ValueError, match="context"):
        StaticGreedyDecoder(model, 1, TINY.context + 1)
    with pytest.raises(ValueError, match="max_len"):
        StaticGreedyDecoder(model, 1, 10).generate([[1] * 8], 5)
    with pytest.raises(ValueError, match="batch"):
        StaticGreedyDecoder(model, 1, 10).generate([[1], [2]], 2)
    assert torch.is_grad_enabled()
