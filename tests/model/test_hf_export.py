"""The Hugging Face export is complete: transformers loads tokenizer and model from the folder alone."""

import json

import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from model.decoding import SamplingParams, generate
from model.hf_interop import import_hf
from model.registry import load_model_version
from model.weights import WeightsError

PROMPT = "Return a new dictionary"


@pytest.fixture(scope="module")
def exported(text_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "lmforge-v1"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMFORGE_WORKSPACE", str(text_model.runtime.settings.workspace))
        out = CliRunner().invoke(app, ["export-hf", "candidate", str(folder), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["tokenizer"] == "tok-000001"
    rt = text_model.runtime
    return folder, load_model_version(rt.metadata, rt.artifacts, "lmforge", "candidate")


def test_config_and_tokenizer_files_carry_the_special_tokens(exported):
    folder, loaded = exported
    config = json.loads((folder / "config.json").read_text())
    tok = loaded.tokenizer
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (
        tok.bos_id, tok.eos_id, tok.pad_id)
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|eos|>" and tok_cfg["model_max_length"] == loaded.config.context


def test_transformers_generates_the_same_greedy_tokens(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, loaded = exported
    hf_tok = AutoTokenizer.from_pretrained(folder)
    hf_model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = hf_tok(PROMPT)["input_ids"]
    assert ids == loaded.tokenizer.encode(PROMPT)
    assert (hf_tok.eos_token_id, hf_tok.pad_token_id, hf_tok.bos_token_id) == (
        loaded.eos_id, loaded.pad_id, loaded.bos_id)
    prompts = [loaded.prompt_ids(PROMPT), loaded.prompt_ids("The JSON decoder and")]
    ours = generate(loaded.model, prompts, SamplingParams(max_new_tokens=12, temperature=0.0),
                    eos_id=loaded.eos_id, pad_id=loaded.pad_id)
    for prompt, mine in zip(prompts, ours, strict=True):
        with torch.no_grad():
            out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):]
        theirs = out.tolist()
        if loaded.eos_id in theirs:
            theirs = theirs[: theirs.index(loaded.eos_id)]
        assert theirs == mine


def test_pipeline_text_generation_runs_from_the_folder(exported):
    from transformers import pipeline

    folder, loaded = exported
    pipe = pipeline("text-generation", model=str(folder), device="cpu")
    text = pipe(PROMPT, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    ours = generate(loaded.model, [loaded.tokenizer.encode(PROMPT)], SamplingParams(max_new_tokens=8, temperature=0.0),
                    eos_id=loaded.eos_id, pad_id=loaded.pad_id)[0]
    assert text == PROMPT + loaded.tokenizer.decode(ours)


def test_import_reads_the_tokenizer_back_and_refuses_a_contradiction(exported, tmp_path):
    folder, loaded = exported
    import_hf(folder, tmp_path / "ours")
    meta = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert {k: meta["tokenizer"][k] for k in ("bos_id", "eos_id", "pad_id")} == {
        "bos_id": loaded.bos_id, "eos_id": loaded.eos_id, "pad_id": loaded.pad_id}
    assert (tmp_path / "ours" / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in folder.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((bad / "config.json").read_text()) | {"eos_token_id": loaded.bos_id}
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="eos_token_id"):
        import_hf(bad, tmp_path / "out")


def test_export_refuses_a_folder_holding_files_unless_forced(exported, text_model, tmp_path):
    """Nothing of a person's folder is overwritten without --force; a file is never a target."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"mine": true}')
    (tmp_path / "a-file").write_text("keep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMFORGE_WORKSPACE", str(text_model.runtime.settings.workspace))
        refused = CliRunner().invoke(app, ["export-hf", "candidate", str(mine)])
        on_file = CliRunner().invoke(app, ["export-hf", "candidate", str(tmp_path / "a-file")])
        assert [p.name for p in mine.iterdir()] == ["config.json"] and "mine" in (mine / "config.json").read_text()
        forced = CliRunner().invoke(app, ["export-hf", "candidate", str(mine), "--force", "--json"])
    assert refused.exit_code == 1 and "is not empty (config.json)" in refused.exception.message
    assert "--force" in refused.exception.hint
    assert on_file.exit_code == 1 and "is not a folder" in on_file.exception.message
    assert (tmp_path / "a-file").read_text() == "keep"
    assert forced.exit_code == 0, forced.output
    assert json.loads((mine / "config.json").read_text())["model_type"] == "llama"
    assert sorted(p.name for p in mine.iterdir()) == sorted(p.name for p in exported[0].iterdir())
