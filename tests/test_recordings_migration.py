"""Migration 0006 on a database with recordings: dates and download state are filled in, the
deletion log refuses changes, and it downgrades cleanly."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from tests.conftest import PG_URL, alembic_config
from tests.test_database import _scratch_postgres


def _databases(tmp_path):
    yield f"sqlite:///{tmp_path / 'm.db'}", lambda: None
    if PG_URL:
        yield _scratch_postgres()


def test_0006_backfills_existing_recordings_and_downgrades(tmp_path):
    for url, drop in _databases(tmp_path):
        try:
            cfg = alembic_config(url)
            command.upgrade(cfg, "0005")
            engine = create_engine(url)
            made = datetime(2026, 8, 31, 9, 0, tzinfo=timezone.utc)
            with engine.begin() as conn:
                for sid, status, started in (("RE1", "completed", made), ("RE2", "absent", None),
                                             ("RE3", "in-progress", None)):
                    conn.execute(text(
                        "INSERT INTO recordings (recording_sid, call_sid, status, url, started_at, "
                        "received_at, updated_at) VALUES (:sid, 'CA1', :status, '', :started, :made, :made)"),
                        {"sid": sid, "status": status, "made": made if conn.dialect.name != "sqlite"
                         else made.replace(tzinfo=None),
                         "started": started if (started is None or conn.dialect.name != "sqlite")
                         else started.replace(tzinfo=None)})
            engine.dispose()
            command.upgrade(cfg, "0006")
            engine = create_engine(url)
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT recording_sid, fetch_state, delete_after IS NULL, "
                                         "recorded_at IS NULL FROM recordings ORDER BY recording_sid")).all()
                due = conn.execute(text("SELECT delete_after FROM recordings WHERE recording_sid='RE1'")).scalar()
            assert [tuple(r) for r in rows] == [("RE1", "pending", False, False),
                                                ("RE2", "absent", True, False),
                                                ("RE3", "none", True, False)]
            if isinstance(due, str):
                due = datetime.fromisoformat(due)
            if due.tzinfo is None:
                due = due.replace(tzinfo=timezone.utc)
            assert due == datetime(2027, 2, 28, 10, 0, tzinfo=timezone.utc)  # 31 Aug 12:00 EEST -> 28 Feb 12:00 EET
            with engine.begin() as conn:
                conn.execute(text(
                    "INSERT INTO recording_deletions (seq, recording_sid, call_sid, reason, locations, "
                    "actor, deleted_at, prev_hash, entry_hash) VALUES (1, 'RE1', 'CA1', 'retention', "
                    "'provider', 'test', :at, :z, :h)"), {"at": made, "z": "0" * 64, "h": "1" * 64})
            with pytest.raises(Exception, match="append-only"):
                with engine.begin() as conn:
                    conn.execute(text("UPDATE recording_deletions SET reason = 'erasure'"))
            engine.dispose()
            command.downgrade(cfg, "0005")
            engine = create_engine(url)
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM recordings")).scalar() == 3
            engine.dispose()
            command.upgrade(cfg, "head")
        finally:
            drop()
