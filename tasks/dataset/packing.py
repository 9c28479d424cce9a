"""Tokenize documents in batches, pack them into fixed-length windows and write ``lmforge.tokens.v1``.

Each split's token stream is every document's tokens followed by EOS, cut into windows of `window`
tokens; only the very last window of a split is padded (with PAD) so no token is dropped.
Shards are flat little-endian uint16 (vocabulary <= 65535) or uint32 arrays appended to a local
temporary file, then put into the artifact store (which records and verifies their sha256).
The split is deterministic: a document goes to validation when the first 8 hex digits of its
sha256, read as a fraction of 2**32, fall below `validation_fraction`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lmforge_core.artifacts import ArtifactStore
from tasks.tokenizer.bpe import TokenizerRef

FORMAT = "lmforge.tokens.v1"
SPLITS = ("train", "validation")


def split_of(doc_hash: str, validation_fraction: float) -> str:
    """'validation' or 'train', from the document's sha256 hex digest."""
    return "validation" if int(doc_hash[:8], 16) / 2**32 < validation_fraction else "train"


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65535 else np.dtype("<u4")


class _SplitWriter:
    """Appends one split's token stream to a local shard file and puts the file when it holds a full shard.

    Memory: only the tokens of the document being added; a shard (`shard_windows * window` tokens)
    is filled on disk, so neither the corpus nor the shard size shows in the process's memory.
    """

    def __init__(self, name: str, prefix: str, window: int, shard_windows: int, dtype: np.dtype, pad_id: int,
                 artifacts: ArtifactStore, spool: Path) -> None:
        self.name, self.prefix, self.window, self.pad_id, self.dtype = name, prefix, window, pad_id, dtype
        self.artifacts, self.spool = artifacts, spool
        self.capacity = window * shard_windows
        self.filled = 0
        self.documents = 0
        self.shards: list[dict[str, Any]] = []
        self._path = spool / f"{name}.bin.part"
        self._handle: BinaryIO | None = None

    def add(self, ids: np.ndarray) -> None:
        self.documents += 1
        while len(ids):
            take = min(len(ids), self.capacity - self.filled)
            if self._handle is None:
                self._handle = self._path.open("wb")
            ids[:take].tofile(self._handle)
            self.filled += take
            ids = ids[take:]
            if self.filled == self.capacity:
                self._put()

    def _put(self) -> None:
        assert self._handle is not None
        self._handle.close()
        self._handle = None
        key = f"{self.prefix}/{self.name}-{len(self.shards):05d}.bin"
        info = self.artifacts.put_file(key, self._path)
        self._path.unlink()
        self.shards.append({"key": key, "sha256": info.sha256, "num_tokens": self.filled,
                            "num_windows": self.filled // self.window})
        self.filled = 0

    def close(self) -> None:
        """Put what is left: whole windows, the last one padded with PAD."""
        if self.filled:
            assert self._handle is not None
            padding = -self.filled % self.window
            np.full(padding, self.pad_id, dtype=self.dtype).tofile(self._handle)
            self.filled += padding
            self._put()

    @property
    def num_tokens(self) -> int:
        return sum(s["num_tokens"] for s in self.shards)


def _chunks(docs: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    chunk: list[tuple[str, str]] = []
    for doc in docs:
        chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_dataset(
    artifacts: ArtifactStore,
    version: str,
    documents: Iterable[tuple[str, str]],
    tokenizer: TokenizerRef,
    *,
    window: int,
    validation_fraction: float,
    shard_windows: int,
    encode_batch: int,
    batch_ids: list[int],
    forced_validation: set[str] | None = None,
) -> tuple[dict[str, Any], str]:
    """Tokenize (doc_hash, text) pairs into a dataset version; returns (manifest, manifest key).

    `forced_validation` names documents put into validation whatever their hash (the pipeline uses it
    so that a small batch still gets a non-empty validation split).
    """
    prefix = f"datasets/{version}"
    dtype = dtype_for(tokenizer.vocab_size)
    eos = np.array([tokenizer.eos_id], dtype=dtype)
    forced = forced_validation or set()
    with tempfile.TemporaryDirectory(prefix="lmforge-ds-") as spool:
        writers = {
            name: _SplitWriter(name, prefix, window, shard_windows, dtype, tokenizer.pad_id, artifacts, Path(spool))
            for name in SPLITS
        }
        for chunk in _chunks(documents, encode_batch):
            # the fast variant skips character offsets, which are not needed and cost memory per token.
            encodings = tokenizer.tokenizer.encode_batch_fast([text for _, text in chunk], add_special_tokens=False)
            for (doc_hash, _), enc in zip(chunk, encodings, strict=True):
                split = "validation" if doc_hash in forced else split_of(doc_hash, validation_fraction)
                writers[split].add(np.concatenate([np.asarray(enc.ids, dtype=dtype), eos]))
        for writer in writers.values():
            writer.close()
    manifest = {
        "format": FORMAT,
        "dataset_version": version,
        "dtype": "uint16" if dtype == np.dtype("<u2") else "uint32",
        "window": window,
        "tokenizer": tokenizer.manifest_entry(),
        "splits": {name: w.shards for name, w in writers.items()},
        "num_tokens": {name: w.num_tokens for name, w in writers.items()},
        "documents": {name: w.documents for name, w in writers.items()},
        "batches": sorted(batch_ids),
        "created_at": datetime.now(UTC).isoformat(),
    }
    key = f"{prefix}/manifest.json"
    return manifest, key


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True).encode()


def read_windows(path: Path, dtype: str, window: int) -> np.ndarray:
    """Memory-map one shard as (num_windows, window) (used by tests and readers of the format)."""
    data = np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")
    return data.reshape(-1, window)
