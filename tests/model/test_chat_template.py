"""Chat templates render as transformers renders them, on the real SmolLM2-135M-Instruct tokenizer (its GGUF
file carries the template) and on a template that uses the sandbox's helpers."""

import pytest
import transformers
from llama_checkpoint import smollm2_gguf
from tokenizers import Tokenizer, models

from model.chat_template import chat_template_of, render_chat
from model.tokenizer import TokenizerRef

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Capital of Peru?"},
     {"role": "assistant", "content": "Lima."}, {"role": "user", "content": "And of Chile?"}],
]


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    gguf = smollm2_gguf()
    hf = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ours = TokenizerRef(version="smollm2", key="", sha256="", vocab_size=len(hf), bos_id=hf.bos_token_id,
                        eos_id=hf.eos_token_id, pad_id=hf.pad_token_id, tokenizer=hf.backend_tokenizer)
    ours.chat_template = hf.chat_template  # what an imported model's tokenizer record carries
    return hf, ours


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_template_renders_and_tokenizes_as_transformers(smollm2_tokenizer, messages, add_generation_prompt):
    hf, ours = smollm2_tokenizer
    template = chat_template_of(ours)
    assert template and "im_start" in template
    text = render_chat(template, messages, ours.special_tokens(), add_generation_prompt=add_generation_prompt)
    assert text == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    ids = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt,
                                 return_dict=False)
    assert ours.encode(text) == ids


def test_template_helpers_and_errors_are_those_of_transformers():
    template = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}"
                "{% endif %}{{ m | tojson }}{% if loop.index > 1 %}{% break %}{% endif %}\n{% endfor %}"
                "{% if add_generation_prompt %}<go>{% endif %}")
    messages = [{"role": "user", "content": "<b>&</b>"}, {"role": "assistant", "content": "é"},
                {"role": "user", "content": "never rendered"}]
    specials = {"bos_token": "<s>"}
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<s>": 0}, unk_token="<s>")),
                                              bos_token="<s>")
    expected = hf.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)
    assert render_chat(template, messages, specials) == expected
    assert "<b>&</b>" in expected and "é" in expected  # tojson neither escapes HTML nor non-ASCII
    with pytest.raises(ValueError, match="no system"):
        render_chat(template, [{"role": "system", "content": "x"}], specials)


def test_house_tokenizer_has_no_template():
    tok = TokenizerRef("t", "", "", 3, 0, 1, 2, Tokenizer(models.WordLevel({"a": 0, "b": 1, "c": 2}, unk_token="a")))
    assert chat_template_of(tok) is None and chat_template_of(None) is None
