"""Real multi-process DeepSpeed runs (torchrun, gloo), SIGKILL + resume, resume on another process count."""

import json
import os
import shutil
import signal
import time

import pytest
import torch
from helpers import final_state, make_spec, max_diff, pattern_windows, write_dataset

from model import checkpointing as ckpt
from model.engine import init_single_process
from model.launch import spawn
from model.train_loop import train

pytestmark = pytest.mark.slow
TOLERANCE = 1e-5  # fp32 reductions over 2 processes sum in another order than in one


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


def run_subprocess(spec, processes, launcher="torchrun", timeout=240):
    run_dir = __import__("pathlib").Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec.save(run_dir / "spec.json")
    proc = spawn(run_dir / "spec.json", processes, launcher, run_dir / "log.txt")
    assert proc.wait(timeout=timeout) == 0, (run_dir / "log.txt").read_text()[-3000:]
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("stage", "launcher"), [(2, "deepspeed"), (3, "torchrun")])
def test_two_process_zero_run_matches_one_process(shared, stage, launcher):
    root, data = shared
    spec = make_spec(root / f"two-z{stage}", data, micro_batch=2, checkpoint_every=4, zero_stage=stage)
    events = run_subprocess(spec, processes=2, launcher=launcher)
    start = next(e for e in events if e["type"] == "start")
    assert start["world_size"] == 2 and start["zero_stage"] == stage
    assert [e["step"] for e in events if e["type"] == "step"] == list(range(1, 9))
    assert max_diff(final_state(root / f"two-z{stage}", 8), final_state(root / "reference", 8)) < TOLERANCE


@pytest.mark.parametrize("stage", [2, 3])
def test_two_process_checkpoint_resumes_on_one_process(shared, stage):
    """Through DeepSpeed's universal checkpoint; ZeRO-3 also exercises `engine.load_checkpoint`'s repairs
    (per-group weight decay, one AdamW step counter per parameter sub-group)."""
    root, _ = shared
    source = root / f"two-z{stage}"
    if not (source / "checkpoints" / "step-000004").is_dir():
        pytest.skip(f"needs the 2-process ZeRO-{stage} run of the test above")
    resumed = root / f"resumed-z{stage}-on-one"
    shutil.copytree(source / "checkpoints" / "step-000004", resumed / "checkpoints" / "step-000004")
    spec = make_spec(resumed, root / "data", micro_batch=2, checkpoint_every=4, zero_stage=stage)
    spec.resume_tag = "step-000004"
    summary = train(spec)
    assert summary["step"] == 8
    start = json.loads((resumed / "events.jsonl").read_text().splitlines()[0])
    assert start["universal"] and start["world_size"] == 1 and start["zero_stage"] == stage
    assert (resumed / "checkpoints" / "step-000004-universal").is_dir()
    assert max_diff(final_state(resumed, 8), final_state(source, 8)) < TOLERANCE


def test_ewc_under_two_process_zero3_matches_one_process_zero0(shared):
    """Under ZeRO-3 the penalty is applied to each process's parameter slices (the last one padded)."""
    root, data = shared
    start = root / "reference" / "checkpoints" / "step-000004" / "weights"

    def spec_for(run, stage):
        spec = make_spec(run, data, steps=4, micro_batch=2, checkpoint_every=4, zero_stage=stage,
                         regularization="ewc", reg_strength=50.0)
        spec.init_weights, spec.continuing = str(start), True
        return spec

    train(spec_for(root / "ewc-one", 0))
    events = run_subprocess(spec_for(root / "ewc-two-z3", 3), processes=2)
    one = [json.loads(x) for x in (root / "ewc-one" / "events.jsonl").read_text().splitlines()]
    penalties = [e["penalty"] for e in events if e["type"] == "step"]
    assert penalties[-1] > 0
    assert penalties == pytest.approx([e["penalty"] for e in one if e["type"] == "step"], rel=1e-4)
    assert max_diff(final_state(root / "ewc-two-z3", 4), final_state(root / "ewc-one", 4)) < TOLERANCE


def test_sigkilled_run_resumes_to_the_same_weights_bitwise(shared):
    root, data = shared
    run = root / "killed"
    steps = 40  # long enough after the first checkpoint that the kill always lands mid-run
    spec = make_spec(run, data, steps=steps, micro_batch=2, checkpoint_every=4, dropout=0.1)
    run.mkdir()
    spec.save(run / "spec.json")
    proc = spawn(run / "spec.json", 1, "torchrun", run / "log.txt")
    events = run / "events.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if events.is_file() and '"type": "checkpoint"' in events.read_text():
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be killed: " + (run / "log.txt").read_text()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    tag = ckpt.latest_tag(run / "checkpoints")
    assert tag is not None and tag < ckpt.tag_for(steps)
    steps_seen = [json.loads(x)["step"] for x in events.read_text().splitlines() if '"type": "step"' in x]
    assert steps_seen[-1] < steps  # it really died mid-run

    spec.resume_tag = tag
    train(spec)
    reference = root / "uninterrupted"
    train(make_spec(reference, data, steps=steps, micro_batch=2, checkpoint_every=4, dropout=0.1))
    a, b = final_state(run, steps), final_state(reference, steps)
    assert all(torch.equal(a[k], b[k]) for k in a)
