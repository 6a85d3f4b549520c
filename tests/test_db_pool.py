"""db.single_statement's direct path and the idle-time ping of pooled connections (PostgreSQL).

The incoming-call webhook writes its one row through :class:`db.DirectStatements` on a pooled
DBAPI connection in autocommit mode, and pooled connections are pinged only after sitting idle
(``db.PING_AFTER_IDLE_SECONDS``) instead of on every checkout. These tests hold both to what
SQLAlchemy's own path and ``pool_pre_ping`` guaranteed: the row is committed, the connection
goes back to the pool as it came out, and connections the server dropped are replaced.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, func, select

import db
from ivr import calls as call_log
from ivr.models import Call
from tests.conftest import PG_URL, Caller
from tests.twiml import parse, verbs

pytestmark = pytest.mark.skipif(not PG_URL, reason="the direct path is PostgreSQL's")

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


def _use_engine(app, engine) -> None:
    app.extensions["db_engine"].dispose()
    app.extensions["db_engine"] = engine
    app.extensions["db_sessionmaker"] = db.make_sessionmaker(engine)


def _pooled_backend_pids(engine) -> list[int]:
    """Server process ids of the connections waiting in ``engine``'s pool."""
    held = [engine.raw_connection() for _ in range(engine.pool.checkedin())]
    pids = [fairy.driver_connection.info.backend_pid for fairy in held]
    for fairy in held:
        fairy.close()
    return pids


def _drop_connections(db_url: str, pids: list[int]) -> None:
    """Make the server end these connections, as a restart or an idle timeout would."""
    assert pids
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for pid in pids:
            conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
    admin.dispose()


def _calls(app) -> int:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(func.count()).select_from(Call))


def _answered_with_menu(response) -> bool:
    return "Gather" in verbs(parse(response))


def test_single_statement_commits_and_returns_the_connection_as_it_was(app, db_url):
    engine = app.extensions["db_engine"]
    with db.single_statement(engine) as conn:
        assert isinstance(conn, db.DirectStatements)
        call_log.record_arrival(conn, "CA" + "1" * 32, NOW, from_number="+37251234567")
        call_log.record_arrival(conn, "CA" + "1" * 32, NOW.replace(hour=11))  # repeat: later
    other = create_engine(db_url)
    with other.connect() as c:  # committed: another connection sees it at once
        row = c.execute(select(Call.arrived_at, Call.last_event_at, Call.from_number)).one()
    other.dispose()
    assert row == (NOW, NOW.replace(hour=11), "+37251234567")
    fairy = engine.raw_connection()
    assert fairy.driver_connection.autocommit is False
    fairy.close()


def test_a_failed_statement_leaves_a_usable_connection(app):
    engine = app.extensions["db_engine"]
    with pytest.raises(Exception):
        with db.single_statement(engine) as conn:
            call_log.record_arrival(conn, "CA" + "2" * 32, NOW, from_number="+372\x00")
    with pytest.raises(ValueError):  # naive times are refused by UTCDateTime, as before
        with db.single_statement(engine) as conn:
            call_log.record_arrival(conn, "CA" + "2" * 32, NOW.replace(tzinfo=None))
    fairy = engine.raw_connection()
    assert fairy.driver_connection.autocommit is False
    fairy.close()
    with db.single_statement(engine) as conn:
        call_log.record_arrival(conn, "CA" + "2" * 32, NOW)
    assert _calls(app) == 1


def test_connections_the_server_dropped_are_replaced_after_idling(loaded_app, db_url,
                                                                   monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.05)
    engine = db.make_engine(db_url)
    _use_engine(loaded_app, engine)
    client = loaded_app.test_client()
    assert _answered_with_menu(Caller(client, "CA" + "3" * 32).post("/twilio/voice"))
    _drop_connections(db_url, _pooled_backend_pids(engine))
    time.sleep(0.1)
    # Both paths: the direct one (incoming call) and a session (the language menu).
    assert _answered_with_menu(Caller(client, "CA" + "4" * 32).post("/twilio/voice"))
    _drop_connections(db_url, _pooled_backend_pids(engine))
    time.sleep(0.1)
    menu = Caller(client, "CA" + "4" * 32).post("/twilio/ivr/language", Digits="1")
    assert "Gather" in verbs(parse(menu))
    assert _calls(loaded_app) == 2


def test_a_connection_dropped_while_in_use_costs_one_request_not_the_pool(loaded_app, db_url,
                                                                         monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)  # never ping
    engine = db.make_engine(db_url)
    _use_engine(loaded_app, engine)
    client = loaded_app.test_client()
    held = [engine.raw_connection() for _ in range(3)]  # three connections in the pool
    for fairy in held:
        fairy.close()
    assert _answered_with_menu(Caller(client, "CA" + "0" * 32).post("/twilio/voice"))
    pids = _pooled_backend_pids(engine)
    assert len(pids) == 3
    _drop_connections(db_url, pids)
    failed = Caller(client, "CA" + "5" * 32).post("/twilio/voice")
    assert failed.status_code == 200 and not _answered_with_menu(failed)  # spoken apology
    # The disconnect discarded the whole pool: the next calls get fresh connections.
    for n in range(3):
        assert _answered_with_menu(Caller(client, "CA" + f"6{n}" * 16).post("/twilio/voice"))
    assert _calls(loaded_app) == 4


def test_a_disconnect_in_single_statement_discards_the_stale_pool(app, db_url, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)  # never ping
    engine = db.make_engine(db_url)
    _use_engine(app, engine)
    held = [engine.raw_connection() for _ in range(3)]
    for fairy in held:
        fairy.close()
    _drop_connections(db_url, _pooled_backend_pids(engine))
    with pytest.raises(Exception):
        with db.single_statement(engine) as conn:
            call_log.record_arrival(conn, "CA" + "7" * 32, NOW)
    for n in range(3):  # not one more failure: the other pooled connections were stale too
        with db.single_statement(engine) as conn:
            call_log.record_arrival(conn, "CA" + f"8{n}" * 16, NOW)
    assert _calls(app) == 3
