"""BPE training, packing into the binding ``lmforge.tokens.v1`` format, and the built-in sample source."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from lmforge_core.artifacts.local import LocalArtifactStore
from lmforge_core.config.data import TokenizerConfig
from model.token_shards import read_windows
from model.tokenizer import load_tokenizer, make_ref, store_tokenizer, train_bpe
from tasks.dataset.packing import split_of, write_dataset
from tasks.ingest.sample import TOPICS, write_sample


def test_bpe_packing_and_manifest(tmp_path: Path, make_prose) -> None:
    cfg = TokenizerConfig(vocab_size=500)
    texts = [make_prose(s, 150) for s in range(60)]
    tokenizer = train_bpe(texts, cfg)
    ref = make_ref(tokenizer, "tok-000001", cfg)
    assert (ref.bos_id, ref.eos_id, ref.pad_id) == (0, 1, 2)
    assert ref.vocab_size <= 500
    assert tokenizer.decode(tokenizer.encode(texts[0]).ids) == texts[0]  # byte-level: lossless

    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    store_tokenizer(artifacts, ref)
    assert load_tokenizer(artifacts, ref.version, ref.key, cfg).sha256 == ref.sha256

    docs = [(hashlib.sha256(t.encode()).hexdigest(), t) for t in texts]
    window = 65
    manifest, key = write_dataset(artifacts, "ds-000001", docs, ref, window=window, validation_fraction=0.2,
                                  shard_windows=8, encode_batch=16, batch_ids=[3])
    assert key == "datasets/ds-000001/manifest.json"
    assert manifest["format"] == "lmforge.tokens.v1" and manifest["dtype"] == "uint16"
    assert manifest["tokenizer"]["key"] == "tokenizers/tok-000001/tokenizer.json" and manifest["batches"] == [3]
    expected_val = [t for h, t in docs if split_of(h, 0.2) == "validation"]
    assert manifest["documents"]["validation"] == len(expected_val) > 0

    for split in ("train", "validation"):
        shards = manifest["splits"][split]
        assert len(shards) >= 1
        stream = []
        for shard in shards:
            path = tmp_path / Path(shard["key"]).name
            info = artifacts.get_file(shard["key"], path)
            assert info.sha256 == shard["sha256"]
            windows = read_windows(path, "uint16", window)
            assert windows.shape == (shard["num_windows"], window)
            assert shard["num_tokens"] == windows.size
            stream.append(windows.reshape(-1))
        tokens = np.concatenate(stream)
        assert manifest["num_tokens"][split] == len(tokens)
        expected_docs = expected_val if split == "validation" else [t for h, t in docs if split_of(h, 0.2) == "train"]
        # documents separated by EOS, padding only at the very end
        unpadded = tokens[: len(tokens) - int(np.argmax(tokens[::-1] != ref.pad_id))]
        pieces = np.split(unpadded, np.flatnonzero(unpadded == ref.eos_id) + 1)[:-1]
        assert [tokenizer.decode(p[:-1].tolist()) for p in pieces] == expected_docs
        assert len(shards) == -(-len(tokens) // (8 * window))


def test_sample_source_writes_several_non_empty_dated_drops(tmp_path: Path) -> None:
    summary = write_sample(tmp_path, 3, docs_per_drop=40)
    assert [s["drop"] for s in summary] == [f"day-{i + 1:02d}-{t.slug}" for i, t in enumerate(TOPICS[:3])]
    texts_by_drop = []
    for i, drop in enumerate(summary):
        lines = Path(drop["path"]).read_text().splitlines()
        assert 20 <= len(lines) == drop["documents"] <= 40
        records = [json.loads(line) for line in lines]
        assert {r["created_at"] for r in records} == {f"2026-01-0{i + 1}"}
        assert all(len(r["text"].split()) >= 40 for r in records)
        texts_by_drop.append({r["text"] for r in records})
    assert not texts_by_drop[0] & texts_by_drop[1]
    first = Path(summary[0]["path"]).read_bytes()
    write_sample(tmp_path, 1, docs_per_drop=40)
    assert Path(summary[0]["path"]).read_bytes() == first  # deterministic: regenerating changes nothing
