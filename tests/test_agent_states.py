"""Agent states and their history: offered, busy, wrap-up with a timer, not ready with a reason."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from routing.agents import AgentStateError, set_state
from routing.models import Agent, AgentStateChange
from tests.conftest import Caller
from tests.twiml import parse, verbs


def _agent(session, name: str) -> Agent:
    return session.scalar(select(Agent).where(Agent.name == name))


def _token(app, role: str, agent: str | None = None) -> str:
    args = ["tokens", "create", "--role", role] + (["--agent", agent] if agent else [])
    return app.test_cli_runner().invoke(args=args).output.strip()


def _queue_caller(caller: Caller, topic_key: str = "2") -> None:
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits=topic_key)


def test_a_call_leaves_a_complete_state_history(loaded_app, clock):
    client = loaded_app.test_client()
    token = _token(loaded_app, "agent", "Mari")
    auth = {"Authorization": f"Bearer {token}"}
    start = clock()
    assert client.put("/api/agents/Mari/state", json={"state": "available"}, headers=auth).status_code == 200
    caller = Caller(client)
    clock.advance(10)
    _queue_caller(caller)
    clock.advance(3)
    caller.post(f"/twilio/agent/answer?call={caller.call_sid}")
    clock.advance(100)
    caller.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="100")
    clock.advance(20)
    assert client.put("/api/agents/Mari/state", json={"state": "not_ready", "reason": "break"},
                      headers=auth).status_code == 200
    history = client.get("/api/agents/Mari/history", headers=auth).get_json()["changes"]
    assert [(h["state"], h["reason"]) for h in history] == [
        ("available", None), ("offered", None), ("busy", None), ("wrap_up", None),
        ("not_ready", "break")]
    assert [h["at"] for h in history] == [
        (start + timedelta(seconds=s)).isoformat() for s in (0, 10, 13, 113, 133)]
    assert history[1]["call_id"] == history[2]["call_id"] == history[3]["call_id"] is not None
    later = client.get("/api/agents/Mari/history", headers=auth, query_string={
        "since": (start + timedelta(seconds=100)).isoformat()}).get_json()["changes"]
    assert [h["state"] for h in later] == ["wrap_up", "not_ready"]
    assert client.get("/api/agents/Jaan/history", headers=auth).status_code == 403
    for since in ("yesterday", "2026-12-01T10:00:00", "9999-12-31T23:59:59-14:00",
                  "0001-01-01T00:00:00+14:00"):
        response = client.get("/api/agents/Mari/history", headers=auth, query_string={"since": since})
        assert response.status_code == 400, since


def _mari_finishes_a_call(app, clock, *, wrap_up: int, talk: int) -> Caller:
    """Mari takes one caller and talks ``talk`` s; wrap-up of ``wrap_up`` s starts. Returns a
    second caller, not yet in the menus."""
    app.config["WRAP_UP_SECONDS"] = wrap_up
    with app.extensions["db_sessionmaker"]() as s:
        set_state(s, _agent(s, "Mari"), "available", clock())
        s.commit()
    client = app.test_client()
    first = Caller(client, "CA" + "1" * 32)
    _queue_caller(first)
    first.post(f"/twilio/agent/answer?call={first.call_sid}")
    clock.advance(talk)
    first.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration=str(talk))
    return Caller(client, "CA" + "2" * 32)


def test_wrap_up_ends_on_its_timer_and_the_agent_takes_the_next_caller(loaded_app, clock):
    second = _mari_finishes_a_call(loaded_app, clock, wrap_up=60, talk=50)
    wrap_up_ended = clock() + timedelta(seconds=60)
    from routing.dispatch import next_timer
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert next_timer(s, clock()) == wrap_up_ended  # when `flask worker` wakes next
    clock.advance(5)
    _queue_caller(second)
    clock.advance(25)  # 30 s into the wrap-up: still after-call work
    hold = parse(second.post("/twilio/queue/wait"))
    assert verbs(hold) == ["Gather"] and verbs(hold[0])[-1] == "Pause"  # waits on
    clock.advance(31)  # the wrap-up time is over: the next hold-loop request connects
    assert verbs(parse(second.post("/twilio/queue/wait"))) == ["Redirect"]
    with loaded_app.extensions["db_sessionmaker"]() as s:
        mari = _agent(s, "Mari")
        assert (mari.state, mari.wrap_up_until) == ("offered", None)
        states = [(c.state, c.at) for c in s.scalars(
            select(AgentStateChange).where(AgentStateChange.agent_id == mari.id)
            .order_by(AgentStateChange.id))]
    assert states[-2:] == [("available", wrap_up_ended), ("offered", clock())]
    from reporting.agents import offer_delays
    with loaded_app.extensions["db_sessionmaker"]() as s:
        delays = offer_delays(s, clock() - timedelta(hours=1), clock() + timedelta(seconds=1))
    # The first call was offered as it queued (0 s); the second 1 s after the wrap-up ran out,
    # at the hold-loop request that came then.
    assert delays == [0.0, 1.0]


def test_an_agent_can_end_wrap_up_early(loaded_app, clock):
    loaded_app.config["WRAP_UP_SECONDS"] = 600
    client = loaded_app.test_client()
    token = _token(loaded_app, "agent", "Mari")
    auth = {"Authorization": f"Bearer {token}"}
    client.put("/api/agents/Mari/state", json={"state": "available"}, headers=auth)
    caller = Caller(client)
    _queue_caller(caller)
    caller.post(f"/twilio/agent/answer?call={caller.call_sid}")
    caller.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="30")
    agent = client.get("/api/agents", headers={
        "Authorization": f"Bearer {_token(loaded_app, 'supervisor')}"}).get_json()["agents"]
    assert {a["name"]: a["state"] for a in agent}["Mari"] == "wrap_up"
    done = client.put("/api/agents/Mari/state", json={"state": "available"}, headers=auth)
    assert done.get_json()["agent"]["state"] == "available"
    assert done.get_json()["agent"]["wrap_up_until"] is None


@pytest.mark.parametrize("state,reason,message", [
    ("not_ready", None, "needs a reason"),
    ("not_ready", "Coffee Break!", "needs a reason"),
    ("not_ready", "break\n", "needs a reason"),
    ("available", "break", "only not_ready takes a reason"),
    ("offered", None, "set by routing"),
    ("busy", None, "set by routing"),
])
def test_state_requests_are_validated(session, loaded_app, clock, state, reason, message):
    with pytest.raises(AgentStateError, match=message):
        set_state(session, _agent(session, "Mari"), state, clock(), reason=reason)


def _free_without_dispatch(app, *names: str) -> None:
    """Make agents available directly, as if their desktops raced ahead of dispatch."""
    with app.extensions["db_sessionmaker"]() as s:
        for name in names:
            agent = _agent(s, name)
            agent.state, agent.idle_since = "available", agent.state_changed_at
        s.commit()


def test_a_second_agent_accepting_the_same_call_finds_it_taken(loaded_app):
    client = loaded_app.test_client()
    caller = Caller(client)
    _queue_caller(caller, topic_key="1")  # et.pension: Mari and Jaan both serve it
    _free_without_dispatch(loaded_app, "Mari", "Jaan")
    mari = {"Authorization": f"Bearer {_token(loaded_app, 'agent', 'Mari')}"}
    jaan = {"Authorization": f"Bearer {_token(loaded_app, 'agent', 'Jaan')}"}
    first = client.post("/api/agents/Jaan/accept", json={"call_sid": caller.call_sid}, headers=jaan)
    assert first.status_code == 200
    taken = client.post("/api/agents/Mari/accept", json={"call_sid": caller.call_sid}, headers=mari)
    assert taken.status_code == 409 and taken.get_json()["error"] == "already taken"
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert (_agent(s, "Jaan").state, _agent(s, "Mari").state) == ("offered", "available")
    assert client.post("/api/agents/Mari/accept", json={"call_sid": "CA404"},
                       headers=mari).status_code == 404
    assert client.post("/api/agents/Mari/accept", json={"call_sid": caller.call_sid},
                       headers=jaan).status_code == 403
    assert client.post("/api/agents/Mari/accept", json=["x"], headers=mari).status_code == 400
    busy = client.post("/api/agents/Jaan/accept", json={"call_sid": caller.call_sid}, headers=jaan)
    assert busy.status_code == 409


def test_accept_takes_a_waiting_call_and_rings_the_agent(loaded_app):
    from ivr.models import Call
    client = loaded_app.test_client()
    caller = Caller(client)
    _queue_caller(caller, topic_key="1")
    mari = {"Authorization": f"Bearer {_token(loaded_app, 'agent', 'Mari')}"}
    sup = {"Authorization": f"Bearer {_token(loaded_app, 'supervisor')}"}
    _free_without_dispatch(loaded_app, "Mari")
    response = client.post("/api/agents/Mari/accept", json={"call_sid": caller.call_sid}, headers=sup)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["agent"]["state"] == "offered"
    assert loaded_app.extensions["telephony"].sent[-1][:2] == ("redirect", caller.call_sid)
    connect = parse(caller.post("/twilio/queue/connect"))
    assert connect.find("Dial/Number").text == "+37255500001"
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert s.scalar(select(Call.status)) == "connecting"
    again = client.post("/api/agents/Mari/accept", json={"call_sid": caller.call_sid}, headers=mari)
    assert again.status_code == 409


def test_worker_offers_a_waiting_call_when_a_wrap_up_timer_ends(loaded_app, clock):
    second = _mari_finishes_a_call(loaded_app, clock, wrap_up=30, talk=40)
    _queue_caller(second)
    runner = loaded_app.test_cli_runner()
    clock.advance(29)
    assert runner.invoke(args=["worker", "--once"]).output.strip() == "offered 0 waiting call(s)"
    clock.advance(1)
    assert runner.invoke(args=["worker", "--once"]).output.strip() == "offered 1 waiting call(s)"
    assert loaded_app.extensions["telephony"].sent[-1] == (
        "redirect", second.call_sid, "https://hotline.example.ee/twilio/queue/connect")


def test_accept_says_why_a_call_cannot_be_taken(loaded_app):
    client = loaded_app.test_client()
    in_menu, waiting = Caller(client, "CA" + "1" * 32), Caller(client, "CA" + "2" * 32)
    in_menu.post("/twilio/voice")
    _queue_caller(waiting, topic_key="1")  # et.pension: Olga lacks the skill
    _free_without_dispatch(loaded_app, "Olga")
    sup = {"Authorization": f"Bearer {_token(loaded_app, 'supervisor')}"}
    unskilled = client.post("/api/agents/Olga/accept", json={"call_sid": waiting.call_sid}, headers=sup)
    assert (unskilled.status_code, unskilled.get_json()["error"]) == (409, "not skilled")
    menu = client.post("/api/agents/Olga/accept", json={"call_sid": in_menu.call_sid}, headers=sup)
    assert (menu.status_code, menu.get_json()["error"]) == (409, "not waiting")


def test_occupancy_and_handle_time_come_from_the_state_history(loaded_app, clock):
    from reporting.agents import agent_times
    client = loaded_app.test_client()
    auth = {"Authorization": f"Bearer {_token(loaded_app, 'agent', 'Mari')}"}
    start = clock()
    client.put("/api/agents/Mari/state", json={"state": "available"}, headers=auth)
    caller = Caller(client)
    clock.advance(10)
    _queue_caller(caller)  # offered at 10 s
    clock.advance(3)
    caller.post(f"/twilio/agent/answer?call={caller.call_sid}")  # busy at 13 s
    clock.advance(100)
    caller.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="100")
    clock.advance(20)  # wrap-up 113–133 s
    client.put("/api/agents/Mari/state", json={"state": "not_ready", "reason": "break"}, headers=auth)
    with loaded_app.extensions["db_sessionmaker"]() as s:
        mari, = [t for t in agent_times(s, start, start + timedelta(seconds=200)) if t.agent == "Mari"]
        capped, = [t for t in agent_times(s, start, start + timedelta(seconds=200), wrap_up_seconds=15)
                   if t.agent == "Mari"]
        later, = [t for t in agent_times(s, start + timedelta(seconds=50), start + timedelta(seconds=200))
                  if t.agent == "Mari"]
    assert dict(mari.seconds) == {"available": 10, "offered": 3, "busy": 100, "wrap_up": 20,
                                  "not_ready": 67}
    assert (mari.handled, mari.aht, round(mari.occupancy, 4)) == (1, 120, round(123 / 133, 4))
    assert (capped.seconds["wrap_up"], capped.seconds["available"]) == (15, 15)
    assert (later.seconds["busy"], later.handled) == (63, 0)  # the conversation began before
    result = loaded_app.test_cli_runner().invoke(args=[
        "report", "--from", "2026-12-01", "--to", "2026-12-01", "--agents"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("Mari "))
    assert row.split()[-3:] == ["1", "120.0", "92.5%"]
