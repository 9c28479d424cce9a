"""Every page of the dashboard under Streamlit's AppTest, on a seeded and on an empty store (SQLite and
PostgreSQL): no exception, no error element, the seeded facts shown, a friendly empty state otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
import pytest
from seeding import APP, Platform
from streamlit.testing.v1 import AppTest

PAGES = ["views/overview.py", "views/data_quality.py", "views/training.py", "views/evaluation.py",
         "views/bias.py", "views/review.py", "views/audit.py"]


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    return at.switch_page(page).run()  # before the first run a page is found by its file name


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [e.value for e in at.info] + [e.value for e in at.warning]
    parts += [e.value for e in at.success] + [m.label + " " + str(m.value) for m in at.metric]
    parts += [c.value for c in at.caption] + [t.value for t in at.title] + [s.value for s in at.subheader]
    return "\n".join(str(p) for p in parts)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def visit_every_page() -> Iterator[tuple[str, AppTest]]:
    """One session walking through every page, as a person clicking down the sidebar does."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    for page in PAGES:
        yield page, at.switch_page(page).run()


def test_every_page_renders_the_seeded_platform(seeded_view: Platform) -> None:
    for page, at in visit_every_page():
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        assert at.title and at.title[0].value, page
        assert " yet." not in texts(at), (page, "an empty state on a seeded store")


def test_overview_shows_production_since_and_open_alerts(seeded_view: Platform) -> None:
    at = open_page(PAGES[0])
    shown = texts(at)
    assert "lmforge:v2" in shown and "serving since" in shown
    warnings = " ".join(w.value for w in at.warning)
    assert "lmforge:v3 awaits review" in warnings
    assert "lmforge:v4: the promotion gate rejected it" in warnings
    assert "failed" in warnings and "worker lost" in warnings
    assert any(m.label == "Open alerts" and int(m.value) >= 3 for m in at.metric)


def test_review_page_lists_the_pending_model_with_its_gate_table(seeded_view: Platform) -> None:
    at = open_page("views/review.py")
    shown = texts(at)
    assert "**lmforge:v3**" in shown and "Gate verdict **needs_review**" in shown
    gate_table = at.dataframe[0].value
    assert list(gate_table["name"])[-1] == "bias toxicity_rate" and list(gate_table["verdict"])[-1] == "review"


def chart_data(at: AppTest, index: int) -> pd.DataFrame:
    """The data an Altair chart of the page was given (Streamlit ships it as Arrow beside the spec)."""
    chart = at.get("vega_lite_chart")[index].proto
    return pa.ipc.open_stream(chart.datasets[0].data.data).read_all().to_pandas()


def test_evaluation_heatmap_has_a_cell_per_model_and_dataset(seeded_view: Platform) -> None:
    at = open_page("views/evaluation.py")
    assert_clean(at)
    assert "perplexity" in at.get("vega_lite_chart")[0].proto.spec
    cells = chart_data(at, 0)
    assert len(cells) == 4 * 3 and set(cells["dataset"]) == set(seeded_view.seeded.datasets)
    v4 = cells[cells["model"] == "v004"].set_index("dataset")["value"]
    assert v4["ds-000001"] > v4["ds-000003"]  # the seeded forgetting shows on old data


def test_every_page_on_an_empty_store_shows_a_friendly_empty_state(empty_view: Platform) -> None:
    for page, at in visit_every_page():
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        shown = texts(at)
        assert " yet" in shown or "Nothing needs attention" in shown, (page, shown)


def test_unmigrated_database_is_one_clear_message(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMFORGE_DATABASE_URL", f"sqlite:///{tmp_path / 'blank.db'}")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception
    [error] = at.error
    assert "run `lmforge init`" in error.value


def test_bias_page_draws_each_axis_gap_against_the_gate_bound(seeded_view: Platform) -> None:
    at = open_page("views/bias.py")
    assert_clean(at)
    assert any("Gate bound 1.0" in c.value for c in at.caption)
    gaps = chart_data(at, 0)
    assert set(gaps["group"]) == {"gender", "religion"} and set(gaps["model"]) == {"v4", "v3", "v2"}
    assert (gaps["low"] <= gaps["value"]).all() and (gaps["value"] <= gaps["high"]).all()
