"""The metadata store on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from lmforge_core.metadata import MetadataStore, MetadataStoreError
from lmforge_core.metadata import repository as repo
from lmforge_core.metadata.models import (
    AliasEvent,
    Base,
    BatchStatus,
    DatasetVersion,
    ModelStatus,
    ReviewDecision,
    RunStatus,
)
from lmforge_core.metadata.repository import NotFoundError


def test_migrations_produce_exactly_the_orm_schema(store: MetadataStore) -> None:
    assert store.current_revision() == store.head_revision()
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_ensure_schema_migrates_on_first_use_and_is_idempotent(db_url: str) -> None:
    metadata = MetadataStore(db_url)
    assert metadata.current_revision() is None
    metadata.ensure_schema()
    metadata.ensure_schema()
    assert metadata.current_revision() == metadata.head_revision()
    metadata.dispose()


def test_batch_counts_must_add_up_and_are_kept_per_reason(store: MetadataStore) -> None:
    with store.session() as session:
        batch = repo.create_batch(session, "file:///data/day1")
        repo.add_shard(session, uri="file:///data/day1/a.jsonl", sha256="a" * 64, size_bytes=10, batch_id=batch.id)
        with pytest.raises(ValueError, match="!= read 10"):
            repo.finish_batch(session, batch.id, status=BatchStatus.ACCEPTED, records_read=10, records_accepted=5,
                              rejects={"invalid_json": 1})
        repo.finish_batch(session, batch.id, status=BatchStatus.ACCEPTED, records_read=10, records_accepted=7,
                          rejects={"invalid_json": 1, "near_duplicate": 2})
        batch_id = batch.id
    with store.session() as session:
        batch = repo.get_batch(session, batch_id)
        assert {r.reason: r.count for r in batch.rejects} == {"invalid_json": 1, "near_duplicate": 2}
        assert batch.records_rejected == 3
        assert repo.find_shard(session, "a" * 64).batch_id == batch_id
        assert repo.find_shard(session, "b" * 64) is None


def test_a_failing_multi_row_change_leaves_nothing_behind(store: MetadataStore) -> None:
    with pytest.raises(RuntimeError), store.session() as session:
        batch = repo.create_batch(session, "s3://raw/day2")
        repo.record_validation(session, batch_id=batch.id, suite_name="s", success=True, results=[])
        raise RuntimeError("crash in the middle")
    with store.session() as session:
        assert repo.list_batches(session) == []
        assert repo.latest_validation(session) is None


def test_validation_keeps_each_expectation_and_observed_value(store: MetadataStore) -> None:
    with store.session() as session:
        batch = repo.create_batch(session, "x")
        repo.record_validation(
            session, batch_id=batch.id, suite_name="batch_documents", success=False, report_key="gx/run-1/index.html",
            results=[
                {"expectation_type": "expect_column_values_to_be_between", "column": "word_count", "success": False,
                 "observed_value": {"unexpected_count": 3}, "kwargs": {"min_value": 50}},
                {"expectation_type": "expect_table_row_count_to_be_between", "success": True, "observed_value": 120},
            ],
        )
    with store.session() as session:
        validation = repo.latest_validation(session)
        assert validation is not None and not validation.success
        failed = [r for r in validation.results if not r.success]
        assert [(r.column, r.observed_value["value"]) for r in failed] == [("word_count", {"unexpected_count": 3})]
        assert validation.results[1].observed_value["value"] == 120


def test_dataset_versions_record_lineage_and_are_unique(store: MetadataStore) -> None:
    with store.session() as session:
        b1, b2 = repo.create_batch(session, "d1"), repo.create_batch(session, "d2")
        tok = repo.add_tokenizer_version(session, version="tok-000001", artifact_key="tokenizers/t/tokenizer.json",
                                         sha256="c" * 64, vocab_size=8192)
        label = repo.next_sequence_label(session, DatasetVersion, "ds")
        repo.create_dataset_version(session, version=label, manifest_key=f"datasets/{label}/manifest.json",
                                    manifest_sha256="d" * 64, tokenizer_id=tok.id, train_tokens=1000,
                                    validation_tokens=100, documents=12, batch_ids=[b1.id, b2.id])
    with store.session() as session:
        dataset = repo.get_dataset_version(session, "ds-000001")
        assert sorted(link.batch_id for link in dataset.lineage) == [b1.id, b2.id]
        assert dataset.tokenizer_id == tok.id
        with pytest.raises(NotFoundError, match="ds-999"):
            repo.get_dataset_version(session, "ds-999")
    with pytest.raises(Exception, match="(?i)unique"), store.session() as session:
        repo.create_dataset_version(session, version="ds-000001", manifest_key="k", manifest_sha256="e" * 64,
                                    tokenizer_id=None, train_tokens=1, validation_tokens=1, documents=1, batch_ids=[])


def test_runs_metrics_and_checkpoints(store: MetadataStore) -> None:
    with store.session() as session:
        run = repo.create_run(session, config={"model": "tiny", "steps": 3})
        repo.add_step_metrics(session, run.id, [(1, "loss", 9.1), (1, "lr", 1e-4), (2, "loss", 8.7)])
        repo.add_step_metrics(session, run.id, [(2, "loss", 8.5)])  # a re-recorded step replaces the value
        repo.add_checkpoint(session, run_pk=run.id, step=2, artifact_key="runs/r/ckpt-2", sha256="f" * 64)
        repo.add_checkpoint(session, run_pk=run.id, step=4, artifact_key="runs/r/ckpt-4", sha256="0" * 64)
        resumed = repo.create_run(session, config={}, resumed_from_id=run.id)
        repo.finish_run(session, run.run_id, status=RunStatus.INTERRUPTED)
        run_pk, run_id, resumed_id = run.id, run.run_id, resumed.run_id
    with store.session() as session:
        assert [m.value for m in repo.step_metrics(session, run_pk, "loss")] == [9.1, 8.5]
        assert repo.latest_checkpoint(session, run_pk).step == 4
        assert repo.get_run(session, resumed_id).resumed_from.run_id == run_id
        finished = repo.get_run(session, run_id)
        assert finished.status is RunStatus.INTERRUPTED and finished.ended_at.tzinfo is not None


def _versions(session, n: int) -> list:  # type: ignore[no-untyped-def]
    versions = []
    parent = None
    for _ in range(n):
        version = repo.register_model_version(session, name="lm", training_run_pk=None,
                                              parent_id=parent.id if parent else None, artifacts={"weights": "k"})
        versions.append(version)
        parent = version
    return versions


def test_alias_history_answers_what_served_when_and_rollback(store: MetadataStore) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with store.session() as session:
        v1, v2, v3 = _versions(session, 3)
        assert [v.version for v in (v1, v2, v3)] == [1, 2, 3] and v3.parent_id == v2.id
        for day, version in enumerate((v1, v2, v3)):
            repo.set_alias(session, name="lm", alias="production", model_version_id=version.id, actor="gate",
                           at=base + timedelta(days=day))
    with store.session() as session:
        assert repo.alias_target_at(session, "lm", "production", base + timedelta(hours=36)).version == 2
        assert repo.alias_target_at(session, "lm", "production", base - timedelta(days=1)) is None
        assert repo.get_alias(session, "lm", "production").version == 3
        assert [v.status for v in repo.list_model_versions(session, "lm")] == [
            ModelStatus.ARCHIVED, ModelStatus.ARCHIVED, ModelStatus.PRODUCTION]
        repo.rollback_alias(session, name="lm", alias="production", actor="alice")
        assert repo.get_alias(session, "lm", "production").version == 2
        assert repo.get_model_version(session, "lm", 2).status is ModelStatus.PRODUCTION
        assert repo.get_model_version(session, "lm", 3).status is ModelStatus.ARCHIVED
        repo.rollback_alias(session, name="lm", alias="production", actor="alice")
        assert repo.get_alias(session, "lm", "production").version == 1
        with pytest.raises(NotFoundError, match="no earlier version"):
            repo.rollback_alias(session, name="lm", alias="production", actor="alice")
        history = repo.alias_history(session, "lm", "production")
        assert [e.model_version.version for e in history] == [1, 2, 3, 2, 1]
        assert [e.is_rollback for e in history] == [False, False, False, True, True]
        assert session.query(AliasEvent).count() == 5  # append-only: nothing was rewritten


def test_re_promoting_the_same_version_records_nothing_and_rollback_still_works(store: MetadataStore) -> None:
    with store.session() as session:
        v1, v2 = _versions(session, 2)
        repo.set_alias(session, name="lm", alias="production", model_version_id=v1.id)
        repo.set_alias(session, name="lm", alias="production", model_version_id=v2.id)
        assert repo.set_alias(session, name="lm", alias="production", model_version_id=v2.id) is None
        assert len(repo.alias_history(session, "lm", "production")) == 2
        repo.rollback_alias(session, name="lm", alias="production", actor="ops")
        assert repo.get_alias(session, "lm", "production").version == 1


def test_an_alias_cannot_point_at_another_models_version(store: MetadataStore) -> None:
    with store.session() as session:
        (v1,) = _versions(session, 1)
        with pytest.raises(NotFoundError, match="model 'other' has no version"):
            repo.set_alias(session, name="other", alias="production", model_version_id=v1.id)


def test_non_finite_values_are_refused_or_nulled_the_same_on_every_backend(store: MetadataStore) -> None:
    with store.session() as session:
        run = repo.create_run(session, config={"lr": float("nan")})
        with pytest.raises(ValueError, match="metric 'loss' at step 3 is nan"):
            repo.add_step_metrics(session, run.id, [(3, "loss", float("nan"))])
        repo.finish_run(session, run.run_id, status=RunStatus.FAILED, summary={"final_loss": float("inf")})
        run_id = run.run_id
    with store.session() as session:
        run = repo.get_run(session, run_id)
        assert run.config == {"lr": None} and run.summary == {"final_loss": None}


def test_times_come_back_in_utc_whatever_the_server_zone(store: MetadataStore) -> None:
    with store.session() as session:
        run = repo.create_run(session, config={})
        run_id = run.run_id
    with store.session() as session:
        started = repo.get_run(session, run_id).started_at
        assert started.utcoffset() == timedelta(0)
        assert abs(datetime.now(UTC) - started) < timedelta(minutes=5)


def test_sequence_labels_never_reuse_a_number(store: MetadataStore) -> None:
    with store.session() as session:
        for label in ("ds-000001", "ds-000007"):
            repo.create_dataset_version(session, version=label, manifest_key=f"datasets/{label}/m.json",
                                        manifest_sha256="a" * 64, tokenizer_id=None, train_tokens=1,
                                        validation_tokens=1, documents=1, batch_ids=[])
        assert repo.next_sequence_label(session, DatasetVersion, "ds") == "ds-000008"


def test_a_database_migrated_by_a_newer_lmforge_is_named(store: MetadataStore) -> None:
    with store.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(MetadataStoreError, match="revision '9999', which this lmforge does not know"):
        store.ensure_schema()


def test_reviews_evaluations_deployments_and_resolution(store: MetadataStore) -> None:
    with store.session() as session:
        (v1,) = _versions(session, 1)
        repo.set_alias(session, name="lm", alias="candidate", model_version_id=v1.id)
        repo.add_evaluation(session, model_version_id=v1.id, dataset="ds-000001", metric="perplexity", value=12.5)
        repo.add_evaluation(session, model_version_id=v1.id, dataset="bias-probes", metric="gap", value=0.02,
                            slice_name="gender")
        repo.add_review(session, model_version_id=v1.id, reviewer="alice", decision=ReviewDecision.APPROVE,
                        comment="looks good")
        with pytest.raises(ValueError, match="reviewer"):
            repo.add_review(session, model_version_id=v1.id, reviewer=" ", decision=ReviewDecision.REJECT)
        repo.set_model_status(session, v1.id, ModelStatus.PRODUCTION)
        repo.add_deployment(session, model_version_id=v1.id, repository_uri="s3://repo/triton",
                            triton_model_name="lmforge", triton_version=1)
    with store.session() as session:
        assert repo.resolve_model_version(session, "lm", "v1").id == v1.id
        assert repo.resolve_model_version(session, "lm", "candidate").id == v1.id
        with pytest.raises(NotFoundError, match="'staging'"):
            repo.resolve_model_version(session, "lm", "staging")
        assert [(e.metric, e.slice) for e in repo.evaluations_for(session, v1.id)] == [("gap", "gender"),
                                                                                     ("perplexity", "all")]
        assert repo.reviews_for(session, v1.id)[0].decision is ReviewDecision.APPROVE
        assert repo.list_deployments(session)[0].triton_version == 1


def test_unreachable_database_names_the_cause_and_masks_the_password() -> None:
    metadata = MetadataStore("postgresql+psycopg://bob:topsecret@127.0.0.1:1/nowhere")
    with pytest.raises(MetadataStoreError) as info:
        metadata.check()
    message = str(info.value)
    assert "cannot connect to the metadata database" in message and "127.0.0.1:1" in message
    assert "topsecret" not in message and "LMFORGE_DATABASE_URL" in message


def test_malformed_database_url_is_named() -> None:
    with pytest.raises(MetadataStoreError, match="not a database URL"):
        MetadataStore("not a url at all")


@pytest.mark.parametrize("ref", ["v²", "٣", "v" + "9" * 25, str(2**31)])
def test_a_version_ref_is_ascii_digits_within_the_columns_range_on_every_backend(store: MetadataStore,
                                                                                 ref: str) -> None:
    with store.session() as session:
        (v1,) = _versions(session, 1)
    with store.session() as session:
        assert repo.resolve_model_version(session, "lm", f"v{v1.version}").id == v1.id
        with pytest.raises(NotFoundError, match="out of range|no alias of that name"):
            repo.resolve_model_version(session, "lm", ref)
