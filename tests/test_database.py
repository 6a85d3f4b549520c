"""Schema and storage: migrations both ways, no drift from the models, UTC round trips."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text

import admin.models  # noqa: F401
import ivr.models  # noqa: F401
import line_config  # noqa: F401
import recording.models  # noqa: F401
import routing.models  # noqa: F401
import survey.models  # noqa: F401
from db import Base
from ivr.models import Call
from tests.conftest import PG_URL, alembic_config, normalise_pg


def _scratch_postgres():
    """Create an empty scratch database next to the test one; return its URL and a dropper."""
    base = normalise_pg(PG_URL)
    name = f"migrations_{uuid.uuid4().hex[:10]}"
    admin_engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + "/" + name

    def drop():
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()

    return url, drop


def _databases(tmp_path):
    yield f"sqlite:///{tmp_path / 'migrations.db'}", lambda: None
    if PG_URL:
        yield _scratch_postgres()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_and_no_drift(tmp_path):
    expected = set(Base.metadata.tables)
    checked = 0
    for url, drop in _databases(tmp_path):
        try:
            cfg = alembic_config(url)
            command.upgrade(cfg, "head")
            assert _tables(url) == expected
            command.downgrade(cfg, "base")
            assert _tables(url) == set()
            command.upgrade(cfg, "head")
            assert _tables(url) == expected
            engine = create_engine(url)
            with engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"compare_type": True})
                assert compare_metadata(context, Base.metadata) == []
            engine.dispose()
            checked += 1
        finally:
            drop()
    assert checked == (2 if PG_URL else 1)


def test_times_round_trip_as_aware_utc(session):
    tallinn_summer = timezone(timedelta(hours=3))
    arrived = datetime(2026, 7, 1, 12, 30, 15, tzinfo=tallinn_summer)
    session.add(Call(call_sid="CA" + "0" * 32, arrived_at=arrived, last_event_at=arrived))
    session.commit()
    session.expire_all()
    stored = session.scalar(select(Call.arrived_at))
    assert stored == arrived
    assert stored.tzinfo is not None and stored.utcoffset() == timedelta(0)
    assert stored.hour == 9


def test_naive_datetimes_are_refused(session):
    session.add(Call(call_sid="CA" + "1" * 32, arrived_at=datetime(2026, 7, 1, 12, 0),
                     last_event_at=datetime(2026, 7, 1, 12, 0)))
    with pytest.raises(Exception, match="naive datetime"):
        session.commit()


def test_sqlite_read_session_does_not_block_writers(tmp_path):
    """A report reading on SQLite must not hold the write lock the webhooks need."""
    from alembic import command
    from flask import Flask

    from db import get_read_session, make_engine, make_sessionmaker

    url = f"sqlite:///{tmp_path / 'rw.db'}"
    command.upgrade(alembic_config(url), "head")
    app = Flask(__name__)
    engine = make_engine(url)
    app.extensions["db_engine"] = engine
    with app.app_context():
        reader = get_read_session()
        reader.execute(select(Call.id)).all()  # transaction open, as during a long report
        writer = make_sessionmaker(engine.execution_options())()
        writer.connection().exec_driver_sql("PRAGMA busy_timeout=100")
        writer.add(Call(call_sid="CA" + "2" * 32, arrived_at=datetime.now(timezone.utc),
                        last_event_at=datetime.now(timezone.utc)))
        writer.commit()
        writer.close()
        reader.close()
    engine.dispose()
