"""Dataset versions: reading the recorded ones (for the CLI, the flows and the dashboard), and the same
ingested documents tokenized for another tokenizer (an imported model's own)."""

from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge_core.metadata import repository as repo
from lmforge_core.runtime import Runtime
from model.token_shards import manifest_bytes
from model.tokenizer import TokenizerRef
from tasks.dataset.packing import forced_validation, write_dataset


def dataset_versions(runtime: Runtime) -> list[dict[str, Any]]:
    """Every dataset version, oldest first, with token counts and lineage (batches, tokenizer)."""
    with runtime.metadata.session() as session:
        return [
            {
                "version": ds.version,
                "created_at": ds.created_at.isoformat(),
                "documents": ds.documents,
                "train_tokens": ds.train_tokens,
                "validation_tokens": ds.validation_tokens,
                "tokenizer": ds.tokenizer.version if ds.tokenizer else None,
                "batches": sorted(link.batch_id for link in ds.lineage),
                "manifest_key": ds.manifest_key,
            }
            for ds in repo.list_dataset_versions(session)
        ]


def _documents(runtime: Runtime, keys: list[str], spool: Path) -> Iterator[tuple[str, str]]:
    """(doc_hash, text) of the accepted documents stored with the batches, in batch then acceptance order."""
    for i, key in enumerate(keys):
        path = spool / f"documents-{i}.jsonl.gz"
        if not path.is_file():
            runtime.artifacts.get_file(key, path)
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                doc = json.loads(line)
                yield doc["doc_hash"], doc["text"]


def _batch_documents(session: Any, record: Any) -> tuple[list[int], list[str]]:
    batch_ids = sorted(link.batch_id for link in record.lineage)
    keys = [repo.get_batch(session, batch_id).stats.get("documents_key") for batch_id in batch_ids]
    if not batch_ids or not all(keys):
        raise ValueError(f"dataset version {record.version} does not record its batches' documents; "
                         "it cannot be tokenized for another tokenizer (ingest its source again)")
    return batch_ids, keys


def dataset_for_tokenizer(runtime: Runtime, version: str, tokenizer: TokenizerRef) -> str:
    """The dataset version holding ``version``'s documents tokenized by ``tokenizer``.

    A dataset version is keyed by its documents *and* its tokenizer: ``version`` itself when its tokenizer is
    ``tokenizer`` (same file sha256), else the derived version ``<version>.<tokenizer>`` (made once, from the documents
    its batches stored, with the same train/validation split, then found again).
    """
    label = repo.derived_dataset_label(version, tokenizer.version)
    with runtime.metadata.session() as session:
        record = repo.get_dataset_version(session, version)
        if record.tokenizer is not None and record.tokenizer.sha256 == tokenizer.sha256:
            return version
        if repo.find_dataset_version(session, label) is not None:
            return label
        batch_ids, keys = _batch_documents(session, record)
    cfg = runtime.settings.data
    with tempfile.TemporaryDirectory(prefix="lmforge-retok-") as tmp:
        forced = forced_validation((h for h, _ in _documents(runtime, keys, Path(tmp))), cfg.validation_fraction)
        manifest, key = write_dataset(
            runtime.artifacts, label, _documents(runtime, keys, Path(tmp)), tokenizer, window=cfg.window,
            validation_fraction=cfg.validation_fraction, shard_windows=cfg.shard_max_windows,
            encode_batch=cfg.encode_batch_docs, batch_ids=batch_ids, forced_validation=forced)
    info = runtime.artifacts.put_bytes(key, manifest_bytes(manifest))
    with runtime.metadata.session() as session:
        repo.create_dataset_version(
            session, version=label, manifest_key=key, manifest_sha256=info.sha256, tokenizer_id=tokenizer.record_id,
            train_tokens=manifest["num_tokens"]["train"], validation_tokens=manifest["num_tokens"]["validation"],
            documents=sum(manifest["documents"].values()), batch_ids=batch_ids)
    return label
