"""Engines for SQLite (WAL, immediate transactions) and PostgreSQL, and the migration runner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BEGIN = "commentdesk_sqlite_begin"


def make_engine(url: str) -> Engine:
    """An engine with the settings each database needs for a safe concurrent queue."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        database = _database_file(engine)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
            # Let SQLAlchemy, not the driver, decide when transactions start.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            if database is not None:
                connection_record.info[_FILE_IDENTITY] = _file_identity(database)

        @event.listens_for(engine, "checkout")
        def _on_checkout(_: Any, connection_record: Any, __: Any) -> None:
            # An open SQLite connection keeps using the file it opened even after that file was
            # moved, deleted or replaced: reads would come from a stale copy and acknowledged
            # writes could land in an unlinked file. A connection whose file is no longer the one
            # at the configured path is dropped; the pool then opens the path again, and fails
            # (503 database_unavailable) while nothing is there.
            if database is None:
                return
            opened = connection_record.info.get(_FILE_IDENTITY)
            if opened is None or _file_identity(database) != opened:
                raise DisconnectionError(f"the SQLite database {database} was moved or replaced")

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            # Take the write lock up front: a read-then-write (claiming items) is then atomic,
            # and concurrent writers wait for each other instead of failing mid-transaction.
            # Read-only work (see ``read_only``) begins deferred: in WAL mode it takes no lock.
            mode = connection.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
            connection.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


_FILE_IDENTITY = "commentdesk_sqlite_file"


def _database_file(engine: Engine) -> str | None:
    """The SQLite database's path; None for an in-memory database."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database)


def _file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; None when nothing is there."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def read_only(session: Session) -> Session:
    """Mark the session's transactions as reads only. On SQLite they then begin deferred and
    take no lock, so readers never queue behind writers (nor hold writers up while they wait
    for a thread to close them); elsewhere nothing changes. Call before the first query."""
    session.execution_options = session.execution_options.union({SQLITE_BEGIN: "DEFERRED"})
    return session


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def upgrade(url: str) -> None:
    """Bring the database schema to the latest migration."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    command.upgrade(config, "head")
