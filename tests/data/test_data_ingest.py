"""`run_ingest` end to end on real stores: accounting, idempotence, dedup across batches and crashes,
the GX quality gate, S3 sources through moto's server, the sample source and the CLI."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lmforge_core.metadata import removal_repository as removal_repo
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import BatchStatus
from tasks.dedup import DedupStore
from tasks.ingest.pipeline import run_ingest
from tasks.ingest.readers import read_shard
from tasks.ingest.records import ShardError
from tasks.ingest.sample import write_sample


def docs(make_prose, seeds, words: int = 120) -> list[dict]:
    return [{"id": f"d{s}", "source": "test", "text": make_prose(s, words)} for s in seeds]


def batch_record(rt, batch_id: int):
    with rt.metadata.session() as session:
        batch = repo.get_batch(session, batch_id)
        rejects = {r.reason: r.count for r in batch.rejects}
        shards = [(s.uri.rsplit("/", 1)[-1], s.records_read, s.records_accepted, s.records_rejected, s.error)
                  for s in batch.shards]
        return batch.status, batch.records_read, batch.records_accepted, rejects, sorted(shards)


def quarantined(rt, key: str) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(rt.artifacts.get_bytes(key)).decode().splitlines()]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bad_inputs_end_in_named_reasons_and_counts_add_up(backend, request, tmp_path, data_runtime_factory,
                                                          make_prose, jsonl_writer) -> None:
    url = "" if backend == "sqlite" else request.getfixturevalue("fresh_postgres_url")
    rt = data_runtime_factory(database_url=url)
    src = tmp_path / "src"
    good = docs(make_prose, range(8))
    jsonl_writer(src / "mixed.jsonl", [*good[:4], '{"text": "unterminated', '{"id": 3}', '{"text": ""}',
                                       '{"text": 7}', "[1, 2]", *good[4:]])
    (src / "latin.jsonl").write_bytes(b'{"text": "caf\xe9"}\n' + json.dumps(docs(make_prose, [40])[0]).encode() + b"\n")
    (src / "huge.jsonl").write_text(json.dumps({"text": "w " * 6_000_000}) + "\n")
    (src / "binary.jsonl").write_bytes(b"\x00\x01\x02\x03" * 100)
    (src / "empty.jsonl").write_bytes(b"")
    big = gzip.compress("".join(json.dumps(d) + "\n" for d in docs(make_prose, range(100, 400))).encode())
    (src / "cut.jsonl.gz").write_bytes(big[: len(big) // 2])
    (src / "short.md").write_text("Too short.")
    (src / "guide.md").write_text(make_prose(50, 200))

    result = run_ingest(rt, str(src))
    assert result.status == "accepted", result.message
    by_name = {s["name"]: s for s in result.shards}
    for shard in by_name.values():
        assert shard["accepted"] + sum(shard["rejected"].values()) == shard["read"]
    assert by_name["mixed.jsonl"]["rejected"] == {"invalid_json": 1, "missing_text": 1, "empty_text": 1,
                                                  "non_string_text": 1, "not_an_object": 1}
    assert by_name["mixed.jsonl"]["accepted"] == 8
    assert by_name["latin.jsonl"]["rejected"] == {"non_utf8": 1}
    assert by_name["huge.jsonl"]["rejected"] == {"line_too_long": 1}
    assert by_name["short.md"]["rejected"] == {"filter:word_count": 1}
    assert by_name["guide.md"]["accepted"] == 1
    assert (by_name["binary.jsonl"]["error_reason"], by_name["binary.jsonl"]["read"]) == ("binary_file", 0)
    assert by_name["empty.jsonl"]["error_reason"] == "empty_file"
    assert by_name["cut.jsonl.gz"]["error_reason"] == "truncated_gzip"
    readable = []
    with pytest.raises(ShardError):
        readable.extend(read_shard(src / "cut.jsonl.gz", "cut.jsonl.gz", 10_000_000))
    assert 0 < by_name["cut.jsonl.gz"]["read"] == by_name["cut.jsonl.gz"]["accepted"] == len(readable) < 300
    assert result.shard_failures == {"binary_file": 1, "empty_file": 1, "truncated_gzip": 1}

    status, read, accepted, rejects, shards = batch_record(rt, result.batch_id)
    assert status is BatchStatus.ACCEPTED
    assert accepted + sum(rejects.values()) == read == result.records_read
    assert rejects == result.rejected
    assert ("binary.jsonl", 0, 0, 0, "binary_file: binary.jsonl holds binary data (NUL bytes), not text") in shards
    reasons = {q["reason"] for q in quarantined(rt, result.quarantine_keys[0])}
    assert reasons == set(result.rejected)

    again = run_ingest(rt, str(src))
    assert again.status == "nothing_new" and "nothing new" in again.message
    assert {s["status"] for s in again.shards} == {"skipped"}

    jsonl_writer(src / "mixed.jsonl", [*good, *docs(make_prose, range(60, 70))])  # changed file, same name
    changed = run_ingest(rt, str(src))
    assert changed.status == "accepted"
    assert [s["name"] for s in changed.shards if s["status"] == "ingested"] == ["mixed.jsonl"]
    assert changed.rejected == {"exact_duplicate": 8}
    assert changed.records_accepted == 10


def test_dedup_spans_batches_and_survives_crashes(tmp_path, data_runtime_factory, make_prose, jsonl_writer,
                                                  monkeypatch) -> None:
    rt = data_runtime_factory()
    first = docs(make_prose, range(10), words=200)
    jsonl_writer(tmp_path / "a" / "part.jsonl", first)
    assert run_ingest(rt, str(tmp_path / "a")).records_accepted == 10

    words = first[1]["text"].split()
    words[50] = "changed"
    near = {"id": "near", "text": " ".join(words)}
    jsonl_writer(tmp_path / "b" / "part.jsonl", [first[0], near, *docs(make_prose, range(20, 25), words=200)])
    second = run_ingest(rt, str(tmp_path / "b"))
    assert second.rejected == {"exact_duplicate": 1, "near_duplicate": 1}
    assert second.records_accepted == 5
    dup = {q["id"]: q for q in quarantined(rt, second.quarantine_keys[0])}
    # every removal names its twin (batch, shard, position = line number, id) and the similarity, in the quarantine file,
    # the metadata store and the result (`lmforge ingest --json`)
    assert dup["near"]["duplicate_of"] == {"batch_id": 1, "shard": "part.jsonl", "position": 2, "id": "d1"}
    assert 0.8 <= dup["near"]["similarity"] < 1
    assert dup["d0"]["duplicate_of"] == {"batch_id": 1, "shard": "part.jsonl", "position": 1, "id": "d0"}
    assert dup["d0"]["similarity"] == 1.0
    with rt.metadata.session() as session:
        stored = {r.doc_id: r for r in removal_repo.list_removals(session, second.batch_id)}
    assert set(stored) == {"d0", "near"} and second.removals_recorded == 2
    near_row = stored["near"]
    assert (near_row.reason, near_row.twin_batch_id, near_row.twin_shard, near_row.twin_position,
            near_row.twin_doc_id) == ("near_duplicate", 1, "part.jsonl", 2, "d1")
    assert near_row.similarity == dup["near"]["similarity"]
    explained = {r["doc_id"]: r["explanation"] for r in second.removals}
    assert explained["near"] == f"near duplicate: {near_row.similarity:.0%} like document d1 (part.jsonl #2) of batch 1"
    assert explained["d0"] == "exact duplicate: the same text as document d0 (part.jsonl #1) of batch 1"

    # crash in the middle of a batch (the process is interrupted while reading): nothing is committed.
    jsonl_writer(tmp_path / "c" / "part-0.jsonl", docs(make_prose, range(30, 33), words=200))
    jsonl_writer(tmp_path / "c" / "part-1.jsonl", docs(make_prose, range(33, 36), words=200))

    def interrupt(name: str, i: int, total: int) -> None:
        if i == 1:  # the first shard has been read, assessed and staged in the dedup index
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_ingest(rt, str(tmp_path / "c"), progress=interrupt)
    retried = run_ingest(rt, str(tmp_path / "c"))
    assert retried.records_accepted == 6 and retried.rejected == {}

    # crash after the metadata commit, before the dedup snapshot: the journal is replayed on restart.
    jsonl_writer(tmp_path / "d" / "part.jsonl", docs(make_prose, range(40, 44), words=200))

    def die(self, index, label):
        raise SystemExit("simulated crash before the dedup snapshot")

    monkeypatch.setattr(DedupStore, "commit", die)
    with pytest.raises(SystemExit):
        run_ingest(rt, str(tmp_path / "d"))
    monkeypatch.undo()
    jsonl_writer(tmp_path / "e" / "part.jsonl", docs(make_prose, range(40, 45), words=200))  # other bytes
    replay = run_ingest(rt, str(tmp_path / "e"))
    # the four are duplicates of the committed batch; the one new document alone fails the gate.
    assert replay.status == "quarantined" and replay.records_accepted == 0
    assert replay.rejected == {"exact_duplicate": 4, "quality_gate_failed": 1}
    with rt.metadata.session() as session:
        accepted_total = sum(b.records_accepted for b in repo.list_batches(session, limit=50)
                             if b.status == BatchStatus.ACCEPTED)
        statuses = sorted(b.status.value for b in repo.list_batches(session, limit=50))
    assert accepted_total == 10 + 5 + 6 + 4  # every document accepted exactly once
    assert statuses.count("failed") == 1  # the interrupted batch, closed as abandoned


def test_quality_gate_quarantines_a_batch_built_to_fail(tmp_path, data_runtime_factory, make_prose,
                                                         jsonl_writer) -> None:
    rt = data_runtime_factory()
    bad = [{"id": f"s{i}", "text": f"tiny record number {i}"} for i in range(20)]
    jsonl_writer(tmp_path / "bad" / "part.jsonl", [*bad, *docs(make_prose, range(5))])
    result = run_ingest(rt, str(tmp_path / "bad"))
    assert result.status == "quarantined" and result.gate_failed
    assert result.dataset_version is None
    failing = {(f["suite"], f["expectation_type"], f["column"]): f["observed_value"] for f in result.gate["failures"]}
    key = ("lmforge_batch_figures", "expect_column_values_to_be_between", "reject_rate")
    assert failing[key] == pytest.approx(20 / 25)
    assert "reject_rate" in result.message
    assert result.rejected == {"filter:word_count": 20, "quality_gate_failed": 5}

    status, read, accepted, rejects, _ = batch_record(rt, result.batch_id)
    assert (status, read, accepted, rejects) == (BatchStatus.QUARANTINED, 25, 0, result.rejected)
    with rt.metadata.session() as session:
        validations = repo.validations_for_batch(session, result.batch_id)
        assert not repo.list_dataset_versions(session)
    assert {v.suite_name: v.success for v in validations} == {"lmforge_batch_documents": True,
                                                             "lmforge_batch_figures": False}
    recorded = {r.column: r.observed_value["value"] for v in validations for r in v.results if not r.success}
    assert recorded == {"reject_rate": pytest.approx(0.8)}
    assert validations[0].report_key == result.data_docs_key
    assert rt.artifacts.exists(result.data_docs_key)
    assert any(k.endswith("gate_failed.jsonl.gz") for k in result.quarantine_keys)

    # the quarantined documents never entered the dedup index: a good batch with them passes.
    jsonl_writer(tmp_path / "good" / "part.jsonl", docs(make_prose, range(5)))
    good = run_ingest(rt, str(tmp_path / "good"))
    assert good.status == "accepted" and good.records_accepted == 5
    assert good.gate["success"] and good.dataset_version == "ds-000001"
    assert rt.artifacts.exists(f"quality/batch-{good.batch_id:06d}/data_docs/index.html")
    assert rt.artifacts.exists(result.data_docs_key)  # the failed run's docs are kept, not overwritten


def test_s3_source_through_moto(s3_server, s3_bucket, tmp_path, data_runtime_factory, make_prose) -> None:
    client = s3_server.client()
    payload = "".join(json.dumps(d) + "\n" for d in docs(make_prose, range(6))).encode()
    client.put_object(Bucket=s3_bucket, Key="incoming/day-1/a.jsonl.gz", Body=gzip.compress(payload))
    table = pa.table({"text": [make_prose(s, 120) for s in range(10, 14)], "id": ["p0", "p1", "p2", "p3"]})
    local = tmp_path / "t.parquet"
    pq.write_table(table, local)
    client.upload_file(str(local), s3_bucket, "incoming/day-1/b.parquet")
    client.put_object(Bucket=s3_bucket, Key="incoming/day-1/cold.jsonl", Body=payload, StorageClass="GLACIER")
    client.put_object(Bucket=s3_bucket, Key="elsewhere/x.jsonl", Body=payload)

    rt = data_runtime_factory()
    result = run_ingest(rt, f"s3://{s3_bucket}/incoming", s3_client=client)
    assert result.status == "accepted", result.message
    by_name = {s["name"]: s for s in result.shards}
    assert set(by_name) == {"day-1/a.jsonl.gz", "day-1/b.parquet", "day-1/cold.jsonl"}
    assert by_name["day-1/a.jsonl.gz"]["accepted"] == 6 and by_name["day-1/b.parquet"]["accepted"] == 4
    assert by_name["day-1/cold.jsonl"]["error_reason"] == "s3_read_error"
    assert result.source_uri == f"s3://{s3_bucket}/incoming"
    again = run_ingest(rt, f"s3://{s3_bucket}/incoming", s3_client=client)
    # the two readable shards are known; the unreadable one is tried again (and fails again, named).
    assert {s["name"]: s["status"] for s in again.shards} == {
        "day-1/a.jsonl.gz": "skipped", "day-1/b.parquet": "skipped", "day-1/cold.jsonl": "failed"}


def test_sample_source_one_drop_per_run_with_cli(tmp_path, data_runtime_factory, monkeypatch) -> None:
    sample = tmp_path / "sample"
    write_sample(sample, 2, docs_per_drop=30)
    rt = data_runtime_factory(sample_source_dir=str(sample))
    first = run_ingest(rt)
    assert first.status == "accepted" and first.drop == "day-01-os-files", first.message
    with rt.metadata.session() as session:  # the sample is reference documentation: the technical profile
        assert repo.get_batch(session, first.batch_id).stats["filter_profile"] == "technical"
    assert first.remaining_drops == ["day-02-networking-email"]
    assert first.tokenizer_trained and first.tokenizer_version == "tok-000001"
    manifest = json.loads(rt.artifacts.get_bytes(first.dataset["manifest_key"]))
    assert manifest["num_tokens"]["validation"] > 0 and manifest["batches"] == [first.batch_id]

    from flows.cli import app

    # the CLI reads its settings itself: point it at the same workspace and thresholds.
    for name, value in {"WORKSPACE": str(rt.settings.workspace), "DATA__SAMPLE_SOURCE_DIR": str(sample),
                        "DATA__WORKERS": "1", "DATA__GATE__MIN_ROWS": "3", "DATA__TOKENIZER__VOCAB_SIZE": "400"}.items():
        monkeypatch.setenv(f"LMFORGE_{name}", value)
    runner = CliRunner()
    out = runner.invoke(app, ["ingest", "--json"])
    assert out.exit_code == 0, out.output
    second = json.loads(out.output)
    assert second["drop"] == "day-02-networking-email" and second["dataset_version"] == "ds-000002"
    assert second["tokenizer_version"] == "tok-000001" and not second["tokenizer_trained"]
    assert second["figures"]["token_jsd"] is not None and second["figures"]["length_jsd"] is not None
    assert second["figures"]["volume_ratio"] is not None
    out = runner.invoke(app, ["ingest", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["status"] == "nothing_new"
    out = runner.invoke(app, ["datasets", "--json"])
    listed = json.loads(out.output)["datasets"]
    assert [(d["version"], d["tokenizer"], d["batches"]) for d in listed] == [
        ("ds-000001", "tok-000001", [first.batch_id]), ("ds-000002", "tok-000001", [second["batch_id"]])]
    assert all(d["train_tokens"] > 0 for d in listed)


def test_worker_processes_decide_exactly_like_one_process(tmp_path, data_runtime_factory, make_prose,
                                                          jsonl_writer) -> None:
    records = docs(make_prose, range(30), words=150)
    records += [records[3], {"id": "short", "text": "too short"}, '{"broken": ']
    jsonl_writer(tmp_path / "src" / "part.jsonl", records)
    outcomes = []
    for workers in (1, 2):
        rt = data_runtime_factory(workspace=f"ws-{workers}", workers=workers, chunk_docs=4)
        result = run_ingest(rt, str(tmp_path / "src"))
        docs_key = f"batches/batch-{result.batch_id:06d}/documents.jsonl.gz"
        accepted = [json.loads(line)["doc_hash"] for line in gzip.decompress(rt.artifacts.get_bytes(docs_key)).splitlines()]
        outcomes.append((result.status, result.rejected, accepted))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1] == {"exact_duplicate": 1, "filter:word_count": 1, "invalid_json": 1}
    assert len(outcomes[0][2]) == 30


def test_every_removal_is_explained_in_the_cli_json_the_store_and_the_quarantine(
        tmp_path, data_runtime_factory, make_prose, jsonl_writer, monkeypatch) -> None:
    """A filtered document names the rule, its score and the bound; a duplicate its twin in the same batch;
    a malformed record its parse error. `lmforge ingest --json`, the store and the quarantine file agree."""
    from flows.cli import app

    rt = data_runtime_factory()
    records = docs(make_prose, range(6))
    jsonl_writer(tmp_path / "src" / "part.jsonl",
                 [*records, {"id": "short", "text": "only four words here"}, records[2] | {"id": "again"}, '{"broken": '])
    for name, value in {"WORKSPACE": str(rt.settings.workspace), "DATA__WORKERS": "1", "DATA__GATE__MIN_ROWS": "3",
                        "DATA__TOKENIZER__VOCAB_SIZE": "400"}.items():
        monkeypatch.setenv(f"LMFORGE_{name}", value)
    out = CliRunner().invoke(app, ["ingest", str(tmp_path / "src"), "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["removals_recorded"] == 3
    listed = {r["doc_id"]: r for r in result["removals"]}
    short, again, broken = listed["short"], listed["again"], listed[None]
    assert (short["reason"], short["rule"], short["score"], short["bound_min"]) == ("filter:word_count", "word_count",
                                                                                    4.0, 50)
    assert short["explanation"] == "filter word_count: score 4 is below the minimum 50"
    assert (again["twin_batch_id"], again["twin_shard"], again["twin_position"], again["twin_doc_id"],
            again["similarity"]) == (result["batch_id"], "part.jsonl", 3, "d2", 1.0)
    assert again["explanation"] == f"exact duplicate: the same text as document d2 (part.jsonl #3) of batch " \
                                   f"{result['batch_id']}"
    assert broken["reason"] == "invalid_json" and broken["explanation"].startswith("invalid json: ")
    with rt.metadata.session() as session:
        stored = [removal_repo.removal_dict(r) for r in removal_repo.list_removals(session, result["batch_id"])]
        assert removal_repo.count_removals(session, result["batch_id"]) == {
            "filter:word_count": 1, "exact_duplicate": 1, "invalid_json": 1}
    assert sorted(stored, key=lambda r: r["position"]) == sorted(
        ({k: v for k, v in r.items() if k != "explanation"} | {"batch_id": result["batch_id"]}
         for r in result["removals"]), key=lambda r: r["position"])
    [filtered] = [q for q in quarantined(rt, result["quarantine_keys"][0]) if q["id"] == "short"]
    assert filtered["filter"] == {"rule": "word_count", "score": 4.0, "min": 50, "max": 100_000}
