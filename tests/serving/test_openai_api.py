"""The OpenAI-compatible endpoint in front of the real Triton server, driven by the `openai` package."""

from __future__ import annotations

import httpx
import pytest
from serving_helpers import PROMPTS, greedy_reference, serve_endpoint

from serving.openai_api import Backend, ChatMessage, chat_prompt, create_app
from tasks.publish.publish import repository_path

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(served):
    with serve_endpoint(create_app(Backend(served.grpc, repository_path(served.workspace.runtime), "lmforge"))) as url:
        yield url


def expected_text(served, prompt, n):
    tok = served.workspace.tokenizer
    return tok.decode(greedy_reference(served.workspace.models[1], tok.encode(prompt), n, tok.eos_id))


def test_completions_with_the_openai_client_equal_the_model(served, api):
    client = openai.OpenAI(base_url=api, api_key="not-needed", max_retries=0)
    result = client.completions.create(model="lmforge", prompt=PROMPTS[0], max_tokens=10, temperature=0)
    assert result.choices[0].text == expected_text(served, PROMPTS[0], 10).rstrip("\ufffd")
    assert result.usage.completion_tokens <= 10 and result.usage.prompt_tokens == len(
        served.workspace.tokenizer.encode(PROMPTS[0]))
    pieces = [c.choices[0].text for c in client.completions.create(model="lmforge", prompt=PROMPTS[0], max_tokens=10,
                                                                   temperature=0, stream=True)]
    assert "".join(pieces) == result.choices[0].text and len(pieces) > 2


def test_chat_completions_stream_over_server_sent_events(served, api):
    client = openai.OpenAI(base_url=api, api_key="not-needed", max_retries=0)
    messages = [{"role": "user", "content": "Return a JSON string"}]
    whole = client.chat.completions.create(model="lmforge", messages=messages, max_tokens=8, temperature=0)
    prompt = chat_prompt([ChatMessage(**m) for m in messages])
    assert whole.choices[0].message.content == expected_text(served, prompt, 8).rstrip("\ufffd")
    stream = client.chat.completions.create(model="lmforge", messages=messages, max_tokens=8, temperature=0,
                                            stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == whole.choices[0].message.content


def test_bad_requests_get_openai_style_errors(api):
    client = openai.OpenAI(base_url=api, api_key="not-needed", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="exceeds this server's limit"):
        client.completions.create(model="lmforge", prompt="x", max_tokens=999, temperature=0)
    response = httpx.post(f"{api}/completions", json={"prompt": "", "max_tokens": 2})
    assert response.status_code == 400 and "prompt is empty" in response.json()["error"]["message"]
    assert httpx.get(f"{api}/models").json()["data"][0]["id"] == "lmforge"
