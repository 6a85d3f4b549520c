"""Second hostile review of the recordings lifecycle: each test shows one defect (it fails
until the defect is fixed)."""
from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from recording.crypto import Keyring
from recording.jobs import FETCH_LEASE_SECONDS, Services, fetch_due, purge
from recording.models import RecordingPause
from recording.storage import LocalStore, StorageError
from tests.conftest import PG_URL, Caller
from tests.recording_helpers import KEY_A, Killed, api_token, deletion_entries, post_recording, wav
from tests.test_recordings import CALL, REC, _rows, _run, provider, rapp, store_dir  # noqa: F401

REC2 = "RE" + "b" * 32


_entries, _token = deletion_entries, api_token


# 1. A worker whose lease ran out destroys the copy another worker verified ------------------

class _FailingPut:
    """The store as worker A sees it: the write fails (disk full, S3 503)."""

    def __init__(self, store):
        self._store = store

    def put(self, key, data):
        raise StorageError("writing failed: [Errno 28] No space left on device")

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_a_worker_whose_lease_ran_out_does_not_delete_the_copy_another_worker_verified(
        rapp, provider, clock, store_dir):
    """Worker A claims REC and is slow (GC pause, VM stall, slow provider): its 5-minute lease
    runs out, worker B claims REC, stores and verifies it and deletes it at the provider. A's
    own write then fails and A's cleanup deletes the object under the one deterministic key:
    B's verified copy. The row says 'done', the provider's copy is gone: the recording is lost."""
    media = wav(12)
    provider.add_recording(REC, media)
    post_recording(rapp, CALL, REC)
    services = Services.from_app(rapp)
    real_download = provider.download_recording
    calls = []

    def download(sid):
        calls.append(sid)
        data = real_download(sid)
        if len(calls) == 1:                       # worker A, stalled past its lease
            clock.advance(FETCH_LEASE_SECONDS + 60)
            with rapp.extensions["db_sessionmaker"]() as s2:
                b = fetch_due(s2, services, clock())   # worker B does the whole job
            assert b.stored == [REC] and b.provider_deleted == [REC]
        return data

    provider.download_recording = download
    worker_a = dataclasses.replace(services, store=_FailingPut(services.store))
    with rapp.extensions["db_sessionmaker"]() as s:
        fetch_due(s, worker_a, clock())
    row = _rows(rapp)[REC]
    assert row.fetch_state == "done" and REC not in provider._recording_state()["media"]
    store = LocalStore(store_dir)
    assert store.keys() == [row.storage_key], "the only copy was deleted by the stale worker"
    assert Keyring.parse(KEY_A).decrypt(store.get(row.storage_key), REC) == media


# 2. A truncated stored object makes the audio endpoint answer 500 ---------------------------

def test_stream_of_a_truncated_blob_is_409_not_500(rapp, provider, clock, store_dir):
    """A stored object cut short inside its nonce (torn write on a crashed host, a bad restore)
    makes AESGCM raise ValueError('Nonce must be between 8 and 128 bytes'), which the audio
    view does not catch: 500 instead of the documented 409."""
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    assert _run(rapp, "fetch").exit_code == 0
    path = store_dir / _rows(rapp)[REC].storage_key
    blob = path.read_bytes()
    path.write_bytes(blob[:6 + 1 + len("ka") + 5])     # header, key id, 5 of 12 nonce bytes
    token = _token(rapp, clock)
    rapp.testing = False
    resp = rapp.test_client().get(f"/api/recordings/{REC}/audio", query_string={"reason": "QA review"},
                                  headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 409, resp.status_code


# 3. A purge killed mid-batch: the log later says "already absent" for what it deleted -------

def test_purge_killed_mid_batch_does_not_make_the_log_claim_copies_were_already_absent(
        rapp, provider, clock, store_dir, monkeypatch):
    """Purge deletes a whole batch from the store and at the provider before it commits the
    rows and their log entries. Killed half way (cron timeout, OOM, deploy), the next run finds
    the objects gone and the provider answering 404 and logs '(already absent)' / '(404:
    already deleted)': the log no longer says that this service deleted them, or where —
    the README promises it never claims 'already absent' for a copy this service deleted."""
    for sid in (REC, REC2):
        provider.add_recording(sid, wav(12))
        post_recording(rapp, CALL, sid)
    assert _run(rapp, "fetch").exit_code == 0
    clock.advance(200 * 86400)
    services = Services.from_app(rapp)
    real_delete = LocalStore.delete
    seen = []

    def delete(self, key):
        seen.append(key)
        if len(seen) == 2:
            raise Killed()
        return real_delete(self, key)

    monkeypatch.setattr(LocalStore, "delete", delete)
    with rapp.extensions["db_sessionmaker"]() as s:
        with pytest.raises(Killed):
            purge(s, services, clock())
    monkeypatch.undo()
    assert _run(rapp, "purge").exit_code == 0
    first = next(e for e in _entries(rapp) if e.recording_sid == REC)
    assert "already absent" not in first.locations, first.locations


# 4. Two simultaneous pauses of one call (PostgreSQL) -----------------------------------------

@pytest.fixture
def live(loaded_app, clock, tmp_path):
    app = loaded_app
    app.testing = False
    app.config.update(RECORDINGS_KEYS=KEY_A, RECORDINGS_DIR=str(tmp_path / "store"))
    call = "CA" + "5" * 32
    Caller(app.test_client(), call, from_number="+37251112222").post("/twilio/voice")
    return app, call


@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (TEST_DATABASE_URL)")
def test_two_simultaneous_pauses_leave_one_open_pause(live, clock, monkeypatch):
    """Two pause requests at once (a double click on the agent desktop, two gunicorn threads):
    both find no open pause and both insert one, because nothing makes the check and the insert
    atomic (no lock on the call, no unique index on the open pause). A resume then closes only
    one: the metadata says the rest of the call was never recorded, and the next pause is
    refused with 409 'already paused' while the provider is recording. On SQLite the BEGIN
    IMMEDIATE serialises the two; on PostgreSQL it does not."""
    import admin.recordings_api as api

    app, call = live
    sup = _token(app, clock, "supervisor")
    barrier = threading.Barrier(2, timeout=3)
    real_now = api._now

    def now():                 # called after the "already paused?" check, before the insert
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass               # serialised (SQLite): the other request is waiting for our lock
        return real_now()

    monkeypatch.setattr(api, "_now", now)
    statuses = []

    def pause():
        resp = app.test_client().post(f"/api/calls/{call}/recording/pause", json={"reason": "card"},
                                      headers={"Authorization": f"Bearer {sup}"})
        statuses.append(resp.status_code)

    threads = [threading.Thread(target=pause) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.undo()
    with app.extensions["db_sessionmaker"]() as s:
        open_pauses = s.scalars(select(RecordingPause).where(RecordingPause.call_sid == call,
                                                             RecordingPause.resumed_at.is_(None))).all()
    assert sorted(statuses) == [200, 409] and len(open_pauses) == 1, (statuses, len(open_pauses))


# 5. new-key prints entries the service refuses ---------------------------------------------

@pytest.mark.parametrize("key_id", ["k 1", "k1:x", "k" * 33, "ключ"])
def test_new_key_refuses_an_id_that_recordings_keys_would_reject(rapp, key_id):
    """'flask recordings new-key --id …' prints any id; pasted into RECORDINGS_KEYS, an id with
    a space, a colon, non-ASCII or over 32 characters makes the whole keyring unusable (fetch
    refuses to run, every stream answers 503)."""
    result = _run(rapp, "new-key", "--id", key_id)
    if result.exit_code == 0:
        Keyring.parse(result.output.strip())     # KeyConfigError: the printed entry is unusable


# 6. A typo in RECORDINGS_KEYS stops the retention purge and erasure --------------------------

def test_malformed_encryption_keys_do_not_stop_the_retention_purge(db_url, clock, store_dir, provider):
    """Purge and erasure need no encryption key (the docstring of Services.from_app says so),
    but Services.from_app parses RECORDINGS_KEYS unconditionally, so a typo in it (or a key
    pasted with a line break) makes 'flask recordings purge' fail with a ClickException and
    recordings outlive their retention date for as long as the typo stays."""
    from tests.recording_helpers import make_app

    good = make_app(db_url, clock, store_dir, provider)
    provider.add_recording(REC, wav(12))
    post_recording(good, CALL, REC)
    assert _run(good, "fetch").exit_code == 0
    good.extensions["db_engine"].dispose()
    clock.advance(200 * 86400)
    typo = make_app(db_url, clock, store_dir, provider, RECORDINGS_KEYS=KEY_A + ",kb:not-base64")
    try:
        result = _run(typo, "purge")
        assert result.exit_code == 0, result.output
        assert _rows(typo)[REC].deleted_at is not None
    finally:
        typo.extensions["db_engine"].dispose()


# 7. Follow-ups of the same review -----------------------------------------------------------

def test_refused_audio_requests_are_audited_with_their_outcome(rapp, provider, clock):
    from recording.models import RecordingAccess

    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    post_recording(rapp, CALL, REC2)
    token = _token(rapp, clock)
    client = rapp.test_client()

    def get(sid, **headers):
        return client.get(f"/api/recordings/{sid}/audio", query_string={"reason": "QA review"},
                          headers={"Authorization": f"Bearer {token}", **headers}).status_code

    assert get("RE404") == 404 and get(REC2) == 409
    assert _run(rapp, "fetch").exit_code == 1            # REC2 has no media at the provider
    assert get(REC) == 200 and get(REC, Range="bytes=0-9") == 206
    assert get(REC, Range="bytes=999999-") == 416
    clock.advance(200 * 86400)
    assert _run(rapp, "purge").exit_code == 0
    assert get(REC) == 410
    with rapp.extensions["db_sessionmaker"]() as s:
        rows = s.scalars(select(RecordingAccess).order_by(RecordingAccess.id)).all()
    assert [(a.recording_sid, a.outcome, a.call_sid) for a in rows] == [
        ("RE404", "404", None), (REC2, "409", CALL), (REC, "200", CALL), (REC, "206", CALL),
        (REC, "416", CALL), (REC, "410", CALL)]


def test_retry_backoff_does_not_overflow_after_many_failures():
    from recording.jobs import MAX_RETRY_SECONDS, retry_delay

    assert retry_delay(60.0, 1) == 60 and retry_delay(60.0, 3) == 240
    assert retry_delay(60.0, 1100) == retry_delay(60, 10**6) == MAX_RETRY_SECONDS


def test_truncated_or_malformed_blobs_raise_decryption_error():
    from recording.crypto import DecryptionError

    ring = Keyring.parse(KEY_A)
    _, blob = ring.encrypt(b"media", REC)
    for cut in range(len(blob)):
        with pytest.raises(DecryptionError):
            ring.decrypt(blob[:cut], REC)
    assert ring.decrypt(blob, REC) == b"media"


def test_a_worker_that_lost_its_lease_writes_nothing_and_changes_nothing(rapp, provider, clock,
                                                                        store_dir):
    """Worker A's lease runs out during its download and worker B takes the recording and is
    still working on it (pending, B's lease): A neither writes, nor counts a failure, nor
    touches B's lease."""
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    services = Services.from_app(rapp)
    real_download = provider.download_recording
    from recording.jobs import _claim

    def download(sid):
        data = real_download(sid)
        clock.advance(FETCH_LEASE_SECONDS + 60)
        with rapp.extensions["db_sessionmaker"]() as s2:          # worker B claims it
            assert _claim(s2, _rows(rapp)[REC].id, clock()) is not None
        return data

    provider.download_recording = download
    with rapp.extensions["db_sessionmaker"]() as s:
        report = fetch_due(s, services, clock())
    row = _rows(rapp)[REC]
    assert (report.stored, report.failed) == ([], [])
    assert (row.fetch_state, row.fetch_attempts) == ("pending", 0)
    assert row.fetch_lease_until == clock() + timedelta(seconds=FETCH_LEASE_SECONDS)
    assert LocalStore(store_dir).keys() == []
