"""Fixes to the recordings lifecycle (issue 4): suffix and multiple byte ranges, duplicate key
ids, pauses never resumed, out-of-order terminal statuses, reconciliation with the provider,
and a missing RECORDINGS_LOG_KEY."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from recording.crypto import KeyConfigError, Keyring
from recording.models import Recording, RecordingDeletion
from telephony.client import ProviderRecording
from tests.conftest import Caller
from tests.recording_helpers import KEY_A, KEY_B, make_app, post_recording, wav
from tests.test_recordings import CALL, LOG_KEY, REC, _rows, _run, provider, rapp, store_dir  # noqa: F401
from tests.test_recordings_api import CALL as API_CALL, _get, _post, api  # noqa: F401

UTC = timezone.utc
REC2 = "RE" + "b" * 32
REC3 = "RE" + "c" * 32
OTHER_CALL = "CA" + "9" * 32  # a call on the same provider account that is not ours
AUDIO = "/api/recordings/RE" + "5" * 32 + "/audio?reason=quality review"


# 1. HTTP Range: suffix longer than the file, bytes=-0, several ranges ------------------------

def test_suffix_range_longer_than_the_recording_gets_all_of_it(api):
    app, tokens = api
    media = wav(12)
    for suffix in (len(media) + 1, len(media) + 10_000, len(media)):
        response = _get(app, tokens["qa"], AUDIO, Range=f"bytes=-{suffix}")
        assert response.status_code == 206, (suffix, response.status_code)
        assert response.headers["Content-Range"] == f"bytes 0-{len(media) - 1}/{len(media)}"
        assert response.data == media
    tail = _get(app, tokens["qa"], AUDIO, Range="bytes=-10")
    assert tail.status_code == 206 and tail.data == media[-10:]


def test_zero_length_suffix_range_is_unsatisfiable(api):
    app, tokens = api
    response = _get(app, tokens["qa"], AUDIO, Range="bytes=-0")
    assert response.status_code == 416
    assert _get(app, tokens["qa"], AUDIO, Range=f"bytes={len(wav(12))}-").status_code == 416


def test_several_ranges_get_the_whole_recording_with_200(api):
    app, tokens = api
    media = wav(12)
    response = _get(app, tokens["qa"], AUDIO, Range="bytes=0-9,100-199")
    assert response.status_code == 200 and response.data == media
    assert "Content-Range" not in response.headers
    assert response.headers["Accept-Ranges"] == "bytes"


# 2. A key id listed twice in RECORDINGS_KEYS ---------------------------------------------

def test_duplicate_key_id_is_refused_at_startup_naming_it(db_url, clock, store_dir, provider):
    from config import ConfigError, load_settings

    other = "ka:" + KEY_B.split(":", 1)[1]            # a different key under the same id
    for spec in (f"{KEY_A},{other}", f"{KEY_A},{KEY_B}, {KEY_A}"):
        with pytest.raises(ConfigError, match="RECORDINGS_KEYS: key id 'ka' is listed twice"):
            load_settings({"TWILIO_AUTH_TOKEN": "x", "RECORDINGS_KEYS": spec})
        with pytest.raises(ConfigError, match="'ka'"):
            make_app(db_url, clock, store_dir, provider, RECORDINGS_KEYS=spec)
        with pytest.raises(KeyConfigError, match="key id 'ka' is listed twice"):
            Keyring.parse(spec)
    assert load_settings({"TWILIO_AUTH_TOKEN": "x", "RECORDINGS_KEYS": f"{KEY_A},{KEY_B}"})


def test_duplicate_key_id_set_after_start_stops_fetch_with_its_name(rapp, provider):
    rapp.config["RECORDINGS_KEYS"] = f"{KEY_A},ka:{KEY_B.split(':', 1)[1]}"
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    result = _run(rapp, "fetch")
    assert result.exit_code == 1 and "key id 'ka' is listed twice" in result.output
    assert provider._recording_state()["downloads"] == []


# 3. A pause never resumed ends with the call or its recording -----------------------------

def _pauses(app, token):
    return _get(app, token, f"/api/calls/{API_CALL}/recordings?reason=check pauses").get_json()["pauses"]


def test_a_pause_never_resumed_ends_when_the_call_ends(api, clock):
    app, tokens = api
    started = clock()
    assert _post(app, tokens["supervisor"], f"/api/calls/{API_CALL}/recording/pause",
                 {"reason": "card number"}).status_code == 200
    clock.advance(40)
    Caller(app.test_client(), API_CALL).post("/twilio/status", CallStatus="completed")
    assert _pauses(app, tokens["qa"]) == [{"paused_at": started.isoformat(),
                                           "resumed_at": clock().isoformat(),
                                           "reason": "card number"}]
    clock.advance(40)
    Caller(app.test_client(), API_CALL).post("/twilio/status", CallStatus="completed")  # repeat
    assert _pauses(app, tokens["qa"])[0]["resumed_at"] == (clock() - timedelta(seconds=40)).isoformat()


def test_a_pause_never_resumed_ends_with_the_recording_when_the_call_status_is_lost(api, clock):
    app, tokens = api
    started = clock()                                  # 1 Dec 2026 10:00:00 UTC
    assert _post(app, tokens["supervisor"], f"/api/calls/{API_CALL}/recording/pause").status_code == 200
    clock.advance(120)
    app.extensions["telephony"].add_recording(REC2, wav(40))
    post_recording(app, API_CALL, REC2, duration=40, start="Tue, 01 Dec 2026 09:59:30 +0000")
    # The recording ran 09:59:30 + 40 s: the paused span ended with it at 10:00:10.
    assert _pauses(app, tokens["qa"]) == [{"paused_at": started.isoformat(),
                                           "resumed_at": "2026-12-01T10:00:10+00:00", "reason": ""}]


def test_a_pause_begun_after_a_recording_ended_is_not_closed_by_it(api, clock):
    app, tokens = api
    clock.advance(120)                                 # 10:02:00, after REC2 below ended
    assert _post(app, tokens["supervisor"], f"/api/calls/{API_CALL}/recording/pause").status_code == 200
    clock.advance(5)
    post_recording(app, API_CALL, REC2, duration=40, start="Tue, 01 Dec 2026 09:59:30 +0000")
    assert _pauses(app, tokens["qa"])[0]["resumed_at"] is None


# 4. A terminal-looking status out of order does not block 'completed' ---------------------

@pytest.mark.parametrize("first", ["deleted", "stopped", "processing", "something-new"])
def test_completed_after_an_out_of_order_status_is_downloaded_and_stored(rapp, provider, first):
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC, status=first)
    assert _rows(rapp)[REC].fetch_state == "none"
    post_recording(rapp, CALL, REC, status="completed")
    row = _rows(rapp)[REC]
    assert (row.status, row.fetch_state) == ("completed", "pending") and row.delete_after is not None
    result = _run(rapp, "fetch")
    assert result.exit_code == 0 and f"stored\t{REC}" in result.output
    row = _rows(rapp)[REC]
    assert (row.fetch_state, row.size_bytes) == ("done", len(wav(12)))


def test_after_completed_a_deleted_or_absent_callback_changes_nothing(rapp):
    post_recording(rapp, CALL, REC)
    for status in ("deleted", "absent", "failed", "in-progress"):
        post_recording(rapp, CALL, REC, status=status)
        row = _rows(rapp)[REC]
        assert (row.status, row.fetch_state) == ("completed", "pending"), status


# 5. Reconciliation: recordings whose callback was lost -----------------------------------

START = datetime(2026, 12, 1, 9, 58, tzinfo=UTC)


def _known_call(app, call_sid=CALL):
    from ivr.calls import record_arrival

    with app.extensions["db_sessionmaker"]() as s:
        record_arrival(s, call_sid, START, from_number="+37251112222")
        s.commit()


def _listed(provider, sid, status="completed", call=CALL, seconds=12, start=START, media=True):
    provider.add_listed_recording(ProviderRecording(sid, call, status, seconds, start, 2, "DialVerb"),
                                  wav(seconds) if media else None)


def test_reconcile_queues_a_recording_whose_callback_was_lost_and_is_idempotent(rapp, provider, clock):
    _known_call(rapp)
    _listed(provider, REC)
    _listed(provider, REC2, call=OTHER_CALL)          # another application's: never touched
    _listed(provider, REC3, status="in-progress")     # still recording: its callback will come
    result = _run(rapp, "reconcile", "--since", "2")
    assert result.exit_code == 0, result.output
    assert f"found\t{REC}\tcompleted" in result.output
    assert "3 listed by the provider, 1 unknown added, 0 stuck caught up, 1 of other calls" in result.output
    rows = _rows(rapp)
    assert set(rows) == {REC}
    row = rows[REC]
    assert (row.call_sid, row.status, row.fetch_state, row.duration_seconds) == (CALL, "completed", "pending", 12)
    assert row.recorded_at == START                   # retention counts from the start, not today
    assert row.delete_after == datetime(2027, 6, 1, 8, 58, tzinfo=UTC)
    again = _run(rapp, "reconcile")
    assert again.exit_code == 0 and "0 unknown added, 0 stuck caught up" in again.output
    fetched = _run(rapp, "fetch")
    assert fetched.exit_code == 0 and f"stored\t{REC}" in fetched.output
    assert provider._recording_state()["downloads"] == [REC]
    assert provider._recording_state()["deleted"] == [REC]
    assert "0 unknown added, 0 stuck caught up" in _run(rapp, "reconcile").output
    assert _rows(rapp)[REC].fetch_state == "done"


def test_reconcile_catches_up_recordings_stuck_without_a_final_status(rapp, provider):
    _known_call(rapp)
    post_recording(rapp, CALL, REC, status="in-progress")   # 'completed' never came
    post_recording(rapp, CALL, REC2, status="absent", duration=0)   # provider was wrong
    post_recording(rapp, CALL, REC3)                         # queued already: left alone
    for sid in (REC, REC2, REC3):
        _listed(provider, sid)
    result = _run(rapp, "reconcile")
    assert result.exit_code == 0, result.output
    assert f"caught up\t{REC}\tcompleted" in result.output
    assert f"caught up\t{REC2}\tcompleted" in result.output and REC3 not in result.output
    rows = _rows(rapp)
    assert {sid: rows[sid].fetch_state for sid in rows} == {REC: "pending", REC2: "pending", REC3: "pending"}
    assert rows[REC2].delete_after is not None
    assert "0 unknown added, 0 stuck caught up" in _run(rapp, "reconcile").output


def test_reconcile_records_an_unknown_absent_recording_without_a_download(rapp, provider):
    _known_call(rapp)
    _listed(provider, REC, status="absent", seconds=0, media=False)
    assert _run(rapp, "reconcile").exit_code == 0
    row = _rows(rapp)[REC]
    assert (row.status, row.fetch_state, row.delete_after) == ("absent", "absent", None)


def test_fetch_can_reconcile_first(rapp, provider):
    _known_call(rapp)
    _listed(provider, REC)
    result = _run(rapp, "fetch", "--reconcile", "2")
    assert result.exit_code == 0, result.output
    assert f"found\t{REC}" in result.output and f"stored\t{REC}" in result.output
    assert _rows(rapp)[REC].fetch_state == "done"


def test_reconcile_when_the_provider_cannot_be_listed(rapp, provider):
    provider.fail_calls = True
    result = _run(rapp, "reconcile")
    assert result.exit_code == 1 and "FAILED\treconcile" in result.output
    result = _run(rapp, "fetch", "--reconcile", "1")
    assert result.exit_code == 1 and "FAILED\treconcile" in result.output


def test_reconcile_knows_the_calls_we_dialled_back(loaded_app):
    from ivr.models import Call
    from routing.models import Callback, Queue

    app, fake = loaded_app, loaded_app.extensions["telephony"]
    _known_call(app)
    outbound = "CA" + "7" * 32
    with app.extensions["db_sessionmaker"]() as s:
        call = s.scalar(select(Call).where(Call.call_sid == CALL))
        queue = s.scalar(select(Queue).order_by(Queue.id))
        s.add(Callback(kind="keep_place", call_id=call.id, number="+37251112222", queue_id=queue.id,
                       state="done", attempts=1, outbound_call_sid=outbound, due_at=START))
        s.commit()
    _listed(fake, REC, call=outbound)
    result = app.test_cli_runner().invoke(args=["recordings", "reconcile"])
    assert f"found\t{REC}" in result.output, result.output


class _ListDouble(BaseHTTPRequestHandler):
    received: list[str] = []

    def do_GET(self):  # noqa: N802
        type(self).received.append(self.path)
        body = json.dumps({"recordings": [
            {"sid": REC, "call_sid": CALL, "status": "completed", "duration": "12", "channels": 2,
             "source": "DialVerb", "start_time": "Tue, 01 Dec 2026 09:58:00 +0000"},
            {"sid": REC2, "call_sid": CALL, "status": "in-progress", "duration": "-1",
             "channels": 2, "source": "DialVerb", "start_time": None}],
            "next_page_uri": None, "page": 0, "page_size": 1000, "start": 0, "end": 1,
            "uri": "/x"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_twilio_adapter_lists_recordings_since_a_date():
    from telephony.client import TwilioRestClient

    account = "AC" + "a" * 32
    _ListDouble.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ListDouble)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = TwilioRestClient(account, "secret", f"http://127.0.0.1:{server.server_address[1]}")
        listed = client.list_recordings(START)
    finally:
        server.shutdown()
        server.server_close()
    path = urlsplit(_ListDouble.received[0])
    assert path.path == f"/2010-04-01/Accounts/{account}/Recordings.json"
    assert parse_qs(path.query)["DateCreated>"] == ["2026-12-01T09:58:00Z"]
    assert listed == [ProviderRecording(REC, CALL, "completed", 12, START, 2, "DialVerb"),
                      ProviderRecording(REC2, CALL, "in-progress", -1, None, 2, "DialVerb")]


# 6. RECORDINGS_LOG_KEY missing where the log needs it ------------------------------------

def test_purge_without_the_log_key_does_not_extend_a_keyed_log(rapp, provider, clock):
    rapp.config["RECORDINGS_LOG_KEY"] = LOG_KEY
    for sid in (REC, REC2):
        provider.add_recording(sid, wav(12))
        post_recording(rapp, CALL, sid)
    assert _run(rapp, "fetch").exit_code == 0
    clock.advance(200 * 86400)
    assert _run(rapp, "purge", "--batch-size", "1", "--max-batches", "1").exit_code == 0
    rapp.config["RECORDINGS_LOG_KEY"] = ""                  # forgotten in the cron environment
    for args in (["purge"], ["erase", "--caller", "+37251112222"]):
        result = _run(rapp, *args)
        assert result.exit_code == 1 and "RECORDINGS_LOG_KEY is not set" in result.output, result.output
    assert sum(r.deleted_at is not None for r in _rows(rapp).values()) == 1   # nothing more deleted
    unkeyed = _run(rapp, "verify-log")
    assert unkeyed.exit_code == 1 and "KEY?\tRECORDINGS_LOG_KEY is not set" in unkeyed.output
    rapp.config["RECORDINGS_LOG_KEY"] = LOG_KEY
    assert _run(rapp, "purge").exit_code == 0
    result = _run(rapp, "verify-log")
    assert result.exit_code == 0 and "2 entries, chain intact" in result.output, result.output


def test_an_unkeyed_log_purges_without_a_key(rapp, provider, clock):
    provider.add_recording(REC, wav(12))
    post_recording(rapp, CALL, REC)
    assert _run(rapp, "fetch").exit_code == 0
    clock.advance(200 * 86400)
    assert _run(rapp, "purge").exit_code == 0
    provider.add_recording(REC2, wav(12))
    post_recording(rapp, CALL, REC2, start=None)
    assert _run(rapp, "fetch").exit_code == 0
    clock.advance(200 * 86400)
    assert _run(rapp, "purge").exit_code == 0
    with rapp.extensions["db_sessionmaker"]() as s:
        assert len(s.scalars(select(RecordingDeletion)).all()) == 2
    assert "KEY?" not in _run(rapp, "verify-log").output
