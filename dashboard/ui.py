"""Page furniture: the error guard (one clear message, logged, never a traceback), empty states, formats."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

from dashboard.context import Context, DashboardError, current
from lmforge_core.metadata import MetadataStoreError
from lmforge_core.redact import mask_text

log = logging.getLogger("lmforge.dashboard")


def run_page(title: str, render: Callable[[Context], None]) -> None:
    """Render one page; any failure becomes a single error message on the page and a log entry."""
    st.title(title)
    try:
        render(current())
    except ScriptControlException:
        raise  # st.rerun / st.stop / st.switch_page are control flow, not errors
    except (DashboardError, MetadataStoreError) as exc:
        log.warning("%s: %s", title, mask_text(str(exc)))
        st.error(mask_text(str(exc)))
    except Exception as exc:
        log.exception("page %s failed", title)
        first = mask_text(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__
        st.error(f"This page could not be shown ({type(exc).__name__}: {first}). The dashboard log has the details.")


def empty_state(what: str, how: str) -> None:
    """A friendly note for a fresh database: what is missing and which command produces it."""
    st.info(f"No {what} yet. {how}", icon=":material/hourglass_empty:")


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value is not None else "-"


def ago(value: datetime | None) -> str:
    if value is None:
        return "-"
    seconds = max(0, int((datetime.now(UTC) - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"
