"""Token shards, the replay mixing plan and the distributed sampler."""

import json

import numpy as np
import pytest
import torch
from helpers import VOCAB, WINDOW, pattern_windows, write_dataset

from model.data import DataMix, build_plan
from model.losses import IGNORE_INDEX
from model.token_shards import DataError, TokenWindows, load_manifest


def test_windows_read_back_across_shards_and_dtypes(tmp_path):
    windows = pattern_windows(10, seed=0)
    write_dataset(tmp_path, "ds-000001", windows, shards=3, dtype="uint32")
    tw = TokenWindows(load_manifest(tmp_path, "ds-000001"), tmp_path)
    assert len(tw) == 10
    np.testing.assert_array_equal(tw.get(np.array([9, 0, 4])), windows[[9, 0, 4]])


def test_truncated_shard_is_refused_with_its_name(tmp_path):
    write_dataset(tmp_path, "ds-000001", pattern_windows(10, seed=0))
    shard = tmp_path / "datasets/ds-000001/train-00001.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(DataError, match="train-00001.bin"):
        TokenWindows(load_manifest(tmp_path, "ds-000001"), tmp_path)


def test_shard_key_escaping_the_data_root_is_refused(tmp_path):
    manifest = write_dataset(tmp_path, "ds-000001", pattern_windows(4, seed=0), shards=1)
    manifest["splits"]["train"][0]["key"] = "../../etc/passwd"
    with pytest.raises(DataError, match="not a plain relative path"):
        TokenWindows(manifest, tmp_path)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.4])
def test_replay_fraction_is_met_and_replay_comes_from_earlier_versions(fraction):
    plan = build_plan(4000, new_windows=100, replay_sizes=[30, 70], replay_fraction=fraction, seed=5)
    replay = plan[:, 0] > 0
    assert abs(replay.mean() - fraction) < 0.005
    assert abs(replay[:400].mean() - fraction) < 0.01  # evenly spread, not bunched at one end
    if fraction:
        counts = np.bincount(plan[replay, 0], minlength=3)[1:]
        assert abs(counts[0] / counts.sum() - 0.3) < 0.05  # each earlier window equally likely
        assert plan[plan[:, 0] == 1, 1].max() < 30 and plan[plan[:, 0] == 2, 1].max() < 70
    # every new window is used once per epoch before any repeats
    first_epoch = plan[~replay, 1][:100]
    assert sorted(first_epoch) == list(range(100))


def test_plan_is_reproducible_and_a_longer_plan_extends_it():
    a = build_plan(500, 50, [20], 0.25, seed=1)
    assert np.array_equal(a, build_plan(500, 50, [20], 0.25, seed=1))
    assert np.array_equal(a, build_plan(900, 50, [20], 0.25, seed=1)[:500])
    assert not np.array_equal(a, build_plan(500, 50, [20], 0.25, seed=2))


def test_no_earlier_data_means_no_replay():
    plan = build_plan(100, 10, [], 0.25, seed=0)
    assert (plan[:, 0] == 0).all()


def test_step_batches_are_the_same_for_any_process_count(data_root, tmp_path):
    mix = DataMix.create(data_root, "ds-000002", ["ds-000001"], 0.25, n_samples=64, seed=3)
    mix.save_plan(tmp_path)
    assert np.array_equal(np.load(tmp_path / "plan.npy"), mix.plan)
    one = torch.cat([mix.micro_batch(3, 8, m, 4, 0, 1)[0] for m in range(2)])
    two = torch.cat([mix.micro_batch(3, 8, 0, 4, r, 2)[0] for r in range(2)])
    assert torch.equal(one, two)
    x, y = mix.micro_batch(0, 8, 0, 8, 0, 1)
    assert x.shape == (8, WINDOW - 1) and torch.equal(x[:, 1:], y[:, :-1])


def test_padding_targets_carry_no_loss_and_tokenizers_must_match(tmp_path):
    pad = VOCAB - 1
    windows = pattern_windows(8, seed=5) % pad  # text never contains PAD...
    windows[-1, -10:] = pad  # ...only the packer's padding of the split's last window does
    write_dataset(tmp_path, "ds-000001", windows, shards=1, pad_id=pad)
    mix = DataMix.create(tmp_path, "ds-000001", [], 0.0, n_samples=8, seed=0)
    inputs, targets = mix.micro_batch(0, global_batch=8, micro=0, micro_batch=8, rank=0, world=1)
    padded = inputs.new_zeros(targets.shape, dtype=torch.bool)
    for row in range(8):
        padded[row] = torch.from_numpy(mix.samples(row, 1)[0, 1:] == pad)
    assert padded.sum() == 10
    assert (targets[padded] == IGNORE_INDEX).all() and (targets[~padded] != IGNORE_INDEX).all()
    other = write_dataset(tmp_path, "ds-000002", pattern_windows(8, seed=6), shards=1, pad_id=pad)
    other["tokenizer"]["version"] = "tok-000002"
    (tmp_path / "datasets" / "ds-000002" / "manifest.json").write_text(json.dumps(other))
    with pytest.raises(DataError, match="different tokenizers"):
        DataMix.create(tmp_path, "ds-000002", ["ds-000001"], 0.25, n_samples=8, seed=0)
