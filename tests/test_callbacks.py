"""Callbacks that keep the caller's place, callbacks at an agreed time, queue limits and the
callback offer when nobody can answer."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import yaml
from sqlalchemy import select

from ivr.models import Call
from routing.models import Agent, Callback, QueueEntry
from tests.conftest import PUBLIC_BASE, SAMPLE_CONFIG, Caller, load_yaml
from tests.twiml import parse, verbs

TALLINN = ZoneInfo("Europe/Tallinn")
A_NUMBER, B_NUMBER = "+37251111111", "+37252222222"


def _token(app, role: str, agent: str | None = None) -> str:
    args = ["tokens", "create", "--role", role] + (["--agent", agent] if agent else [])
    return app.test_cli_runner().invoke(args=args).output.strip()


def _set_state(app, client, name: str, state: str, **extra) -> None:
    token = app.extensions.setdefault("_test_admin_token", _token(app, "admin"))
    response = client.put(f"/api/agents/{name}/state", json={"state": state, **extra},
                          headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_json()


def _queue(caller: Caller, language: str = "3", topic: str = "2"):
    """Through the menus into a queue (default English family benefits: only Kadri serves it)."""
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits=language)
    return parse(caller.post("/twilio/ivr/topic?attempt=1", Digits=topic))


def _call(app, call_sid: str) -> Call:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(Call).where(Call.call_sid == call_sid))


def _callback(app) -> Callback:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(Callback).order_by(Callback.id.desc()))


def _ask_for_callback(caller: Caller) -> None:
    """While waiting: press the callback key, take the offer for the number calling, hang up."""
    assert verbs(parse(caller.post("/twilio/queue/key", Digits="1"))) == ["Leave"]
    offer = parse(caller.post("/twilio/queue/after", QueueResult="leave"))
    assert verbs(offer) == ["Gather", "Redirect"]
    assert offer[0].get("action") == PUBLIC_BASE + "/twilio/callback/choice?reason=asked&attempt=1"
    done = parse(caller.post(offer[0].get("action"), Digits="1"))
    assert verbs(done) == ["Say", "Hangup"] and done[0].text.startswith("Thank you.")
    caller.post("/twilio/status", CallStatus="completed")  # the caller hangs up


def _worker(app) -> str:
    result = app.test_cli_runner().invoke(args=["worker", "--once"])
    assert result.exit_code == 0, result.output
    return result.output


def _load(app, tmp_path, change) -> None:
    document = load_yaml(SAMPLE_CONFIG)
    change(document)
    path = tmp_path / "line.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["config", "load", str(path)])
    assert result.exit_code == 0, result.output


def test_a_callback_keeps_the_place_and_connects_through_a_reserved_agent(loaded_app, clock):
    client = loaded_app.test_client()
    fake = loaded_app.extensions["telephony"]
    a = Caller(client, "CA" + "a" * 32, from_number=A_NUMBER)
    b = Caller(client, "CA" + "b" * 32, from_number=B_NUMBER)
    _queue(a)
    clock.advance(5)
    _queue(b)
    entered = _call(loaded_app, a.call_sid).queue_entered_at
    clock.advance(30)
    _ask_for_callback(a)
    assert _call(loaded_app, a.call_sid).status == "callback"  # the hang-up did not end it
    a_id = _call(loaded_app, a.call_sid).id
    with loaded_app.extensions["db_sessionmaker"]() as s:
        entry = s.scalar(select(QueueEntry).where(QueueEntry.call_id == a_id))
        assert (entry.entered_at, entry.state) == (entered, "waiting")  # the same place
    hold = parse(b.post("/twilio/queue/wait"))
    assert hold[0][0].text == "You are number 2 in the queue."  # still behind the callback
    assert fake.dialled == []

    clock.advance(60)
    _set_state(loaded_app, client, "Kadri", "available")  # Kadri is reserved for a, not b
    assert len(fake.dialled) == 1
    dial = fake.dialled[0]
    assert (dial["to"], dial["from"], dial["timeout"]) == (A_NUMBER, "+3726121360", 30)
    assert dial["url"] == PUBLIC_BASE + "/twilio/callback/answer?callback=1"
    assert dial["status_callback"] == PUBLIC_BASE + "/twilio/callback/status?callback=1"
    with loaded_app.extensions["db_sessionmaker"]() as s:
        kadri = s.scalar(select(Agent).where(Agent.name == "Kadri"))
        assert (kadri.state, kadri.current_call_id) == ("offered", a_id)
    assert _call(loaded_app, b.call_sid).status == "queued"

    outbound = Caller(client, dial["call_sid"], from_number="+3726121360")
    clock.advance(8)
    answer = parse(outbound.post(dial["url"], Direction="outbound-api"))
    assert verbs(answer) == ["Say", "Dial"]
    assert answer[0].text.startswith("Hello, this is the Social Insurance Board calling you back")
    assert answer[1].get("action") == PUBLIC_BASE + "/twilio/callback/after?callback=1"
    assert answer[1].find("Sip").text == "sip:kadri@pbx.example.ee"
    clock.advance(4)
    outbound.post(f"/twilio/agent/answer?call={a.call_sid}")
    clock.advance(120)
    assert verbs(parse(outbound.post("/twilio/callback/after?callback=1", DialCallStatus="completed",
                                     DialCallDuration="120"))) == ["Hangup"]
    outbound.post("/twilio/callback/status?callback=1", CallStatus="completed")
    call = _call(loaded_app, a.call_sid)
    assert (call.status, call.outcome, call.talk_seconds) == ("ended", "answered", 120)
    # The wait counts from the original queue entry: 35 s waiting + 60 s + 8 s ringing + 4 s.
    assert (call.answered_at - call.queue_entered_at).total_seconds() == 107
    assert call.queue_entered_at == entered
    callback = _callback(loaded_app)
    assert (callback.state, callback.attempts, callback.outbound_call_sid) == ("done", 1, dial["call_sid"])


def test_an_unanswered_callback_is_retried_after_the_delay_then_given_up(loaded_app, clock):
    client = loaded_app.test_client()
    fake = loaded_app.extensions["telephony"]
    a = Caller(client, "CA" + "a" * 32, from_number=A_NUMBER)
    _queue(a)
    _ask_for_callback(a)
    _set_state(loaded_app, client, "Kadri", "available")
    for attempt, result in enumerate(("no-answer", "busy", "failed"), start=1):
        assert len(fake.dialled) == attempt
        url = fake.dialled[-1]["status_callback"]
        Caller(client, fake.dialled[-1]["call_sid"]).post(url, CallStatus=result)
        with loaded_app.extensions["db_sessionmaker"]() as s:
            kadri = s.scalar(select(Agent).where(Agent.name == "Kadri"))
            assert (kadri.state, kadri.current_call_id) == ("available", None)  # not her fault
        if attempt < 3:
            clock.advance(299)
            _worker(loaded_app)
            assert len(fake.dialled) == attempt  # the retry delay is 300 s
            clock.advance(1)
            _worker(loaded_app)
    assert len(fake.dialled) == 3
    callback = _callback(loaded_app)
    assert (callback.state, callback.attempts, callback.last_result) == ("failed", 3, "failed")
    call = _call(loaded_app, a.call_sid)
    assert (call.status, call.outcome, call.answered_at) == ("ended", "callback_failed", None)
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert s.scalar(select(QueueEntry)) is None


def test_a_refused_dial_is_a_failed_attempt_and_frees_the_agent(loaded_app, clock):
    client = loaded_app.test_client()
    fake = loaded_app.extensions["telephony"]
    a = Caller(client, "CA" + "a" * 32, from_number=A_NUMBER)
    _queue(a)
    _ask_for_callback(a)
    fake.fail_calls = True
    _set_state(loaded_app, client, "Kadri", "available")
    callback = _callback(loaded_app)
    assert (callback.state, callback.attempts, callback.last_result) == ("pending", 1, "dial_failed")
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert s.scalar(select(Agent.state).where(Agent.name == "Kadri")) == "available"


def test_a_caller_who_calls_again_is_not_called_twice_and_keeps_the_place(loaded_app, clock):
    client = loaded_app.test_client()
    fake = loaded_app.extensions["telephony"]
    a = Caller(client, "CA" + "a" * 32, from_number=A_NUMBER)
    b = Caller(client, "CA" + "b" * 32, from_number=B_NUMBER)
    _queue(a)
    entered = _call(loaded_app, a.call_sid).queue_entered_at
    clock.advance(10)
    _queue(b)
    _ask_for_callback(a)
    clock.advance(300)
    again = Caller(client, "CA" + "c" * 32, from_number="5111 1111")  # the same number, national
    again.from_number = A_NUMBER
    _queue(again)
    callback = _callback(loaded_app)
    assert (callback.state, callback.closed_at) == ("canceled", clock())
    assert _call(loaded_app, a.call_sid).outcome == "called_again"
    hold = parse(again.post("/twilio/queue/wait"))
    assert hold[0][0].text == "You are number 1 in the queue."  # ahead of b, who came later
    again_id = _call(loaded_app, again.call_sid).id
    with loaded_app.extensions["db_sessionmaker"]() as s:
        entry = s.scalar(select(QueueEntry).where(QueueEntry.call_id == again_id))
        assert entry.entered_at == entered
    _set_state(loaded_app, client, "Kadri", "available")
    assert fake.dialled == []  # served on this call, never called back
    assert _call(loaded_app, again.call_sid).status == "connecting"


def test_out_of_hours_a_caller_gets_the_offer_at_once_and_is_called_when_the_line_opens(loaded_app, clock):
    client = loaded_app.test_client()
    fake = loaded_app.extensions["telephony"]
    clock.now = datetime(2026, 12, 1, 17, 30, tzinfo=TALLINN).astimezone(timezone.utc)
    caller = Caller(client, from_number=A_NUMBER)
    caller.post("/twilio/voice")
    closed = parse(caller.post("/twilio/ivr/language?attempt=1", Digits="3"))
    assert verbs(closed) == ["Say", "Gather", "Redirect"]
    assert closed[0].text.startswith("The information line is closed now.")
    assert closed[1][0].text.startswith("We can call you back.")
    done = parse(caller.post(closed[1].get("action"), Digits="1"))
    assert done[0].text.startswith("Thank you.")
    call = _call(loaded_app, caller.call_sid)
    opens = datetime(2026, 12, 2, 9, 0, tzinfo=TALLINN).astimezone(timezone.utc)
    assert (call.status, call.outcome, call.queue_entered_at) == ("callback", None, opens)
    _set_state(loaded_app, client, "Kadri", "available")  # someone is there, but it is closed
    clock.now = opens - timedelta(seconds=1)
    _worker(loaded_app)
    assert fake.dialled == []
    clock.now = opens
    assert "offered 1" in _worker(loaded_app)
    assert [d["to"] for d in fake.dialled] == [A_NUMBER]


def test_a_caller_can_give_another_number_which_is_validated(loaded_app, clock):
    client = loaded_app.test_client()
    caller = Caller(client, from_number="anonymous")
    _queue(caller)
    assert verbs(parse(caller.post("/twilio/queue/key", Digits="1"))) == ["Leave"]
    offer = parse(caller.post("/twilio/queue/after", QueueResult="leave"))
    assert offer[0][0].text.startswith("We can call you back. To give the number")
    assert "press 1" not in offer[0][0].text  # a withheld number cannot be confirmed
    own = parse(caller.post(offer[0].get("action"), Digits="1"))  # 1 means nothing here
    assert "".join(own[0].itertext()) == "That is not one of the options."  # said slower
    enter = parse(caller.post(offer[0].get("action"), Digits="2"))
    assert verbs(enter) == ["Gather", "Redirect"] and enter[0].get("finishOnKey") == "#"
    for bad in ("5550010", "90012345"):  # too short; premium rate
        again = parse(caller.post(enter[0].get("action"), Digits=bad))
        assert "".join(again[0].itertext()) == "That is not a valid phone number."
        enter = again[1:]  # the Gather follows the notice
        enter = [again[1]]
    done = parse(caller.post(enter[0].get("action"), Digits="58765432"))
    assert done[0].text.startswith("Thank you.")
    assert _callback(loaded_app).number == "+37258765432"


def test_a_caller_who_declines_the_offer_goes_back_to_the_same_place(loaded_app, clock):
    client = loaded_app.test_client()
    caller = Caller(client)
    _queue(caller)
    entered = _call(loaded_app, caller.call_sid).queue_entered_at
    caller.post("/twilio/queue/key", Digits="1")
    offer = parse(caller.post("/twilio/queue/after", QueueResult="leave"))
    action = offer[1].text
    caller.post(action)
    back = parse(caller.post(action.replace("attempt=1", "attempt=2")))
    assert back.find("Enqueue").text == "en.family"
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert s.scalar(select(QueueEntry.entered_at)) == entered


def test_a_caller_leaves_the_queue_at_its_maximum_wait_with_a_callback_offer(loaded_app, clock):
    client = loaded_app.test_client()
    caller = Caller(client)
    assert _queue(caller, language="1", topic="1").find("Enqueue").text == "et.pension"
    loaded_app.config["HOLD_MUSIC_URL"] = "https://hotline.example.ee/hold.mp3"
    clock.advance(570)  # et.pension waits at most 600 s in the sample configuration
    hold = parse(caller.post("/twilio/queue/wait"))
    assert hold[0].findall("Play")[-1].text == "https://hotline.example.ee/hold.mp3"  # 30 s left
    clock.advance(20)
    hold = parse(caller.post("/twilio/queue/wait"))
    # Not the whole track: only the 10 s left, so the next request comes at 600 s.
    assert "https://hotline.example.ee/hold.mp3" not in [p.text for p in hold[0].findall("Play")]
    assert hold[0].find("Pause").get("length") == "10"
    clock.advance(10)
    assert verbs(parse(caller.post("/twilio/queue/wait"))) == ["Leave"]
    offer = parse(caller.post("/twilio/queue/after", QueueResult="leave"))
    assert verbs(offer) == ["Play", "Gather", "Redirect"]
    assert offer[0].text == PUBLIC_BASE + "/audio/et/max_wait_reached.wav"
    caller.post(offer[2].text)
    bye = parse(caller.post(offer[2].text.replace("attempt=1", "attempt=2")))
    assert verbs(bye) == ["Play", "Hangup"]
    caller.post("/twilio/status", CallStatus="completed")
    call = _call(loaded_app, caller.call_sid)
    assert (call.outcome, (call.ended_at - call.queue_entered_at).total_seconds()) == ("max_wait", 600)
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert s.scalar(select(QueueEntry)) is None


def test_a_full_queue_overflows_to_its_target(loaded_app, clock, tmp_path):
    def limits(document):
        document["queues"] = {"en.family": {"max_length": 1, "overflow": {"queue": "en.general"}},
                              "en.pension": {"max_length": 1}}
    _load(loaded_app, tmp_path, limits)
    client = loaded_app.test_client()
    first, second = Caller(client, "CA" + "1" * 32), Caller(client, "CA" + "2" * 32)
    assert _queue(first).find("Enqueue").text == "en.family"
    assert _queue(second).find("Enqueue").text == "en.general"
    assert _call(loaded_app, second.call_sid).overflowed_at is not None
    third, fourth = Caller(client, "CA" + "3" * 32), Caller(client, "CA" + "4" * 32)
    assert _queue(third, topic="1").find("Enqueue").text == "en.pension"
    full = _queue(fourth, topic="1")  # the default target: a callback offer
    assert verbs(full) == ["Say", "Gather", "Redirect"]
    assert full[0].text == "All our advisers are busy. Please stay on the line."
    assert full[1].get("action").endswith("reason=full&attempt=1")
    assert _call(loaded_app, fourth.call_sid).queue_entered_at is None


def test_a_maximum_wait_overflows_to_another_queue_once(loaded_app, clock, tmp_path):
    def limits(document):
        document["queues"] = {"en.family": {"max_wait_seconds": 60, "overflow": {"queue": "en.general"}},
                              "en.general": {"max_wait_seconds": 120}}
    _load(loaded_app, tmp_path, limits)
    caller = Caller(loaded_app.test_client())
    _queue(caller)
    entered = _call(loaded_app, caller.call_sid).queue_entered_at
    clock.advance(60)
    assert verbs(parse(caller.post("/twilio/queue/wait"))) == ["Leave"]
    moved = parse(caller.post("/twilio/queue/after", QueueResult="leave"))
    assert moved.find("Enqueue").text == "en.general"
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert s.scalar(select(QueueEntry.entered_at)) == entered  # the same place by time
    clock.advance(119)  # en.general's 120 s count from the overflow
    assert verbs(parse(caller.post("/twilio/queue/wait"))) == ["Gather"]
    clock.advance(1)
    assert verbs(parse(caller.post("/twilio/queue/wait"))) == ["Leave"]
    offer = parse(caller.post("/twilio/queue/after", QueueResult="leave"))
    assert offer[1].get("action").endswith("reason=max_wait&attempt=1")


def test_position_is_never_announced_worse_and_the_estimate_follows_recent_answers(loaded_app, clock):
    client = loaded_app.test_client()
    first, second = Caller(client, "CA" + "1" * 32), Caller(client, "CA" + "2" * 32)
    _queue(first)
    clock.advance(1)
    _queue(second)
    hold = parse(second.post("/twilio/queue/wait"))
    assert [e.text for e in hold[0].iter("Say")][0] == "You are number 2 in the queue."
    # A caller with raised priority (e.g. one who struggled) jumps ahead: position 3 is not said.
    third = Caller(client, "CA" + "3" * 32)
    _queue(third)
    third_id = _call(loaded_app, third.call_sid).id
    with loaded_app.extensions["db_sessionmaker"]() as s:
        s.execute(QueueEntry.__table__.update().where(QueueEntry.call_id == third_id)
                  .values(priority=1))
        s.commit()
    hold = parse(second.post("/twilio/queue/wait"))
    texts = [e.text for e in hold[0].iter("Say")]
    assert not any(t.startswith("You are number") for t in texts)
    assert texts[0].startswith("To be called back instead")
    # Six calls answered in en.family in the last 30 minutes: 1 answer per 300 s.
    with loaded_app.extensions["db_sessionmaker"]() as s:
        queue_id = s.scalar(select(Call.queue_id).where(Call.call_sid == first.call_sid))
        for i in range(6):
            at = clock() - timedelta(minutes=5 * i + 1)
            s.add(Call(call_sid=f"CAold{i}", queue_id=queue_id, status="ended", outcome="answered",
                       arrived_at=at, queue_entered_at=at, answered_at=at, ended_at=at,
                       last_event_at=at))
        s.commit()
    hold = parse(first.post("/twilio/queue/wait"))
    texts = [e.text for e in hold[0].iter("Say")]
    # first is now behind the priority caller: position 2 at 300 s per answer is 10 minutes.
    assert texts[:2] == ["You are number 2 in the queue.", "The estimated wait is about 10 minutes."]


def _bearer(app, role="agent", agent="Kadri"):
    return {"Authorization": f"Bearer {_token(app, role, agent)}"}


def test_an_agent_schedules_a_callback_which_is_dialled_once_at_that_time(loaded_app, clock):
    client = loaded_app.test_client()
    fake = loaded_app.extensions["telephony"]
    caller = Caller(client, from_number=A_NUMBER)
    _queue(caller)
    at = datetime(2026, 12, 2, 10, 30, tzinfo=TALLINN)
    response = client.post("/api/agents/Kadri/callbacks", headers=_bearer(loaded_app), json={
        "number": "5111 1111", "at": at.isoformat(), "call_sid": caller.call_sid})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()["callback"]
    assert (body["kind"], body["number"], body["queue"], body["state"]) == (
        "scheduled", A_NUMBER, "en.family", "pending")
    _set_state(loaded_app, client, "Kadri", "available")
    assert fake.dialled == []  # Kadri takes the live caller; the callback is not due
    caller.post(f"/twilio/agent/answer?call={caller.call_sid}")
    caller.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="30")
    _set_state(loaded_app, client, "Kadri", "available")
    _set_state(loaded_app, client, "Jaan", "available")
    clock.now = at.astimezone(timezone.utc) - timedelta(seconds=1)
    _worker(loaded_app)
    assert fake.dialled == []
    clock.now = at.astimezone(timezone.utc)
    _worker(loaded_app)
    _worker(loaded_app)
    assert [d["to"] for d in fake.dialled] == [A_NUMBER]  # once, however often workers run
    with loaded_app.extensions["db_sessionmaker"]() as s:
        contact = s.scalar(select(Call).where(Call.source == "callback"))
        callback = s.scalar(select(Callback))
        kadri = s.scalar(select(Agent).where(Agent.name == "Kadri"))
        assert (contact.from_number, contact.status, contact.queue_entered_at) == (
            A_NUMBER, "connecting", at.astimezone(timezone.utc))
        assert callback.origin_call_id == s.scalar(select(Call.id).where(Call.call_sid == caller.call_sid))
        assert (kadri.state, kadri.current_call_id) == ("offered", contact.id)  # to herself


def test_scheduling_rejects_bad_input_naming_the_field(loaded_app, clock):
    client = loaded_app.test_client()
    headers = _bearer(loaded_app)
    good = {"number": "+37251111111", "at": "2026-12-02T10:30:00+02:00", "queue": "en.family"}
    for change, field in ((dict(number="5550 010x"), "number"), (dict(number=""), "number"),
                          (dict(number="900 12345"), "number"),
                          (dict(at="2026-12-02T10:30:00"), "at"), (dict(at="tomorrow"), "at"),
                          (dict(at="2026-11-30T10:30:00+02:00"), "at"),
                          (dict(at="2026-12-02T20:00:00+02:00"), "at"),
                          (dict(queue="xx.nothing"), "queue"), (dict(to="everyone"), "to")):
        response = client.post("/api/agents/Kadri/callbacks", headers=headers, json={**good, **change})
        assert (response.status_code, response.get_json()["field"]) == (422, field), change
    assert client.post("/api/agents/Kadri/callbacks", headers=headers, json=good).status_code == 201
    twice = client.post("/api/agents/Kadri/callbacks", headers=headers, json=good)
    assert (twice.status_code, twice.get_json()["field"]) == (409, "number")
    other = client.post("/api/agents/Mari/callbacks", headers=headers, json=good)
    assert other.status_code == 403
    listed = client.get("/api/callbacks?state=pending", headers=headers).get_json()["callbacks"]
    assert [c["number"] for c in listed] == ["+37251111111"]
    cancel = client.delete(f"/api/callbacks/{listed[0]['id']}", headers=headers)
    assert cancel.get_json()["callback"]["state"] == "canceled"
    assert client.delete(f"/api/callbacks/{listed[0]['id']}", headers=headers).status_code == 409
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert s.scalar(select(QueueEntry)) is None
        assert s.scalar(select(Call.queue_entered_at).where(Call.source == "callback")) is None


def test_callers_still_waiting_at_closing_time_get_the_offer_once(loaded_app, clock):
    client = loaded_app.test_client()
    clock.now = datetime(2026, 12, 1, 16, 59, 50, tzinfo=TALLINN).astimezone(timezone.utc)
    caller = Caller(client)
    _queue(caller)
    clock.advance(10)  # 17:00: closed
    assert verbs(parse(caller.post("/twilio/queue/wait"))) == ["Leave"]
    offer = parse(caller.post("/twilio/queue/after", QueueResult="leave"))
    assert offer[0].text == "The information line is closing."
    assert offer[2].text.endswith("reason=closing&attempt=1")
    caller.post(offer[2].text)
    back = parse(caller.post(offer[2].text.replace("attempt=1", "attempt=2")))
    assert back.find("Enqueue").text == "en.family"  # Kadri is still logged in: may wait on
    clock.advance(20)
    assert verbs(parse(caller.post("/twilio/queue/wait"))) == ["Gather"]  # not offered again
    with loaded_app.extensions["db_sessionmaker"]() as s:  # the last advisers leave
        s.execute(Agent.__table__.update().values(state="offline"))
        s.commit()
    clock.advance(20)
    assert verbs(parse(caller.post("/twilio/queue/wait"))) == ["Leave"]
    told = parse(caller.post("/twilio/queue/after", QueueResult="leave"))
    assert told[0].text.startswith("No adviser is available right now.")
    done = parse(caller.post(told[1].get("action"), Digits="1"))
    assert done[0].text.startswith("Thank you.")
    call = _call(loaded_app, caller.call_sid)
    opens = datetime(2026, 12, 2, 9, 0, tzinfo=TALLINN).astimezone(timezone.utc)
    with loaded_app.extensions["db_sessionmaker"]() as s:
        entry = s.scalar(select(QueueEntry))
        assert (entry.not_before, entry.entered_at) == (opens, call.queue_entered_at)


def test_a_dial_lost_by_a_dying_worker_is_retried(loaded_app, clock):
    from routing.callbacks import start_attempt
    client = loaded_app.test_client()
    fake = loaded_app.extensions["telephony"]
    a = Caller(client, "CA" + "a" * 32, from_number=A_NUMBER)
    _queue(a)
    _ask_for_callback(a)
    # A worker reserved Kadri and marked the attempt, then died before the REST request.
    from routing import dispatch as acd
    with loaded_app.extensions["db_sessionmaker"]() as s:
        s.execute(Agent.__table__.update().where(Agent.name == "Kadri")
                  .values(state="available", idle_since=clock()))
        assignment, = acd.dispatch(s, clock())
        start_attempt(s, assignment.callback_id, clock())
        s.commit()
    assert fake.dialled == []
    clock.advance(119)
    _worker(loaded_app)
    assert _callback(loaded_app).state == "dialing"
    clock.advance(1)  # two minutes without the provider's CallSid: the dial was lost
    _worker(loaded_app)
    callback = _callback(loaded_app)
    assert (callback.state, callback.attempts, callback.last_result) == ("pending", 1, "lost")
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert s.scalar(select(Agent.state).where(Agent.name == "Kadri")) == "available"
    clock.advance(300)
    _worker(loaded_app)
    assert [d["to"] for d in fake.dialled] == [A_NUMBER]
