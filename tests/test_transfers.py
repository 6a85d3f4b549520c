"""Transfers to structural units: blind and warm transfers by agents, escalation, the fallback
offer when a unit does not answer, the API's refusals, and the configuration of units."""
from __future__ import annotations

import copy
import json
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
import yaml
from sqlalchemy import select

from ivr.models import Call
from line_config import LineConfigError, parse_line_config
from reporting.report import build_report
from routing.agents import set_state
from routing.models import Agent, QueueEntry
from telephony.client import TelephonyError, TwilioRestClient
from tests.conftest import PUBLIC_BASE, SAMPLE_CONFIG, Caller, load_yaml
from tests.twiml import assert_gathers_have_fallback, assert_no_estonian_say, parse, verbs

UNIT = "+3726121399"       # rehabilitation (config/line.sample.yaml)
HEAD = "+3726121398"       # call_centre_head
MARI = "+37255500001"
LINE = "+3726121360"


# ----------------------------------------------------------------------------- helpers

def _agent(app, name: str) -> Agent:
    with app.extensions["db_sessionmaker"]() as s:
        agent = s.scalar(select(Agent).where(Agent.name == name))
        s.expunge(agent)
        return agent


def _call(app, call_sid: str) -> Call:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(Call).where(Call.call_sid == call_sid))


def _token(app, role: str, agent: str | None = None) -> dict:
    args = ["tokens", "create", "--role", role] + (["--agent", agent] if agent else [])
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    return {"Authorization": f"Bearer {result.output.strip()}"}


def _talking(app, clock, caller: Caller, agent: str = "Mari") -> None:
    """The caller chose family benefits (Estonian) and is talking to ``agent``."""
    with app.extensions["db_sessionmaker"]() as s:
        set_state(s, s.scalar(select(Agent).where(Agent.name == agent)), "available", clock())
        s.commit()
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    dial = parse(caller.post("/twilio/ivr/topic?attempt=1", Digits="2"))
    assert dial.find("Dial/Number").text == MARI
    clock.advance(4)
    caller.post(f"/twilio/agent/answer?call={caller.call_sid}", CallSid="CA" + "a" * 32,
                ParentCallSid=caller.call_sid)
    assert _call(app, caller.call_sid).status == "connected"


def _transfer(client, body: dict, agent: str = "Mari", headers=None, path="transfer"):
    return client.post(f"/api/agents/{agent}/{path}", json=body, headers=headers)


def _sent(app) -> list:
    return app.extensions["telephony"].sent


def _participants(app) -> dict[str, dict]:
    return {p["label"]: p for p in app.extensions["telephony"].participants}


def _leg(client, participant: dict, **params):
    """The provider posts a status callback of a warm transfer's leg."""
    return Caller(client, participant["call_sid"]).post(participant["status_callback"], **params)


@pytest.fixture
def mari(loaded_app):
    return _token(loaded_app, "agent", "Mari")


@pytest.fixture
def client(loaded_app):
    return loaded_app.test_client()


@pytest.fixture
def talking(loaded_app, clock, caller):
    _talking(loaded_app, clock, caller)
    return caller


# ------------------------------------------------------------------------------ blind

def test_blind_transfer_hands_the_caller_to_the_unit_and_the_agent_to_wrap_up(
        loaded_app, clock, client, talking, mari):
    answered = _call(loaded_app, talking.call_sid).answered_at
    clock.advance(95)
    response = _transfer(client, {"unit": "rehabilitation", "mode": "blind"}, headers=mari)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"call_sid": talking.call_sid, "transfer": {
        "kind": "blind", "state": "dialling", "result": None, "unit": "rehabilitation",
        "escalated": False, "transferred_at": clock().isoformat()}}
    assert _sent(loaded_app) == [("redirect", talking.call_sid,
                                  PUBLIC_BASE + "/twilio/transfer/unit")]
    mari_now = _agent(loaded_app, "Mari")
    assert (mari_now.state, mari_now.current_call_id) == ("wrap_up", None)
    call = _call(loaded_app, talking.call_sid)
    assert (call.status, call.talk_seconds, call.transferred_at, call.agent_id) == (
        "transferring", 95, clock(), mari_now.id)

    # The agent's <Dial> ended with the redirect: its action request arrives (its answer is not
    # executed by the provider) and changes nothing.
    talking.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="95")
    assert (_call(loaded_app, talking.call_sid).talk_seconds, _agent(loaded_app, "Mari").state) \
        == (95, "wrap_up")

    root = parse(talking.post("/twilio/transfer/unit"))
    assert verbs(root) == ["Play", "Dial"]
    assert root[0].text == PUBLIC_BASE + "/audio/et/transfer.wav"
    dial = root.find("Dial")
    assert (dial.get("action"), dial.get("method"), dial.get("timeout")) == (
        PUBLIC_BASE + "/twilio/transfer/after", "POST", "30")
    assert dial.find("Number").text == UNIT

    clock.advance(240)
    done = talking.post("/twilio/transfer/after", DialCallStatus="completed",
                        DialCallDuration="240", DialBridged="true")
    assert verbs(parse(done)) == ["Hangup"]
    talking.post("/twilio/status", CallStatus="completed", CallDuration="343")
    call = _call(loaded_app, talking.call_sid)
    assert (call.status, call.outcome, call.transfer_kind, call.transfer_result,
            call.transfer_state) == ("ended", "transferred", "blind", "completed", "connected")
    # Still the agent's answered call: answer time and talk time are the agent's part.
    assert (call.answered_at, call.talk_seconds, call.agent_id) == (answered, 95, mari_now.id)
    with loaded_app.extensions["db_sessionmaker"]() as s:
        report = build_report(s, date(2026, 12, 1), date(2026, 12, 1), "Europe/Tallinn", 20)
    assert (report.total.offered, report.total.answered, report.total.talk_total) == (1, 1, 95)


@pytest.mark.parametrize("status", ["busy", "no-answer", "failed", "canceled"])
def test_unanswered_transfer_offers_an_adviser_or_a_callback_on_the_very_next_request(
        loaded_app, clock, client, talking, mari, status):
    assert _transfer(client, {"unit": "rehabilitation"}, headers=mari).status_code == 200
    talking.post("/twilio/transfer/unit")
    clock.advance(30)
    root = parse(talking.post("/twilio/transfer/after", DialCallStatus=status,
                              DialCallDuration="0"))
    assert verbs(root) == ["Gather", "Redirect"]
    gather = root[0]
    choice = PUBLIC_BASE + "/twilio/transfer/choice"
    assert (gather.get("action"), gather.get("method"), gather.get("numDigits")) == (
        choice, "POST", "1")
    assert [c.tag for c in gather] == ["Play"]
    assert gather[0].text == PUBLIC_BASE + "/audio/et/transfer_unanswered.wav"
    assert (root[1].text, root[1].get("method")) == (choice, "POST")
    assert_gathers_have_fallback(root)
    call = _call(loaded_app, talking.call_sid)
    assert (call.status, call.transfer_state, call.transfer_result) == ("ivr", "offer", status)

    callback = parse(talking.post("/twilio/transfer/choice", Digits="2"))
    assert verbs(callback) == ["Redirect"]
    assert (callback[0].text, callback[0].get("method")) == (
        PUBLIC_BASE + "/twilio/callback/offer?reason=transfer_failed", "POST")
    assert _call(loaded_app, talking.call_sid).transfer_state == "callback"


def test_no_key_at_the_offer_goes_back_to_an_adviser_with_raised_priority(
        loaded_app, clock, client, talking, mari):
    entered = _call(loaded_app, talking.call_sid).queue_entered_at
    _transfer(client, {"unit": "rehabilitation"}, headers=mari)
    talking.post("/twilio/transfer/unit")
    talking.post("/twilio/transfer/after", DialCallStatus="no-answer")
    # No key: the Redirect after the Gather posts without Digits.
    root = parse(talking.post("/twilio/transfer/choice"))
    assert verbs(root) == ["Play", "Play", "Enqueue"]
    assert root[0].text == PUBLIC_BASE + "/audio/et/to_person.wav"
    assert root.find("Enqueue").text == "et.general"
    call = _call(loaded_app, talking.call_sid)
    assert (call.status, call.priority, call.ivr_struggle, call.transfer_state, call.outcome) == (
        "queued", 1, False, "requeued", None)
    assert call.queue_entered_at == entered  # the wait of the first answer is not restarted
    with loaded_app.extensions["db_sessionmaker"]() as s:
        entry = s.scalar(select(QueueEntry))
        assert (entry.call_id, entry.priority) == (call.id, 1)


def test_a_second_adviser_after_a_failed_transfer_keeps_the_first_answer_and_adds_the_talk(
        loaded_app, clock, client, talking, mari):
    answered = _call(loaded_app, talking.call_sid).answered_at
    clock.advance(60)
    _transfer(client, {"unit": "rehabilitation"}, headers=mari)
    talking.post("/twilio/transfer/unit")
    talking.post("/twilio/transfer/after", DialCallStatus="busy")
    talking.post("/twilio/transfer/choice")  # no key: back to an adviser
    clock.advance(30)
    with loaded_app.extensions["db_sessionmaker"]() as s:
        set_state(s, s.scalar(select(Agent).where(Agent.name == "Jaan")), "available", clock())
        s.commit()
    assert parse(talking.post("/twilio/queue/wait")).find("Redirect") is not None
    talking.post("/twilio/queue/connect")
    talking.post(f"/twilio/agent/answer?call={talking.call_sid}")
    clock.advance(50)
    talking.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="50")
    call = _call(loaded_app, talking.call_sid)
    assert (call.outcome, call.answered_at, call.talk_seconds) == ("answered", answered, 110)
    assert call.agent_id == _agent(loaded_app, "Jaan").id  # the adviser the caller ended with
    assert _agent(loaded_app, "Jaan").state == "wrap_up"


def test_caller_who_hangs_up_at_the_offer_stays_an_answered_call(
        loaded_app, clock, client, talking, mari):
    _transfer(client, {"unit": "rehabilitation"}, headers=mari)
    talking.post("/twilio/transfer/unit")
    talking.post("/twilio/transfer/after", DialCallStatus="busy")
    talking.post("/twilio/status", CallStatus="completed")
    call = _call(loaded_app, talking.call_sid)
    assert (call.status, call.outcome, call.transfer_result) == ("ended", "answered", "busy")


@pytest.mark.parametrize("status_first", [False, True])
def test_caller_who_hangs_up_while_the_unit_rings_hears_nothing_more(
        loaded_app, client, talking, mari, status_first):
    _transfer(client, {"unit": "rehabilitation"}, headers=mari)
    talking.post("/twilio/transfer/unit")
    if status_first:  # callbacks may arrive in any order
        talking.post("/twilio/status", CallStatus="completed")
    root = parse(talking.post("/twilio/transfer/after", DialCallStatus="no-answer",
                              CallStatus="completed"))
    assert verbs(root) == []
    talking.post("/twilio/status", CallStatus="completed")
    call = _call(loaded_app, talking.call_sid)
    assert (call.status, call.outcome, call.transfer_state, call.transfer_result) == (
        "ended", "answered", "abandoned", "no-answer")


def test_menu_transfer_uses_the_same_fallback_and_completed_only_hangs_up(loaded_app, client):
    callers = [Caller(client, f"CA{i:032d}") for i in range(3)]
    for c in callers:
        c.post("/twilio/voice")
        c.post("/twilio/ivr/language?attempt=1", Digits="3")
        assert parse(c.post("/twilio/ivr/topic?attempt=1", Digits="6")).find(
            "Dial/Number").text == UNIT
    answered, busy, gone = callers
    assert verbs(parse(answered.post("/twilio/transfer/after", DialCallStatus="completed",
                                     DialCallDuration="61"))) == ["Hangup"]
    # A repeat of the action after the conversation never brings a prompt either.
    assert verbs(parse(answered.post("/twilio/transfer/after", DialCallStatus="completed",
                                     DialCallDuration="61"))) == ["Hangup"]
    offer = parse(busy.post("/twilio/transfer/after", DialCallStatus="busy"))
    assert offer.find("Gather/Say").text.startswith("The unit could not answer just now.")
    assert_no_estonian_say(offer)
    to_callback = parse(busy.post("/twilio/transfer/choice", Digits="2"))
    assert verbs(to_callback) == ["Redirect"]
    callback_offer = parse(busy.post(to_callback[0].text))
    assert callback_offer.find("Gather").get("action").startswith(
        PUBLIC_BASE + "/twilio/callback/choice?reason=transfer_failed")
    gone.post("/twilio/transfer/after", DialCallStatus="failed")
    gone.post("/twilio/status", CallStatus="completed")
    logged = {c.call_sid: _call(loaded_app, c.call_sid) for c in callers}
    assert (logged[answered.call_sid].outcome, logged[answered.call_sid].transfer_kind,
            logged[answered.call_sid].transfer_result) == ("transferred", "ivr", "completed")
    assert logged[answered.call_sid].transferred_at is not None
    assert (logged[gone.call_sid].outcome, logged[gone.call_sid].transfer_result) == (
        "ivr_abandoned", "failed")


# ------------------------------------------------------------------------------- warm

def _warm(loaded_app, client, talking, mari, body=None, path="transfer"):
    response = _transfer(client, body or {"unit": "rehabilitation", "mode": "warm"},
                         headers=mari, path=path)
    assert response.status_code == 200, response.get_json()
    call = _call(loaded_app, talking.call_sid)
    return call, _participants(loaded_app)


def test_warm_transfer_consults_the_unit_then_hands_the_caller_over(
        loaded_app, clock, client, talking, mari):
    answered = _call(loaded_app, talking.call_sid).answered_at
    clock.advance(60)
    call, legs = _warm(loaded_app, client, talking, mari)
    room = call.conference
    assert (call.status, call.transfer_kind, call.transfer_state) == (
        "transferring", "warm", "consulting")
    assert _sent(loaded_app)[0] == ("redirect", talking.call_sid,
                                    PUBLIC_BASE + "/twilio/transfer/room")
    unit, agent = legs["unit"], legs["agent"]
    assert (unit["conference"], unit["to"], unit["from"], unit["early_media"], unit["timeout"]) == (
        room + "-consult", UNIT, LINE, True, 30)
    assert unit["status_callback"] == (f"{PUBLIC_BASE}/twilio/transfer/leg?call="
                                       f"{talking.call_sid}&role=unit")
    assert (agent["conference"], agent["to"], agent["start_conference_on_enter"],
            agent["end_conference_on_exit"]) == (room + "-consult", MARI, True, False)
    assert (call.unit_leg_sid, call.agent_leg_sid) == (unit["call_sid"], agent["call_sid"])
    # The agent stays on the call while consulting.
    assert (_agent(loaded_app, "Mari").state, _agent(loaded_app, "Mari").current_call_id) == (
        "busy", call.id)
    talking.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="60")
    assert _agent(loaded_app, "Mari").state == "busy"

    hold_room = parse(talking.post("/twilio/transfer/room"))
    conference = hold_room.find("Dial/Conference")
    assert hold_room.find("Dial").get("action") == (f"{PUBLIC_BASE}/twilio/transfer/room/after"
                                                    f"?room={room}")
    assert (conference.text, conference.get("startConferenceOnEnter"),
            conference.get("endConferenceOnExit"), conference.get("waitUrl")) == (
        room, "false", "true", PUBLIC_BASE + "/twilio/transfer/hold")
    music = parse(talking.post("/twilio/transfer/hold"))
    assert verbs(music) == ["Play", "Pause"]
    assert music[0].text == PUBLIC_BASE + "/audio/et/transfer_hold.wav"

    early = _transfer(client, {}, headers=mari, path="transfer/complete")
    assert (early.status_code, early.get_json()["error"]) == (409, "unit has not answered")
    _leg(client, agent, CallStatus="in-progress")
    _leg(client, unit, CallStatus="in-progress")
    clock.advance(30)
    handed_over = clock()
    done = _transfer(client, {}, headers=mari, path="transfer/complete")
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["transfer"]["state"] == "handed_over"
    assert _sent(loaded_app)[-2:] == [
        ("redirect", unit["call_sid"],
         f"{PUBLIC_BASE}/twilio/transfer/join?call={talking.call_sid}&role=unit"),
        ("hangup", agent["call_sid"], None)]
    assert _agent(loaded_app, "Mari").state == "wrap_up"
    joined = parse(Caller(client, unit["call_sid"]).post(_sent(loaded_app)[-2][2]))
    assert joined.find("Dial/Conference").text == room
    assert joined.find("Dial/Conference").get("endConferenceOnExit") == "true"
    _leg(client, agent, CallStatus="completed")
    clock.advance(200)
    # The unit hangs up: the caller's room ends.
    assert verbs(parse(talking.post(f"/twilio/transfer/room/after?room={room}",
                                    DialCallStatus="completed"))) == ["Hangup"]
    talking.post("/twilio/status", CallStatus="completed")
    call = _call(loaded_app, talking.call_sid)
    assert (call.status, call.outcome, call.transfer_result, call.talk_seconds,
            call.answered_at, call.transferred_at) == (
        "ended", "transferred", "completed", 90, answered, handed_over)


def test_warm_transfer_to_a_unit_that_does_not_answer_brings_the_caller_back_to_the_agent(
        loaded_app, clock, client, talking, mari):
    call, legs = _warm(loaded_app, client, talking, mari)
    talking.post("/twilio/transfer/room")
    _leg(client, legs["agent"], CallStatus="in-progress")
    clock.advance(30)
    _leg(client, legs["unit"], CallStatus="no-answer")
    back = f"{PUBLIC_BASE}/twilio/transfer/join?call={talking.call_sid}&role=agent"
    assert _sent(loaded_app)[-1] == ("redirect", legs["agent"]["call_sid"], back)
    call = _call(loaded_app, talking.call_sid)
    assert (call.status, call.transfer_state, call.transfer_result) == (
        "connected", "returned", "no-answer")
    assert _agent(loaded_app, "Mari").state == "busy"
    joined = parse(Caller(client, legs["agent"]["call_sid"]).post(back))
    conference = joined.find("Dial/Conference")
    assert (conference.text, conference.get("startConferenceOnEnter"),
            conference.get("endConferenceOnExit")) == (call.conference, "true", "true")
    # Someone else's leg cannot join the caller.
    assert verbs(parse(Caller(client, "CA" + "e" * 32).post(back))) == ["Hangup"]
    clock.advance(45)
    # The agent finishes and hangs up: the room ends, so does the call.
    assert verbs(parse(talking.post(f"/twilio/transfer/room/after?room={call.conference}",
                                    DialCallStatus="completed"))) == ["Hangup"]
    call = _call(loaded_app, talking.call_sid)
    assert (call.status, call.outcome, call.talk_seconds) == ("ended", "answered", 75)
    assert _agent(loaded_app, "Mari").state == "wrap_up"


def test_agent_can_cancel_a_warm_transfer_and_then_transfer_blind(
        loaded_app, clock, client, talking, mari):
    call, legs = _warm(loaded_app, client, talking, mari)
    first_room = call.conference
    _leg(client, legs["unit"], CallStatus="in-progress")
    cancel = _transfer(client, {}, headers=mari, path="transfer/cancel")
    assert cancel.status_code == 200
    assert cancel.get_json()["transfer"]["result"] == "canceled"
    assert _sent(loaded_app)[-2:] == [
        ("redirect", legs["agent"]["call_sid"],
         f"{PUBLIC_BASE}/twilio/transfer/join?call={talking.call_sid}&role=agent"),
        ("hangup", legs["unit"]["call_sid"], None)]
    _leg(client, legs["unit"], CallStatus="completed")  # the ended leg reports: nothing changes
    assert _call(loaded_app, talking.call_sid).transfer_state == "returned"
    clock.advance(10)
    assert _transfer(client, {"unit": "rehabilitation"}, headers=mari).status_code == 200
    # Leaving the first room ends it; its action changes nothing (the provider ignores it).
    assert verbs(parse(talking.post(f"/twilio/transfer/room/after?room={first_room}"))) == []
    call = _call(loaded_app, talking.call_sid)
    assert (call.transfer_kind, call.transfer_state) == ("blind", "dialling")
    assert verbs(parse(talking.post("/twilio/transfer/unit"))) == ["Play", "Dial"]


def test_agent_hanging_up_after_the_unit_answered_completes_the_transfer(
        loaded_app, client, talking, mari):
    call, legs = _warm(loaded_app, client, talking, mari)
    _leg(client, legs["unit"], CallStatus="in-progress")
    _leg(client, legs["agent"], CallStatus="completed")
    assert _sent(loaded_app)[-1][:2] == ("redirect", legs["unit"]["call_sid"])
    call = _call(loaded_app, talking.call_sid)
    assert (call.transfer_state, call.outcome) == ("handed_over", "transferred")
    assert _agent(loaded_app, "Mari").state == "wrap_up"


def test_agent_leaving_before_the_unit_answered_gives_the_caller_the_offer(
        loaded_app, client, talking, mari):
    call, legs = _warm(loaded_app, client, talking, mari)
    _leg(client, legs["agent"], CallStatus="no-answer")
    assert ("hangup", legs["unit"]["call_sid"], None) in _sent(loaded_app)
    assert _sent(loaded_app)[-1] == ("redirect", talking.call_sid,
                                     PUBLIC_BASE + "/twilio/transfer/offer")
    offer = parse(talking.post("/twilio/transfer/offer"))
    assert verbs(offer) == ["Gather", "Redirect"]
    assert _agent(loaded_app, "Mari").state == "wrap_up"


def test_caller_hanging_up_on_hold_ends_the_consultation_and_frees_the_agent(
        loaded_app, clock, client, talking, mari):
    call, legs = _warm(loaded_app, client, talking, mari)
    clock.advance(20)
    talking.post("/twilio/status", CallStatus="completed")  # the final status may come first
    talking.post(f"/twilio/transfer/room/after?room={call.conference}", CallStatus="completed")
    assert {("hangup", legs["unit"]["call_sid"], None),
            ("hangup", legs["agent"]["call_sid"], None)} <= set(_sent(loaded_app))
    call = _call(loaded_app, talking.call_sid)
    assert (call.status, call.outcome, call.transfer_result) == (
        "ended", "answered", "caller-hangup")
    assert (_agent(loaded_app, "Mari").state, _agent(loaded_app, "Mari").current_call_id) == (
        "wrap_up", None)


# ------------------------------------------------------------------------- escalation

def test_escalation_goes_to_the_configured_unit_and_is_logged(loaded_app, client, talking, mari):
    response = _transfer(client, {"mode": "blind"}, headers=mari, path="escalate")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["transfer"] == {
        "kind": "blind", "state": "dialling", "result": None, "unit": "call_centre_head",
        "escalated": True, "transferred_at": response.get_json()["transfer"]["transferred_at"]}
    assert parse(talking.post("/twilio/transfer/unit")).find("Dial/Number").text == HEAD
    talking.post("/twilio/transfer/after", DialCallStatus="completed", DialCallDuration="300")
    call = _call(loaded_app, talking.call_sid)
    assert (call.escalated, call.transfer_result, call.outcome) == (True, "completed", "transferred")


def test_escalation_without_a_body_uses_the_routes_mode(loaded_app, client, talking, mari):
    response = client.post("/api/agents/Mari/escalate", headers=mari)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["transfer"]["kind"] == "warm"  # the sample route is warm
    assert _participants(loaded_app)["unit"]["to"] == HEAD


def _reload(app, mutate) -> None:
    """Load the sample configuration changed by ``mutate`` as a new revision."""
    from admin.config_loader import apply_line_config

    document = load_yaml(SAMPLE_CONFIG)
    mutate(document)
    with app.extensions["db_sessionmaker"]() as s:
        apply_line_config(s, parse_line_config(document), document, app.config["CLOCK"]())
        s.commit()


def test_escalation_to_a_queue_requeues_the_caller_with_raised_priority(
        loaded_app, clock, client, talking, mari):
    _reload(loaded_app, lambda d: d.update(escalation={"queue": "et.general"}))
    response = _transfer(client, {}, headers=mari, path="escalate")
    assert response.status_code == 200, response.get_json()
    assert _sent(loaded_app)[-1] == ("redirect", talking.call_sid,
                                     PUBLIC_BASE + "/twilio/transfer/queue?queue=et.general")
    root = parse(talking.post("/twilio/transfer/queue?queue=et.general"))
    assert root.find("Enqueue").text == "et.general"
    call = _call(loaded_app, talking.call_sid)
    assert (call.escalated, call.transfer_kind, call.priority, call.status) == (
        True, "queue", 1, "queued")
    assert _agent(loaded_app, "Mari").state == "wrap_up"


def test_escalation_needs_a_route(loaded_app, client, talking, mari):
    _reload(loaded_app, lambda d: d.pop("escalation"))
    response = _transfer(client, {}, headers=mari, path="escalate")
    assert (response.status_code, response.get_json()["error"]) == (409, "no escalation route")
    assert _call(loaded_app, talking.call_sid).status == "connected"


# ------------------------------------------------------------------------------ API

def test_transfer_refusals_are_clear_json_errors(loaded_app, clock, client, mari):
    # Mari is on no call.
    refused = _transfer(client, {"unit": "rehabilitation"}, headers=mari)
    assert (refused.status_code, refused.get_json()["error"]) == (409, "agent not on a call")
    # Mari's phone is ringing with a call: not yet in conversation.
    with loaded_app.extensions["db_sessionmaker"]() as s:
        set_state(s, s.scalar(select(Agent).where(Agent.name == "Mari")), "available", clock())
        s.commit()
    ringing = Caller(client)
    ringing.post("/twilio/voice")
    ringing.post("/twilio/ivr/language?attempt=1", Digits="1")
    ringing.post("/twilio/ivr/topic?attempt=1", Digits="2")
    refused = _transfer(client, {"unit": "rehabilitation"}, headers=mari)
    assert (refused.status_code, refused.get_json()["error"]) == (409, "call not connected")
    ringing.post(f"/twilio/agent/answer?call={ringing.call_sid}")
    for body, error in (({"unit": "astrology"}, "unknown unit"),
                        ({"unit": "rehabilitation", "mode": "cold"}, "unknown mode"),
                        ({"unit": "rehabilitation", "mode": ["warm"]}, "unknown mode")):
        refused = _transfer(client, body, headers=mari)
        assert (refused.status_code, refused.get_json()["error"]) == (422, error)
    for body in ({"mode": "blind"}, {"unit": 6}, ["rehabilitation"]):
        assert _transfer(client, body, headers=mari).status_code == 400
    assert _transfer(client, {"unit": "rehabilitation"}, agent="Nobody",
                     headers=_token(loaded_app, "supervisor")).status_code == 404
    assert _transfer(client, {"unit": "rehabilitation"}, agent="Jaan",
                     headers=mari).status_code == 403
    assert _transfer(client, {"unit": "rehabilitation"}).status_code == 401
    for path in ("transfer/complete", "transfer/cancel"):
        refused = _transfer(client, {}, headers=mari, path=path)
        assert (refused.status_code, refused.get_json()["error"]) == (
            409, "no warm transfer in progress")
    assert _sent(loaded_app) == []
    assert _call(loaded_app, ringing.call_sid).status == "connected"
    # One transfer at a time.
    assert _transfer(client, {"unit": "rehabilitation", "mode": "warm"},
                     headers=mari).status_code == 200
    again = _transfer(client, {"unit": "rehabilitation"}, headers=mari)
    assert (again.status_code, again.get_json()["error"]) == (409, "call not connected")


def test_provider_refusing_the_redirect_changes_nothing(loaded_app, client, talking, mari,
                                                        monkeypatch):
    def refuse(call_sid, url):
        raise TelephonyError(f"redirect of {call_sid} failed: 404")

    monkeypatch.setattr(loaded_app.extensions["telephony"], "redirect_call", refuse)
    for mode in ("blind", "warm"):
        response = _transfer(client, {"unit": "rehabilitation", "mode": mode}, headers=mari)
        assert (response.status_code, response.get_json()["error"]) == (
            502, "provider request failed")
    call = _call(loaded_app, talking.call_sid)
    assert (call.status, call.transfer_kind, call.talk_seconds) == ("connected", None, None)
    assert (_agent(loaded_app, "Mari").state, _agent(loaded_app, "Mari").current_call_id) == (
        "busy", call.id)


@pytest.mark.parametrize("failing", ["unit", "agent"])
def test_warm_transfer_when_a_leg_cannot_be_dialled(loaded_app, client, talking, mari,
                                                     monkeypatch, failing):
    fake = loaded_app.extensions["telephony"]
    dial = fake.add_conference_participant

    def refuse_one(conference, **kwargs):
        if kwargs["label"] == failing:
            raise TelephonyError("provider said 400")
        return dial(conference, **kwargs)

    monkeypatch.setattr(fake, "add_conference_participant", refuse_one)
    response = _transfer(client, {"unit": "rehabilitation", "mode": "warm"}, headers=mari)
    assert (response.status_code, response.get_json()["error"]) == (502, "provider request failed")
    call = _call(loaded_app, talking.call_sid)
    if failing == "unit":
        # Nobody to consult: the agent is called straight into the caller's room.
        (agent,) = fake.participants
        assert (agent["label"], agent["conference"], agent["end_conference_on_exit"]) == (
            "agent", call.conference, True)
        assert (call.status, call.transfer_state, call.transfer_result) == (
            "connected", "returned", "failed")
        assert _agent(loaded_app, "Mari").state == "busy"
    else:
        # The agent cannot be called back: the caller is offered an adviser or a callback.
        (unit,) = fake.participants
        assert _sent(loaded_app)[-2:] == [
            ("hangup", unit["call_sid"], None),
            ("redirect", talking.call_sid, PUBLIC_BASE + "/twilio/transfer/offer")]
        assert (call.status, call.transfer_state, call.transfer_result) == (
            "ivr", "offer", "agent-failed")
        assert _agent(loaded_app, "Mari").state == "wrap_up"
        # The caller's request for the room (the first redirect) gets the offer too.
        assert verbs(parse(talking.post("/twilio/transfer/room"))) == ["Gather", "Redirect"]


def test_conference_participant_goes_through_the_official_client(monkeypatch):
    received = []

    class Double(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            received.append({"path": self.path, "form": parse_qs(body)})
            payload = json.dumps({"call_sid": "CA" + "c" * 32, "label": "unit"}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Double)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = TwilioRestClient("AC" + "a" * 32, "secret", f"http://127.0.0.1:{server.server_address[1]}")
        leg = client.add_conference_participant(
            "transfer-7-ab12cd34-consult", from_=LINE, to=UNIT, label="unit",
            status_callback="https://hotline.example.ee/twilio/transfer/leg?call=CA1&role=unit",
            timeout=30, early_media=True)
    finally:
        server.shutdown()
        server.server_close()
    assert leg == "CA" + "c" * 32
    (request,) = received
    assert request["path"] == ("/2010-04-01/Accounts/AC" + "a" * 32
                               + "/Conferences/transfer-7-ab12cd34-consult/Participants.json")
    form = request["form"]
    assert (form["From"], form["To"], form["Label"], form["Timeout"], form["EarlyMedia"],
            form["StartConferenceOnEnter"], form["EndConferenceOnExit"], form["Beep"]) == (
        [LINE], [UNIT], ["unit"], ["30"], ["true"], ["true"], ["false"], ["false"])
    assert form["StatusCallbackEvent"] == ["answered", "completed"]
    assert form["StatusCallback"] == [
        "https://hotline.example.ee/twilio/transfer/leg?call=CA1&role=unit"]


# ---------------------------------------------------------------------- configuration

SAMPLE = load_yaml(SAMPLE_CONFIG)


@pytest.mark.parametrize("number", ["5550 010x", "", "+372 612"])
def test_unit_with_a_malformed_number_is_refused_when_the_configuration_is_loaded(
        app, tmp_path, number):
    document = copy.deepcopy(SAMPLE)
    document["units"][1]["phone_number"] = number
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["config", "load", str(bad)])
    assert result.exit_code != 0
    assert "units.1.phone_number: Value error, not a" in result.output


def test_unit_numbers_are_normalised_to_e164_with_estonia_as_default_region():
    document = copy.deepcopy(SAMPLE)
    document["units"][0]["phone_number"] = "612 1399"
    assert parse_line_config(document).units[0].phone_number == UNIT


@pytest.mark.parametrize("route,field", [
    ({"unit": "astrology"}, "escalation.unit: unknown unit 'astrology'"),
    ({"queue": "et.astrology"}, "escalation.queue: unknown queue 'et.astrology'"),
    ({"unit": "call_centre_head", "queue": "et.general"}, "exactly one of 'unit' or 'queue'"),
    ({"queue": "et.general", "mode": "warm"}, "a warm escalation consults a unit"),
    ({"unit": "call_centre_head", "mode": "cold"}, "escalation.mode"),
])
def test_escalation_route_is_checked(route, field):
    document = copy.deepcopy(SAMPLE)
    document["escalation"] = route
    with pytest.raises(LineConfigError) as info:
        parse_line_config(document)
    assert field in str(info.value)


@pytest.mark.parametrize("key", ["transfer_unanswered", "transfer_hold"])
def test_transfer_prompts_are_required_in_every_language(key):
    document = copy.deepcopy(SAMPLE)
    document["prompts"][key].pop("ru")
    with pytest.raises(LineConfigError, match=f"prompts.{key}.ru: missing"):
        parse_line_config(document)


# ------------------------------------------------------------------------ hostile input

TRANSFER_WEBHOOKS = ("/twilio/transfer/unit", "/twilio/transfer/choice", "/twilio/transfer/offer",
                     "/twilio/transfer/room", "/twilio/transfer/room/after?room=x",
                     "/twilio/transfer/queue?queue=et.general",
                     "/twilio/transfer/join?call=CA1&role=unit",
                     "/twilio/transfer/leg?call=CA1&role=agent")


def test_transfer_webhooks_need_a_signature_and_ignore_calls_not_being_transferred(
        loaded_app, client, caller):
    caller.post("/twilio/voice")
    for path in TRANSFER_WEBHOOKS + ("/twilio/transfer/hold",):
        assert client.post(path, data={"CallSid": caller.call_sid}).status_code == 403
    for path in TRANSFER_WEBHOOKS:
        for params in ({"Digits": "2"}, {"CallStatus": "completed", "DialCallStatus": "busy"}):
            assert verbs(parse(caller.post(path, **params))) in ([], ["Hangup"]), path
    no_sid = Caller(client, "")
    for path in ("/twilio/transfer/join?call=CA1&role=unit", "/twilio/transfer/leg?call=CA1"):
        assert no_sid.post(path).status_code == 400
    with loaded_app.extensions["db_sessionmaker"]() as s:
        calls = s.scalars(select(Call)).all()
        assert s.scalar(select(QueueEntry)) is None
    assert [(c.call_sid, c.transfer_state, c.outcome) for c in calls] == [
        (caller.call_sid, None, None)]
    assert _sent(loaded_app) == []
