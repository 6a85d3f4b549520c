"""calls.wrap_up_seconds: the agent's after-call work on the call, stored when the wrap-up ends
(by the agent, or by its timer), capped at the timer."""
from __future__ import annotations

from sqlalchemy import select

from ivr.models import Call
from routing.agents import set_state
from routing.models import Agent
from tests.conftest import Caller
from tests.twiml import parse, verbs

FIRST, SECOND = "CA" + "1" * 32, "CA" + "2" * 32


def _queue(caller: Caller) -> None:
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits="1")


def _set(app, clock, state: str, **extra) -> None:
    with app.extensions["db_sessionmaker"]() as s:
        set_state(s, s.scalar(select(Agent).where(Agent.name == "Mari")), state, clock(), **extra)
        s.commit()


def _wrap_up_of(app, sid: str) -> int | None:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(Call.wrap_up_seconds).where(Call.call_sid == sid))


def _mari_talks(app, clock, *, wrap_up: float, talk: int = 40) -> Caller:
    """Mari answers the first caller and talks ``talk`` s; her wrap-up starts now."""
    app.config["WRAP_UP_SECONDS"] = wrap_up
    _set(app, clock, "available")
    first = Caller(app.test_client(), FIRST)
    _queue(first)
    first.post(f"/twilio/agent/answer?call={FIRST}")
    clock.advance(talk)
    first.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration=str(talk))
    return first


def test_an_agent_who_ends_wrap_up_early_stores_its_length(loaded_app, clock):
    _mari_talks(loaded_app, clock, wrap_up=600)
    assert _wrap_up_of(loaded_app, FIRST) is None  # still in after-call work
    clock.advance(45)
    _set(loaded_app, clock, "available")
    assert _wrap_up_of(loaded_app, FIRST) == 45
    clock.advance(100)
    _set(loaded_app, clock, "not_ready", reason="break")  # not a wrap-up: nothing added
    assert _wrap_up_of(loaded_app, FIRST) == 45


def test_a_wrap_up_ended_by_its_timer_counts_up_to_the_timer_when_the_next_call_comes(loaded_app, clock):
    _mari_talks(loaded_app, clock, wrap_up=60)
    second = Caller(loaded_app.test_client(), SECOND)
    clock.advance(10)
    _queue(second)
    clock.advance(75)  # the timer ran out 25 s ago; the hold loop's next request connects
    assert verbs(parse(second.post("/twilio/queue/wait"))) == ["Redirect"]
    assert _wrap_up_of(loaded_app, FIRST) == 60
    assert _wrap_up_of(loaded_app, SECOND) is None


def test_a_wrap_up_past_its_timer_ended_by_the_agent_is_capped_at_the_timer(loaded_app, clock):
    _mari_talks(loaded_app, clock, wrap_up=60)
    clock.advance(500)
    _set(loaded_app, clock, "not_ready", reason="break")
    assert _wrap_up_of(loaded_app, FIRST) == 60


def test_without_a_timer_the_whole_wrap_up_counts(loaded_app, clock):
    _mari_talks(loaded_app, clock, wrap_up=0)
    clock.advance(300.4)
    _set(loaded_app, clock, "offline")
    assert _wrap_up_of(loaded_app, FIRST) == 300


def test_a_wrap_up_the_agent_started_without_a_call_belongs_to_no_call(loaded_app, clock):
    _mari_talks(loaded_app, clock, wrap_up=0)
    clock.advance(20)
    _set(loaded_app, clock, "available")
    assert _wrap_up_of(loaded_app, FIRST) == 20
    _set(loaded_app, clock, "wrap_up")  # paperwork, no call
    clock.advance(200)
    _set(loaded_app, clock, "available")
    assert _wrap_up_of(loaded_app, FIRST) == 20
