"""The call path through signed webhooks: menus, hours, queue, agent, transfer, status callbacks."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from ivr.models import Call
from recording.models import Recording
from routing.models import Agent, QueueEntry
from tests.conftest import PUBLIC_BASE, Caller
from tests.twiml import assert_gathers_have_fallback, assert_no_estonian_say, parse, verbs


def _agent(session, name: str) -> Agent:
    return session.scalar(select(Agent).where(Agent.name == name))


def _set_available(app, clock, *names: str) -> None:
    from routing.agents import set_state

    with app.extensions["db_sessionmaker"]() as s:
        for name in names:
            set_state(s, _agent(s, name), "available", clock())
            clock.advance(1)
        s.commit()


def _call(app, call_sid: str) -> Call:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(Call).where(Call.call_sid == call_sid))


def test_incoming_call_greets_announces_recording_and_offers_languages(caller):
    root = parse(caller.post("/twilio/voice", CallStatus="ringing"))
    assert verbs(root) == ["Play", "Gather", "Redirect"]
    assert root[0].text == PUBLIC_BASE + "/audio/et/welcome.wav"
    gather = root[1]
    assert gather.get("action") == PUBLIC_BASE + "/twilio/ivr/language?attempt=1"
    assert gather.get("numDigits") == "1"
    assert [c.tag for c in gather] == ["Play", "Say", "Say"]
    assert gather[0].text == PUBLIC_BASE + "/audio/et/language_menu.wav"
    assert (gather[1].get("language"), gather[1].get("voice")) == ("ru-RU", "Polly.Tatyana")
    assert (gather[2].get("language"), gather[2].get("voice")) == ("en-GB", "Polly.Amy")
    assert root[2].text == gather.get("action")
    assert_no_estonian_say(root)


def test_russian_caller_hears_the_recording_notice_in_russian_then_topics(caller):
    caller.post("/twilio/voice")
    root = parse(caller.post("/twilio/ivr/language?attempt=1", Digits="2"))
    assert verbs(root) == ["Say", "Gather", "Redirect"]
    assert "записываются" in root[0].text
    assert root[1].get("action") == PUBLIC_BASE + "/twilio/ivr/topic?attempt=1"
    assert root[1][0].get("language") == "ru-RU"


def test_no_input_reprompts_twice_then_routes_to_a_person(caller, loaded_app):
    caller.post("/twilio/voice")
    first = parse(caller.post("/twilio/ivr/language?attempt=1"))
    # After trouble the menu is replayed more slowly: the slow rendition of the audio.
    assert first[0].text == PUBLIC_BASE + "/audio/et/no_input.wav?slow=1"
    assert first.find("Gather/Play").text == PUBLIC_BASE + "/audio/et/language_menu.wav?slow=1"
    assert first.find("Gather").get("action").endswith("/twilio/ivr/language?attempt=2")
    second = parse(caller.post("/twilio/ivr/language?attempt=2", Digits=""))
    assert second.find("Gather").get("action").endswith("/twilio/ivr/language?attempt=3")
    third = parse(caller.post("/twilio/ivr/language?attempt=3"))
    # After the third play with no choice: to a person in the general queue, no more menus.
    assert third.find("Gather") is None
    assert third.find("Enqueue").text == "et.general"
    call = _call(loaded_app, caller.call_sid)
    assert (call.no_input_count, call.status, call.language) == (3, "queued", "et")


@pytest.mark.parametrize("digits,reason", [("9", "invalid_input"), ("#", "invalid_input")])
def test_invalid_keys_reprompt_with_a_notice(caller, digits, reason):
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="3")
    root = parse(caller.post("/twilio/ivr/topic?attempt=1", Digits=digits))
    assert verbs(root) == ["Say", "Gather", "Redirect"]
    # Spoken more slowly (SSML prosody) after trouble.
    assert root[0].find("prosody").get("rate") == "85%"
    assert root[0].find("prosody").text == "That is not one of the options."
    assert root[1].get("action").endswith("/twilio/ivr/topic?attempt=2")


def test_star_repeats_the_menu_but_counts_towards_the_limit(caller, loaded_app):
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="3")
    again = parse(caller.post("/twilio/ivr/topic?attempt=1", Digits="*"))
    assert verbs(again) == ["Gather", "Redirect"]
    assert again[0].get("action").endswith("/twilio/ivr/topic?attempt=2")
    last = parse(caller.post("/twilio/ivr/topic?attempt=3", Digits="*"))
    assert last.find("Enqueue").text == "en.general"


def test_zero_goes_straight_to_a_person(caller):
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    root = parse(caller.post("/twilio/ivr/topic?attempt=1", Digits="0"))
    assert root.find("Enqueue").text == "et.general"


def test_topic_with_a_free_agent_dials_the_longest_idle_one_and_records_both_channels(
        caller, loaded_app, clock):
    _set_available(loaded_app, clock, "Jaan", "Mari")  # Jaan has been idle longer
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    root = parse(caller.post("/twilio/ivr/topic?attempt=1", Digits="1"))
    dial = root.find("Dial")
    assert dial.get("record") == "record-from-answer-dual"
    assert dial.get("action") == PUBLIC_BASE + "/twilio/dial/after"
    assert dial.get("recordingStatusCallback") == PUBLIC_BASE + "/twilio/recording"
    number = dial.find("Number")
    assert number.text == "+37255500002"
    assert number.get("url") == f"{PUBLIC_BASE}/twilio/agent/answer?call={caller.call_sid}"
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert _agent(s, "Jaan").state == "offered"
        assert _agent(s, "Mari").state == "available"


def test_conversation_is_logged_with_every_timing(caller, loaded_app, clock):
    _set_available(loaded_app, clock, "Mari")
    arrived = clock()
    caller.post("/twilio/voice", CallStatus="ringing")
    clock.advance(12)
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    clock.advance(8)
    queued = clock()
    caller.post("/twilio/ivr/topic?attempt=1", Digits="2")
    clock.advance(4)
    answered = clock()
    whisper = parse(caller.post(f"/twilio/agent/answer?call={caller.call_sid}",
                                CallSid="CA" + "a" * 32, ParentCallSid=caller.call_sid))
    assert whisper[0].text == PUBLIC_BASE + "/audio/et/agent_whisper.wav"
    clock.advance(187)
    done = parse(caller.post("/twilio/dial/after", DialCallStatus="completed",
                             DialCallDuration="187", DialCallSid="CA" + "a" * 32,
                             DialBridged="true"))
    assert verbs(done) == ["Hangup"]
    caller.post("/twilio/status", CallStatus="completed", CallDuration="211")
    call = _call(loaded_app, caller.call_sid)
    assert call.arrived_at == arrived
    assert call.ivr_exited_at == queued and call.queue_entered_at == queued
    assert call.answered_at == answered
    assert call.ended_at == clock()
    assert (call.outcome, call.status, call.talk_seconds, call.topic) == ("answered", "ended", 187, "family")
    with loaded_app.extensions["db_sessionmaker"]() as s:
        mari = _agent(s, "Mari")
        assert (mari.state, mari.current_call_id) == ("wrap_up", None)
        assert call.agent_id == mari.id


def test_agent_who_does_not_answer_sends_the_caller_back_keeping_their_place(
        loaded_app, clock):
    client = loaded_app.test_client()
    first, second = Caller(client, "CA" + "1" * 32), Caller(client, "CA" + "2" * 32)
    for c in (first, second):
        c.post("/twilio/voice")
        c.post("/twilio/ivr/language?attempt=1", Digits="1")
        c.post("/twilio/ivr/topic?attempt=1", Digits="1")
        clock.advance(5)
    first_entered = _call(loaded_app, first.call_sid).queue_entered_at
    _set_available(loaded_app, clock, "Jaan")
    app_client = loaded_app.extensions["telephony"]
    from ivr.webhooks import dispatch_and_connect
    with loaded_app.test_request_context():
        from db import get_session
        dispatch_and_connect(get_session())
    assert app_client.sent[-1] == ("redirect", first.call_sid, PUBLIC_BASE + "/twilio/queue/connect")
    connect = parse(first.post("/twilio/queue/connect"))
    assert connect.find("Dial/Number").text == "+37255500002"
    clock.advance(20)
    back = parse(first.post("/twilio/dial/after", DialCallStatus="no-answer",
                            DialCallDuration="0"))
    assert back.find("Enqueue").text == "et.pension"
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert (_agent(s, "Jaan").state, _agent(s, "Jaan").not_ready_reason) == ("not_ready", "missed_offer")
        entries = {e.call_id: e for e in s.scalars(select(QueueEntry))}
    call = _call(loaded_app, first.call_sid)
    assert call.queue_entered_at == first_entered
    assert entries[call.id].entered_at == first_entered
    _set_available(loaded_app, clock, "Mari")
    wait = parse(first.post("/twilio/queue/wait", QueuePosition="1"))
    # The first caller is still ahead of the second and is connected first.
    assert verbs(wait) == ["Redirect"]
    assert _call(loaded_app, second.call_sid).status == "queued"


def test_waiting_caller_hears_their_position(loaded_app, clock):
    client = loaded_app.test_client()
    callers = [Caller(client, f"CA{i:032d}") for i in range(3)]
    for c in callers:
        c.post("/twilio/voice")
        c.post("/twilio/ivr/language?attempt=1", Digits="3")
        c.post("/twilio/ivr/topic?attempt=1", Digits="2")
        clock.advance(1)
    root = parse(callers[2].post("/twilio/queue/wait"))
    assert verbs(root) == ["Gather"]
    hold = root[0]
    assert hold.get("action") == PUBLIC_BASE + "/twilio/queue/key"
    assert verbs(hold) == ["Say", "Say", "Pause"]  # no estimate yet: nothing answered lately
    assert hold[0].text == "You are number 3 in the queue."
    assert hold[1].text.startswith("To be called back instead, keeping your place")


def test_unit_transfer_and_failed_transfer_goes_to_a_person(caller, loaded_app):
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    root = parse(caller.post("/twilio/ivr/topic?attempt=1", Digits="6"))
    assert verbs(root) == ["Play", "Dial"]
    assert root.find("Dial/Number").text == "+3726121399"
    assert _call(loaded_app, caller.call_sid).status == "transferring"
    back = parse(caller.post("/twilio/transfer/after", DialCallStatus="busy"))
    # The caller is offered a person or a callback (tests/test_transfers.py); no key = a person.
    assert back.find("Gather/Play").text == PUBLIC_BASE + "/audio/et/transfer_unanswered.wav"
    person = parse(caller.post("/twilio/transfer/choice"))
    assert person.find("Enqueue").text == "et.general"


def test_answered_transfer_is_logged_as_transferred_not_offered(caller, loaded_app):
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits="6")
    parse(caller.post("/twilio/transfer/after", DialCallStatus="completed", DialCallDuration="60"))
    caller.post("/twilio/status", CallStatus="completed")
    call = _call(loaded_app, caller.call_sid)
    assert (call.outcome, call.queue_entered_at) == ("transferred", None)


@pytest.mark.parametrize("local", [
    datetime(2026, 12, 24, 10, 0),   # Christmas Eve, a public holiday
    datetime(2026, 12, 5, 10, 0),    # Saturday
    datetime(2026, 12, 1, 17, 0),    # closing time
    datetime(2026, 11, 27, 13, 30),  # last Friday of November closes at 13:00
    datetime(2026, 12, 23, 14, 15),  # shortened day before Christmas Eve closes at 14:00
])
def test_out_of_hours_callers_hear_the_hours_and_are_not_queued(caller, loaded_app, clock, local):
    from zoneinfo import ZoneInfo
    clock.now = local.replace(tzinfo=ZoneInfo("Europe/Tallinn")).astimezone(timezone.utc)
    caller.post("/twilio/voice")
    root = parse(caller.post("/twilio/ivr/language?attempt=1", Digits="3"))
    assert verbs(root) == ["Say", "Gather", "Redirect"]  # the hours, then a callback offer
    assert root[0].text.startswith("The information line is closed now.")
    assert root[1][0].text.startswith("We can call you back.")
    caller.post(root[2].text)  # no key pressed: goodbye
    caller.post("/twilio/status", CallStatus="completed")
    call = _call(loaded_app, caller.call_sid)
    assert (call.outcome, call.queue_entered_at) == ("out_of_hours", None)


def test_completed_status_delivered_twice_counts_the_call_once(caller, loaded_app, clock):
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits="1")
    clock.advance(30)
    first_end = clock()
    ts = "Tue, 01 Dec 2026 10:00:30 +0000"
    caller.post("/twilio/status", CallStatus="completed", Timestamp=ts, SequenceNumber="1")
    clock.advance(60)
    caller.post("/twilio/status", CallStatus="completed", Timestamp=ts, SequenceNumber="1")
    caller.post("/twilio/status", CallStatus="ringing", SequenceNumber="0")  # late, out of order
    with loaded_app.extensions["db_sessionmaker"]() as s:
        calls = s.scalars(select(Call)).all()
        assert len(calls) == 1
        assert s.scalar(select(QueueEntry)) is None
    assert (calls[0].outcome, calls[0].ended_at, calls[0].provider_status) == (
        "abandoned", first_end, "completed")


def test_hangup_while_ringing_the_agent_frees_the_agent(caller, loaded_app, clock):
    _set_available(loaded_app, clock, "Mari")
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits="2")
    caller.post("/twilio/status", CallStatus="completed")
    with loaded_app.extensions["db_sessionmaker"]() as s:
        mari = _agent(s, "Mari")
        assert (mari.state, mari.current_call_id) == ("available", None)
    assert _call(loaded_app, caller.call_sid).outcome == "abandoned"


def test_stale_call_is_closed_by_the_sweep_with_the_right_talk_time(caller, loaded_app, clock):
    _set_available(loaded_app, clock, "Mari")
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits="2")
    clock.advance(3)
    answered = clock()
    caller.post(f"/twilio/agent/answer?call={caller.call_sid}", CallSid="CA" + "b" * 32)
    clock.advance(95)
    # The agent leg reports 95 s of talk, then the caller's final status never arrives.
    caller.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="95")
    clock.advance(5 * 3600)
    result = loaded_app.test_cli_runner().invoke(args=["calls", "close-stale"])
    assert result.exit_code == 0, result.output
    assert "closed 1 stale call(s)" in result.output
    call = _call(loaded_app, caller.call_sid)
    assert (call.status, call.outcome, call.talk_seconds, call.closed_by_sweep) == (
        "ended", "answered", 95, True)
    assert call.ended_at == answered + timedelta(seconds=95)
    again = loaded_app.test_cli_runner().invoke(args=["calls", "close-stale"])
    assert "closed 0 stale call(s)" in again.output


def test_sweep_closes_an_abandoned_wait_at_its_last_event(caller, loaded_app, clock):
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits="2")
    clock.advance(20)
    last = clock()
    caller.post("/twilio/queue/wait")
    clock.advance(4 * 3600 + 1)
    loaded_app.test_cli_runner().invoke(args=["calls", "close-stale"])
    call = _call(loaded_app, caller.call_sid)
    assert (call.outcome, call.ended_at) == ("abandoned", last)


def test_recording_callback_is_stored_once_and_never_regresses(caller, loaded_app):
    params = dict(RecordingSid="RE" + "7" * 32, RecordingUrl="https://api.example/RE7",
                  RecordingStatus="completed", RecordingDuration="184", RecordingChannels="2",
                  RecordingSource="DialVerb",
                  RecordingStartTime="Tue, 01 Dec 2026 10:12:58 +0000")
    for _ in range(2):
        assert caller.post("/twilio/recording", **params).status_code == 200
    caller.post("/twilio/recording", **dict(params, RecordingStatus="in-progress",
                                            RecordingDuration=None))
    with loaded_app.extensions["db_sessionmaker"]() as s:
        rows = s.scalars(select(Recording)).all()
    assert len(rows) == 1
    row = rows[0]
    assert (row.call_sid, row.status, row.duration_seconds, row.channels) == (
        caller.call_sid, "completed", 184, 2)
    assert row.started_at == datetime(2026, 12, 1, 10, 12, 58, tzinfo=timezone.utc)


def test_sms_gets_an_empty_answer(caller):
    response = caller.post("/twilio/sms", Body="1", MessageSid="SM" + "1" * 32)
    assert response.status_code == 200
    assert response.data.endswith(b"<Response />")


def test_unexpected_error_answers_with_twiml_not_500(caller, loaded_app, monkeypatch):
    import ivr.webhooks as webhooks

    def broken(*args, **kwargs):
        raise RuntimeError("simulated fault")

    monkeypatch.setattr(webhooks.acd, "dispatch", broken)
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    root = parse(caller.post("/twilio/ivr/topic?attempt=1", Digits="1"))
    assert verbs(root) == ["Play", "Hangup"]
    assert root[0].text == PUBLIC_BASE + "/audio/et/technical_error.wav"


def test_caller_hanging_up_while_agent_rings_frees_the_agent_for_the_next_caller(
        loaded_app, clock):
    client = loaded_app.test_client()
    first, second = Caller(client, "CA" + "1" * 32), Caller(client, "CA" + "2" * 32)
    _set_available(loaded_app, clock, "Mari")
    for c in (first, second):
        c.post("/twilio/voice")
        c.post("/twilio/ivr/language?attempt=1", Digits="1")
        c.post("/twilio/ivr/topic?attempt=1", Digits="2")
    assert _call(loaded_app, first.call_sid).status == "connecting"
    assert _call(loaded_app, second.call_sid).status == "queued"
    first.post("/twilio/status", CallStatus="completed")
    # Mari is offered the second caller at once, without waiting for a hold-loop request.
    assert loaded_app.extensions["telephony"].sent == [
        ("redirect", second.call_sid, PUBLIC_BASE + "/twilio/queue/connect")]
    assert _call(loaded_app, second.call_sid).status == "connecting"
    assert _call(loaded_app, first.call_sid).outcome == "abandoned"


def test_dial_action_after_the_caller_hung_up_is_not_the_agents_fault(caller, loaded_app, clock):
    _set_available(loaded_app, clock, "Mari")
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits="2")
    response = caller.post("/twilio/dial/after", CallStatus="completed",
                           DialCallStatus="no-answer", DialCallDuration="0")
    assert verbs(parse(response)) == []
    with loaded_app.extensions["db_sessionmaker"]() as s:
        mari = _agent(s, "Mari")
        assert (mari.state, mari.current_call_id) == ("available", None)
        assert s.scalar(select(QueueEntry)) is None
    assert _call(loaded_app, caller.call_sid).outcome == "abandoned"


def test_out_of_remit_caller_hears_the_referral_and_is_logged_as_referred(caller, loaded_app):
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="3")
    root = parse(caller.post("/twilio/ivr/topic?attempt=1", Digits="7"))
    assert verbs(root) == ["Say", "Pause", "Say", "Hangup"]
    assert root[0].text == root[2].text == ("For work-ability assessment and unemployment "
                                            "insurance, please call the Unemployment Insurance "
                                            "Fund on 1 5 5 0 1.")
    # A repeated menu answer while the message plays changes nothing.
    assert verbs(parse(caller.post("/twilio/ivr/topic?attempt=1", Digits="1"))) == ["Hangup"]
    caller.post("/twilio/status", CallStatus="completed")
    call = _call(loaded_app, caller.call_sid)
    assert (call.outcome, call.queue_entered_at, call.topic) == ("referred", None, "referral:tootukassa")
