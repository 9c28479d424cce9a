"""Connection to the metadata database, transactions, and schema migrations (Alembic)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from lmforge_core.metadata.locks import LockKey, advisory_lock
from lmforge_core.redact import mask_text, mask_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
CONNECT_TIMEOUT_S = 5
# Serialises migrations: between threads (Alembic's context is process-global) and, on PostgreSQL,
# between processes through a transaction-scoped advisory lock (`LockKey.MIGRATION`).
_MIGRATION_LOCK = threading.Lock()


def _finite_json(value: Any) -> Any:
    """JSON columns store NaN/inf as null on every backend (PostgreSQL rejects them, SQLite keeps them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(item) for item in value]
    return value


def _json_serializer(value: Any) -> str:
    return json.dumps(_finite_json(value), allow_nan=False)


class MetadataStoreError(Exception):
    """The metadata database cannot be used; the message names the cause and what to do."""


def _engine_for(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise MetadataStoreError(
            f"LMFORGE_DATABASE_URL {mask_url(url)!r} is not a database URL; "
            "use sqlite:///path.db or postgresql+psycopg://user@host:5432/db"
        ) from exc
    if parsed.get_backend_name() != "sqlite" and url.split("?", 1)[0].count("@") > 1:
        # the driver would take what follows the first '@' for the host, and name it in its errors
        raise MetadataStoreError(
            f"LMFORGE_DATABASE_URL {mask_url(url)!r} has more than one '@' before its host: write an '@' of the "
            "user name or password as %40 (URL-encoded)"
        )
    connect_args: dict[str, object] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args["timeout"] = 30
    elif parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        connect_args["options"] = "-c timezone=UTC"
    try:
        engine = create_engine(
            url, pool_pre_ping=True, connect_args=connect_args, json_serializer=_json_serializer
        )
    except (NoSuchModuleError, ImportError) as exc:
        raise MetadataStoreError(
            f"no database driver for {mask_url(url)!r}: {exc}; use sqlite:/// or postgresql+psycopg://"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def describe_database_error(exc: Exception) -> str:
    """The driver's first line of a database error, masked: never SQLAlchemy's statement, parameters and
    background link (kilobytes of SQL that bury the cause, e.g. "server closed the connection unexpectedly")."""
    detail = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first_line = str(detail).strip().splitlines()[0] if str(detail).strip() else type(detail).__name__
    return mask_text(first_line)


class MetadataStore:
    """The metadata database. ``session()`` is one transaction: committed on exit, rolled back on error."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.display_url = mask_url(url)
        self.engine = _engine_for(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _describe(self, exc: Exception) -> str:
        return describe_database_error(exc)

    def check(self) -> None:
        """Connect once; raise :class:`MetadataStoreError` naming the cause when that fails."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise MetadataStoreError(
                f"cannot connect to the metadata database {self.display_url}: {self._describe(exc)}; "
                "check LMFORGE_DATABASE_URL and that the server is running"
            ) from exc

    def _alembic_config(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        return config

    def current_revision(self) -> str | None:
        self.check()
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def _known_revision(self, revision: str | None) -> None:
        if revision is None:
            return
        try:
            known = ScriptDirectory.from_config(self._alembic_config()).get_revision(revision) is not None
        except CommandError:
            known = False
        if not known:
            raise MetadataStoreError(
                f"the metadata database {self.display_url} is at schema revision {revision!r}, which this "
                "lmforge does not know; it was migrated by a newer lmforge: upgrade lmforge"
            )

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def upgrade(self, revision: str = "head") -> str | None:
        """Apply migrations up to ``revision``; returns the revision in effect afterwards."""
        self.check()
        config = self._alembic_config()
        try:
            with _MIGRATION_LOCK, self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    advisory_lock(connection, LockKey.MIGRATION, transaction=True, wait=True)
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
        except CommandError as exc:
            self._known_revision(self.current_revision())
            raise MetadataStoreError(f"migrating the metadata database {self.display_url} failed: {exc}") from exc
        except SQLAlchemyError as exc:
            raise MetadataStoreError(
                f"migrating the metadata database {self.display_url} failed: {self._describe(exc)}"
            ) from exc
        return self.current_revision()

    def ensure_schema(self) -> None:
        """Apply pending migrations on first use (cheap when the schema is already current)."""
        current = self.current_revision()
        self._known_revision(current)
        if current != self.head_revision():
            self.upgrade()

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
