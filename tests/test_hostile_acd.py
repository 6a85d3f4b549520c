"""Regression tests from a hostile review of callbacks, queue limits and transfers: one per
defect it found (helpers in tests/break_helpers.py)."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from routing import dispatch as acd
from routing.models import Queue
from sqlalchemy import select
from telephony.client import TelephonyError
from tests.break_helpers import (A_NUMBER, agent_row, ask_for_callback, bearer, call_row,
                                 callbacks_all, invariants, load, queue, report, set_state,
                                 worker)
from tests.conftest import PG_URL, Caller
from tests.twiml import parse, verbs

TALLINN = ZoneInfo("Europe/Tallinn")


def _dialled(app):
    """A (en.family) asks for a keep-place callback; Kadri becomes available; A is dialled."""
    client = app.test_client()
    a = Caller(client, "CA" + "a" * 32, from_number=A_NUMBER)
    queue(a)
    ask_for_callback(a)
    set_state(app, client, "Kadri", "available")
    return client, app.extensions["telephony"], a


def _talking(app, clock, caller):
    """Caller (et.family) talking to Mari."""
    set_state(app, app.test_client(), "Mari", "available")
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits="2")
    clock.advance(4)
    caller.post(f"/twilio/agent/answer?call={caller.call_sid}")


# 1
def test_d1_caller_hangs_up_during_callback_intro(loaded_app, clock):
    """A caller who hangs up while the reserved agent rings fails the attempt (retried after
    the delay, at most `attempts` times); the agent is not blamed."""
    client, fake, a = _dialled(loaded_app)
    for attempt in range(1, 4):
        assert len(fake.dialled) == attempt
        d = fake.dialled[-1]
        out = Caller(client, d["call_sid"])
        answer = parse(out.post(d["url"]))
        out.post(answer[1].get("action"), DialCallStatus="no-answer", CallStatus="completed")
        out.post(d["status_callback"], CallStatus="completed")
        assert agent_row(loaded_app, "Kadri").state == "available"
        clock.advance(300)
        worker(loaded_app)
    assert len(fake.dialled) == 3
    callback = callbacks_all(loaded_app)[0]
    assert (callback.state, callback.attempts) == ("failed", 3)


def test_d2_late_repeat_of_attempt_1_status_fails_attempt_2(loaded_app, clock):
    client, fake, a = _dialled(loaded_app)
    first = fake.dialled[0]
    Caller(client, first["call_sid"]).post(first["status_callback"], CallStatus="no-answer")
    clock.advance(300)
    worker(loaded_app)
    second = fake.dialled[1]
    Caller(client, first["call_sid"]).post(first["status_callback"], CallStatus="no-answer")
    answer = parse(Caller(client, second["call_sid"]).post(second["url"]))
    assert verbs(answer) == ["Say", "Dial"]   # observed: ['Hangup'], callback pending, agent freed


# 3
def test_d3_second_keep_place_callback_for_the_same_number(loaded_app, clock):
    client = loaded_app.test_client()
    clock.now = datetime(2026, 12, 1, 16, 50, tzinfo=TALLINN).astimezone(timezone.utc)
    queue(Caller(client, "CA" + "a" * 32, from_number=A_NUMBER))
    ask_for_callback(Caller(client, "CA" + "a" * 32, from_number=A_NUMBER))
    clock.now = datetime(2026, 12, 1, 17, 30, tzinfo=TALLINN).astimezone(timezone.utc)
    again = Caller(client, "CA" + "c" * 32, from_number=A_NUMBER)   # calls again, closed
    again.post("/twilio/voice")
    closed = parse(again.post("/twilio/ivr/language?attempt=1", Digits="3"))
    again.post(closed[1].get("action"), Digits="1")
    set_state(loaded_app, client, "Kadri", "available")
    set_state(loaded_app, client, "Peeter", "available")
    clock.now = datetime(2026, 12, 2, 9, 0, tzinfo=TALLINN).astimezone(timezone.utc)
    worker(loaded_app)
    assert [d["to"] for d in loaded_app.extensions["telephony"].dialled] == [A_NUMBER]  # observed: twice


# 4
def test_d4_back_to_adviser_after_failed_transfer_is_at_max_wait_at_once(loaded_app, clock, caller):
    client = loaded_app.test_client()
    _talking(loaded_app, clock, caller)
    clock.advance(1000)   # > queue_policy max_wait_seconds 900
    client.post("/api/agents/Mari/transfer", json={"unit": "rehabilitation"},
                headers=bearer(loaded_app, "agent", "Mari"))
    caller.post("/twilio/transfer/unit")
    caller.post("/twilio/transfer/after", DialCallStatus="busy")
    caller.post("/twilio/transfer/choice", Digits="1")   # back to an adviser (et.general)
    clock.advance(1)
    assert verbs(parse(caller.post("/twilio/queue/wait"))) == ["Gather"]   # observed: ['Leave']


# 5
def test_d5_overflow_to_failing_unit_then_adviser_loops_to_the_unit(loaded_app, clock, tmp_path):
    def change(d):
        d["queue_policy"] = {"max_wait_seconds": 60, "overflow": {"unit": "rehabilitation"}}
        d["queues"] = {}
    load(loaded_app, tmp_path, change)
    a = Caller(loaded_app.test_client())
    queue(a)
    clock.advance(60)
    a.post("/twilio/queue/wait")
    a.post("/twilio/queue/after", QueueResult="leave")           # -> unit
    a.post("/twilio/transfer/after", DialCallStatus="no-answer")  # -> offer
    a.post("/twilio/transfer/choice", Digits="1")                 # -> en.general
    clock.advance(1)
    assert verbs(parse(a.post("/twilio/queue/wait"))) == ["Gather"]   # observed: Leave, then the unit again


# 6
def test_d6_length_overflow_into_a_full_queue(loaded_app, clock, tmp_path):
    load(loaded_app, tmp_path, lambda d: d.update(queues={
        "en.family": {"max_length": 1, "overflow": {"queue": "en.general"}},
        "en.general": {"max_length": 1}}))
    client = loaded_app.test_client()
    c0, c1, c2 = (Caller(client, "CA" + str(i) * 32) for i in range(3))
    c0.post("/twilio/voice")
    c0.post("/twilio/ivr/language?attempt=1", Digits="3")
    c0.post("/twilio/ivr/topic?attempt=1", Digits="0")   # en.general: 1 caller (full)
    queue(c1)                                             # en.family: 1 caller (full)
    queue(c2)                                             # overflows into full en.general
    with loaded_app.extensions["db_sessionmaker"]() as s:
        general = s.scalar(select(Queue).where(Queue.name == "en.general"))
        assert acd.callers_waiting(s, general.id) <= 1    # observed: 2


# 7
def test_d7_leave_action_while_connecting_hangs_the_caller_up(loaded_app, clock):
    client = loaded_app.test_client()
    a = Caller(client, "CA" + "a" * 32, from_number=A_NUMBER)
    queue(a)
    a.post("/twilio/queue/key", Digits="1")               # <Leave>
    set_state(loaded_app, client, "Kadri", "available")   # offered before the Enqueue action
    assert verbs(parse(a.post("/twilio/queue/after", QueueResult="leave"))) != []  # observed: []


# 8
def test_d8_report_counts_a_called_again_callback_as_abandoned(loaded_app, clock):
    client = loaded_app.test_client()
    a = Caller(client, "CA" + "a" * 32, from_number=A_NUMBER)
    queue(a)
    ask_for_callback(a)
    clock.advance(300)
    again = Caller(client, "CA" + "c" * 32, from_number=A_NUMBER)
    queue(again)
    set_state(loaded_app, client, "Kadri", "available")
    again.post(f"/twilio/agent/answer?call={again.call_sid}")
    again.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="30")
    t = report(loaded_app).total
    assert (t.offered, t.answered, t.abandoned) == (1, 1, 0)   # observed: (2, 1, 1)


# 9
def test_d9_requeued_answered_call_without_answer_notice_leaves_agent_offered(loaded_app, clock, caller):
    client = loaded_app.test_client()
    _talking(loaded_app, clock, caller)
    client.post("/api/agents/Mari/transfer", json={"unit": "rehabilitation"},
                headers=bearer(loaded_app, "agent", "Mari"))
    caller.post("/twilio/transfer/unit")
    caller.post("/twilio/transfer/after", DialCallStatus="busy")
    caller.post("/twilio/transfer/choice", Digits="1")
    set_state(loaded_app, client, "Jaan", "available")    # Jaan offered, rings
    caller.post("/twilio/queue/connect")
    caller.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="30")  # no /agent/answer
    caller.post("/twilio/status", CallStatus="completed")
    assert agent_row(loaded_app, "Jaan").state == "wrap_up"   # observed: 'offered' for ever
    assert invariants(loaded_app) == []


# 10
def test_d10_warm_unit_refused_then_agent_dial_action_frees_agent_mid_call(
        loaded_app, clock, caller, monkeypatch):
    client = loaded_app.test_client()
    _talking(loaded_app, clock, caller)
    fake = loaded_app.extensions["telephony"]
    real = fake.add_conference_participant

    def refuse_unit(conference, **kw):
        if kw["label"] == "unit":
            raise TelephonyError("refused")
        return real(conference, **kw)
    monkeypatch.setattr(fake, "add_conference_participant", refuse_unit)
    r = client.post("/api/agents/Mari/transfer", json={"unit": "rehabilitation", "mode": "warm"},
                    headers=bearer(loaded_app, "agent", "Mari"))
    assert r.status_code == 502   # "you are put back through to the caller"
    # the agent's original <Dial> (ended by the caller's redirect) reports:
    caller.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="30")
    assert agent_row(loaded_app, "Mari").state == "busy"   # observed: wrap_up, rung for new calls


# 11
def test_d11_transfer_of_a_callback_conversation_redirects_the_dead_inbound_leg(loaded_app, clock):
    client, fake, a = _dialled(loaded_app)
    d = fake.dialled[0]
    out = Caller(client, d["call_sid"])
    out.post(d["url"])
    out.post(f"/twilio/agent/answer?call={a.call_sid}")
    client.post("/api/agents/Kadri/transfer", json={"unit": "rehabilitation"},
                headers=bearer(loaded_app, "agent", "Kadri"))
    assert fake.sent[-1][1] == d["call_sid"]   # observed: the original inbound CallSid (ended)


# 12
def test_d12_repeated_unit_dial_action_rewrites_a_blind_transfer(loaded_app, clock, caller):
    client = loaded_app.test_client()
    _talking(loaded_app, clock, caller)
    client.post("/api/agents/Mari/transfer", json={"unit": "rehabilitation"},
                headers=bearer(loaded_app, "agent", "Mari"))
    caller.post("/twilio/transfer/unit")
    caller.post("/twilio/transfer/after", DialCallStatus="completed", DialCallDuration="95")
    caller.post("/twilio/transfer/after", DialCallStatus="completed", DialCallDuration="95")  # repeat
    assert call_row(loaded_app, caller.call_sid).transfer_kind == "blind"   # observed: 'ivr'
    caller.post("/twilio/transfer/after", DialCallStatus="busy")            # stale
    c = call_row(loaded_app, caller.call_sid)
    assert (c.transfer_state, c.outcome) == ("connected", "transferred")   # observed: ('offer', 'answered')


# 13
@pytest.mark.parametrize("answered", [False, True])
def test_d13_close_stale_leaves_the_callback_open(loaded_app, clock, answered):
    client, fake, a = _dialled(loaded_app)
    d = fake.dialled[0]
    if answered:
        Caller(client, d["call_sid"]).post(d["url"])
    clock.advance(5 * 3600)   # the outbound call's statuses never came
    loaded_app.test_cli_runner().invoke(args=["calls", "close-stale"])
    assert callbacks_all(loaded_app)[0].state not in ("dialing", "connected")  # observed: stays open
    r = client.post("/api/agents/Kadri/callbacks", headers=bearer(loaded_app, "agent", "Kadri"),
                    json={"number": A_NUMBER, "at": "2026-12-02T10:30:00+02:00", "queue": "en.family"})
    assert r.status_code == 201   # observed: 409 "already has an open callback", for ever


# 14
def test_d14_late_callback_status_revives_an_ended_call(loaded_app, clock):
    client, fake, a = _dialled(loaded_app)
    d = fake.dialled[0]
    clock.advance(5 * 3600)
    loaded_app.test_cli_runner().invoke(args=["calls", "close-stale"])
    Caller(client, d["call_sid"]).post(d["status_callback"], CallStatus="no-answer")
    assert call_row(loaded_app, a.call_sid).status == "ended"   # observed: 'callback', no queue entry


# 15
@pytest.mark.skipif(not PG_URL, reason="the interleaving needs PostgreSQL (TEST_DATABASE_URL)")
def test_d15_cancel_races_the_dial(loaded_app, clock, monkeypatch):
    import admin.callbacks_api as api_mod
    client = loaded_app.test_client()
    kadri = bearer(loaded_app, "agent", "Kadri")
    at = datetime(2026, 12, 1, 12, 30, tzinfo=TALLINN)
    cid = client.post("/api/agents/Kadri/callbacks", headers=kadri, json={
        "number": A_NUMBER, "at": at.isoformat(), "queue": "en.family"}).get_json()["callback"]["id"]
    set_state(loaded_app, client, "Kadri", "available")
    clock.now = at.astimezone(timezone.utc)
    real_cancel = api_mod.callbacks.cancel

    def cancel_after_worker(session, callback, now):   # a worker runs between read and write
        with loaded_app.app_context():                  # (its own context: its own session)
            worker(loaded_app)
        return real_cancel(session, callback, now)
    monkeypatch.setattr(api_mod.callbacks, "cancel", cancel_after_worker)
    r = client.delete(f"/api/callbacks/{cid}", headers=kadri)
    assert len(loaded_app.extensions["telephony"].dialled) == 1
    assert r.status_code == 409   # observed: 200 canceled; Kadri stuck 'offered' on an ended call


# 16
def test_d16_api_500s(loaded_app):
    loaded_app.testing = False
    loaded_app.config["PROPAGATE_EXCEPTIONS"] = False
    client = loaded_app.test_client()
    h = bearer(loaded_app, "agent", "Kadri")
    nested = client.post("/api/agents/Kadri/callbacks", headers=h, data="[" * 5000 + "]" * 5000,
                         content_type="application/json")
    huge_id = client.delete("/api/callbacks/99999999999999999999", headers=h)
    assert (nested.status_code, huge_id.status_code) == (400, 404)   # observed: (500, 500)


# 17
@pytest.mark.parametrize("mode", [[], {}, "", 0, False])
def test_d17_escalate_accepts_falsy_wrong_typed_mode(loaded_app, clock, caller, mode):
    _talking(loaded_app, clock, caller)
    r = loaded_app.test_client().post("/api/agents/Mari/escalate", json={"mode": mode},
                                      headers=bearer(loaded_app, "agent", "Mari"))
    assert r.status_code == 422   # observed: 200, a warm escalation starts


# 18
@pytest.mark.parametrize("number", [["+37251111111"], {"x": "+37251111111"}])
def test_d18_schedule_accepts_a_list_or_object_as_number(loaded_app, clock, number):
    r = loaded_app.test_client().post(
        "/api/agents/Kadri/callbacks", headers=bearer(loaded_app, "agent", "Kadri"),
        json={"number": number, "at": "2026-12-02T10:30:00+02:00", "queue": "en.family"})
    assert (r.status_code, r.get_json().get("field")) == (422, "number")   # observed: 201
