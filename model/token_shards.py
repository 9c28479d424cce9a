"""The tokenized-shard format ``lmforge.tokens.v1``: its one writer and its one reader.

A dataset version is ``datasets/<version>/manifest.json`` plus flat little-endian uint16 (vocabulary
<= 65535) or uint32 shard files per split (``train``, ``validation``). Each split's token stream is cut
into windows of ``window`` tokens; a shard holds whole windows. The manifest lists every shard with its
key, sha256, token and window counts, and the tokenizer the ids belong to.

Written by ingestion (`tasks/dataset/packing.py`), read by training, evaluation and the benchmarks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np

FORMAT = "lmforge.tokens.v1"
SPLITS = ("train", "validation")

# (artifact key, local file) -> sha256 of what was stored; the artifact store's put_file, or a plain copy.
PutFile = Callable[[str, Path], str]


class DataError(ValueError):
    """A dataset manifest or shard is malformed or does not fit the model."""


def safe_key_path(root: Path, key: str) -> Path:
    """``root / key`` for a relative POSIX artifact key, refusing absolute paths and ``..``."""
    parts = PurePosixPath(key).parts
    if not parts or PurePosixPath(key).is_absolute() or ".." in parts:
        raise DataError(f"artifact key {key!r} is not a plain relative path")
    return Path(root, *parts)


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65535 else np.dtype("<u4")


def dtype_name(dtype: np.dtype) -> str:
    return "uint16" if dtype == np.dtype("<u2") else "uint32"


def manifest_key(version: str) -> str:
    return f"datasets/{version}/manifest.json"


class ShardWriter:
    """Appends one split's token stream to a local spool file and stores it when it holds a full shard.

    Memory: only the tokens being added; a shard (`shard_windows * window` tokens) is filled on disk,
    so neither the corpus nor the shard size shows in the process's memory.
    """

    def __init__(self, split: str, version: str, window: int, shard_windows: int, dtype: np.dtype, pad_id: int,
                 put: PutFile, spool: Path) -> None:
        self.split, self.prefix, self.window, self.pad_id, self.dtype = split, f"datasets/{version}", window, pad_id, dtype
        self.put, self.spool = put, spool
        self.capacity = window * shard_windows
        self.filled = 0
        self.documents = 0
        self.shards: list[dict[str, Any]] = []
        self._path = spool / f"{split}.bin.part"
        self._handle: BinaryIO | None = None

    def add(self, ids: np.ndarray) -> None:
        """Append one document's ids (already ending in EOS)."""
        self.documents += 1
        ids = np.asarray(ids, dtype=self.dtype)
        while len(ids):
            take = min(len(ids), self.capacity - self.filled)
            if self._handle is None:
                self._handle = self._path.open("wb")
            ids[:take].tofile(self._handle)
            self.filled += take
            ids = ids[take:]
            if self.filled == self.capacity:
                self._store()

    def _store(self) -> None:
        assert self._handle is not None
        self._handle.close()
        self._handle = None
        key = f"{self.prefix}/{self.split}-{len(self.shards):05d}.bin"
        sha256 = self.put(key, self._path)
        self._path.unlink()
        self.shards.append({"key": key, "sha256": sha256, "num_tokens": self.filled,
                            "num_windows": self.filled // self.window})
        self.filled = 0

    def close(self) -> None:
        """Store what is left: whole windows, the last one padded with PAD."""
        if self.filled:
            assert self._handle is not None
            padding = -self.filled % self.window
            np.full(padding, self.pad_id, dtype=self.dtype).tofile(self._handle)
            self.filled += padding
            self._store()

    @property
    def num_tokens(self) -> int:
        return sum(s["num_tokens"] for s in self.shards)


def build_manifest(version: str, window: int, dtype: np.dtype, tokenizer: dict[str, Any],
                   writers: dict[str, ShardWriter], batch_ids: list[int]) -> dict[str, Any]:
    """The manifest of a dataset version whose splits were written by ``writers``."""
    return {
        "format": FORMAT,
        "dataset_version": version,
        "dtype": dtype_name(dtype),
        "window": window,
        "tokenizer": tokenizer,
        "splits": {name: w.shards for name, w in writers.items()},
        "num_tokens": {name: w.num_tokens for name, w in writers.items()},
        "documents": {name: w.documents for name, w in writers.items()},
        "batches": sorted(batch_ids),
        "created_at": datetime.now(UTC).isoformat(),
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True).encode()


def load_manifest(root: Path, dataset_version: str) -> dict[str, Any]:
    path = safe_key_path(root, manifest_key(dataset_version))
    if not path.is_file():
        raise DataError(f"manifest of dataset {dataset_version} not found at {path}")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise DataError(f"dataset manifest format {manifest.get('format')!r} is not {FORMAT!r}")
    return manifest


def read_windows(path: Path, dtype: str, window: int) -> np.ndarray:
    """Memory-map one shard as (num_windows, window)."""
    data = np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")
    return data.reshape(-1, window)


class TokenWindows:
    """The windows of one split of one dataset version, across its memory-mapped shards."""

    def __init__(self, manifest: dict[str, Any], root: Path, split: str = "train") -> None:
        if manifest.get("format") != FORMAT:
            raise DataError(f"dataset manifest format {manifest.get('format')!r} is not {FORMAT!r}")
        self.dataset_version = manifest["dataset_version"]
        self.split = split
        self.window = int(manifest["window"])
        dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
        self.arrays: list[np.ndarray] = []
        counts = []
        for shard in manifest["splits"].get(split, []):
            path = safe_key_path(root, shard["key"])
            if not path.is_file():
                raise DataError(f"{self.dataset_version}: shard {path} is missing")
            expected = int(shard["num_windows"]) * self.window * dtype.itemsize
            if path.stat().st_size != expected:
                raise DataError(f"{path}: {path.stat().st_size} bytes, expected {expected} "
                                f"({shard['num_windows']} windows of {self.window} {dtype.name} tokens)")
            if shard["num_windows"]:
                arr = read_windows(path, manifest["dtype"], self.window)
                self.arrays.append(arr)
                counts.append(arr.shape[0])
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        tokenizer = manifest.get("tokenizer", {})
        self.vocab_size = int(tokenizer.get("vocab_size", 0))
        self.tokenizer_version = tokenizer.get("version")
        self.pad_id: int | None = tokenizer.get("pad_id")

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def get(self, indices: np.ndarray) -> np.ndarray:
        shard = np.searchsorted(self.offsets, indices, side="right") - 1
        return np.stack([self.arrays[s][i - self.offsets[s]] for s, i in zip(shard, indices, strict=True)])
