"""Persistence of the dedup index in the artifact store: snapshot + write-ahead journal.

Layout (keys under ``dedup/``):
- ``dedup/snapshot.npz``: every committed entry (exact keys N x 16 uint8, MinHash signatures
  N x num_perm uint32, doc ids) plus a JSON header naming the MinHash parameters and the batch ids
  the snapshot contains. Encoded into a local file, then put (the store's puts are atomic).
- ``dedup/journal/<batch id>.npz``: the entries one batch staged, written *before* the metadata
  transaction that marks the batch accepted.

Commit protocol of a batch (`run_ingest`):
1. stage entries in memory while the batch is processed (nothing persisted yet);
2. write the batch's journal;
3. commit the metadata transaction (batch accepted, dataset version, shards);
4. write a new snapshot that includes the batch, then delete its journal.

Recovery when loading: snapshot, then every journal whose batch the metadata store reports as
accepted but the snapshot does not list is replayed (crash between steps 3 and 4); a journal of a
batch that never committed (crash between 2 and 3) is ignored and deleted, and that batch's shards
are still new, so they are processed again and accepted exactly once. A crash before step 2
leaves nothing behind. Hence no document is ever admitted twice and none is lost.
Single writer: one ingest at a time per workspace (the nightly flow runs with concurrency 1).
"""

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lmforge_core.artifacts import ArtifactStore
from lmforge_core.config.data import DedupConfig
from tasks.quality.dedup import DedupIndex

SNAPSHOT_KEY = "dedup/snapshot.npz"
JOURNAL_PREFIX = "dedup/journal/"


class DedupStateError(RuntimeError):
    """The persisted index cannot be used with the configured MinHash parameters."""


def _params(cfg: DedupConfig) -> dict[str, float | int]:
    return {"num_perm": cfg.num_perm, "shingle_size": cfg.shingle_size, "seed": cfg.seed}


def _write_npz(artifacts: ArtifactStore, key: str, keys: np.ndarray, sigs: np.ndarray, doc_ids: list[str],
               header: dict) -> None:
    """Encode into a local temporary file, then put it: no in-memory copy of the encoded index."""
    with tempfile.TemporaryDirectory(prefix="lmforge-dedup-") as tmp:
        path = Path(tmp) / "index.npz"
        np.savez(
            path,
            exact_keys=keys.astype(np.uint8, copy=False).reshape(-1, 16),
            signatures=sigs.astype(np.uint32, copy=False),
            doc_ids=np.array(doc_ids, dtype=np.str_) if doc_ids else np.zeros(0, dtype="<U1"),
            header=np.array(json.dumps(header)),
        )
        artifacts.put_file(key, path)


def _read_npz(artifacts: ArtifactStore, key: str) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """Fetch into a local temporary file (the store verifies its sha256) and decode array by array."""
    with tempfile.TemporaryDirectory(prefix="lmforge-dedup-") as tmp:
        path = Path(tmp) / "index.npz"
        artifacts.get_file(key, path)
        with np.load(path, allow_pickle=False) as npz:
            header = json.loads(str(npz["header"]))
            return npz["exact_keys"], npz["signatures"], [str(x) for x in npz["doc_ids"]], header


class DedupStore:
    """Loads and saves a `DedupIndex` through the artifact store following the protocol above."""

    def __init__(self, artifacts: ArtifactStore, cfg: DedupConfig) -> None:
        self.artifacts = artifacts
        self.cfg = cfg
        self.batches: list[str] = []

    def _check_params(self, header: dict, where: str) -> None:
        if header.get("params") != _params(self.cfg):
            raise DedupStateError(
                f"the dedup index {where} was built with MinHash parameters {header.get('params')}, "
                f"but the settings ask for {_params(self.cfg)}; restore the previous LMFORGE_DATA__DEDUP__* "
                "values (signatures with other parameters cannot be compared)"
            )

    def load(self, is_committed: Callable[[str], bool]) -> DedupIndex:
        """The index of everything ever accepted, replaying journals of committed batches."""
        index = DedupIndex(self.cfg.num_perm, self.cfg.near_duplicate_threshold)
        self.batches = []
        if self.artifacts.exists(SNAPSHOT_KEY):
            keys, sigs, ids, header = _read_npz(self.artifacts, SNAPSHOT_KEY)
            self._check_params(header, SNAPSHOT_KEY)
            index.add_many(keys, sigs, ids)
            self.batches = list(header["batches"])
        replayed = False
        for info in sorted(self.artifacts.list(JOURNAL_PREFIX), key=lambda i: i.key):
            batch_id = info.key[len(JOURNAL_PREFIX) :].removesuffix(".npz")
            if batch_id in self.batches:
                self.artifacts.delete(info.key)
            elif is_committed(batch_id):
                keys, sigs, ids, header = _read_npz(self.artifacts, info.key)
                self._check_params(header, info.key)
                index.add_many(keys, sigs, ids)
                self.batches.append(batch_id)
                replayed = True
            else:
                self.artifacts.delete(info.key)
        index.committed = len(index)
        if replayed:
            self._write_snapshot(index)
            for batch_id in self.batches:
                key = f"{JOURNAL_PREFIX}{batch_id}.npz"
                if self.artifacts.exists(key):
                    self.artifacts.delete(key)
        return index

    def write_journal(self, index: DedupIndex, batch_id: str) -> None:
        """Step 2: persist the batch's staged entries before its metadata commit."""
        keys, sigs, ids = index.entries(index.committed)
        header = {"params": _params(self.cfg), "batch": batch_id}
        _write_npz(self.artifacts, f"{JOURNAL_PREFIX}{batch_id}.npz", keys, sigs, ids, header)

    def commit(self, index: DedupIndex, batch_id: str) -> None:
        """Step 4: fold the batch into the snapshot and drop its journal."""
        self.batches.append(batch_id)
        index.committed = len(index)
        self._write_snapshot(index)
        self.artifacts.delete(f"{JOURNAL_PREFIX}{batch_id}.npz")

    def _write_snapshot(self, index: DedupIndex) -> None:
        keys, sigs, ids = index.entries(0)
        header = {"params": _params(self.cfg), "batches": self.batches}
        _write_npz(self.artifacts, SNAPSHOT_KEY, keys, sigs, ids, header)
