"""Importing a pretrained Llama-family checkpoint (tiny, built with transformers): parity with transformers,
greedy equality, refusal of what the network lacks, the model's own tokenizer and chat template recorded,
dataset versions keyed by tokenizer, and training that continues with the model's own tokenizer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from llama_checkpoint import CHAT_TEMPLATE, build_llama, sample_texts, write_gguf
from tokenizers import Tokenizer

from lmforge_core.metadata import orchestration_repository as orch
from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import open_runtime
from lmforge_core.settings import load_settings
from model.decoding import SamplingParams, generate
from model.hf_interop import export_hf, import_hf
from model.registry import fetch_weights, load_model_version
from model.token_shards import TokenWindows, load_manifest
from model.weights import WeightsError, load_model, read_weights_config
from tasks.dataset.versions import dataset_for_tokenizer
from tasks.ingest.pipeline import run_ingest
from tasks.train.imports import base_dataset, import_model, install_base
from tasks.train.run import run_training

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}
DATA = {"workers": 1, "chunk_docs": 64, "gate": {"min_rows": 3}, "tokenizer": {"vocab_size": 400}, "window": 64}
TRAIN = {"steps": 3, "global_batch": 4, "micro_batch": 4, "checkpoint_every": 3, "keep_checkpoints": 1,
         "threads": 1, "warmup_steps": 1, "lr": 1e-4, "metrics_flush_every": 1}


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    return sample_texts(tmp_path_factory.mktemp("sample"))


@pytest.fixture
def workspace(tmp_path, texts):
    sample, _ = texts
    rt = open_runtime(load_settings(workspace=tmp_path / "ws", data=DATA | {"sample_source_dir": str(sample)},
                                    train=TRAIN))
    yield rt
    rt.metadata.dispose()


@pytest.mark.parametrize("config", [
    {},  # grouped-query attention, tied embeddings, rope theta 50,000
    {"tie_word_embeddings": False, "num_key_value_heads": 4, "rope_scaling": LLAMA3_ROPE},
], ids=["gqa-tied", "mha-untied-llama3-rope"])
def test_imported_logits_and_greedy_tokens_equal_transformers(tmp_path, texts, config):
    # a wide initialisation makes the next-token choice decisive (a random tiny model's near-flat logits would
    # let rounding pick between near-ties, in either implementation)
    reference = build_llama(tmp_path / "hf", texts[1], max_shard_size="100KB", initializer_range=0.2, **config)
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()  # sharded
    import_hf(tmp_path / "hf", tmp_path / "ours")
    ours = load_model(tmp_path / "ours").eval()
    assert ours.config.tie_embeddings == reference.config.tie_word_embeddings
    assert (ours.config.rope_scaling is not None) == ("rope_scaling" in config)
    ids = torch.randint(0, ours.config.vocab_size, (2, 100), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(ids) - reference(ids).logits).abs().max().item()
    print(f"max |logit diff| vs transformers: {diff:.2e}")
    assert diff < 1e-4
    prompt = ids[0, :20]
    with torch.no_grad():
        theirs = reference.generate(prompt[None], attention_mask=torch.ones(1, 20, dtype=torch.long),
                                    max_new_tokens=24, do_sample=False, eos_token_id=None)[0, 20:].tolist()
    mine = generate(ours, [prompt.tolist()], SamplingParams(max_new_tokens=24, temperature=0.0), eos_id=None,
                    pad_id=0)[0]
    assert mine == theirs


@pytest.mark.parametrize(("field", "value", "named"), [
    ("model_type", "qwen3", "model_type"),
    ("num_local_experts", 8, "num_local_experts"),
    ("sliding_window", 64, "sliding_window"),
    ("use_qk_norm", True, "use_qk_norm"),
    ("attention_bias", True, "attention_bias"),
    ("mlp_bias", True, "mlp_bias"),
    ("rope_parameters", {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}, "rope_type"),
    ("head_dim", 32, "head_dim"),
])
def test_what_the_network_lacks_is_refused_by_name(tmp_path, texts, field, value, named):
    build_llama(tmp_path / "hf", texts[1])
    path = tmp_path / "hf" / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {field: value}))
    with pytest.raises(WeightsError, match=named):
        import_hf(tmp_path / "hf", tmp_path / "ours")
    assert not (tmp_path / "ours" / "model.safetensors").exists()


def test_import_registers_a_version_with_its_own_tokenizer_and_chat_template(tmp_path, texts, workspace):
    build_llama(tmp_path / "hf", texts[1])
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(tmp_path / "hf")
    first = import_model(workspace, tmp_path / "hf")
    assert first.model_version == "lmforge:v1" and not first.found and first.tokenizer == "tok-000001"
    again = import_model(workspace, tmp_path / "hf")
    assert again.found and again.model_version == first.model_version  # the same weights: found, not re-registered
    loaded = load_model_version(workspace.metadata, workspace.artifacts, "lmforge", "v1")
    tok = loaded.tokenizer
    assert tok is not None and tok.chat_template == CHAT_TEMPLATE
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (theirs.bos_token_id, theirs.eos_token_id, theirs.eos_token_id)
    text = texts[1][3]
    assert tok.encode(text) == theirs(text, add_special_tokens=False)["input_ids"]
    messages = [{"role": "user", "content": "What is os.path?"}]
    exported = export_hf(fetch_weights(workspace.artifacts, loaded.artifacts, tmp_path / "w", "v1"),
                         tmp_path / "exported", tok)
    again_tok = AutoTokenizer.from_pretrained(exported)  # the chat template travels on with the version
    assert again_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    with workspace.metadata.session() as session:  # recorded as an imported tokenizer, not a house one
        record = repo.get_tokenizer_version(session, "tok-000001")
        assert record.trained_on["imported_from"] == str((tmp_path / "hf").resolve())
        assert repo.latest_tokenizer_version(session, without="imported_from") is None


def test_the_same_documents_feed_the_house_tokenizer_and_an_imported_one(tmp_path, texts, workspace):
    ingested = run_ingest(workspace)
    assert ingested.status == "accepted", ingested.message
    house_version = ingested.dataset_version
    build_llama(tmp_path / "hf", texts[1])
    imported = import_model(workspace, tmp_path / "hf")
    tokenizer = load_model_version(workspace.metadata, workspace.artifacts, "lmforge", "v1").tokenizer
    derived = dataset_for_tokenizer(workspace, house_version, tokenizer)
    assert derived == f"{house_version}.{imported.tokenizer}"
    assert dataset_for_tokenizer(workspace, derived, tokenizer) == derived
    assert dataset_for_tokenizer(workspace, house_version, tokenizer) == derived  # found, not made again
    with workspace.metadata.session() as session:
        house, other = (repo.get_dataset_version(session, v) for v in (house_version, derived))
        assert other.tokenizer.version == imported.tokenizer != house.tokenizer.version
        assert sorted(link.batch_id for link in other.lineage) == sorted(link.batch_id for link in house.lineage)
        assert other.documents == house.documents and other.train_tokens != house.train_tokens
        assert len(repo.list_dataset_versions(session)) == 2
        assert repo.latest_dataset_version(session).version == house_version  # new data, not re-tokenized data
        assert orch.latest_untrained_dataset(session).version == house_version
    manifest = json.loads(workspace.artifacts.get_bytes(f"datasets/{derived}/manifest.json"))
    assert manifest["tokenizer"]["version"] == imported.tokenizer
    assert manifest["documents"] == json.loads(
        workspace.artifacts.get_bytes(f"datasets/{house_version}/manifest.json"))["documents"]  # the same split


def test_training_continues_with_the_models_own_tokenizer(tmp_path, texts, workspace):
    """The imported model was taught the sample text; continuing it must start near its own loss on that text
    (with the house tokenizer's ids it would start far above, near or past ln(V))."""
    reference = build_llama(tmp_path / "hf", texts[1], pretrain_steps=120)
    ingested = run_ingest(workspace)
    assert ingested.status == "accepted", ingested.message
    result = run_training(workspace, source=str(tmp_path / "hf"))
    with workspace.metadata.session() as session:
        run = repo.get_run(session, result.run_id)
        first_loss = repo.step_metrics(session, run.id, "loss")[0].value
        dataset = run.config["job"]["data"]["dataset_version"]
        version = repo.resolve_model_version(session, "lmforge", result.model_version.rsplit(":", 1)[1])
        assert version.parent.label == "lmforge:v1"  # the imported version it continued
    tokenizer = load_model_version(workspace.metadata, workspace.artifacts, "lmforge", "v1").tokenizer
    assert dataset == f"{ingested.dataset_version}.{tokenizer.version}"
    cache = workspace.settings.workspace / "cache"
    data = TokenWindows(load_manifest(cache, dataset), cache, split="train")
    batch = torch.as_tensor(data.get(np.arange(min(len(data), 16))).astype(np.int64))
    with torch.no_grad():
        own = reference(input_ids=batch, labels=batch).loss.item()
    print(f"first training loss {first_loss:.3f}; the model's own loss {own:.3f}; "
          f"ln(V) {math.log(tokenizer.vocab_size):.3f}")
    assert abs(first_loss - own) < 0.5
    assert first_loss < math.log(tokenizer.vocab_size) - 1.5
    trained = load_model_version(workspace.metadata, workspace.artifacts, "lmforge", result.model_version)
    assert trained.tokenizer.version == tokenizer.version and trained.tokenizer.chat_template == CHAT_TEMPLATE


def test_a_configured_base_becomes_the_first_production_version(tmp_path, texts, workspace):
    build_llama(tmp_path / "hf", texts[1])
    base = install_base(workspace, tmp_path / "hf")
    assert base.installed and base.production == "lmforge:v1"
    with workspace.metadata.session() as session:
        assert repo.get_alias(session, "lmforge", repo.PRODUCTION).label == "lmforge:v1"
    again = install_base(workspace, tmp_path / "hf")
    assert not again.installed and again.imported.found and again.production == "lmforge:v1"
    ingested = run_ingest(workspace)  # the night's data, tokenized by the house tokenizer trained on it
    assert ingested.tokenizer_trained and ingested.tokenizer_version == "tok-000002"
    night = base_dataset(workspace, base.imported, ingested.dataset_version)  # what the first champion is scored on
    assert night == f"{ingested.dataset_version}.tok-000001"


def test_a_gguf_file_imports_with_parity_and_its_embedded_tokenizer(tmp_path, texts):
    reference = build_llama(tmp_path / "hf", texts[1], initializer_range=0.2)
    path = write_gguf(reference, tmp_path / "hf", tmp_path / "tiny.gguf")
    import_hf(path, tmp_path / "ours")
    ours = load_model(tmp_path / "ours").eval()
    ids = torch.randint(0, ours.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours(ids) - reference(ids).logits).abs().max().item() < 1e-4
    assert ours.config.tie_embeddings and ours.config.rope_theta == 50_000.0 and ours.config.kv_heads == 2
    recorded = read_weights_config(tmp_path / "ours")["tokenizer"]
    assert recorded["chat_template"] == CHAT_TEMPLATE and recorded["eos_token"] == "<|im_end|>"
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(tmp_path / "hf")
    own = Tokenizer.from_file(str(tmp_path / "ours" / recorded["file"]))
    for text in texts[1][:5]:
        assert own.encode(text, add_special_tokens=False).ids == theirs(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(("extra", "named"), [({"expert_count": 8}, "llama.expert_count"),
                                              ({"attention.sliding_window": 64}, "llama.attention.sliding_window")])
def test_a_gguf_file_asking_for_what_the_network_lacks_is_refused_by_name(tmp_path, texts, extra, named):
    reference = build_llama(tmp_path / "hf", texts[1])
    path = write_gguf(reference, tmp_path / "hf", tmp_path / "tiny.gguf", **extra)
    with pytest.raises(WeightsError, match=named):
        import_hf(path, tmp_path / "ours")


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(WeightsError, match="not a readable GGUF file"):
        import_hf(tmp_path / "x.gguf", tmp_path / "ours")


def test_cli_import_then_generate_and_init_with_a_base_model(tmp_path, texts, monkeypatch):
    from typer.testing import CliRunner

    from flows.cli import app

    reference = build_llama(tmp_path / "hf", texts[1], initializer_range=0.2)
    runner = CliRunner()
    monkeypatch.setenv("LMFORGE_WORKSPACE", str(tmp_path / "ws"))
    out = runner.invoke(app, ["import-hf", str(tmp_path / "hf"), "--json"])
    assert out.exit_code == 0, out.output
    imported = json.loads(out.stdout)
    assert imported["model_version"] == "lmforge:v1" and imported["tokenizer"] == "tok-000001"
    out = runner.invoke(app, ["generate-local", "v1", texts[1][0][:40], "--max-tokens", "8", "--temperature", "0",
                              "--json"])
    assert out.exit_code == 0, out.output
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(tmp_path / "hf")
    prompt = [theirs.eos_token_id, *theirs(texts[1][0][:40], add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        greedy = reference.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                    max_new_tokens=8, do_sample=False, eos_token_id=None)[0, len(prompt):]
    text = json.loads(out.stdout)["text"]  # a stop token ends it early: a prefix of transformers' greedy text
    assert text and text == theirs.decode(greedy.tolist(), skip_special_tokens=True)[: len(text)]

    out = runner.invoke(app, ["import-hf", str(tmp_path / "missing")])
    assert out.exit_code != 0 and "neither a Hugging Face checkpoint folder nor a .gguf file" in str(out.exception)
    monkeypatch.setenv("LMFORGE_WORKSPACE", str(tmp_path / "ws2"))
    out = runner.invoke(app, ["init", "--base-model", str(tmp_path / "hf"), "--json"])
    assert out.exit_code == 0, out.output
    base = json.loads(out.stdout)["base_model"]
    assert base["installed"] and base["production"] == "lmforge:v1"
