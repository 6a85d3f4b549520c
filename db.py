"""Database plumbing: declarative Base, a UTC datetime type, engine and session per app."""
from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy.engine import Connection, Engine
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
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            if conn.get_execution_options().get("read_only"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


@contextmanager
def single_statement(engine: Engine) -> Iterator[Connection]:
    """A connection for one self-contained write statement, committed when the block ends.

    On PostgreSQL it runs in autocommit mode: one round trip instead of BEGIN, statement,
    COMMIT. On SQLite it is an ordinary write transaction.
    """
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


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
