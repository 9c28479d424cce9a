"""Tokenize documents in batches and pack them into a dataset version (``lmforge.tokens.v1``, whose one
writer is `model.token_shards.ShardWriter`): each split's token stream is every document's tokens followed
by EOS, cut into windows; only the very last window of a split is padded (with PAD) so no token is dropped.

The split is deterministic: a document goes to validation when the first 8 hex digits of its
sha256, read as a fraction of 2**32, fall below `validation_fraction`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lmforge_core.artifacts import ArtifactStore
from model.token_shards import SPLITS, ShardWriter, build_manifest, dtype_for, manifest_key
from model.tokenizer import TokenizerRef


def split_of(doc_hash: str, validation_fraction: float) -> str:
    """'validation' or 'train', from the document's sha256 hex digest."""
    return "validation" if int(doc_hash[:8], 16) / 2**32 < validation_fraction else "train"


def _chunks(docs: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    chunk: list[tuple[str, str]] = []
    for doc in docs:
        chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def forced_validation(doc_hashes: Iterable[str], fraction: float) -> set[str]:
    """A small batch whose hashes put nothing into validation still gets its lowest-hash document there.

    One pass over the hashes (streamed from the documents table), keeping only the smallest.
    """
    if fraction <= 0:
        return set()
    count, lowest = 0, None
    for doc_hash in doc_hashes:
        if split_of(doc_hash, fraction) == "validation":
            return set()
        count += 1
        lowest = doc_hash if lowest is None else min(lowest, doc_hash)
    return {lowest} if count >= 2 and lowest is not None else set()


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
    dtype = dtype_for(tokenizer.vocab_size)
    eos = np.array([tokenizer.eos_id], dtype=dtype)
    forced = forced_validation or set()

    def put(key: str, path: Path) -> str:
        return artifacts.put_file(key, path).sha256

    with tempfile.TemporaryDirectory(prefix="lmforge-ds-") as spool:
        writers = {name: ShardWriter(name, version, window, shard_windows, dtype, tokenizer.pad_id, put, Path(spool))
                   for name in SPLITS}
        for chunk in _chunks(documents, encode_batch):
            encodings = tokenizer.encode_batch([text for _, text in chunk])
            for (doc_hash, _), ids in zip(chunk, encodings, strict=True):
                split = "validation" if doc_hash in forced else split_of(doc_hash, validation_fraction)
                writers[split].add(np.concatenate([np.asarray(ids, dtype=dtype), eos]))
        for writer in writers.values():
            writer.close()
    manifest = build_manifest(version, window, dtype, tokenizer.manifest_entry(), writers, batch_ids)
    return manifest, manifest_key(version)
