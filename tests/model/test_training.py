"""The DeepSpeed training loop in one process: ZeRO stages, schedule, spikes, checkpoints, regularisers."""

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, VOCAB, WINDOW, final_state, make_spec, max_diff, pattern_windows, write_dataset

from lmforge_core.config.train import TrainConfig
from model import checkpointing as ckpt
from model.engine import deepspeed_config, fit_micro_batch, init_distributed, init_single_process, lr_multiplier
from model.train_loop import EventLog, Trainer, train
from model.weights import load_model


@pytest.fixture(autouse=True, scope="module")
def _world_of_one():
    init_single_process()


def events(run_dir, kind=None):
    rows = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [e for e in rows if kind is None or e["type"] == kind]


def test_zero_stages_0_2_3_train_alike_in_one_process(tmp_path, data_root):
    finals, first_losses, last_losses = {}, {}, {}
    for stage in (0, 2, 3):
        run = tmp_path / f"z{stage}"
        summary = train(make_spec(run, data_root, zero_stage=stage))
        steps = events(run, "step")
        assert summary["step"] == 8 and len(steps) == 8
        first_losses[stage], last_losses[stage] = steps[0]["loss"], steps[-1]["loss"]
        assert all(e["grad_norm"] > 0 and e["tokens_per_s"] > 0 and 0 < e["mfu"] < 1 for e in steps)
        finals[stage] = final_state(run, 8)
    assert last_losses[0] < first_losses[0] - 0.3
    for stage in (2, 3):
        assert max_diff(finals[0], finals[stage]) < 1e-4
        assert math.isclose(last_losses[0], last_losses[stage], rel_tol=1e-4)


def test_checkpoints_hold_everything_and_list_sha256(tmp_path, data_root):
    run = tmp_path / "run"
    train(make_spec(run, data_root, steps=8, checkpoint_every=4))
    assert ckpt.complete_tags(run / "checkpoints") == ["step-000004", "step-000008"]
    manifest = ckpt.verify(run / "checkpoints" / "step-000008")
    assert manifest["step"] == 8 and manifest["loop"]["data_step"] == 8
    assert {"rng-rank0.safetensors", "weights/model.safetensors", "weights/config.json"} <= set(manifest["files"])
    assert "mp_rank_00_model_states.pt" in manifest["files"]  # ZeRO-0: module, optimizer, scheduler, client
    assert [e["tag"] for e in events(run, "checkpoint")] == ["step-000004", "step-000008"]
    assert load_model(run / "checkpoints" / "step-000008" / "weights").config.vocab_size == VOCAB


def test_tampered_checkpoint_file_fails_with_its_name(tmp_path, data_root):
    run = tmp_path / "run"
    spec = make_spec(run, data_root, steps=4, checkpoint_every=4)
    train(spec)
    tag_dir = run / "checkpoints" / "step-000004"
    optim = tag_dir / "mp_rank_00_model_states.pt"
    data = bytearray(optim.read_bytes())
    data[len(data) // 2] ^= 0x01
    optim.write_bytes(bytes(data))
    spec = spec.with_train(steps=6)
    spec.resume_tag = "step-000004"
    with pytest.raises(ckpt.CheckpointIntegrityError, match=optim.name):
        train(spec)


def test_resume_in_process_equals_uninterrupted_bitwise(tmp_path, data_root):
    full = tmp_path / "full"
    train(make_spec(full, data_root, steps=8, checkpoint_every=4, dropout=0.1))
    part = tmp_path / "part"
    shutil.copytree(full / "checkpoints" / "step-000004", part / "checkpoints" / "step-000004")
    spec = make_spec(part, data_root, steps=8, checkpoint_every=4, dropout=0.1)
    spec.resume_tag = "step-000004"
    summary = train(spec)
    assert summary["step"] == 8 and [e["step"] for e in events(part, "step")] == [5, 6, 7, 8]
    a, b = final_state(full, 8), final_state(part, 8)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lr_warms_up_then_decays_and_restarts():
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1, rewarm_steps=5, rewarm_lr_ratio=0.5)
    f = lr_multiplier(cfg, continuing=False)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(99) == pytest.approx(0.1, abs=1e-3)
    assert all(f(s) >= f(s + 1) for s in range(10, 99))
    g = lr_multiplier(cfg, continuing=True)
    assert g(4) == pytest.approx(0.5) and g(0) == pytest.approx(0.1)
    r = lr_multiplier(cfg.model_copy(update={"restart_every": 30}), continuing=False)
    assert r(40) == pytest.approx(1.0) and r(39) < 0.2


def test_deepspeed_config_is_generated_from_the_train_config():
    cfg = TrainConfig(global_batch=16, micro_batch=4, zero_stage=3, offload_optimizer=True, offload_params=True)
    ds = deepspeed_config(cfg, world=2, precision="fp32")
    assert ds["gradient_accumulation_steps"] == 2 and ds["train_batch_size"] == 16
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["optimizer"]["params"]["torch_adam"] and not ds["bf16"]["enabled"]
    with pytest.raises(ValueError, match="not a multiple"):
        deepspeed_config(cfg, world=3, precision="fp32")
    with pytest.raises(ValueError, match="needs ZeRO stage 3"):
        deepspeed_config(TrainConfig(zero_stage=2, offload_params=True), world=1, precision="fp32")


def test_gradient_accumulation_equals_one_big_batch(tmp_path, data_root):
    train(make_spec(tmp_path / "big", data_root, steps=4))
    train(make_spec(tmp_path / "acc", data_root, steps=4, micro_batch=2))
    assert max_diff(final_state(tmp_path / "big", 4), final_state(tmp_path / "acc", 4)) < 1e-5


def _spiky_dataset(root, bad_windows):
    """Learnable windows with random-token windows at the given sample positions of the plan."""
    windows = pattern_windows(64, seed=1, offset=1)
    rng = np.random.default_rng(0)
    write_dataset(root, "ds-000002", windows)
    spec_plan = np.random.default_rng([11, 0, 0]).permutation(64)  # first epoch order (seed 11, stream NEW)
    for sample in bad_windows:
        windows[spec_plan[sample]] = rng.integers(0, VOCAB, WINDOW)
    write_dataset(root, "ds-000002", windows)


def _trainer(job):
    """A Trainer of ``job`` in this world of one, stepped by the test (``train`` would run it to the end)."""
    rank, world = init_distributed()
    Path(job.run_dir).mkdir(parents=True, exist_ok=True)
    trainer = Trainer(job, rank, world, EventLog(Path(job.run_dir) / "events.jsonl", None))
    trainer.engine.train()
    return trainer


def _state(trainer):
    """Copies of everything a step changes: weights, optimizer moments and counts, schedule position."""
    opt = getattr(trainer.engine.optimizer, "optimizer", trainer.engine.optimizer)
    weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    # in parameter order (ZeRO-3 swaps its sub-groups in and out of ``param_groups``, so read ``state``)
    moments = [{k: v.clone() for k, v in state.items()} for state in opt.state.values()]
    return weights, moments, trainer.engine.global_steps, trainer.engine.lr_scheduler.last_epoch


def _assert_same_state(a, b):
    assert a[2:] == b[2:]
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert len(a[1]) == len(b[1]) > 0
    for x, y in zip(a[1], b[1], strict=True):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_loss_spike_skips_the_step_untouched_and_repeated_spikes_roll_back_weights_and_optimizer(tmp_path):
    root = tmp_path / "data"
    # global batch 1: step s reads sample s. Samples 30, 40, 41 are noise after the pattern is learnt.
    _spiky_dataset(root, [30, 40, 41])
    run = tmp_path / "run"
    trainer = _trainer(make_spec(run, root, replay=False, steps=44, global_batch=1, micro_batch=1,
                                 checkpoint_every=10, spike_factor=1.7, rollback_after=2, lr=1e-2))
    outcomes, at_checkpoint_30 = {}, None
    while trainer.loop.step < 44:
        data_step, before = trainer.loop.data_step, _state(trainer)
        outcomes[data_step] = trainer.train_step()
        if outcomes[data_step] == "skipped":  # nothing of the spike reached weights or optimizer
            _assert_same_state(before, _state(trainer))
        elif outcomes[data_step] == "rolled_back":  # back to exactly what step-000030 saved
            _assert_same_state(at_checkpoint_30, _state(trainer))
        elif trainer.loop.step == 30:
            at_checkpoint_30 = _state(trainer)
    assert {d: o for d, o in outcomes.items() if o != "step"} == {30: "skipped", 40: "skipped", 41: "rolled_back"}
    spikes, rollbacks = events(run, "spike"), events(run, "rollback")
    assert [e["data_step"] for e in spikes] == [30, 40, 41]
    assert trainer.loop.spikes == 3 and trainer.loop.skipped_steps == 3 and trainer.loop.rollbacks == 1
    assert rollbacks[0]["tag"] == "step-000030" and rollbacks[0]["to_step"] == 30
    assert all(math.isfinite(e["loss"]) for e in events(run, "step"))


@pytest.mark.parametrize("stage", [2, 3])
def test_spike_after_some_micro_batches_rolls_back_and_discards_the_half_accumulated_gradient(tmp_path, stage):
    """Global batch 2 in micro-batches of 1 under ZeRO-2/3: data step 30's second micro-batch is noise, after the
    first was back-propagated into the partitioned gradient buffers."""
    root = tmp_path / "data"
    _spiky_dataset(root, [2 * 30 + 1])
    settings = dict(replay=False, steps=32, global_batch=2, micro_batch=1, checkpoint_every=7, spike_factor=1.7,
                    lr=1e-2, zero_stage=stage)
    trainer = _trainer(make_spec(tmp_path / "run", root, **settings))
    at_checkpoint_28 = None
    while trainer.loop.data_step < 30:
        assert trainer.train_step() == "step"
        if trainer.loop.step == 28:
            at_checkpoint_28 = _state(trainer)
    assert trainer.train_step() == "rolled_back"
    _assert_same_state(at_checkpoint_28, _state(trainer))
    assert trainer.loop.step == 28 and trainer.loop.data_step == 31

    # A run resumed from the same checkpoint at the same data position takes the same next step, bit for bit:
    # no gradient of the withdrawn micro-batch survived the rollback.
    fresh_dir = tmp_path / "fresh"
    shutil.copytree(tmp_path / "run" / "checkpoints" / "step-000028", fresh_dir / "checkpoints" / "step-000028")
    job = make_spec(fresh_dir, root, **settings)
    job.resume_tag = "step-000028"
    fresh = _trainer(job)
    fresh.loop.data_step = trainer.loop.data_step
    assert trainer.train_step() == "step" and fresh.train_step() == "step"
    _assert_same_state(_state(trainer), _state(fresh))


def test_l2_and_ewc_regularisation_pull_towards_the_previous_weights(tmp_path, data_root):
    base = tmp_path / "base"
    train(make_spec(base, data_root, steps=4))
    start = base / "checkpoints" / "step-000004" / "weights"
    drift = {}
    for mode, strength in (("none", 0.0), ("l2", 50.0), ("ewc", 50.0)):
        run = tmp_path / mode
        spec = make_spec(run, data_root, steps=6, regularization=mode, reg_strength=strength)
        spec.init_weights, spec.continuing = str(start), True
        train(spec)
        drift[mode] = max_diff(final_state(run, 6), final_state(base, 4))
        if mode != "none":
            assert all(e["penalty"] >= 0 for e in events(run, "step"))
            assert events(run, "step")[-1]["penalty"] > 0
            assert (run / "regularizer.safetensors").is_file()
    assert drift["l2"] < drift["none"] and drift["ewc"] < drift["none"]


def test_regularisation_from_scratch_is_refused(tmp_path, data_root):
    with pytest.raises(ValueError, match="needs previous weights"):
        train(make_spec(tmp_path / "r", data_root, regularization="l2"))


def test_tied_grouped_query_model_trains_the_same_under_zero3(tmp_path, data_root):
    finals = {}
    for stage in (0, 3):
        spec = make_spec(tmp_path / f"z{stage}", data_root, zero_stage=stage, steps=4)
        spec.model = dataclasses.replace(TINY, tie_embeddings=True, n_kv_heads=2)
        train(spec)
        finals[stage] = final_state(tmp_path / f"z{stage}", 4)
    assert "output.weight" not in finals[0]
    assert max_diff(finals[0], finals[3]) < 1e-5


@pytest.mark.parametrize("offload", [{"zero_stage": 2, "offload_optimizer": True},
                                     {"zero_stage": 3, "offload_optimizer": True, "offload_params": True}],
                         ids=["zero2-offload-optimizer", "zero3-offload-all"])
def test_offloaded_zero_runs_train_like_plain_zero0(tmp_path, data_root, offload):
    train(make_spec(tmp_path / "ref", data_root, steps=4))
    train(make_spec(tmp_path / "off", data_root, steps=4, **offload))
    assert max_diff(final_state(tmp_path / "ref", 4), final_state(tmp_path / "off", 4)) < 1e-5


def test_micro_batch_is_fitted_to_the_process_count():
    cfg = TrainConfig(global_batch=8, micro_batch=8)
    assert fit_micro_batch(cfg, 1).micro_batch == 8
    assert fit_micro_batch(cfg, 2).micro_batch == 4
    assert fit_micro_batch(TrainConfig(global_batch=12, micro_batch=4), 2).micro_batch == 3
    with pytest.raises(ValueError, match="cannot be split over 3 processes"):
        fit_micro_batch(cfg, 3)


def test_a_file_planted_in_a_checkpoint_is_refused_before_anything_is_loaded(tmp_path):
    tag_dir = tmp_path / "checkpoints" / "step-000004"
    (tag_dir / "weights").mkdir(parents=True)
    (tag_dir / "mp_rank_00_model_states.pt").write_bytes(b"state")
    (tag_dir / "weights" / "model.safetensors").write_bytes(b"weights")
    ckpt.write_manifest(tag_dir, {"step": 4})
    assert set(ckpt.verify(tag_dir)["files"]) == {"mp_rank_00_model_states.pt", "weights/model.safetensors"}
    (tag_dir / "zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes(b"not ours")
    with pytest.raises(ckpt.CheckpointIntegrityError, match="zero_pp_rank_1_mp_rank_00_optim_states.pt"):
        ckpt.verify(tag_dir)
