"""Entry point of the dashboard: ``streamlit run dashboard/app.py`` (``lmforge dashboard`` does this)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import auth
from dashboard.context import DashboardError, current
from lmforge_core.metadata import MetadataStoreError
from lmforge_core.redact import mask_text

VIEWS = Path(__file__).resolve().parent / "views"
PAGES = [
    ("overview.py", "Overview", ":material/dashboard:"),
    ("data_quality.py", "Data quality", ":material/fact_check:"),
    ("training.py", "Training", ":material/show_chart:"),
    ("evaluation.py", "Evaluation", ":material/grid_on:"),
    ("bias.py", "Bias and fairness", ":material/balance:"),
    ("review.py", "Review and registry", ":material/how_to_reg:"),
    ("audit.py", "Audit", ":material/history:"),
]


def main() -> None:
    st.set_page_config(page_title="lmforge", page_icon=":material/model_training:", layout="wide")
    pages = [st.Page(VIEWS / file, title=title, icon=icon, default=i == 0)
             for i, (file, title, icon) in enumerate(PAGES)]
    page = st.navigation(pages)
    try:
        ctx = current()
    except (DashboardError, MetadataStoreError) as exc:
        st.error(mask_text(str(exc)))
        st.stop()
    user = auth.sidebar(ctx)
    if ctx.settings.dashboard.login_required_to_read and user is None:
        st.info("Sign in as a reviewer (sidebar) to read this dashboard.")
        st.stop()
    page.run()


main()
