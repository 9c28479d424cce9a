"""Metadata store: typed SQLAlchemy 2.0 ORM, repository functions, Alembic migrations.

SQLite in the workspace by default; PostgreSQL through ``postgresql+psycopg://`` URLs.
The rest of the project goes through :mod:`lmforge_core.metadata.repository` (and `locks` for the
locks shared by every process on one store); no raw SQL elsewhere (tests/test_layers.py checks it).
"""

from lmforge_core.metadata.store import MetadataStore, MetadataStoreError, describe_database_error

__all__ = ["MetadataStore", "MetadataStoreError", "describe_database_error"]
