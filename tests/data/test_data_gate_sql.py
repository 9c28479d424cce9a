"""The per-document expectations run as SQL over the batch's on-disk table: a failing one is reported with
its observed value, the batch is quarantined, and the table does not outlive the run."""

from __future__ import annotations

import pytest

from lmforge_core.metadata import repository as repo
from tasks.ingest.pipeline import run_ingest


def test_document_expectation_failure_from_the_sql_table(tmp_path, data_runtime_factory, make_prose,
                                                         jsonl_writer) -> None:
    rt = data_runtime_factory(gate={"min_rows": 3, "max_mean_pii_per_document": 1.0})
    records = [{"id": f"d{s}", "text": make_prose(s) + f" Write to user{s}@example.com or ops{s}@example.org."}
               for s in range(8)]
    records += [{"id": f"q{s}", "text": make_prose(s)} for s in range(100, 104)]
    jsonl_writer(tmp_path / "src" / "part.jsonl", records)

    result = run_ingest(rt, str(tmp_path / "src"))
    assert result.status == "quarantined"
    failures = {(f["suite"], f["column"]): f["observed_value"] for f in result.gate["failures"]}
    assert failures == {("lmforge_batch_documents", "pii_total"): pytest.approx(16 / 12)}
    with rt.metadata.session() as session:
        [documents] = [v for v in repo.validations_for_batch(session, result.batch_id)
                       if v.suite_name == "lmforge_batch_documents"]
        by_column = {r.column: r.observed_value for r in documents.results}
    # row-level expectations keep GX's per-row summary: counts and the first unexpected values.
    assert by_column["doc_hash"]["value"]["element_count"] == 12
    assert by_column["doc_hash"]["value"]["unexpected_count"] == 0
    assert by_column["word_count"]["value"]["partial_unexpected_list"] == []
    assert not list((rt.settings.workspace / "tmp").glob("ingest-*"))
