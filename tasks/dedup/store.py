"""Persistence of the dedup index in the artifact store: snapshot + write-ahead journal.

Layout (keys under ``dedup/``):
- ``dedup/snapshot.npz``: every committed entry (exact keys N x 16 uint8, MinHash signatures
  N x num_perm uint32, doc ids as UTF-8 bytes with N + 1 offsets) plus a JSON header naming the
  MinHash parameters and the batch ids the snapshot contains. Written into a local file straight from
  the index's arrays, then put (the store's puts are atomic); read back a block of entries at a time,
  so neither costs a second copy of the index.
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
Single writer: one ingest at a time per metadata store, enforced by `tasks.ingest.ingest_lock`.
"""

import json
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from lmforge_core.artifacts import ArtifactStore
from lmforge_core.config.data import DedupConfig
from tasks.dedup.index import DedupIndex, Entries
from tasks.dedup.npz_stream import open_npy, write_npz

SNAPSHOT_KEY = "dedup/snapshot.npz"
JOURNAL_PREFIX = "dedup/journal/"
READ_ROWS = 4096  # entries read at once when loading (2 MB of signatures at 128 permutations)


class DedupStateError(RuntimeError):
    """The persisted index cannot be used with the configured MinHash parameters."""


def _params(cfg: DedupConfig) -> dict[str, float | int]:
    return {"num_perm": cfg.num_perm, "shingle_size": cfg.shingle_size, "seed": cfg.seed}


def _write_npz(artifacts: ArtifactStore, key: str, entries: Entries, header: dict) -> None:
    """Write into a local temporary file straight from the index's arrays, then put it."""
    with tempfile.TemporaryDirectory(prefix="lmforge-dedup-") as tmp:
        path = Path(tmp) / "index.npz"
        write_npz(path, {
            "exact_keys": entries.exact_keys,
            "signatures": entries.signatures,
            "doc_id_offsets": entries.id_offsets,
            "doc_id_bytes": entries.id_bytes,
            "header": np.array(json.dumps(header)),
        })
        artifacts.put_file(key, path)


def _legacy_entries(archive: zipfile.ZipFile) -> Entries:
    """A file written before doc ids were stored as UTF-8 bytes with offsets (they were a unicode array)."""
    with open_npy(archive, "exact_keys") as keys, open_npy(archive, "signatures") as sigs, \
            open_npy(archive, "doc_ids") as ids:
        encoded = [doc_id.encode() for doc_id in ids.read_all().tolist()]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return Entries(keys.read_all(), sigs.read_all(), offsets, np.frombuffer(b"".join(encoded), dtype=np.uint8))


def _entries(archive: zipfile.ZipFile) -> Iterator[Entries]:
    """The file's entries, `READ_ROWS` at a time."""
    if "doc_ids.npy" in archive.namelist():
        yield _legacy_entries(archive)
        return
    with open_npy(archive, "exact_keys") as keys, open_npy(archive, "signatures") as sigs, \
            open_npy(archive, "doc_id_offsets") as offsets, open_npy(archive, "doc_id_bytes") as ids:
        start = offsets.read(1)
        while len(chunk_keys := keys.read(READ_ROWS)):
            ends = offsets.read(len(chunk_keys))
            bounds = np.concatenate((start, ends))
            yield Entries(chunk_keys, sigs.read(len(chunk_keys)), bounds, ids.read(int(bounds[-1] - bounds[0])))
            start = ends[-1:]


def _load_npz(artifacts: ArtifactStore, key: str, index: DedupIndex, check: Callable[[dict, str], None]) -> dict:
    """Fetch into a local temporary file (the store verifies its sha256), `check` its header, add its entries
    to `index`; returns the header."""
    with tempfile.TemporaryDirectory(prefix="lmforge-dedup-") as tmp:
        path = Path(tmp) / "index.npz"
        artifacts.get_file(key, path)
        with zipfile.ZipFile(path) as archive:
            with open_npy(archive, "header") as stream:
                header = json.loads(str(stream.read_all()))
            check(header, key)
            for entries in _entries(archive):
                index.add_many(entries)
    return header


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
        index = DedupIndex(self.cfg.num_perm, self.cfg.near_duplicate_threshold, self.cfg.containment_threshold,
                           self.cfg.lsh_bands, self.cfg.lsh_rows)
        self.batches = []
        if self.artifacts.exists(SNAPSHOT_KEY):
            header = _load_npz(self.artifacts, SNAPSHOT_KEY, index, self._check_params)
            self.batches = list(header["batches"])
        replayed = False
        for info in sorted(self.artifacts.list(JOURNAL_PREFIX), key=lambda i: i.key):
            batch_id = info.key[len(JOURNAL_PREFIX) :].removesuffix(".npz")
            if batch_id in self.batches:
                self.artifacts.delete(info.key)
            elif is_committed(batch_id):
                _load_npz(self.artifacts, info.key, index, self._check_params)
                self.batches.append(batch_id)
                replayed = True
            else:
                self.artifacts.delete(info.key)
        index.commit()
        if replayed:
            self._write_snapshot(index)
            for batch_id in self.batches:
                key = f"{JOURNAL_PREFIX}{batch_id}.npz"
                if self.artifacts.exists(key):
                    self.artifacts.delete(key)
        return index

    def write_journal(self, index: DedupIndex, batch_id: str) -> None:
        """Step 2: persist the batch's staged entries before its metadata commit."""
        header = {"params": _params(self.cfg), "batch": batch_id}
        _write_npz(self.artifacts, f"{JOURNAL_PREFIX}{batch_id}.npz", index.entries(index.committed), header)

    def commit(self, index: DedupIndex, batch_id: str) -> None:
        """Step 4: fold the batch into the snapshot and drop its journal."""
        self.batches.append(batch_id)
        index.commit()
        self._write_snapshot(index)
        self.artifacts.delete(f"{JOURNAL_PREFIX}{batch_id}.npz")

    def _write_snapshot(self, index: DedupIndex) -> None:
        header = {"params": _params(self.cfg), "batches": self.batches}
        _write_npz(self.artifacts, SNAPSHOT_KEY, index.entries(0), header)
