"""Real multi-process DeepSpeed runs (torchrun, gloo), SIGKILL + resume, resume on another process count."""

import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY, final_state, make_spec, max_diff, pattern_windows, write_dataset

from model import checkpointing as ckpt
from model.engine import init_single_process
from model.launch import spawn
from model.network import build_model
from model.train_loop import train

pytestmark = pytest.mark.slow
TOLERANCE = 1e-5  # fp32 reductions over 2 processes sum in another order than in one
LAUNCHERS = {2: "deepspeed", 3: "torchrun"}  # ZeRO stage -> launcher of its 2-process run (both are covered)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Data plus the single-process reference runs (ZeRO-0), trained once for the module."""
    init_single_process()
    root = tmp_path_factory.mktemp("dist")
    data = root / "data"
    write_dataset(data, "ds-000001", pattern_windows(96, seed=1, offset=3))
    write_dataset(data, "ds-000002", pattern_windows(64, seed=2, offset=5))
    train(make_spec(root / "reference", data, micro_batch=2, checkpoint_every=4))
    return root, data


def read_events(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "events.jsonl").read_text().splitlines()]


def run_subprocess(spec, processes, launcher="torchrun", timeout=240):
    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec.save(run_dir / "job.json")
    proc = spawn(run_dir / "job.json", processes, launcher, run_dir / "log.txt")
    assert proc.wait(timeout=timeout) == 0, (run_dir / "log.txt").read_text()[-3000:]
    return read_events(run_dir)


@pytest.fixture(scope="module")
def two_process_run(shared):
    """``get(stage)``: the run folder of the 2-process ZeRO-``stage`` run, trained on first use, so every test
    that needs one has it whatever ran before it."""
    root, data = shared
    done = {}

    def get(stage):
        if stage not in done:
            spec = make_spec(root / f"two-z{stage}", data, micro_batch=2, checkpoint_every=4, zero_stage=stage)
            done[stage] = run_subprocess(spec, processes=2, launcher=LAUNCHERS[stage])
        return root / f"two-z{stage}", done[stage]

    return get


@pytest.mark.parametrize("stage", [2, 3])
def test_two_process_zero_run_matches_one_process(shared, two_process_run, stage):
    root, _ = shared
    run_dir, events = two_process_run(stage)
    start = next(e for e in events if e["type"] == "start")
    assert start["world_size"] == 2 and start["zero_stage"] == stage
    assert [e["step"] for e in events if e["type"] == "step"] == list(range(1, 9))
    assert max_diff(final_state(run_dir, 8), final_state(root / "reference", 8)) < TOLERANCE


@pytest.mark.parametrize("stage", [2, 3])
def test_two_process_checkpoint_resumes_on_one_process(shared, two_process_run, stage):
    """Through DeepSpeed's universal checkpoint; ZeRO-3 also exercises `engine.load_checkpoint`'s repairs
    (per-group weight decay, one AdamW step counter per parameter sub-group)."""
    root, _ = shared
    source, _ = two_process_run(stage)
    resumed = root / f"resumed-z{stage}-on-one"
    shutil.copytree(source / "checkpoints" / "step-000004", resumed / "checkpoints" / "step-000004")
    spec = make_spec(resumed, root / "data", micro_batch=2, checkpoint_every=4, zero_stage=stage)
    spec.resume_tag = "step-000004"
    summary = train(spec)
    assert summary["step"] == 8
    events = read_events(resumed)
    assert events[0]["universal"] and events[0]["world_size"] == 1 and events[0]["zero_stage"] == stage
    assert events[0]["step"] == 4 and [e["step"] for e in events if e["type"] == "step"] == [5, 6, 7, 8]
    assert ckpt.verify(resumed / "checkpoints" / "step-000004-universal")["universal_of"] == "step-000004"
    assert max_diff(final_state(resumed, 8), final_state(source, 8)) < TOLERANCE


def _continued(shared, run, stage, regularization, **train):
    root, data = shared
    spec = make_spec(run, data, steps=4, micro_batch=2, checkpoint_every=4, zero_stage=stage,
                     regularization=regularization, reg_strength=50.0, **train)
    spec.init_weights = str(root / "reference" / "checkpoints" / "step-000004" / "weights")
    spec.continuing = True
    return spec


def _penalties(events):
    return [e["penalty"] for e in events if e["type"] == "step"]


def test_ewc_under_two_process_zero3_matches_one_process_zero0(shared):
    """Under ZeRO-3 the penalty is applied to each process's parameter slices."""
    root, _ = shared
    train(_continued(shared, root / "ewc-one", 0, "ewc"))
    events = run_subprocess(_continued(shared, root / "ewc-two-z3", 3, "ewc"), processes=2)
    assert _penalties(events)[-1] > 0
    assert _penalties(events) == pytest.approx(_penalties(read_events(root / "ewc-one")), rel=1e-4)
    assert max_diff(final_state(root / "ewc-two-z3", 4), final_state(root / "ewc-one", 4)) < TOLERANCE


def test_l2_under_three_process_zero3_with_padded_slices_matches_one_process_zero0(shared):
    """Three processes: parameters whose size 3 does not divide (the norm gains, 64 elements) are split into
    slices whose last one is zero-padded; the penalty must neither count nor move the padding."""
    root, _ = shared
    assert any(p.numel() % 3 for p in build_model(TINY).parameters()), "needs a parameter 3 does not divide"
    train(_continued(shared, root / "l2-one", 0, "l2", global_batch=6))
    events = run_subprocess(_continued(shared, root / "l2-three-z3", 3, "l2", global_batch=6), processes=3)
    assert next(e for e in events if e["type"] == "start")["world_size"] == 3
    assert _penalties(events)[-1] > 0
    assert _penalties(events) == pytest.approx(_penalties(read_events(root / "l2-one")), rel=1e-4)
    assert max_diff(final_state(root / "l2-three-z3", 4), final_state(root / "l2-one", 4)) < TOLERANCE


def _incomplete_tags(root):
    return [p.name for p in root.glob("step-*") if p.is_dir() and not (p / ckpt.MANIFEST).is_file()]


def _kill_when(proc, ready, timeout=180.0, poll=0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return
        time.sleep(poll)
    raise AssertionError(f"training ended (code {proc.poll()}) before the moment to kill it came")


@pytest.fixture(scope="module")
def uninterrupted(shared):
    root, data = shared
    train(make_spec(root / "uninterrupted", data, steps=40, micro_batch=2, checkpoint_every=4, dropout=0.1))
    return final_state(root / "uninterrupted", 40)


@pytest.mark.parametrize("moment", ["random-step", "mid-checkpoint"])
def test_sigkilled_run_resumes_at_its_checkpoint_to_the_same_weights_bitwise(shared, uninterrupted, moment):
    root, data = shared
    run, steps = root / f"killed-{moment}", 40
    spec = make_spec(run, data, steps=steps, micro_batch=2, checkpoint_every=4, dropout=0.1)
    run.mkdir()
    spec.save(run / "job.json")
    proc = spawn(run / "job.json", 1, "torchrun", run / "log.txt")
    events, checkpoints = run / "events.jsonl", run / "checkpoints"
    seed = random.randrange(2**32)
    kill_after = random.Random(seed).randint(5, steps - 8)  # after the first checkpoint, well before the end

    def steps_seen():
        text = events.read_text() if events.is_file() else ""
        return [json.loads(x)["step"] for x in text.splitlines() if '"type": "step"' in x]

    if moment == "random-step":
        _kill_when(proc, lambda: len(steps_seen()) >= kill_after)
    else:  # a tag folder being written (no manifest yet) after a complete one exists
        _kill_when(proc, lambda: ckpt.latest_tag(checkpoints) is not None and _incomplete_tags(checkpoints))
        assert _incomplete_tags(checkpoints), "the kill was meant to land while a checkpoint was being written"
    assert proc.returncode == -signal.SIGKILL
    tag = ckpt.latest_tag(checkpoints)
    assert tag is not None and tag < ckpt.tag_for(steps), f"kill seed {seed}"
    tag_step = int(tag.removeprefix("step-"))
    assert steps_seen()[-1] < steps  # it really died mid-run

    spec.resume_tag = tag
    before = len(read_events(run))
    train(spec)
    resumed = read_events(run)[before:]
    start = next(e for e in resumed if e["type"] == "start")
    assert start["step"] == tag_step and start["resumed_from"] == tag, f"kill seed {seed}"
    assert [e["step"] for e in resumed if e["type"] == "step"] == list(range(tag_step + 1, steps + 1))
    assert ckpt.complete_tags(checkpoints)[-1] == ckpt.tag_for(steps) and not _incomplete_tags(checkpoints)
    final = final_state(run, steps)
    assert all(torch.equal(final[k], uninterrupted[k]) for k in final), f"kill seed {seed}"
