"""The quality gate: Great Expectations 1.x (GX Core) over a batch's documents and batch-level figures.

GX objects (kept in a file-backed Data Context at ``<workspace>/gx/``):
- data source ``lmforge_documents`` (SQLite) whose table asset ``batch_documents`` is the batch's
  per-document table (one row per accepted document, streamed to a file by `documents_table`); the
  data source is re-pointed at each batch's file, and the expectations run as SQL queries there, so
  validating a batch costs no memory per document;
- data source ``lmforge`` (pandas) with the dataframe asset ``batch_figures`` (one row: reject rate,
  duplicate rate, volume ratio and the Jensen-Shannon divergences against the previous accepted batch);
- two Expectation Suites built here, in the repository, from `GateConfig` thresholds
  (`document_expectations`, `figure_expectations`), re-saved on every run so the context always
  matches the settings;
- one Validation Definition per suite and one Checkpoint per table, each with an
  ``UpdateDataDocsAction`` (GX applies a checkpoint's batch parameters to all its validation
  definitions, so two tables need two checkpoints).
Null figures (no previous batch yet) pass: GX column expectations ignore nulls.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lmforge_core.config.data import DataConfig
from tasks.quality.documents_table import TABLE

DATA_SOURCE = "lmforge"
DOCUMENTS_SOURCE = "lmforge_documents"
DOCUMENTS = TABLE
FIGURES = "batch_figures"
SITE_DIR = Path("uncommitted/data_docs/local_site")


@dataclass
class ExpectationOutcome:
    suite: str
    expectation_type: str
    column: str | None
    success: bool
    observed_value: Any
    kwargs: dict[str, Any]

    def describe(self) -> str:
        where = f"({self.column})" if self.column else ""
        return f"{self.suite}: {self.expectation_type}{where} observed {self.observed_value!r}"


@dataclass
class SuiteOutcome:
    suite: str
    success: bool
    statistics: dict[str, Any]
    results: list[ExpectationOutcome] = field(default_factory=list)


@dataclass
class GateResult:
    success: bool
    suites: list[SuiteOutcome]
    site_dir: Path

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [r for s in self.suites for r in s.results if not r.success]


def document_expectations(cfg: DataConfig) -> list[Any]:
    import great_expectations.expectations as gxe

    t, g = cfg.filters, cfg.gate
    mostly = g.min_in_bounds_fraction
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=g.min_rows),
        gxe.ExpectColumnValuesToBeUnique(column="doc_hash"),
        gxe.ExpectColumnValuesToNotBeNull(column="source"),
        gxe.ExpectColumnValuesToBeBetween(column="chars", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="word_count", min_value=t.min_words, max_value=t.max_words,
                                          mostly=mostly),
        gxe.ExpectColumnValuesToBeBetween(column="mean_word_length", min_value=t.min_mean_word_length,
                                          max_value=t.max_mean_word_length, mostly=mostly),
        gxe.ExpectColumnValuesToBeBetween(column="non_alnum_fraction", max_value=t.max_non_alnum_fraction,
                                          mostly=mostly),
        gxe.ExpectColumnValuesToBeBetween(column="symbol_word_ratio", max_value=t.max_symbol_word_ratio,
                                          mostly=mostly),
        gxe.ExpectColumnValuesToBeBetween(column="dup_line_fraction", max_value=t.max_dup_line_fraction,
                                          mostly=mostly),
        gxe.ExpectColumnValuesToBeBetween(column="dup_5gram_fraction", max_value=t.max_dup_ngram_fraction.get(5, 1.0),
                                          mostly=mostly),
        gxe.ExpectColumnMeanToBeBetween(column="pii_total", max_value=g.max_mean_pii_per_document),
    ]


def figure_expectations(cfg: DataConfig) -> list[Any]:
    import great_expectations.expectations as gxe

    g = cfg.gate
    return [
        gxe.ExpectColumnValuesToBeBetween(column="rows_accepted", min_value=g.min_rows),
        gxe.ExpectColumnValuesToBeBetween(column="reject_rate", min_value=0.0, max_value=g.max_reject_rate),
        gxe.ExpectColumnValuesToBeBetween(column="duplicate_rate", min_value=0.0, max_value=g.max_duplicate_rate),
        gxe.ExpectColumnValuesToBeBetween(column="volume_ratio", min_value=g.min_volume_ratio,
                                          max_value=g.max_volume_ratio),
        gxe.ExpectColumnValuesToBeBetween(column="length_jsd", min_value=0.0, max_value=g.max_length_jsd),
        gxe.ExpectColumnValuesToBeBetween(column="token_jsd", min_value=0.0, max_value=g.max_token_jsd),
    ]


def open_context(gx_root: Path) -> Any:
    """The file-backed Data Context under `gx_root` (created on first use), analytics and bars off."""
    # GX reads this when it initialises; setting it (not reading it) keeps analytics off in-process.
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    gx_root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(gx_root))
    if context.variables.analytics_enabled is not False or context.variables.progress_bars is None:
        context.variables.analytics_enabled = False
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
    return context


def _batch_definitions(context: Any, documents_db: Path) -> dict[str, Any]:
    """The whole-table batch definition of each table, the documents one pointing at `documents_db`."""
    try:
        figures_source = context.data_sources.get(DATA_SOURCE)
    except (KeyError, ValueError):
        figures_source = context.data_sources.add_pandas(DATA_SOURCE)
    documents_source = context.data_sources.add_or_update_sqlite(
        DOCUMENTS_SOURCE, connection_string=f"sqlite:///{documents_db.resolve()}", create_temp_table=False)
    definitions = {}
    for table, source in ((DOCUMENTS, documents_source), (FIGURES, figures_source)):
        try:
            asset = source.get_asset(table)
        except LookupError:
            asset = (source.add_table_asset(table, table_name=table) if table == DOCUMENTS
                     else source.add_dataframe_asset(name=table))
        try:
            definitions[table] = asset.get_batch_definition("whole")
        except (KeyError, ValueError, LookupError):
            definitions[table] = (asset.add_batch_definition_whole_table("whole") if table == DOCUMENTS
                                  else asset.add_batch_definition_whole_dataframe("whole"))
    return definitions


def _ensure(context: Any, cfg: DataConfig, documents_db: Path) -> dict[str, Any]:
    """Create or update the data sources, assets, suites, validation definitions and checkpoints."""
    import great_expectations as gx

    checkpoints = {}
    batch_definitions = _batch_definitions(context, documents_db)
    for table, build in ((DOCUMENTS, document_expectations), (FIGURES, figure_expectations)):
        suite = gx.ExpectationSuite(name=f"lmforge_{table}", expectations=build(cfg))
        suite = context.suites.add_or_update(suite)
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"lmforge_{table}", data=batch_definitions[table], suite=suite)
        )
        checkpoints[table] = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=f"lmforge_{table}",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10},
            )
        )
    return checkpoints


def _observed(result: dict[str, Any]) -> Any:
    if "observed_value" in result:
        return result["observed_value"]
    keys = ("element_count", "unexpected_count", "unexpected_percent", "partial_unexpected_list")
    return {k: result[k] for k in keys if k in result}


def _jsonable(value: Any) -> Any:
    """GX results hold numpy scalars and the like; make them plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def run_gate(gx_root: Path, cfg: DataConfig, documents_db: Path, figures: dict[str, Any],
             run_name: str) -> GateResult:
    """Validate the documents table in SQLite file `documents_db` and the one-row figures table.

    The result lists every expectation with its observed value.
    """
    import great_expectations as gx

    context = open_context(gx_root)
    checkpoints = _ensure(context, cfg, documents_db)
    parameters: dict[str, dict[str, Any] | None] = {DOCUMENTS: None, FIGURES: {"dataframe": pd.DataFrame([figures])}}
    suites = []
    for table, batch_parameters in parameters.items():
        run_id = gx.RunIdentifier(run_name=f"{run_name}-{table}")
        outcome = checkpoints[table].run(batch_parameters=batch_parameters, run_id=run_id)
        for validation in outcome.run_results.values():
            suite = SuiteOutcome(
                suite=f"lmforge_{table}",
                success=bool(validation.success),
                statistics=_jsonable(dict(validation.statistics)),
            )
            for r in validation.results:
                kwargs = {k: v for k, v in dict(r.expectation_config.kwargs).items() if k != "batch_id"}
                suite.results.append(
                    ExpectationOutcome(
                        suite=suite.suite,
                        expectation_type=r.expectation_config.type,
                        column=kwargs.get("column"),
                        success=bool(r.success),
                        observed_value=_jsonable(
                            figures.get(kwargs.get("column"))
                            if table == FIGURES
                            else _observed(dict(r.result or {}))
                        ),
                        kwargs=_jsonable(kwargs),
                    )
                )
            suites.append(suite)
    return GateResult(success=all(s.success for s in suites), suites=suites, site_dir=gx_root / "gx" / SITE_DIR)
