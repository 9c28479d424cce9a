"""`lmforge generate-local` through the CLI on a tiny model trained on real text."""

import json

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.cli.common import CliError
from model.decoding import SamplingParams, generate
from model.registry import load_model_version

PROMPT = "Return the JSON"


@pytest.fixture
def cli(text_model, monkeypatch):
    monkeypatch.setenv("LMFORGE_WORKSPACE", str(text_model.runtime.settings.workspace))
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, ["generate-local", *args])

    return invoke


@pytest.fixture(scope="module")
def loaded(text_model):
    rt = text_model.runtime
    return load_model_version(rt.metadata, rt.artifacts, "lmforge", "candidate")


def library(loaded, **params):
    return generate(loaded.model, [loaded.prompt_ids(PROMPT)], SamplingParams(**params),
                    eos_id=loaded.eos_id, pad_id=loaded.pad_id)[0]


def test_greedy_json_equals_the_library_and_decodes_its_tokens(cli, loaded):
    out = cli("candidate", PROMPT, "--temperature", "0", "--max-tokens", "12", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["tokens"] == library(loaded, temperature=0.0, max_new_tokens=12)
    assert data["text"] == loaded.tokenizer.decode(data["tokens"]) and data["model_version"] == "lmforge:v1"
    assert data["finish_reason"] == ("length" if len(data["tokens"]) == 12 else "stop")


def test_stream_prints_the_same_continuation(cli):
    whole = json.loads(cli("1", PROMPT, "--temperature", "0", "--max-tokens", "10", "--json").stdout)
    lines = cli("1", PROMPT, "--temperature", "0", "--max-tokens", "10", "--stream", "--json").stdout.splitlines()
    deltas = [json.loads(line)["delta"] for line in lines if line.startswith('{"delta"')]
    assert len(deltas) > 1 and "".join(deltas) == whole["text"]
    plain = cli("1", PROMPT, "--temperature", "0", "--max-tokens", "10", "--stream")
    assert plain.exit_code == 0 and plain.stdout.startswith(PROMPT + whole["text"])


def test_stop_string_cuts_the_text(cli):
    whole = json.loads(cli("1", PROMPT, "--temperature", "0", "--max-tokens", "16", "--json").stdout)["text"]
    stop = whole.strip()[2:5]
    assert stop and stop in whole
    data = json.loads(cli("1", PROMPT, "--temperature", "0", "--max-tokens", "16", "--stop", stop, "--json").stdout)
    assert data["text"] == whole[: whole.index(stop)] and data["finish_reason"] == "stop"


def test_seeded_sampling_and_beam_search_through_the_cli(cli, loaded):
    args = ["1", PROMPT, "--temperature", "1.2", "--top-k", "50", "--top-p", "0.9", "--min-p", "0.01",
            "--repetition-penalty", "1.1", "--adaptive-temperature", "--seed", "7", "--max-tokens", "8", "--json"]
    first, again = (json.loads(cli(*args).stdout) for _ in range(2))
    assert first["tokens"] == again["tokens"]
    assert first["tokens"] == library(loaded, temperature=1.2, top_k=50, top_p=0.9, min_p=0.01,
                                      repetition_penalty=1.1, adaptive_temperature=True, seed=7, max_new_tokens=8)
    beam = json.loads(cli("1", PROMPT, "--temperature", "0", "--num-beams", "3", "--max-tokens", "6", "--json").stdout)
    assert beam["tokens"] == library(loaded, temperature=0.0, num_beams=3, max_new_tokens=6)


@pytest.mark.parametrize(("args", "cause"), [
    (["1", PROMPT, "--top-p", "1.5"], "top_p"),
    (["9", PROMPT], "v9"),
    (["1", PROMPT, "--stream", "--num-beams", "2", "--temperature", "0"], "--stream"),
    (["1", PROMPT, "--max-tokens", "100000"], "context length"),
])
def test_bad_requests_fail_with_the_cause(cli, args, cause):
    out = cli(*args)
    assert out.exit_code != 0
    assert cause in (out.exception.message if isinstance(out.exception, CliError) else str(out.exception))
