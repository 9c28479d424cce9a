"""Tiny token datasets in the binding ``lmforge.tokens.v1`` format, tiny configs, run specs."""

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from lmforge_core.config.train import TrainConfig
from model.configs import ModelConfig
from model.job import DataMixConfig, JobConfig
from model.token_shards import SPLITS, ShardWriter, build_manifest, manifest_key
from model.weights import load_state_dict

VOCAB = 64
WINDOW = 33  # context 32 + 1
TINY = ModelConfig(vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, ffn_hidden=128, context=32)


def write_dataset(root: Path, version: str, windows: np.ndarray, shards: int = 2,
                  dtype: str = "uint16", pad_id: int | None = None, tokenizer: dict | None = None) -> dict:
    """Write ``windows`` (n, WINDOW) as a dataset version under ``root`` (artifact-key layout), through the
    format's one writer. The synthetic tokenizer declares no PAD token unless ``pad_id`` is given;
    ``tokenizer`` (a manifest entry of a real tokenizer) replaces it.
    """

    def put(key: str, path: Path) -> str:
        dest = root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        return hashlib.sha256(dest.read_bytes()).hexdigest()

    np_dtype = np.dtype(dtype).newbyteorder("<")
    width = windows.shape[1]
    per_shard = -(-len(windows) // shards)
    with tempfile.TemporaryDirectory() as spool:
        writers = {split: ShardWriter(split, version, width, per_shard, np_dtype, pad_id or 0, put, Path(spool))
                   for split in SPLITS}
        for row in windows:
            writers["train"].add(row)
        for writer in writers.values():
            writer.close()
    tokenizer = tokenizer or {"version": "tok-000001", "key": "tokenizers/tok-000001/tokenizer.json",
                              "sha256": "0", "vocab_size": VOCAB, "bos_id": 1, "eos_id": 2, "pad_id": pad_id}
    manifest = build_manifest(version, width, np_dtype, tokenizer, writers, [])
    (root / manifest_key(version)).write_text(json.dumps(manifest))
    return manifest


def pattern_windows(n: int, seed: int, offset: int = 3) -> np.ndarray:
    """Learnable windows: arithmetic sequences mod VOCAB with a per-window start."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, VOCAB, size=(n, 1))
    return (starts + offset * np.arange(WINDOW)[None, :]) % VOCAB


def make_spec(run_dir: Path, data_root: Path, replay: bool = True, **train) -> JobConfig:
    settings = dict(steps=8, global_batch=4, micro_batch=4, checkpoint_every=4, threads=1, warmup_steps=2,
                    lr=3e-3, seed=11) | train
    data = DataMixConfig(root=str(data_root), dataset_version="ds-000002",
                         replay_versions=["ds-000001"] if replay else [])
    return JobConfig(run_dir=str(run_dir), model=TINY, train=TrainConfig(**settings), data=data)


def final_state(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_state_dict(run_dir / "checkpoints" / f"step-{step:06d}" / "weights")[0]


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)
