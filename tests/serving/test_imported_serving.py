"""Serving an imported Llama-family model (tiny, built with transformers): ONNX export with grouped-query
attention, tied embeddings and the model's rope (Llama-3 scaling too) at parity; chat templates rendered exactly
as transformers' ``apply_chat_template`` renders them; the Triton version folder carrying the model's own
tokenizer, chat template and every end id."""

from __future__ import annotations

import dataclasses
import json

import pytest
from llama_checkpoint import CHAT_TEMPLATE, build_llama, own_tokenizer, sample_texts

from lmforge_core.config.data import TokenizerConfig
from lmforge_core.runtime import open_runtime
from lmforge_core.settings import load_settings
from model.chat_template import ChatTemplateError, render_chat
from model.hf_interop import import_hf
from model.registry import load_model_version
from model.tokenizer import make_ref
from model.weights import load_model
from serving.onnx_export import export_onnx
from serving.openai_api import ApiError, ChatMessage, chat_prompt
from serving.triton_config import GENERATE, TEXT, TOKENIZER
from serving.triton_models.common import TOKENIZER_META, load_version_tokenizer
from serving.triton_repository import stage_version
from tasks.train.imports import import_model

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}

# SmolLM2's template written over several lines: trim_blocks/lstrip_blocks decide its whitespace
SMOLLM2_STYLE = """{% for message in messages %}
    {% if loop.first and messages[0]['role'] != 'system' %}
<|im_start|>system
You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
    {% endif %}
<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}"""
# Llama-3 style: bos_token, a namespace, trim, tojson, and a conversation it refuses
LLAMA3_STYLE = """{{- bos_token }}
{%- set ns = namespace(turns=0) %}
{%- for message in messages %}
    {%- if message['role'] == 'system' and not loop.first %}
        {{- raise_exception('the system message must come first') }}
    {%- endif %}
    {%- set ns.turns = ns.turns + 1 %}
    {{- '<|im_start|>' + message['role'] + '\\n\\n' + message['content'] | trim + eos_token }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant ' ~ (messages | map(attribute='content') | list | tojson) ~ '\\n\\n' }}
{%- endif %}"""
CONVERSATIONS = [
    [{"role": "user", "content": "What is os.path?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "  Héllo \"wörld\" <b>?  "}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a module."},
     {"role": "assistant", "content": "json"}, {"role": "user", "content": "Another?\nOne more."}],
]


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    return sample_texts(tmp_path_factory.mktemp("sample"))[1]


@pytest.fixture(scope="module")
def tokenizers(texts):
    """(our reference, transformers' tokenizer) of one ChatML-style tokenizer, per template."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = own_tokenizer(texts)
    cfg = TokenizerConfig()

    def pair(template: str):  # type: ignore[no-untyped-def]
        ours = make_ref(tokenizer, "t", cfg, imported={"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                                                       "chat_template": template})
        theirs = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|im_start|>",
                                         eos_token="<|im_end|>", chat_template=template)
        return ours, theirs

    return pair


@pytest.mark.parametrize("template", [CHAT_TEMPLATE, SMOLLM2_STYLE, LLAMA3_STYLE], ids=["chatml", "smollm2", "llama3"])
def test_chat_templates_render_and_tokenize_as_transformers(tokenizers, template):
    ours, theirs = tokenizers(template)
    for messages in CONVERSATIONS:
        text = render_chat(template, messages, ours.special_tokens())
        assert text == theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        expected = theirs.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)
        assert ours.encode(text) == expected["input_ids"]
        default_system = template == SMOLLM2_STYLE and messages[0]["role"] != "system"
        assert ours.encode(text).count(ours.eos_id) == len(messages) + default_system  # one end per turn
    without = render_chat(template, CONVERSATIONS[0], ours.special_tokens(), add_generation_prompt=False)
    assert without == theirs.apply_chat_template(CONVERSATIONS[0], tokenize=False, add_generation_prompt=False)


def test_a_conversation_the_template_refuses_and_sandbox_escapes_are_errors(tokenizers):
    ours, theirs = tokenizers(LLAMA3_STYLE)
    late_system = [{"role": "user", "content": "hi"}, {"role": "system", "content": "late"}]
    with pytest.raises(ChatTemplateError, match="the system message must come first"):
        render_chat(LLAMA3_STYLE, late_system, ours.special_tokens())
    with pytest.raises(Exception, match="the system message must come first"):
        theirs.apply_chat_template(late_system, tokenize=False)
    escape = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(ChatTemplateError, match="refused"):
        render_chat(escape, CONVERSATIONS[0], ours.special_tokens())
    with pytest.raises(ChatTemplateError, match="does not compile"):
        render_chat("{% for m in messages %}", CONVERSATIONS[0], ours.special_tokens())


def test_the_chat_endpoint_renders_the_template_refuses_with_400_and_keeps_plain_lines_without_one(tokenizers):
    ours, theirs = tokenizers(LLAMA3_STYLE)
    messages = [ChatMessage(**m) for m in CONVERSATIONS[2]]
    assert chat_prompt(messages, ours) == theirs.apply_chat_template(CONVERSATIONS[2], tokenize=False,
                                                                     add_generation_prompt=True)
    with pytest.raises(ApiError, match="the system message must come first") as refused:
        chat_prompt([ChatMessage(role="user", content="hi"), ChatMessage(role="system", content="late")], ours)
    assert refused.value.status == 400 and refused.value.param == "messages"
    plain = dataclasses.replace(ours, chat_template=None)
    assert chat_prompt(messages[:2], plain) == "system: You are terse.\nuser: Name a module.\nassistant:"


@pytest.mark.parametrize("config", [
    {},  # grouped-query attention, tied embeddings, rope theta 50,000
    {"rope_scaling": LLAMA3_ROPE, "rope_theta": 500_000.0},
], ids=["gqa-tied", "gqa-tied-llama3-rope"])
def test_an_imported_llama_exports_to_onnx_at_parity(tmp_path, texts, config):
    build_llama(tmp_path / "hf", texts, initializer_range=0.2, **config)
    import_hf(tmp_path / "hf", tmp_path / "weights")
    model = load_model(tmp_path / "weights").eval()
    assert model.config.kv_heads < model.config.n_heads and model.config.tie_embeddings
    prompt = own_tokenizer(texts).encode(texts[3], add_special_tokens=False).ids[:40]
    export = export_onnx(model, tmp_path / "onnx", prompt)  # raises over the tolerance
    manifest = json.loads((export.directory / "export.json").read_text())
    assert export.parity.max_abs <= 1e-4 and manifest["parity"]["max_abs"] == export.parity.max_abs
    assert manifest["model"]["n_kv_heads"] == model.config.kv_heads
    assert manifest["model"]["rope_theta"] == config.get("rope_theta", 50_000.0)
    assert (manifest["model"]["rope_scaling"] or {}).get("factor") == config.get("rope_scaling", {}).get("factor")


def test_the_triton_version_carries_the_models_tokenizer_template_and_end_ids(tmp_path, texts):
    reference = build_llama(tmp_path / "hf", texts)
    turn_end = 0  # "<|endoftext|>": a second end id, as Llama 3 instruct lists in its generation config
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps(
        generation | {"eos_token_id": [reference.config.eos_token_id, turn_end]}))
    rt = open_runtime(load_settings(workspace=tmp_path / "ws"))
    try:
        import_model(rt, tmp_path / "hf")
        loaded = load_model_version(rt.metadata, rt.artifacts, "lmforge", "v1")
    finally:
        rt.metadata.dispose()
    tok = loaded.tokenizer
    assert tok.eos_ids == (reference.config.eos_token_id, turn_end) and tok.chat_template == CHAT_TEMPLATE
    export = export_onnx(loaded.model, tmp_path / "onnx", tok.encode(texts[2])[:16])
    staged = stage_version(tmp_path / "repository", 1, export.directory, tok, {"model_version": "lmforge:v1"})
    for model in (TOKENIZER, TEXT):  # what the tokenizer model, generate_text and the OpenAI endpoint load
        served = load_version_tokenizer(staged.staging_dir(model))
        assert served.tokenizer.to_str() == tok.tokenizer.to_str() and served.chat_template == CHAT_TEMPLATE
        assert served.eos_ids == tok.eos_ids and served.special_tokens() == tok.special_tokens()
        messages = CONVERSATIONS[2]
        assert render_chat(served.chat_template, messages, served.special_tokens()) == \
            render_chat(tok.chat_template, messages, tok.special_tokens())
    meta = json.loads((staged.staging_dir(GENERATE) / TOKENIZER_META).read_text())  # where generate stops
    assert meta["eos_ids"] == [reference.config.eos_token_id, turn_end]
