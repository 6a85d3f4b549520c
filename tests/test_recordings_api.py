"""Recording access API: QA and supervisors only, Range streaming, every access audited;
pause and resume of a live call's recording."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from admin.auth import issue_token
from recording.models import RecordingAccess
from tests.conftest import Caller
from tests.recording_helpers import KEY_A, post_recording, wav

CALL = "CA" + "5" * 32
REC = "RE" + "5" * 32


@pytest.fixture
def api(loaded_app, tmp_path, clock):
    loaded_app.config.update(RECORDINGS_KEYS=KEY_A, RECORDINGS_DIR=str(tmp_path / "store"))
    Caller(loaded_app.test_client(), CALL, from_number="+37251112222").post("/twilio/voice")
    provider = loaded_app.extensions["telephony"]
    provider.add_recording(REC, wav(12))
    post_recording(loaded_app, CALL, REC)
    assert loaded_app.test_cli_runner().invoke(args=["recordings", "fetch"]).exit_code == 0
    tokens = {}
    with loaded_app.extensions["db_sessionmaker"]() as s:
        from routing.models import Agent
        agent = s.scalar(select(Agent).order_by(Agent.id))
        for role in ("admin", "supervisor", "qa", "reporting"):
            tokens[role] = issue_token(s, role, clock())
        tokens["agent"] = issue_token(s, "agent", clock(), agent_id=agent.id)
        tokens["agent_id"] = agent.id
        s.commit()
    return loaded_app, tokens


def _get(app, token, url, **headers):
    return app.test_client().get(url, headers={"Authorization": f"Bearer {token}", **headers})


def _accesses(app):
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalars(select(RecordingAccess).order_by(RecordingAccess.id)).all()


@pytest.mark.parametrize("role", ["admin", "reporting", "agent"])
def test_other_roles_get_403_and_no_token_401(api, role):
    app, tokens = api
    for url in (f"/api/calls/{CALL}/recordings?reason=quality+review",
                f"/api/recordings/{REC}/audio?reason=quality+review"):
        assert _get(app, tokens[role], url).status_code == 403
        assert app.test_client().get(url).status_code == 401
    assert _accesses(app) == []


@pytest.mark.parametrize("role", ["qa", "supervisor"])
def test_qa_and_supervisor_list_a_calls_recordings_audited(api, role, clock):
    app, tokens = api
    response = _get(app, tokens[role], f"/api/calls/{CALL}/recordings?reason=complaint 2026/114")
    assert response.status_code == 200
    body = response.get_json()
    (item,) = body["recordings"]
    assert (item["recording_sid"], item["available"], item["duration_seconds"], item["stored"]) == (
        REC, True, 12, "done")
    assert item["delete_after"] == "2027-06-01T08:58:00+00:00"
    (access,) = _accesses(app)
    assert (access.role, access.action, access.call_sid, access.recording_sid, access.reason,
            access.accessed_at) == (role, "list", CALL, None, "complaint 2026/114", clock())


def test_a_reason_is_required(api):
    app, tokens = api
    assert _get(app, tokens["qa"], f"/api/recordings/{REC}/audio").status_code == 400
    assert _get(app, tokens["qa"], f"/api/recordings/{REC}/audio?reason=x").status_code == 400
    assert _accesses(app) == []


def test_stream_whole_and_ranges_each_audited(api, clock):
    app, tokens = api
    media = wav(12)
    url = f"/api/recordings/{REC}/audio?reason=QA sample"
    whole = _get(app, tokens["qa"], url)
    assert whole.status_code == 200 and whole.data == media
    assert whole.headers["Accept-Ranges"] == "bytes" and whole.headers["Cache-Control"] == "no-store"
    assert whole.mimetype == "audio/wav"
    part = _get(app, tokens["supervisor"], url, Range="bytes=100-199")
    assert part.status_code == 206 and part.data == media[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(media)}"
    tail = _get(app, tokens["qa"], url, Range="bytes=-10")
    assert tail.status_code == 206 and tail.data == media[-10:]
    beyond = _get(app, tokens["qa"], url, Range=f"bytes={len(media) + 5}-")
    assert beyond.status_code == 416
    accesses = _accesses(app)
    assert [(a.role, a.action, a.recording_sid, a.byte_range, a.reason) for a in accesses] == [
        ("qa", "stream", REC, None, "QA sample"),
        ("supervisor", "stream", REC, "bytes=100-199", "QA sample"),
        ("qa", "stream", REC, "bytes=-10", "QA sample"),
        ("qa", "stream", REC, f"bytes={len(media) + 5}-", "QA sample")]
    assert len({a.token_id for a in accesses}) == 2


def test_reason_in_a_header_unknown_not_downloaded_and_deleted(api, clock):
    app, tokens = api
    assert _get(app, tokens["qa"], f"/api/recordings/{REC}/audio",
                **{"X-Access-Reason": "dispute"}).status_code == 200
    assert _get(app, tokens["qa"], "/api/recordings/RE404/audio?reason=look").status_code == 404
    pending = "RE" + "6" * 32
    post_recording(app, CALL, pending)
    response = _get(app, tokens["qa"], f"/api/recordings/{pending}/audio?reason=look")
    assert response.status_code == 409 and "not been downloaded" in response.get_json()["error"]
    clock.advance(200 * 86400)
    app.test_cli_runner().invoke(args=["recordings", "purge"])
    gone = _get(app, tokens["qa"], f"/api/recordings/{REC}/audio?reason=look")
    assert gone.status_code == 410 and "retention" in gone.get_json()["error"]
    listing = _get(app, tokens["qa"], f"/api/calls/{CALL}/recordings?reason=look").get_json()
    assert [r["available"] for r in listing["recordings"]] == [False, False]


# 9. Pause and resume ----------------------------------------------------------------------

def _post(app, token, url, body=None):
    return app.test_client().post(url, json=body or {}, headers={"Authorization": f"Bearer {token}"})


def test_pause_and_resume_reach_the_provider_and_the_metadata(api, clock):
    app, tokens = api
    provider = app.extensions["telephony"]
    started = clock()
    response = _post(app, tokens["supervisor"], f"/api/calls/{CALL}/recording/pause",
                     {"reason": "card number"})
    assert response.status_code == 200 and response.get_json()["paused"] is True
    assert _post(app, tokens["supervisor"], f"/api/calls/{CALL}/recording/pause").status_code == 409
    clock.advance(25)
    response = _post(app, tokens["admin"], f"/api/calls/{CALL}/recording/resume")
    assert response.status_code == 200
    assert response.get_json()["pauses"] == [{"paused_at": started.isoformat(),
                                              "resumed_at": clock().isoformat(),
                                              "reason": "card number"}]
    assert _post(app, tokens["admin"], f"/api/calls/{CALL}/recording/resume").status_code == 409
    assert provider._recording_state()["paused"] == [(CALL, True), (CALL, False)]
    listing = _get(app, tokens["qa"], f"/api/calls/{CALL}/recordings?reason=check pauses").get_json()
    assert listing["pauses"] == response.get_json()["pauses"]


def test_agent_pauses_only_their_own_call_and_qa_may_not(api):
    from ivr.models import Call

    app, tokens = api
    url = f"/api/calls/{CALL}/recording/pause"
    assert _post(app, tokens["agent"], url).status_code == 403
    assert _post(app, tokens["qa"], url).status_code == 403
    with app.extensions["db_sessionmaker"]() as s:
        s.execute(Call.__table__.update().where(Call.call_sid == CALL).values(agent_id=tokens["agent_id"]))
        s.commit()
    assert _post(app, tokens["agent"], url).status_code == 200
    assert _post(app, tokens["agent"], "/api/calls/CA404/recording/pause").status_code == 404


def test_pause_refused_by_the_provider_is_502_and_not_recorded(api):
    app, tokens = api
    app.extensions["telephony"].fail_calls = True
    response = _post(app, tokens["supervisor"], f"/api/calls/{CALL}/recording/pause")
    assert response.status_code == 502
    app.extensions["telephony"].fail_calls = False
    listing = _get(app, tokens["qa"], f"/api/calls/{CALL}/recordings?reason=check").get_json()
    assert listing["pauses"] == []


def test_pause_after_the_call_ended_is_409(api):
    app, tokens = api
    Caller(app.test_client(), CALL).post("/twilio/status", CallStatus="completed")
    assert _post(app, tokens["supervisor"], f"/api/calls/{CALL}/recording/pause").status_code == 409
