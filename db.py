"""Database plumbing: declarative Base, a UTC datetime type, engine and session per app."""
from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Iterator, Mapping

from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC that always comes back timezone-aware (UTC), on SQLite too.

    Raises ValueError when given a naive datetime: every time in this service is aware.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; pass an aware UTC datetime")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(timezone.utc)


def normalise_url(url: str) -> str:
    """Map ``postgresql://`` and ``postgres://`` URLs to the installed psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``; SQLite gets WAL, a busy timeout and write-locking transactions.

    On SQLite every transaction starts with BEGIN IMMEDIATE so that several gunicorn workers
    queue for the write lock (up to 30 s) instead of failing with "database is locked";
    connections with the execution option ``read_only=True`` (see :func:`get_read_session`)
    start a plain deferred BEGIN instead, so a long report never holds up the webhooks.
    """
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            # REPLACE deletes the row it replaces; with recursive triggers that deletion fires
            # the append-only triggers (the deletion log cannot be rewritten by INSERT OR REPLACE).
            cursor.execute("PRAGMA recursive_triggers=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            if conn.get_execution_options().get("read_only"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_engine(url, pool_size=5, max_overflow=5)
    _ping_after_idle(engine, PING_AFTER_IDLE_SECONDS)
    return engine


# A pooled connection that has sat unused this long is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_after_idle(engine: Engine, idle_seconds: float) -> None:
    """Check a pooled connection with a ping only when it has been idle ``idle_seconds``.

    Like ``pool_pre_ping`` (a connection the server dropped, e.g. after a restart, is replaced
    before use) without a round trip on every checkout: a connection back in the pool within
    the last ``idle_seconds`` is handed out as it is. A disconnect found in use invalidates the
    pool as usual (SQLAlchemy for sessions, :func:`single_statement` for its own path).
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record):
        if record is not None:
            record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy):
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < idle_seconds:
            return  # new, or in use a moment ago
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_conn, None):
                raise DisconnectionError(str(exc)) from exc  # the pool connects afresh
            raise


class DirectStatements:
    """Runs self-contained write statements straight on a pooled DBAPI connection.

    What :func:`single_statement` yields on PostgreSQL. ``execute(statement, params)`` takes
    what ``Connection.execute`` takes for a statement without results (a ``text()`` or Core
    INSERT/UPDATE with plain bind parameters); SQLAlchemy compiles each statement once per
    dialect and its bind processors (e.g. :class:`UTCDateTime`) still apply. What it skips is
    the per-call ``Connection``, execution context and result objects (about a tenth of the
    incoming-call webhook's CPU). Returns the row count.
    """

    __slots__ = ("_dialect", "_cursor")

    def __init__(self, dialect: Dialect, cursor):
        self._dialect = dialect
        self._cursor = cursor

    def execute(self, statement: ClauseElement, params: Mapping[str, Any] | None = None) -> int:
        compiled, processors = _compile(statement, self._dialect)
        values = compiled.construct_params(params)
        for name, process in processors:
            values[name] = process(values[name])
        self._cursor.execute(compiled.string, values)
        return self._cursor.rowcount


@lru_cache(maxsize=64)
def _compile(statement: ClauseElement, dialect: Dialect):
    compiled = statement.compile(dialect=dialect)
    if compiled.positional or compiled.escaped_bind_names or compiled.literal_execute_params \
            or compiled.post_compile_params:
        raise ValueError("DirectStatements runs statements with plain named parameters only")
    processors = []
    for name, bind in compiled.binds.items():
        process = bind.type.bind_processor(dialect)
        if process is not None:
            processors.append((name, process))
    return compiled, tuple(processors)


@contextmanager
def single_statement(engine: Engine) -> Iterator[Connection | DirectStatements]:
    """A connection for self-contained write statements, each committed on its own.

    On PostgreSQL each runs in autocommit mode (one round trip instead of BEGIN, statement,
    COMMIT) through :class:`DirectStatements` on a pooled connection. On SQLite the block is
    an ordinary write transaction on a ``Connection``, committed when the block ends.
    """
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    dialect = engine.dialect
    pooled = engine.raw_connection()
    dbapi_conn = pooled.dbapi_connection
    cursor = None
    reusable = False  # back to the pool only in the state it came out in
    try:
        dialect.set_isolation_level(dbapi_conn, "AUTOCOMMIT")
        cursor = pooled.cursor()
        try:
            yield DirectStatements(dialect, cursor)
        finally:
            cursor.close()
            dialect.reset_isolation_level(dbapi_conn)
            reusable = True
    except dialect.loaded_dbapi.Error as exc:
        if dialect.is_disconnect(exc, dbapi_conn, cursor):
            reusable = False
            engine.dispose(close=False)  # the server went away: the pooled ones are stale too
        raise
    finally:
        if not reusable:
            pooled.invalidate()
        pooled.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Return a session factory bound to ``engine`` (objects stay usable after commit)."""
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


def get_session() -> Session:
    """Return this request's (or CLI command's) session, opened on first use and closed at teardown."""
    from flask import current_app, g

    session = g.get("db_session")
    if session is None:
        session = current_app.extensions["db_sessionmaker"]()
        g.db_session = session
    return session


def get_read_session() -> Session:
    """Return a session for reading only (reports): on SQLite it never takes the write lock.

    Closed at teardown like :func:`get_session`. Writing through it is a programming error.
    """
    from flask import current_app, g

    session = g.get("db_read_session")
    if session is None:
        engine = current_app.extensions["db_engine"].execution_options(read_only=True)
        session = Session(bind=engine)
        g.db_read_session = session
    return session


def close_session(_exc: BaseException | None = None) -> None:
    """Teardown hook: roll back whatever was not committed and close the sessions."""
    from flask import g

    for key in ("db_session", "db_read_session"):
        session = g.pop(key, None)
        if session is not None:
            session.close()
