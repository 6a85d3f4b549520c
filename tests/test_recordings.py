"""Recordings: callbacks, encryption at rest, the download job, purge, erasure, deletion log."""
from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from recording.crypto import DecryptionError, Keyring
from recording.models import Recording, RecordingDeletion
from recording.storage import LocalStore
from telephony.client import FakeTelephonyClient
from tests.conftest import Caller
from tests.recording_helpers import KEY_A, KEY_B, SECRET, Killed, make_app, post_recording, wav

CALL = "CA" + "1" * 32
REC = "RE" + "a" * 32
UTC = timezone.utc


@pytest.fixture
def provider():
    return FakeTelephonyClient()


@pytest.fixture
def store_dir(tmp_path):
    return tmp_path / "store"


@pytest.fixture
def rapp(db_url, clock, store_dir, provider):
    application = make_app(db_url, clock, store_dir, provider)
    yield application
    application.extensions["db_engine"].dispose()


def _rows(app):
    with app.extensions["db_sessionmaker"]() as s:
        return {r.recording_sid: r for r in s.scalars(select(Recording))}


def _run(app, *args):
    return app.test_cli_runner().invoke(args=["recordings", *args])


# 1. Callbacks --------------------------------------------------------------------------------

def test_completed_callback_schedules_download_and_deletion_date(rapp):
    assert post_recording(rapp, CALL, REC).status_code == 200
    row = _rows(rapp)[REC]
    assert (row.status, row.fetch_state, row.call_sid, row.duration_seconds) == (
        "completed", "pending", CALL, 12)
    assert row.recorded_at == datetime(2026, 12, 1, 9, 58, tzinfo=UTC)
    # 1 Dec 2026 11:58 EET + 6 calendar months = 1 Jun 2027 11:58 EEST = 08:58 UTC.
    assert row.delete_after == datetime(2027, 6, 1, 8, 58, tzinfo=UTC)


@pytest.mark.parametrize("status", ["absent", "failed"])
def test_absent_or_failed_recording_is_marked_with_no_download_and_no_deletion_job(
        rapp, provider, status):
    post_recording(rapp, CALL, REC, status=status, duration=0)
    row = _rows(rapp)[REC]
    assert (row.status, row.fetch_state, row.delete_after) == (status, "absent", None)
    result = _run(rapp, "fetch")
    assert result.exit_code == 0 and "0 stored" in result.output
    assert provider._recording_state()["downloads"] == []
    result = _run(rapp, "purge")
    assert "0 recording(s) deleted" in result.output
    assert provider._recording_state()["deleted"] == []
    # A late 'completed' for the same SID does not turn it into a download.
    post_recording(rapp, CALL, REC, status="completed")
    assert _rows(rapp)[REC].fetch_state == "absent"


def test_recording_callback_before_the_calls_own_callbacks_is_linked_by_call_sid(loaded_app, clock):
    from ivr.models import Call

    loaded_app.config.update(RECORDINGS_KEYS=KEY_A)
    post_recording(loaded_app, CALL, REC)
    caller = Caller(loaded_app.test_client(), CALL, from_number="+37251112222")
    assert caller.post("/twilio/voice").status_code == 200
    caller.post("/twilio/status", CallStatus="completed")
    with loaded_app.extensions["db_sessionmaker"]() as s:
        call = s.scalar(select(Call).where(Call.call_sid == CALL))
        recordings = s.scalars(select(Recording).where(Recording.call_sid == call.call_sid)).all()
    assert [r.recording_sid for r in recordings] == [REC]
    assert recordings[0].fetch_state == "pending"


def test_duplicate_callback_changes_nothing(rapp, provider, clock):
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    before = _rows(rapp)[REC]
    clock.advance(5)
    post_recording(rapp, CALL, REC, duration=99)
    after = _rows(rapp)[REC]
    fields = ("status", "duration_seconds", "updated_at", "delete_after", "fetch_state", "next_fetch_at")
    assert [getattr(after, f) for f in fields] == [getattr(before, f) for f in fields]
    assert _run(rapp, "fetch").exit_code == 0
    done = _rows(rapp)[REC]
    assert (done.fetch_state, done.duration_seconds) == ("done", 12)
    clock.advance(60)
    post_recording(rapp, CALL, REC)  # the provider repeats itself after we deleted its copy
    again = _rows(rapp)[REC]
    assert (again.fetch_state, again.updated_at, again.sha256) == ("done", done.updated_at, done.sha256)
    assert provider._recording_state()["downloads"] == [REC]


# 3. Encryption at rest ------------------------------------------------------------------------

def test_stored_bytes_reveal_nothing_without_the_key(rapp, provider, store_dir):
    media = wav(12)
    assert SECRET in media
    provider.add_recording(REC, media)
    post_recording(rapp, CALL, REC)
    assert _run(rapp, "fetch").exit_code == 0
    row = _rows(rapp)[REC]
    files = [p for p in Path(store_dir).rglob("*") if p.is_file()]
    assert [str(p.relative_to(store_dir)) for p in files] == [row.storage_key] == ["2026/12/" + REC + ".bin"]
    raw = files[0].read_bytes()
    assert SECRET not in raw and SECRET[:8] not in raw and b"RIFF" not in raw and b"WAVE" not in raw
    assert len(raw) == len(media) + 6 + 1 + 2 + 12 + 16  # magic, id length, "ka", nonce, tag
    assert row.key_id == "ka" and row.size_bytes == len(media) and row.media_seconds == 12
    import hashlib
    assert row.sha256 == hashlib.sha256(media).hexdigest()
    keyring = Keyring.parse(KEY_A)
    assert keyring.decrypt(raw, REC) == media
    with pytest.raises(DecryptionError):
        keyring.decrypt(raw, "RE" + "b" * 32)  # bound to its recording
    with pytest.raises(DecryptionError):
        keyring.decrypt(raw[:-1] + bytes([raw[-1] ^ 1]), REC)


def test_rotated_keys_new_recordings_use_the_new_key_old_ones_still_decrypt(
        db_url, clock, store_dir, provider):
    rec_b = "RE" + "b" * 32
    first = make_app(db_url, clock, store_dir, provider)
    provider.add_recording(REC, wav(12))
    post_recording(first, CALL, REC)
    assert _run(first, "fetch").exit_code == 0
    rotated = make_app(db_url, clock, store_dir, provider, RECORDINGS_KEYS=f"{KEY_A},{KEY_B}")
    provider.add_recording(rec_b, wav(12))
    post_recording(rotated, CALL, rec_b)
    assert _run(rotated, "fetch").exit_code == 0
    rows = _rows(rotated)
    assert (rows[REC].key_id, rows[rec_b].key_id) == ("ka", "kb")
    keyring = Keyring.parse(f"{KEY_A},{KEY_B}")
    store = LocalStore(store_dir)
    for sid in (REC, rec_b):
        assert keyring.decrypt(store.get(rows[sid].storage_key), sid) == wav(12)
    with pytest.raises(ValueError):
        Keyring.parse(KEY_B).decrypt(store.get(rows[REC].storage_key), REC)
    for engine_app in (first, rotated):
        engine_app.extensions["db_engine"].dispose()


def test_fetch_refuses_to_run_without_a_key(rapp, provider):
    rapp.config["RECORDINGS_KEYS"] = ""
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    result = _run(rapp, "fetch")
    assert result.exit_code == 1 and "RECORDINGS_KEYS" in result.output
    assert provider._recording_state()["downloads"] == []


# 5. The download job --------------------------------------------------------------------------

def test_download_fails_twice_then_succeeds_with_backoff(rapp, provider, clock, store_dir):
    provider.add_recording(REC, wav(12))
    provider.fail_next_downloads(2)
    post_recording(rapp, CALL, REC)
    start = clock()
    result = _run(rapp, "fetch")
    assert result.exit_code == 1 and "FAILED" in result.output
    row = _rows(rapp)[REC]
    assert (row.fetch_state, row.fetch_attempts, row.next_fetch_at) == (
        "pending", 1, start + timedelta(seconds=60))
    clock.advance(59)
    assert "0 stored, 0 deleted at the provider, 0 failed" in _run(rapp, "fetch").output
    clock.advance(1)
    assert _run(rapp, "fetch").exit_code == 1
    row = _rows(rapp)[REC]
    assert (row.fetch_attempts, row.next_fetch_at) == (2, clock() + timedelta(seconds=120))
    clock.advance(120)
    result = _run(rapp, "fetch")
    assert result.exit_code == 0, result.output
    assert f"stored\t{REC}" in result.output and f"deleted at provider\t{REC}" in result.output
    row = _rows(rapp)[REC]
    assert (row.fetch_state, row.provider_deleted_at, row.last_error) == ("done", clock(), None)
    assert provider._recording_state()["downloads"] == [REC, REC, REC]
    assert provider._recording_state()["media"] == {}
    assert len(LocalStore(store_dir).keys()) == 1


def test_download_gives_up_after_max_attempts_and_keeps_the_provider_copy(rapp, provider, clock):
    rapp.config["RECORDINGS_FETCH_MAX_ATTEMPTS"] = 3
    provider.add_recording(REC, wav(12))
    provider.fail_next_downloads(10)
    post_recording(rapp, CALL, REC)
    for _ in range(3):
        _run(rapp, "fetch")
        clock.advance(6 * 3600)
    row = _rows(rapp)[REC]
    assert (row.fetch_state, row.fetch_attempts, row.next_fetch_at) == ("gave_up", 3, None)
    assert REC in provider._recording_state()["media"]
    assert provider._recording_state()["deleted"] == []


def test_media_that_does_not_match_the_callback_is_not_stored(rapp, provider, clock, store_dir):
    provider.add_recording(REC, wav(5))           # the provider said 12 s
    post_recording(rapp, CALL, REC)
    result = _run(rapp, "fetch")
    assert "media lasts 5.0 s, the provider said 12 s" in result.output
    assert _rows(rapp)[REC].fetch_state == "pending"
    assert LocalStore(store_dir).keys() == []     # verified before anything is stored
    assert provider._recording_state()["deleted"] == []


def test_worker_killed_between_download_and_provider_deletion_leaves_one_copy(
        db_url, clock, store_dir, provider, monkeypatch):
    provider.add_recording(REC, wav(12))
    first = make_app(db_url, clock, store_dir, provider)
    post_recording(first, CALL, REC)

    def killed(_sid):
        raise Killed()

    monkeypatch.setattr(provider, "delete_recording", killed)
    with pytest.raises(Killed):
        with first.app_context():
            from recording.jobs import Services, fetch_due
            from db import get_session
            fetch_due(get_session(), Services.from_app(first), clock())
    first.extensions["db_engine"].dispose()
    assert _rows(first)[REC].fetch_state == "stored"
    monkeypatch.undo()

    restarted = make_app(db_url, clock, store_dir, provider)
    assert "0 stored" in _run(restarted, "fetch").output  # the dead worker's lease still holds
    clock.advance(301)
    result = _run(restarted, "fetch")
    assert result.exit_code == 0 and f"deleted at provider\t{REC}" in result.output
    row = _rows(restarted)[REC]
    assert row.fetch_state == "done"
    assert LocalStore(store_dir).keys() == [row.storage_key]         # exactly one copy: ours
    assert provider._recording_state()["media"] == {}                  # none at the provider
    assert provider._recording_state()["downloads"] == [REC]           # not downloaded again
    assert Keyring.parse(KEY_A).decrypt(LocalStore(store_dir).get(row.storage_key), REC) == wav(12)
    restarted.extensions["db_engine"].dispose()


def test_worker_killed_after_writing_before_committing_overwrites_its_own_copy(
        db_url, clock, store_dir, provider, monkeypatch):
    provider.add_recording(REC, wav(12))
    first = make_app(db_url, clock, store_dir, provider)
    post_recording(first, CALL, REC)
    real_get = LocalStore.get

    def killed_after_write(self, key):
        raise Killed()

    monkeypatch.setattr(LocalStore, "get", killed_after_write)
    with pytest.raises(Killed):
        first.test_cli_runner().invoke(args=["recordings", "fetch"], catch_exceptions=False)
    monkeypatch.setattr(LocalStore, "get", real_get)
    assert _rows(first)[REC].fetch_state == "pending"
    assert len(LocalStore(store_dir).keys()) == 1   # written, not yet recorded
    first.extensions["db_engine"].dispose()

    restarted = make_app(db_url, clock, store_dir, provider)
    clock.advance(301)
    assert _run(restarted, "fetch").exit_code == 0
    row = _rows(restarted)[REC]
    assert row.fetch_state == "done"
    assert LocalStore(store_dir).keys() == [row.storage_key]
    assert provider._recording_state()["media"] == {}
    restarted.extensions["db_engine"].dispose()


# 6. Purge and erasure -------------------------------------------------------------------------

def _fetched(app, provider, clock, sids, call=CALL):
    for sid in sids:
        provider.add_recording(sid, wav(12))
        post_recording(app, call, sid)
    assert _run(app, "fetch").exit_code == 0


def test_purge_deletes_only_due_recordings_everywhere_keeps_rows_and_is_idempotent(
        rapp, provider, clock, store_dir):
    old, new = "RE" + "1" * 32, "RE" + "2" * 32
    _fetched(rapp, provider, clock, [old])
    clock.advance(40 * 86400)
    provider.add_recording(new, wav(12))
    post_recording(rapp, CALL, new, start=None)   # made now: 10 Jan 2027
    provider.add_recording(REC, wav(12))           # pending download, provider still has it
    post_recording(rapp, CALL, REC)
    gone = "RE" + "9" * 32
    post_recording(rapp, CALL, gone)               # the provider lost it already: 404
    clock.now = datetime(2027, 6, 1, 8, 57, 59, tzinfo=UTC)
    assert "0 recording(s) deleted" in _run(rapp, "purge").output
    clock.now = datetime(2027, 6, 1, 8, 58, tzinfo=UTC)  # exactly when the 1 Dec ones are due
    result = _run(rapp, "purge", "--batch-size", "1")
    assert result.exit_code == 0, result.output
    assert "batch 3: 3 deleted so far" in result.output
    assert "3 recording(s) deleted in 3 batch(es): 1 from storage, 1 at the provider, " \
           "1 already gone at the provider; 0 failed" in result.output
    rows = _rows(rapp)
    assert rows[old].deleted_at == clock() and rows[old].deletion_reason == "retention"
    assert rows[REC].deleted_at == clock() and rows[new].deleted_at is None
    with rapp.extensions["db_sessionmaker"]() as s:
        gone_entry = s.scalar(select(RecordingDeletion).where(RecordingDeletion.recording_sid == gone))
    assert gone_entry.locations == "provider (404: already deleted)"
    assert LocalStore(store_dir).keys() == []
    assert set(provider._recording_state()["media"]) == {new}
    again = _run(rapp, "purge")
    assert "0 recording(s) deleted" in again.output and again.exit_code == 0


def test_purge_of_10000_recordings_in_batches(rapp, provider, clock, store_dir):
    made = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
    store = LocalStore(store_dir)
    rows = []
    for i in range(10_000):
        sid = f"RE{i:032x}"
        key = f"2026/01/{sid}.bin"
        stored = i % 2 == 0          # half downloaded (provider copy deleted), half still pending
        if stored:
            path = store.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
        else:
            provider.add_recording(sid, b"media")
        rows.append({"recording_sid": sid, "call_sid": f"CA{i:032x}", "status": "completed",
                     "url": "", "received_at": made, "updated_at": made, "recorded_at": made,
                     "delete_after": made + timedelta(days=181), "fetch_state": "done" if stored else "pending",
                     "fetch_attempts": 0, "storage_key": key if stored else None,
                     "provider_deleted_at": made if stored else None})
    with rapp.extensions["db_sessionmaker"]() as s:
        s.execute(Recording.__table__.insert(), rows)
        s.commit()
    result = _run(rapp, "purge", "--batch-size", "700")
    assert result.exit_code == 0, result.output
    assert result.output.count("batch ") == 15
    assert "batch 15: 10000 deleted so far" in result.output
    assert "10000 recording(s) deleted in 15 batch(es): 5000 from storage, 5000 at the provider, " \
           "0 already gone at the provider; 0 failed" in result.output
    assert store.keys() == [] and provider._recording_state()["media"] == {}
    with rapp.extensions["db_sessionmaker"]() as s:
        assert s.scalar(select(func.count()).select_from(Recording).where(Recording.deleted_at.is_(None))) == 0
        assert s.scalar(select(func.count()).select_from(Recording)) == 10_000
        assert s.scalar(select(func.max(RecordingDeletion.seq))) == 10_000
    verified = _run(rapp, "verify-log")
    assert verified.exit_code == 0, verified.output
    assert "deletion log: 10000 entries, chain intact; 0 overdue" in verified.output
    assert "0 recording(s) deleted" in _run(rapp, "purge").output


def test_purge_with_max_batches_stops_and_the_next_run_continues(rapp, provider, clock):
    _fetched(rapp, provider, clock, [f"RE{i:032d}" for i in range(5)])
    clock.advance(200 * 86400)
    first = _run(rapp, "purge", "--batch-size", "2", "--max-batches", "1")
    assert "2 recording(s) deleted in 1 batch(es)" in first.output
    second = _run(rapp, "purge", "--batch-size", "2")
    assert "3 recording(s) deleted in 2 batch(es)" in second.output


def test_erasure_deletes_one_callers_recordings_now(loaded_app, clock, tmp_path):
    provider = loaded_app.extensions["telephony"]
    loaded_app.config.update(RECORDINGS_KEYS=KEY_A, RECORDINGS_DIR=str(tmp_path / "store"))
    mine, theirs = "CA" + "3" * 32, "CA" + "4" * 32
    Caller(loaded_app.test_client(), mine, from_number="+37251112222").post("/twilio/voice")
    Caller(loaded_app.test_client(), theirs, from_number="+37253334444").post("/twilio/voice")
    _fetched(loaded_app, provider, clock, ["RE" + "3" * 32], call=mine)
    _fetched(loaded_app, provider, clock, ["RE" + "4" * 32], call=theirs)
    provider.add_recording("RE" + "5" * 32, wav(12))
    post_recording(loaded_app, mine, "RE" + "5" * 32)        # not downloaded yet
    result = loaded_app.test_cli_runner().invoke(args=["recordings", "erase", "--caller", "5111 2222"])
    assert result.exit_code == 0, result.output
    assert "+37251112222: 1 call(s)" in result.output
    assert "2 recording(s) deleted in 1 batch(es): 1 from storage, 1 at the provider" in result.output
    rows = _rows(loaded_app)
    assert rows["RE" + "3" * 32].deletion_reason == rows["RE" + "5" * 32].deletion_reason == "erasure"
    assert rows["RE" + "4" * 32].deleted_at is None
    assert LocalStore(tmp_path / "store").keys() == [rows["RE" + "4" * 32].storage_key]
    with loaded_app.extensions["db_sessionmaker"]() as s:
        entries = s.scalars(select(RecordingDeletion).order_by(RecordingDeletion.seq)).all()
    assert [(e.recording_sid, e.reason, e.actor) for e in entries] == [
        ("RE" + "3" * 32, "erasure", "flask recordings erase --caller +37251112222"),
        ("RE" + "5" * 32, "erasure", "flask recordings erase --caller +37251112222")]
    bad = loaded_app.test_cli_runner().invoke(args=["recordings", "erase", "--caller", "abc"])
    assert bad.exit_code != 0 and "--caller" in bad.output


# 7. Deletion log ------------------------------------------------------------------------------

def _tamper(app, *statements: str) -> None:
    """Change the log behind the append-only triggers' back (as a DBA could)."""
    engine = create_engine(app.config["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE recording_deletions DISABLE TRIGGER recording_deletions_append_only"))
            for statement in statements:
                conn.execute(text(statement))
            conn.execute(text("ALTER TABLE recording_deletions ENABLE TRIGGER recording_deletions_append_only"))
        else:
            conn.execute(text("DROP TRIGGER recording_deletions_no_update"))
            conn.execute(text("DROP TRIGGER recording_deletions_no_delete"))
            for statement in statements:
                conn.execute(text(statement))
    engine.dispose()


@pytest.fixture
def logged(rapp, provider, clock):
    """Four recordings purged: a deletion log of four entries."""
    _fetched(rapp, provider, clock, [f"RE{i:032d}" for i in range(4)])
    clock.advance(200 * 86400)
    assert "4 recording(s) deleted" in _run(rapp, "purge").output
    return rapp


def test_deletion_log_verifies_and_records_what_when_why_where(logged, clock, store_dir):
    result = _run(logged, "verify-log")
    assert result.exit_code == 0, result.output
    assert "deletion log: 4 entries, chain intact; 0 overdue recording(s), 0 unlogged" in result.output
    with logged.extensions["db_sessionmaker"]() as s:
        first = s.scalar(select(RecordingDeletion).where(RecordingDeletion.seq == 1))
    assert (first.recording_sid, first.call_sid, first.reason, first.deleted_at, first.prev_hash) == (
        f"RE{0:032d}", CALL, "retention", clock(), "0" * 64)
    assert first.locations == f"local:{Path(store_dir).resolve()}/2026/12/RE{0:032d}.bin"
    assert len(first.sha256) == 64


def test_the_database_refuses_to_change_the_deletion_log(logged):
    from sqlalchemy.exc import DBAPIError

    with logged.extensions["db_sessionmaker"]() as s:
        statements = ["UPDATE recording_deletions SET reason = 'x' WHERE seq = 2",
                      "DELETE FROM recording_deletions WHERE seq = 2"]
        if s.get_bind().dialect.name == "postgresql":
            statements.append("TRUNCATE recording_deletions")   # fires no row trigger
        if s.get_bind().dialect.name == "sqlite":
            # REPLACE deletes the old row first: the delete trigger must see it.
            statements.append(
                "INSERT OR REPLACE INTO recording_deletions (id, seq, recording_sid, call_sid, "
                "sha256, reason, locations, actor, deleted_at, prev_hash, entry_hash) "
                "SELECT id, seq, recording_sid, call_sid, sha256, 'rewritten', locations, actor, "
                "deleted_at, prev_hash, entry_hash FROM recording_deletions WHERE seq = 2")
        for statement in statements:
            with pytest.raises(DBAPIError, match="append-only"):
                s.execute(text(statement))
            s.rollback()
        assert s.scalar(text("SELECT reason FROM recording_deletions WHERE seq = 2")) != "rewritten"


@pytest.mark.parametrize("field, value", [
    ("reason", "'erasure'"), ("locations", "'provider'"), ("recording_sid", "'RE0'"),
    ("call_sid", "'CA0'"), ("sha256", "NULL"), ("actor", "'someone'"),
    ("deleted_at", "'2027-01-01 00:00:00'"),
])
@pytest.mark.parametrize("seq", [1, 3, 4])
def test_altering_any_one_entry_is_detected(logged, field, value, seq):
    _tamper(logged, f"UPDATE recording_deletions SET {field} = {value} WHERE seq = {seq}")
    result = _run(logged, "verify-log")
    assert result.exit_code == 1
    assert f"CHAIN BROKEN\tentry {seq} (" in result.output and "altered" in result.output
    assert "chain BROKEN" in result.output


def test_removing_or_rehashing_an_entry_is_detected(logged):
    _tamper(logged, "DELETE FROM recording_deletions WHERE seq = 2")
    result = _run(logged, "verify-log")
    assert "entry 3: expected sequence number 2" in result.output
    assert "entry 3: does not link to the entry before it" in result.output


def test_rewriting_an_entry_with_a_fresh_hash_breaks_the_next_link(logged):
    from recording.deletion_log import entry_digest

    with logged.extensions["db_sessionmaker"]() as s:
        row = s.scalar(select(RecordingDeletion).where(RecordingDeletion.seq == 2))
    forged = entry_digest(row.prev_hash, seq=2, recording_sid=row.recording_sid,
                          call_sid=row.call_sid, sha256=row.sha256, reason="erasure",
                          locations=row.locations, actor=row.actor, deleted_at=row.deleted_at)
    _tamper(logged, f"UPDATE recording_deletions SET reason = 'erasure', entry_hash = '{forged}' WHERE seq = 2")
    result = _run(logged, "verify-log")
    assert result.exit_code == 1 and "entry 3: does not link to the entry before it" in result.output


def _rewrite_chain_from(app, seq: int, *, key: bytes | None) -> None:
    """Change entry ``seq``'s reason and recompute its hash and every later one with ``key``
    (an attacker with write access to the database)."""
    from recording.deletion_log import entry_digest

    with app.extensions["db_sessionmaker"]() as s:
        rows = list(s.scalars(select(RecordingDeletion).order_by(RecordingDeletion.seq)))
    prev = rows[seq - 2].entry_hash if seq > 1 else "0" * 64
    statements = []
    for row in rows[seq - 1:]:
        reason = "erasure" if row.seq == seq else row.reason
        digest = entry_digest(prev, seq=row.seq, recording_sid=row.recording_sid,
                              call_sid=row.call_sid, sha256=row.sha256, reason=reason,
                              locations=row.locations, actor=row.actor, deleted_at=row.deleted_at,
                              key=key)
        statements.append(f"UPDATE recording_deletions SET reason = '{reason}', "
                          f"prev_hash = '{prev}', entry_hash = '{digest}' WHERE seq = {row.seq}")
        prev = digest
    _tamper(app, *statements)


LOG_KEY = base64.b64encode(bytes(range(32))).decode()


def test_a_keyed_chain_detects_a_rewrite_with_fresh_hashes(rapp, provider, clock):
    rapp.config["RECORDINGS_LOG_KEY"] = LOG_KEY
    _fetched(rapp, provider, clock, [f"RE{i:032d}" for i in range(4)])
    clock.advance(200 * 86400)
    assert "4 recording(s) deleted" in _run(rapp, "purge").output
    intact = _run(rapp, "verify-log")
    assert intact.exit_code == 0 and "NOTE" not in intact.output, intact.output
    _rewrite_chain_from(rapp, 2, key=None)  # everything recomputed, but without the key
    result = _run(rapp, "verify-log")
    assert result.exit_code == 1
    assert [line.split("\t")[1][:8] for line in result.output.splitlines()
            if line.startswith("CHAIN BROKEN")] == ["entry 2 ", "entry 3 ", "entry 4 "]


def test_an_unkeyed_chain_says_it_cannot_detect_a_full_rewrite(logged):
    _rewrite_chain_from(logged, 2, key=None)
    result = _run(logged, "verify-log")
    assert "chain intact" in result.output  # the limitation the NOTE line states
    assert "NOTE\tRECORDINGS_LOG_KEY is not set" in result.output


def test_verify_log_reports_every_recording_past_its_date_that_still_exists(
        rapp, provider, clock, store_dir):
    stored, pending, fresh = "RE" + "6" * 32, "RE" + "7" * 32, "RE" + "8" * 32
    _fetched(rapp, provider, clock, [stored])
    provider.add_recording(pending, wav(12))
    post_recording(rapp, CALL, pending)
    clock.advance(200 * 86400)
    provider.add_recording(fresh, wav(12))
    post_recording(rapp, CALL, fresh, start=None)
    result = _run(rapp, "verify-log")
    assert result.exit_code == 1
    key = _rows(rapp)[stored].storage_key
    assert f"OVERDUE\t{stored}\tstill in local:{Path(store_dir).resolve()}/{key}" in result.output
    assert f"OVERDUE\t{pending}\tstill in provider" in result.output
    assert fresh not in result.output
    assert "2 overdue recording(s)" in result.output
    _run(rapp, "purge")
    # A copy that reappears in the store after its deletion is reported too.
    LocalStore(store_dir).put(key, b"restored from a backup")
    result = _run(rapp, "verify-log")
    assert f"OVERDUE\t{stored}\tstill in local:" in result.output and "(marked deleted)" in result.output


def test_local_store_keys_cannot_leave_the_store(tmp_path):
    store = LocalStore(tmp_path / "store")
    for key in ("../x.bin", "/etc/passwd", "2026/../../x.bin", "2026//x.bin", "a\\b.bin", ""):
        with pytest.raises(ValueError):
            store.put(key, b"x")
    store.put("2026/12/RE1.bin", b"x")
    assert store.keys() == ["2026/12/RE1.bin"] and store.delete("2026/12/RE1.bin") is True
    assert store.delete("2026/12/RE1.bin") is False and store.keys() == []
    assert [p for p in (tmp_path / "store" / "2026" / "12").rglob("*") if p.is_file()] == []  # no temp files left


def test_purge_also_deletes_a_copy_a_killed_download_wrote_but_never_recorded(
        db_url, clock, store_dir, provider, monkeypatch):
    provider.add_recording(REC, wav(12))
    first = make_app(db_url, clock, store_dir, provider)
    post_recording(first, CALL, REC)

    def killed_after_write(self, key):
        raise Killed()

    monkeypatch.setattr(LocalStore, "get", killed_after_write)
    with pytest.raises(Killed):
        first.test_cli_runner().invoke(args=["recordings", "fetch"], catch_exceptions=False)
    monkeypatch.undo()
    assert len(LocalStore(store_dir).keys()) == 1 and _rows(first)[REC].storage_key is None
    # The caller asks for erasure before any retry: the stray object goes too.
    result = _run(first, "erase", "--caller", "+37251234567")   # no call row: nothing matched
    assert "0 recording(s) deleted" in result.output
    clock.advance(200 * 86400)
    result = _run(first, "purge")
    assert "1 recording(s) deleted in 1 batch(es): 1 from storage, 1 at the provider" in result.output
    assert LocalStore(store_dir).keys() == [] and provider._recording_state()["media"] == {}
    with first.extensions["db_sessionmaker"]() as s:
        entry = s.scalar(select(RecordingDeletion))
    assert entry.locations.endswith(f"/2026/12/{REC}.bin (unrecorded copy); provider")
    first.extensions["db_engine"].dispose()


def test_a_copy_that_does_not_read_back_is_removed_and_retried(rapp, provider, store_dir, monkeypatch):
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    monkeypatch.setattr(LocalStore, "get", lambda self, key: b"SKAR1\x00\x02ka" + b"\x00" * 40)
    result = _run(rapp, "fetch")
    assert result.exit_code == 1 and "does not decrypt" in result.output
    assert LocalStore(store_dir).keys() == []
    row = _rows(rapp)[REC]
    assert (row.fetch_state, row.fetch_attempts) == ("pending", 1)
    assert REC in provider._recording_state()["media"]


def test_a_recording_sid_unfit_for_a_file_name_fails_alone_and_can_still_be_purged(
        rapp, provider, clock, store_dir):
    odd = "RE../../etc"
    provider.add_recording(odd, wav(12))
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, odd)
    post_recording(rapp, CALL, REC)
    result = _run(rapp, "fetch")
    assert f"FAILED\t{odd}\tdownload: unsafe recording SID" in result.output
    assert f"stored\t{REC}" in result.output
    assert LocalStore(store_dir).keys() == [f"2026/12/{REC}.bin"]
    clock.advance(200 * 86400)
    result = _run(rapp, "purge")
    assert "2 recording(s) deleted" in result.output and result.exit_code == 0
    assert provider._recording_state()["media"] == {}


def test_two_purges_at_once_delete_and_log_each_recording_once(rapp, provider, clock, store_dir):
    import threading

    from recording.deletion_log import verify_chain
    from recording.jobs import Services, purge

    made = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
    rows = [{"recording_sid": f"RE{i:032x}", "call_sid": CALL, "status": "completed", "url": "",
             "received_at": made, "updated_at": made, "recorded_at": made,
             "delete_after": made + timedelta(days=181), "fetch_state": "pending", "fetch_attempts": 0}
            for i in range(300)]
    for row in rows:
        provider.add_recording(row["recording_sid"], b"media")
    with rapp.extensions["db_sessionmaker"]() as s:
        s.execute(Recording.__table__.insert(), rows)
        s.commit()
    services = Services(provider, LocalStore(store_dir), None)
    reports, errors = [], []

    def run():
        try:
            with rapp.extensions["db_sessionmaker"]() as s:
                reports.append(purge(s, services, clock(), batch_size=7))
        except Exception as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(r.deleted for r in reports) == 300
    assert sum(r.provider_deleted for r in reports) == 300 and sum(r.provider_gone for r in reports) == 0
    with rapp.extensions["db_sessionmaker"]() as s:
        logged = s.scalars(select(RecordingDeletion.recording_sid)).all()
        assert sorted(logged) == sorted(r["recording_sid"] for r in rows)
        assert verify_chain(s).ok
