"""What every page needs: the settings (read once per rerun from LMFORGE_* / lmforge.toml) and the stores,
opened once per process and shared by every browser session."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from lmforge_core.artifacts import ArtifactStore
from lmforge_core.artifacts.factory import store_for_uri
from lmforge_core.metadata import MetadataStore
from lmforge_core.runtime import Runtime
from lmforge_core.settings import Settings, load_settings


class DashboardError(Exception):
    """Something a person must fix before the dashboard can show data; the message says what."""


@dataclass(frozen=True)
class Context:
    settings: Settings
    runtime: Runtime

    @property
    def url(self) -> str:
        """Cache key of the metadata store (never shown: it may hold a password)."""
        return self.settings.database_url

    @property
    def model(self) -> str:
        return self.settings.model_name

    @property
    def limit(self) -> int:
        return self.settings.dashboard.max_rows


@st.cache_resource(show_spinner=False)
def metadata_store(url: str) -> MetadataStore:
    return MetadataStore(url)


@st.cache_resource(show_spinner=False)
def artifact_store(uri: str) -> ArtifactStore:
    return store_for_uri(uri)


def current() -> Context:
    """The context of this rerun; raises :class:`DashboardError` when the database is not usable."""
    settings = load_settings()
    store = metadata_store(settings.database_url)
    revision = store.current_revision()
    if revision != store.head_revision():
        raise DashboardError(
            f"the metadata database {store.display_url} is at schema {revision or 'none'}, not "
            f"{store.head_revision()}: run `lmforge init` (or `lmforge db upgrade`)"
        )
    runtime = Runtime(settings=settings, metadata=store, artifacts=artifact_store(settings.artifact_uri))
    return Context(settings=settings, runtime=runtime)
