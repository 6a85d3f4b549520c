"""Regression tests for defects a hostile review found in the recordings lifecycle."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from recording.crypto import Keyring
from recording.jobs import VerificationError, verify_media, wav_seconds
from recording.models import RecordingAccess, RecordingPause
from recording.storage import LocalStore, StorageError
from telephony.client import TelephonyError
from tests.conftest import PG_URL, Caller
from tests.recording_helpers import (KEY_A, KEY_B, Killed, api_token, deletion_entries, make_app,
                                     post_recording, wav)
from tests.test_recordings import CALL, REC, _rows, _run, provider, rapp, store_dir  # noqa: F401

REC2 = "RE" + "b" * 32


_entries, _token = deletion_entries, api_token


def _accesses(app):
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalars(select(RecordingAccess).order_by(RecordingAccess.id)).all()


# 1. Truncated or empty WAV ------------------------------------------------------------------

def test_truncated_wav_is_refused_and_the_provider_copy_kept(rapp, provider):
    media = wav(12)
    provider.add_recording(REC, media[: len(media) // 2])   # connection cut half way
    post_recording(rapp, CALL, REC, duration=12)
    result = _run(rapp, "fetch")
    row = _rows(rapp)[REC]
    assert result.exit_code == 1 and "truncated WAV" in result.output
    assert (row.fetch_state, row.fetch_attempts, row.storage_key) == ("pending", 1, None)
    assert provider._recording_state()["deleted"] == []


def test_truncated_wav_without_a_duration_is_refused(rapp, provider):
    media = wav(12)
    provider.add_recording(REC, media[:-1000])
    post_recording(rapp, CALL, REC, duration=None)
    assert _run(rapp, "fetch").exit_code == 1
    assert provider._recording_state()["deleted"] == []


@pytest.mark.parametrize("duration", [None, 0, 2])
def test_header_only_wav_is_refused(rapp, provider, duration):
    provider.add_recording(REC, wav(0))           # 44-byte header, no audio
    post_recording(rapp, CALL, REC, duration=duration)
    result = _run(rapp, "fetch")
    assert result.exit_code == 1 and "0 frames" in result.output
    assert _rows(rapp)[REC].fetch_state == "pending"
    assert provider._recording_state()["deleted"] == []


def test_verify_media_counts_the_bytes_present():
    assert wav_seconds(wav(3)) == 3.0
    assert verify_media(wav(12), 12) == 12.0
    assert verify_media(wav(1), None) == 1.0
    odd = wav(2)[:-1]                      # half a frame missing at the end
    with pytest.raises(VerificationError, match="truncated"):
        wav_seconds(odd)
    short = wav(1, rate=8000)[:44 + 8000]  # header says 1 s, body holds 0.5 s
    with pytest.raises(VerificationError, match="truncated"):
        verify_media(short, None)
    with pytest.raises(VerificationError, match="not WAV"):
        verify_media(b"<html>502 Bad Gateway</html>", 12)
    with pytest.raises(VerificationError, match="empty"):
        verify_media(b"", None)


def test_half_second_wav_without_duration_is_refused():
    import io
    import wave
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(b"\x01\x00" * 4000)
    with pytest.raises(VerificationError, match="no duration"):
        verify_media(out.getvalue(), None)
    assert verify_media(out.getvalue(), 1) == 0.5


def test_zero_duration_is_stored_as_zero_not_null(rapp):
    post_recording(rapp, CALL, REC, duration=0)
    assert _rows(rapp)[REC].duration_seconds == 0


# 2. Disk full / permission errors -----------------------------------------------------------

def test_disk_full_during_put_is_a_reported_failure(rapp, provider, monkeypatch, store_dir):
    provider.add_recording(REC, wav(12))
    provider.add_recording(REC2, wav(12))
    post_recording(rapp, CALL, REC)
    post_recording(rapp, CALL, REC2)
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    result = _run(rapp, "fetch")
    monkeypatch.undo()
    rows = _rows(rapp)
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1
    assert result.output.count("FAILED") == 2 and "No space" in result.output
    assert (rows[REC].fetch_attempts, rows[REC2].fetch_attempts) == (1, 1)
    assert provider._recording_state()["deleted"] == []
    assert [p for p in store_dir.rglob("*") if p.is_file()] == []


def test_unwritable_store_dir_is_a_reported_failure(rapp, provider, monkeypatch):
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    monkeypatch.setattr("tempfile.mkstemp",
                        lambda *a, **k: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")))
    result = _run(rapp, "fetch")
    assert result.exit_code == 1 and "FAILED" in result.output and "denied" in result.output
    assert _rows(rapp)[REC].fetch_attempts == 1


def test_local_store_wraps_os_errors(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.put("2026/12/x.bin", b"data")
    monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(OSError(errno.EIO, "I/O")))
    with pytest.raises(StorageError, match="I/O"):
        store.get("2026/12/x.bin")
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: (_ for _ in ()).throw(
        PermissionError(errno.EACCES, "denied")))
    with pytest.raises(StorageError, match="denied"):
        store.delete("2026/12/x.bin")


def test_store_delete_permission_error_fails_only_that_recording(rapp, provider, clock, monkeypatch):
    sids = ["RE" + str(i) * 32 for i in range(1, 4)]
    for sid in sids:
        provider.add_recording(sid, wav(12))
        post_recording(rapp, CALL, sid)
    assert _run(rapp, "fetch").exit_code == 0
    clock.advance(200 * 86400)
    bad = _rows(rapp)[sids[1]].storage_key
    real_unlink = Path.unlink

    def unlink(self, *a, **k):
        if str(self).endswith(bad):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_unlink(self, *a, **k)

    monkeypatch.setattr(Path, "unlink", unlink)
    result = _run(rapp, "purge")
    monkeypatch.undo()
    assert result.exit_code == 1 and f"FAILED\t{sids[1]}" in result.output
    rows = _rows(rapp)
    assert [rows[s].deleted_at is not None for s in sids] == [True, False, True]
    assert [e.recording_sid for e in _entries(rapp)] == [sids[0], sids[2]]
    assert _run(rapp, "purge").exit_code == 0
    assert [e.recording_sid for e in _entries(rapp)] == [sids[0], sids[2], sids[1]]


# 3. Provider failure after the store deletion ----------------------------------------------

def test_provider_failure_after_store_deletion_is_logged_truthfully(rapp, provider, clock, store_dir):
    sid = "RE" + "1" * 32
    provider.add_recording(sid, wav(12))
    post_recording(rapp, CALL, sid)
    real = provider.delete_recording
    provider.delete_recording = lambda s: (_ for _ in ()).throw(TelephonyError("HTTP 500"))
    _run(rapp, "fetch")
    key = _rows(rapp)[sid].storage_key
    assert _rows(rapp)[sid].fetch_state == "stored"
    clock.advance(200 * 86400)
    first = _run(rapp, "purge")
    assert first.exit_code == 1 and "FAILED" in first.output
    assert LocalStore(store_dir).keys() == []
    (entry,) = _entries(rapp)
    where = LocalStore(store_dir).location(key)
    assert entry.locations.startswith(where + "; provider deletion failed")
    assert "already absent" not in entry.locations
    assert _rows(rapp)[sid].deleted_at is None
    provider.delete_recording = real
    clock.advance(3600)
    assert _run(rapp, "purge").exit_code == 0
    first_entry, second = _entries(rapp)
    assert second.recording_sid == sid and second.locations == "provider"
    assert "already absent" not in second.locations
    assert _rows(rapp)[sid].deleted_at is not None
    assert provider._recording_state()["media"] == {}
    assert _run(rapp, "verify-log").exit_code == 0


# 4. Streaming errors are never a 500 --------------------------------------------------------

def _stored(app, provider):
    provider.add_recording(REC, wav(12))
    post_recording(app, CALL, REC)
    assert _run(app, "fetch").exit_code == 0


def _stream(app, token):
    app.testing = False
    return app.test_client().get(f"/api/recordings/{REC}/audio?reason=quality",
                                 headers={"Authorization": f"Bearer {token}"})


def test_stream_with_its_key_rotated_out_is_503(rapp, provider, clock):
    _stored(rapp, provider)
    rapp.config["RECORDINGS_KEYS"] = KEY_B
    resp = _stream(rapp, _token(rapp, clock))
    assert resp.status_code == 503 and "'ka'" in resp.get_json()["error"]
    assert len(_accesses(rapp)) == 1


def test_stream_of_a_missing_object_is_503(rapp, provider, clock, store_dir):
    _stored(rapp, provider)
    LocalStore(store_dir).delete(_rows(rapp)[REC].storage_key)
    resp = _stream(rapp, _token(rapp, clock))
    assert resp.status_code == 503 and "storage" in resp.get_json()["error"]


def test_stream_of_an_altered_blob_is_409(rapp, provider, clock, store_dir):
    _stored(rapp, provider)
    key = _rows(rapp)[REC].storage_key
    store = LocalStore(store_dir)
    blob = store.get(key)
    store.put(key, blob[:-1] + bytes([blob[-1] ^ 1]))
    resp = _stream(rapp, _token(rapp, clock))
    assert resp.status_code == 409 and "altered" in resp.get_json()["error"]


def test_stream_with_malformed_keys_is_503(rapp, provider, clock):
    _stored(rapp, provider)
    rapp.config["RECORDINGS_KEYS"] = "ka:not-base64!"
    assert _stream(rapp, _token(rapp, clock)).status_code == 503


# 5. NUL characters and the pause order ------------------------------------------------------

def test_nul_in_reasons_and_sids_is_400(rapp, provider, clock):
    _stored(rapp, provider)
    token = _token(rapp, clock)
    rapp.testing = False
    client = rapp.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    for url, query in [(f"/api/calls/{CALL}/recordings", {"reason": "abc\x00def"}),
                       (f"/api/recordings/{REC}/audio", {"reason": "abc\x00def"}),
                       ("/api/recordings/RE%00x/audio", {"reason": "review"}),
                       ("/api/calls/CA%00x/recordings", {"reason": "review"})]:
        resp = client.get(url, query_string=query, headers=auth)
        assert resp.status_code == 400 and "NUL" in resp.get_json()["error"], url
    assert _accesses(rapp) == []


@pytest.fixture
def live(loaded_app, clock, tmp_path):
    app = loaded_app
    app.testing = False
    app.config.update(RECORDINGS_KEYS=KEY_A, RECORDINGS_DIR=str(tmp_path / "store"))
    call = "CA" + "5" * 32
    Caller(app.test_client(), call, from_number="+37251112222").post("/twilio/voice")
    return app, call


def _post(app, token, url, body=None):
    return app.test_client().post(url, json=body, headers={"Authorization": f"Bearer {token}"})


def _pauses(app):
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalars(select(RecordingPause).order_by(RecordingPause.id)).all()


def test_nul_in_pause_reason_or_call_sid_is_400_and_nothing_paused(live, clock):
    app, call = live
    sup = _token(app, clock, "supervisor")
    resp = _post(app, sup, f"/api/calls/{call}/recording/pause", {"reason": "card\x00number"})
    assert resp.status_code == 400
    assert _post(app, sup, "/api/calls/CA%00x/recording/pause").status_code == 400
    assert _post(app, sup, "/api/calls/CA%00x/recording/resume").status_code == 400
    assert app.extensions["telephony"]._recording_state()["paused"] == []
    assert _pauses(app) == []


def test_pause_is_committed_before_the_provider_pauses(live, clock):
    app, call = live
    sup = _token(app, clock, "supervisor")
    fake = app.extensions["telephony"]
    real = fake.set_recording_paused
    seen = []

    def check(sid, paused):
        if paused:
            seen.append([(p.call_sid, p.resumed_at) for p in _pauses(app)])  # another connection
        return real(sid, paused)

    fake.set_recording_paused = check
    assert _post(app, sup, f"/api/calls/{call}/recording/pause").status_code == 200
    assert seen == [[(call, None)]]
    assert _post(app, sup, f"/api/calls/{call}/recording/resume").status_code == 200
    assert fake._recording_state()["paused"] == [(call, True), (call, False)]


def test_pause_refused_by_the_provider_leaves_no_pause_row(live, clock):
    app, call = live
    sup = _token(app, clock, "supervisor")
    fake = app.extensions["telephony"]
    fake.set_recording_paused = lambda sid, paused: (_ for _ in ()).throw(TelephonyError("HTTP 500"))
    assert _post(app, sup, f"/api/calls/{call}/recording/pause").status_code == 502
    assert _pauses(app) == []


# 6. Partial files of a killed write ---------------------------------------------------------

def _kill_between_fsync_and_rename(app, monkeypatch):
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(Killed()))
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # no cleanup runs
    with pytest.raises(Killed):
        app.test_cli_runner().invoke(args=["recordings", "fetch"], catch_exceptions=False)
    monkeypatch.undo()


def test_partial_file_is_reported_and_removed_by_the_next_download(rapp, provider, clock, store_dir,
                                                                    monkeypatch):
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    _kill_between_fsync_and_rename(rapp, monkeypatch)
    parts = LocalStore(store_dir).partial_files()
    assert len(parts) == 1 and Path(parts[0]).name.startswith(f".part-{REC}.bin-")
    assert LocalStore(store_dir).keys() == []
    clock.advance(200 * 86400)
    verify = _run(rapp, "verify-log")
    assert verify.exit_code == 1 and f"PARTIAL FILE\t{parts[0]}" in verify.output
    clock.advance(-200 * 86400 + 301)
    assert _run(rapp, "fetch").exit_code == 0
    files = [str(p.relative_to(store_dir)) for p in store_dir.rglob("*") if p.is_file()]
    assert files == [_rows(rapp)[REC].storage_key]


def test_partial_file_is_removed_by_purge(rapp, provider, clock, store_dir, monkeypatch):
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    _kill_between_fsync_and_rename(rapp, monkeypatch)
    clock.advance(200 * 86400)
    result = _run(rapp, "purge")
    assert result.exit_code == 0 and "1 from storage" in result.output
    (entry,) = _entries(rapp)
    assert "(unrecorded copy)" in entry.locations
    assert [p for p in store_dir.rglob("*") if p.is_file()] == []
    assert _run(rapp, "verify-log").exit_code == 0


# 7. Purge / erasure racing the download job -------------------------------------------------

def test_retention_purge_skips_a_recording_leased_to_a_running_download(rapp, provider, clock,
                                                                      store_dir):
    from recording.jobs import Services, fetch_due, purge
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    clock.advance(200 * 86400)    # already due when the download finally runs
    services = Services.from_app(rapp)
    real = provider.download_recording
    during = []

    def download(sid):
        with rapp.extensions["db_sessionmaker"]() as s:   # purge runs mid-download
            during.append(purge(s, services, clock()).deleted)
        return real(sid)

    provider.download_recording = download
    with rapp.extensions["db_sessionmaker"]() as s:
        report = fetch_due(s, services, clock())
    provider.download_recording = real
    assert during == [0] and report.stored == [REC]
    result = _run(rapp, "purge")
    assert result.exit_code == 0 and "1 recording(s) deleted" in result.output
    assert LocalStore(store_dir).keys() == [] and provider._recording_state()["media"] == {}
    assert _run(rapp, "verify-log").exit_code == 0


def test_erasure_mid_download_leaves_no_copy(rapp, provider, clock, store_dir):
    from recording.jobs import Services, fetch_due, purge
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    services = Services.from_app(rapp)
    real = provider.download_recording

    def download(sid):
        media = real(sid)
        with rapp.extensions["db_sessionmaker"]() as s:
            assert purge(s, services, clock(), reason="erasure", call_sids=[CALL],
                         actor="erase").deleted == 1
        return media

    provider.download_recording = download
    with rapp.extensions["db_sessionmaker"]() as s:
        report = fetch_due(s, services, clock())
    assert (report.stored, report.failed) == ([], [])
    assert LocalStore(store_dir).keys() == [] and provider._recording_state()["media"] == {}
    row = _rows(rapp)[REC]
    assert (row.deletion_reason, row.storage_key, row.fetch_state) == ("erasure", None, "pending")
    assert _run(rapp, "verify-log").exit_code == 0


def test_verify_log_reports_an_unrecorded_copy_of_a_deleted_recording(rapp, provider, clock,
                                                                    store_dir, monkeypatch):
    from recording.jobs import Services, fetch_due, purge
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    services = Services.from_app(rapp)
    real_put = LocalStore.put

    def put(self, key, data):
        # The erasure runs after the download renewed its lease, just before it writes its copy
        # (earlier, the download writes nothing: it finds its lease gone).
        with rapp.extensions["db_sessionmaker"]() as s:
            purge(s, services, clock(), reason="erasure", call_sids=[CALL], actor="erase")
        real_put(self, key, data)
        # the download's own clean-up of its copy will fail
        monkeypatch.setattr(LocalStore, "delete", lambda self, key: (_ for _ in ()).throw(
            StorageError("denied")))

    monkeypatch.setattr(LocalStore, "put", put)
    with rapp.extensions["db_sessionmaker"]() as s:
        report = fetch_due(s, services, clock())
    monkeypatch.undo()
    key = LocalStore(store_dir).keys()
    assert report.stored == [] and report.failed == [], report
    verify = _run(rapp, "verify-log")
    assert verify.exit_code == 1 and f"OVERDUE\t{REC}" in verify.output, (verify.output, key)
    assert "unrecorded copy, marked deleted" in verify.output and len(key) == 1


@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (TEST_DATABASE_URL)")
def test_erasure_holding_its_rows_blocks_a_download_from_marking_stored_postgres(rapp, provider, clock,
                                                                              store_dir):
    """Erasure has selected the row (no storage key yet) and not committed when the download
    writes its copy: the download's UPDATE waits for the erasure, then keeps no copy."""
    import threading
    import time as _time

    from sqlalchemy import create_engine, text

    from recording.jobs import Services, fetch_due, purge
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    services = Services.from_app(rapp)
    downloaded, erasing = threading.Event(), threading.Event()
    real_download, real_delete = provider.download_recording, provider.delete_recording
    watcher = create_engine(rapp.extensions["db_engine"].url)
    outcome = {}

    def download(sid):
        media = real_download(sid)
        downloaded.set()
        assert erasing.wait(30)
        return media

    def lock_waiters():
        with watcher.connect() as conn:
            return conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar()

    def delete(sid):   # the erasure's provider deletion, while its row lock is held
        result = real_delete(sid)
        erasing.set()
        deadline = _time.monotonic() + 30    # a bound on waiting, not a timing assertion
        while lock_waiters() == 0 and _time.monotonic() < deadline:
            _time.sleep(0.02)
        outcome["download_waited"] = lock_waiters() > 0
        return result

    provider.download_recording, provider.delete_recording = download, delete
    errors = []

    def fetcher():
        try:
            with rapp.extensions["db_sessionmaker"]() as s:
                outcome["fetch"] = fetch_due(s, services, clock())
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    def eraser():
        try:
            assert downloaded.wait(30)
            with rapp.extensions["db_sessionmaker"]() as s:
                outcome["erase"] = purge(s, services, clock(), reason="erasure", call_sids=[CALL],
                                         actor="erase")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=fetcher), threading.Thread(target=eraser)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    watcher.dispose()
    assert errors == []
    assert outcome["download_waited"] is True
    assert outcome["erase"].deleted == 1 and outcome["fetch"].stored == []
    row = _rows(rapp)[REC]
    assert (row.deletion_reason, row.storage_key, row.fetch_state) == ("erasure", None, "pending")
    assert LocalStore(store_dir).keys() == [] and LocalStore(store_dir).partial_files() == []
    assert _run(rapp, "verify-log").exit_code == 0


# 8. S3 versions, the fetch lease, odd start times, the retention setting ---------------------

def test_purge_deletes_every_version_in_a_versioned_bucket(db_url, clock, tmp_path):
    pytest.importorskip("moto")
    from tests.test_recordings_s3 import _free_port
    from moto.server import ThreadedMotoServer
    import boto3
    from telephony.client import FakeTelephonyClient

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    mp = pytest.MonkeyPatch()
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_SESSION_TOKEN", "testing")):
        mp.setenv(name, value)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="eu-north-1")
    client.create_bucket(Bucket="rec-versioned",
                         CreateBucketConfiguration={"LocationConstraint": "eu-north-1"})
    client.put_bucket_versioning(Bucket="rec-versioned", VersioningConfiguration={"Status": "Enabled"})
    provider = FakeTelephonyClient()
    app = make_app(db_url, clock, tmp_path / "unused", provider, RECORDINGS_STORAGE="s3",
                   RECORDINGS_S3_BUCKET="rec-versioned", RECORDINGS_S3_PREFIX="hotline/",
                   RECORDINGS_S3_ENDPOINT_URL=endpoint)
    try:
        provider.add_recording(REC, wav(12))
        post_recording(app, CALL, REC)
        runner = app.test_cli_runner()
        assert runner.invoke(args=["recordings", "fetch"]).exit_code == 0
        provider.add_recording(REC, wav(12))     # downloaded again: a second version
        with app.extensions["db_sessionmaker"]() as s:
            from recording.jobs import Services
            row = _rows(app)[REC]
            store = Services.from_app(app).store
            store.put(row.storage_key, store.get(row.storage_key))
        assert len(client.list_object_versions(Bucket="rec-versioned")["Versions"]) == 2
        clock.advance(200 * 86400)
        result = runner.invoke(args=["recordings", "purge"])
        assert result.exit_code == 0 and "1 from storage" in result.output
        listing = client.list_object_versions(Bucket="rec-versioned")
        assert listing.get("Versions", []) == [] and listing.get("DeleteMarkers", []) == []
        assert runner.invoke(args=["recordings", "verify-log"]).exit_code == 0
    finally:
        app.extensions["db_engine"].dispose()
        mp.undo()
        server.stop()


def test_fetch_lease_runs_from_the_claim_not_the_round_start(rapp, provider, clock):
    from recording.jobs import Services, fetch_due
    a, b = "RE" + "1" * 32, "RE" + "2" * 32
    for sid in (a, b):
        provider.add_recording(sid, wav(2))
        post_recording(rapp, CALL, sid, duration=2)
    services = Services.from_app(rapp)
    real = provider.download_recording
    second_round = []

    def download(sid):
        if sid == a:
            clock.advance(400)          # a slow download: longer than the lease
        else:                           # while this worker holds b, a second round starts
            with rapp.extensions["db_sessionmaker"]() as s2:
                second_round.append(fetch_due(s2, services, clock()))
        return real(sid)

    provider.download_recording = download
    with rapp.extensions["db_sessionmaker"]() as s:
        report = fetch_due(s, services, clock())
    assert report.stored == [a, b]
    assert second_round[0].stored == [] and second_round[0].failed == []
    assert provider._recording_state()["downloads"].count(b) == 1


@pytest.mark.parametrize("start", ["Fri, 31 Dec 9999 23:00:00 +0000", "Fri, 31 Dec 9998 23:59:59 +0000",
                                   "Sat, 01 Jan 1994 00:00:00 +0000"])
def test_implausible_start_time_counts_retention_from_arrival(rapp, clock, start):
    from datetime import datetime, timezone
    r = Caller(rapp.test_client(), CALL).post(
        "/twilio/recording", RecordingSid=REC, RecordingStatus="completed", RecordingDuration="12",
        RecordingStartTime=start)
    assert r.status_code == 200
    row = _rows(rapp)[REC]
    assert (row.fetch_state, row.started_at) == ("pending", None)
    assert row.recorded_at == clock()
    # 1 Dec 2026 12:00 Tallinn + 6 months = 1 Jun 2027 12:00 EEST = 09:00 UTC
    assert row.delete_after == datetime(2027, 6, 1, 9, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("months", [0, -1, 1201, "6", True])
def test_invalid_retention_setting_is_refused_at_startup(db_url, clock, tmp_path, months):
    from config import ConfigError, load_settings
    from telephony.client import FakeTelephonyClient
    with pytest.raises(ConfigError, match="RECORDINGS_RETENTION_MONTHS"):
        make_app(db_url, clock, tmp_path / "store", FakeTelephonyClient(),
                 RECORDINGS_RETENTION_MONTHS=months)
    with pytest.raises(ConfigError, match="RECORDINGS_RETENTION_MONTHS"):
        load_settings({"TWILIO_AUTH_TOKEN": "x", "RECORDINGS_RETENTION_MONTHS": "-3"})
    assert load_settings({"TWILIO_AUTH_TOKEN": "x",
                          "RECORDINGS_RETENTION_MONTHS": "12"})["RECORDINGS_RETENTION_MONTHS"] == 12
