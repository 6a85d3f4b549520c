"""Requests a real provider would not send, or sends out of order: answered safely, state kept sane."""
from __future__ import annotations

from sqlalchemy import func, select

from ivr.models import Call
from recording.models import Recording
from routing.models import Agent, QueueEntry
from tests.conftest import PUBLIC_BASE, Caller, sign
from tests.twiml import parse, verbs


def _calls(app) -> list[Call]:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalars(select(Call).order_by(Call.id)).all()


def _queue_entries(app) -> int:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(func.count()).select_from(QueueEntry))


def test_dial_and_transfer_actions_for_unknown_calls_change_nothing(caller, loaded_app):
    for path in ("/twilio/dial/after", "/twilio/transfer/after"):
        for status in ("no-answer", "busy", "completed"):
            response = caller.post(path, DialCallStatus=status, DialCallDuration="0")
            assert verbs(parse(response)) == ["Hangup"]
    assert _queue_entries(loaded_app) == 0
    assert [c.outcome for c in _calls(loaded_app)] == [None]


def test_completed_dial_for_a_call_never_dialled_does_not_make_it_answered(caller, loaded_app):
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits="1")  # nobody available: waiting
    caller.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="120")
    call = _calls(loaded_app)[0]
    assert (call.status, call.outcome, call.answered_at) == ("queued", None, None)
    assert _queue_entries(loaded_app) == 1


def test_talk_time_is_set_once_and_only_when_plausible(caller, loaded_app, clock):
    from routing.agents import set_state
    with loaded_app.extensions["db_sessionmaker"]() as s:
        set_state(s, s.scalar(select(Agent).where(Agent.name == "Mari")), "available", clock())
        s.commit()
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits="2")
    caller.post(f"/twilio/agent/answer?call={caller.call_sid}")
    clock.advance(120)
    caller.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="120")
    for duration in ("999", "-500", "1000000000000000", "99999999999999999999"):
        response = caller.post("/twilio/dial/after", DialCallStatus="completed",
                               DialCallDuration=duration)
        assert response.status_code == 200
    assert _calls(loaded_app)[0].talk_seconds == 120


def test_implausible_provider_timestamps_do_not_move_the_end(caller, loaded_app, clock):
    caller.post("/twilio/voice")
    response = caller.post("/twilio/status", CallStatus="completed",
                           Timestamp="Mon, 01 Dec 99999999999 10:16:02 +0000")
    assert response.status_code == 200 and verbs(parse(response)) == []
    other = Caller(loaded_app.test_client(), "CA" + "e" * 32)
    other.post("/twilio/voice")
    other.post("/twilio/status", CallStatus="completed", Timestamp="Thu, 01 Jan 1970 00:00:00 +0000")
    first, second = _calls(loaded_app)
    assert first.ended_at == clock() and second.ended_at == clock()


def test_recording_with_absurd_numbers_is_still_stored(caller, loaded_app):
    caller.post("/twilio/recording", RecordingSid="RE" + "1" * 32, RecordingStatus="completed",
                RecordingDuration="99999999999999999999",
                RecordingStartTime="Mon, 01 Dec 99999999999 10:16:02 +0000")
    with loaded_app.extensions["db_sessionmaker"]() as s:
        row = s.scalar(select(Recording))
    assert (row.status, row.duration_seconds, row.started_at) == ("completed", None, None)


def test_missing_or_malformed_call_sid_is_refused(loaded_app):
    client = loaded_app.test_client()
    for call_sid in ("", "x" * 65):
        params = {"CallSid": call_sid, "CallStatus": "ringing"}
        response = client.post("/twilio/voice", data=params, headers={
            "X-Twilio-Signature": sign(PUBLIC_BASE + "/twilio/voice", params)})
        assert response.status_code == 400
    params = {"CallStatus": "completed"}
    response = client.post("/twilio/status", data=params, headers={
        "X-Twilio-Signature": sign(PUBLIC_BASE + "/twilio/status", params)})
    assert response.status_code == 400
    assert _calls(loaded_app) == []


def test_menu_answers_for_an_ended_call_change_nothing(caller, loaded_app):
    caller.post("/twilio/voice")
    caller.post("/twilio/status", CallStatus="completed")
    for path, digits in (("/twilio/ivr/language?attempt=1", "1"), ("/twilio/ivr/topic?attempt=1", "2")):
        assert verbs(parse(caller.post(path, Digits=digits))) == ["Hangup"]
    call = _calls(loaded_app)[0]
    assert (call.outcome, call.language, call.topic) == ("ivr_abandoned", None, None)
    assert _queue_entries(loaded_app) == 0


def test_body_without_content_length_is_refused(loaded_app):
    import io

    response = loaded_app.test_client().post(
        "/twilio/status", input_stream=io.BytesIO(b"CallSid=CA1&CallStatus=completed"),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": sign(PUBLIC_BASE + "/twilio/status",
                                            {"CallSid": "CA1", "CallStatus": "completed"}),
                 "Transfer-Encoding": "chunked"})
    assert response.status_code == 411
    assert _calls(loaded_app) == []
