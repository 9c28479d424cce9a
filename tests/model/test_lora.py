"""LoRA through PEFT on a tiny random Llama-family checkpoint built with transformers and imported: only the
adapters train, resume is exact, the saved adapter loads with ``peft.PeftModel`` onto the base in transformers
and gives our logits, and nights chain by merging."""

import dataclasses
import json
import shutil
import typing

import pytest
import torch
import transformers
from helpers import VOCAB, make_spec, pattern_windows, write_dataset
from peft import PeftModel
from pydantic import ValidationError

from lmforge_core.config.train import LoraTarget, TrainConfig
from model.adapters import ADAPTER_CONFIG, ADAPTER_DIR, ADAPTER_WEIGHTS, hf_module_names
from model.configs import ModelConfig
from model.engine import init_distributed, init_single_process
from model.hf_interop import export_hf, import_hf
from model.train_loop import EventLog, Trainer, train
from model.weights import load_model, load_state_dict, read_weights_config

# peak_flops given: only the MFU figure needs it, and measuring it would cost every run seconds of matmuls
LORA = {"method": "lora", "lora_rank": 4, "lora_alpha": 8.0, "lora_dropout": 0.1, "lr": 1e-2, "peak_flops": 1e12}


@pytest.fixture(autouse=True, scope="module")
def _world_of_one():
    init_single_process()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A transformers-built Llama (GQA 4/2 heads, tied embeddings, rope theta 1e5), saved and imported."""
    root = tmp_path_factory.mktemp("llama")
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=True, rope_theta=100000.0)
    torch.manual_seed(5)
    transformers.LlamaForCausalLM(cfg).save_pretrained(root / "hf")
    import_hf(root / "hf", root / "ours")
    return root


def lora_job(run_dir, data_root, init_dir, **train):
    spec = make_spec(run_dir, data_root, replay=False, **(LORA | train))
    shape = ModelConfig.from_dict(read_weights_config(init_dir)["model"])
    return dataclasses.replace(spec, model=shape, init_weights=str(init_dir), continuing=True)


def weights_of(run_dir, step):
    return run_dir / "checkpoints" / f"step-{step:06d}" / "weights"


@pytest.fixture(scope="module")
def lora_run(base, tmp_path_factory):
    """One LoRA run of 4 steps on the imported base, checkpointed at steps 2 and 4."""
    root = tmp_path_factory.mktemp("lora-run")
    write_dataset(root / "data", "ds-000002", pattern_windows(64, seed=2, offset=5))
    train(lora_job(root / "run", root / "data", base / "ours", steps=4, checkpoint_every=2))
    return root


def test_the_config_knows_every_projection_the_hf_mapping_names():
    leaves = {hf.rpartition(".")[2] for hf in hf_module_names(1).values()}
    assert set(typing.get_args(LoraTarget)) == leaves == set(TrainConfig().lora_targets)


def test_lora_settings_refuse_what_they_cannot_do():
    with pytest.raises(ValidationError, match="ZeRO stages 0-2"):
        TrainConfig(method="lora", zero_stage=3)
    with pytest.raises(ValidationError, match="anchors every weight"):
        TrainConfig(method="lora", regularization="l2")
    with pytest.raises(ValidationError, match="lora_targets"):
        TrainConfig(method="lora", lora_targets=["wqkv"])


def test_lora_from_scratch_is_refused(tmp_path, data_root):
    job = make_spec(tmp_path / "run", data_root, method="lora")
    with pytest.raises(ValueError, match="adapts a trained model"):
        Trainer(job, *init_distributed(), EventLog(None, None))


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_one_lora_step_changes_only_the_adapter_weights(tmp_path, data_root, base, zero_stage):
    job = lora_job(tmp_path / "run", data_root, base / "ours", steps=1, zero_stage=zero_stage)
    trainer = Trainer(job, *init_distributed(), EventLog(None, None))
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 7 * 2  # A and B on seven projections in two layers
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.engine.train()
    assert trainer.train_step() == "step"
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {k for k in trainable if ".lora_B." in k} <= changed <= trainable

    merged, _ = load_state_dict(weights_of(tmp_path / "run", 1))
    original, _ = load_state_dict(base / "ours")
    moved = {k for k in original if not torch.equal(merged[k], original[k])}
    assert moved == {k for k in original if k.endswith(("wqkv.weight", "wo.weight", "w13.weight", "w2.weight"))}


def test_resume_from_a_lora_checkpoint_continues_identically(tmp_path, lora_run, base):
    part = tmp_path / "part"
    shutil.copytree(lora_run / "run" / "checkpoints" / "step-000002", part / "checkpoints" / "step-000002")
    job = lora_job(part, lora_run / "data", base / "ours", steps=4, checkpoint_every=2)
    summary = train(dataclasses.replace(job, resume_tag="step-000002"))
    assert summary["step"] == 4
    a, b = load_state_dict(weights_of(lora_run / "run", 4))[0], load_state_dict(weights_of(part, 4))[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    adapter_a = (weights_of(lora_run / "run", 4) / ADAPTER_DIR / ADAPTER_WEIGHTS).read_bytes()
    assert adapter_a == (weights_of(part, 4) / ADAPTER_DIR / ADAPTER_WEIGHTS).read_bytes()


def peft_logits(hf_base_dir, adapter_dir, idx):
    hf = transformers.LlamaForCausalLM.from_pretrained(hf_base_dir, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(hf, adapter_dir).eval()
    with torch.no_grad():
        return peft_model(idx).logits


def test_peft_loads_the_adapter_onto_the_transformers_base_and_gives_our_logits(lora_run, base):
    weights = weights_of(lora_run / "run", 4)
    config = json.loads((weights / ADAPTER_DIR / ADAPTER_CONFIG).read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8.0
    assert config["target_modules"] == sorted(typing.get_args(LoraTarget))
    ours = load_model(weights).eval()
    idx = torch.randint(0, VOCAB, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, untrained = ours(idx), load_model(base / "ours").eval()(idx)
    theirs = peft_logits(base / "hf", weights / ADAPTER_DIR, idx)
    assert (expected - untrained).abs().max().item() > 1e-3  # the adapter does something
    assert (expected - theirs).abs().max().item() < 1e-4


def test_nights_chain_by_merging_each_adapter_into_the_next_base(tmp_path, lora_run, base):
    night1 = weights_of(lora_run / "run", 4)
    train(lora_job(tmp_path / "night2", lora_run / "data", night1, steps=2, checkpoint_every=2, seed=12))
    night2 = weights_of(tmp_path / "night2", 2)
    export_hf(night1, tmp_path / "night1-hf")
    idx = torch.randint(0, VOCAB, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = load_model(night2).eval()(idx)
    assert (peft_logits(tmp_path / "night1-hf", night2 / ADAPTER_DIR, idx) - expected).abs().max().item() < 1e-4
    # night 2's adapter is relative to night 1's merged weights, not to the imported base
    assert (peft_logits(base / "hf", night2 / ADAPTER_DIR, idx) - expected).abs().max().item() > 1e-3
