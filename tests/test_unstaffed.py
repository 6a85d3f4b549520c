"""Nobody waits in a queue that nobody can serve."""
from __future__ import annotations

from sqlalchemy import select, update

from ivr.models import Call
from routing.models import Agent, AgentSkill, QueueEntry
from tests.conftest import PUBLIC_BASE, Caller
from tests.twiml import parse, verbs


def _log_out(app, *names: str) -> None:
    with app.extensions["db_sessionmaker"]() as s:
        query = update(Agent).values(state="offline", not_ready_reason=None)
        if names:
            query = query.where(Agent.name.in_(names))
        s.execute(query)
        s.commit()


def _call(app, call_sid: str) -> Call:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(Call).where(Call.call_sid == call_sid))


def _choose(caller: Caller, language: str, topic: str):
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits=language)
    return parse(caller.post("/twilio/ivr/topic?attempt=1", Digits=topic))


def test_with_nobody_logged_in_a_caller_is_told_at_once_and_not_queued(caller, loaded_app):
    _log_out(loaded_app)
    root = _choose(caller, "3", "1")
    assert verbs(root) == ["Say", "Gather", "Redirect"]  # told, and offered a callback at once
    assert root[0].text.startswith("No adviser is available right now.")
    assert root[1].get("action") == PUBLIC_BASE + "/twilio/callback/choice?reason=no_agent&attempt=1"
    assert root[1][0].text.startswith("We can call you back.")
    caller.post(root[2].text)
    bye = parse(caller.post(root[2].text.replace("attempt=1", "attempt=2")))
    assert verbs(bye) == ["Say", "Hangup"] and bye[0].text.startswith("Please call again later")
    caller.post("/twilio/status", CallStatus="completed")
    call = _call(loaded_app, caller.call_sid)
    assert (call.outcome, call.queue_entered_at, call.status) == ("no_agent", None, "ended")


def test_an_unstaffed_topic_queue_overflows_to_the_general_queue(caller, loaded_app):
    # en.pension is served only by Kadri; log her out, Peeter still serves en.general.
    _log_out(loaded_app, "Kadri")
    root = _choose(caller, "3", "1")
    assert root.find("Enqueue").text == "en.general"


def test_a_waiting_caller_moves_on_when_the_last_agent_logs_out(loaded_app, clock):
    client = loaded_app.test_client()
    caller = Caller(client)
    assert _choose(caller, "3", "1").find("Enqueue").text == "en.pension"
    entered = _call(loaded_app, caller.call_sid).queue_entered_at
    _log_out(loaded_app, "Kadri")
    clock.advance(20)
    left = parse(caller.post("/twilio/queue/wait"))
    assert verbs(left) == ["Leave"]
    again = parse(caller.post("/twilio/queue/after", QueueResult="leave"))
    assert again.find("Enqueue").text == "en.general"
    with loaded_app.extensions["db_sessionmaker"]() as s:
        entry = s.scalar(select(QueueEntry))
        assert entry.entered_at == entered  # keeps the place by time
    _log_out(loaded_app)  # now nobody at all
    clock.advance(20)
    assert verbs(parse(caller.post("/twilio/queue/wait"))) == ["Leave"]
    told = parse(caller.post("/twilio/queue/after", QueueResult="leave"))
    assert verbs(told) == ["Say", "Gather", "Redirect"]
    assert told[0].text.startswith("No adviser is available right now.")
    bye = parse(caller.post(told[2].text.replace("attempt=1", "attempt=2")))
    assert verbs(bye) == ["Say", "Hangup"]
    call = _call(loaded_app, caller.call_sid)
    assert (call.outcome, call.queue_entered_at) == ("no_agent", entered)
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert s.scalar(select(QueueEntry)) is None


def test_wait_policy_keeps_callers_waiting(loaded_app, tmp_path):
    import yaml
    from tests.conftest import SAMPLE_CONFIG, load_yaml
    document = load_yaml(SAMPLE_CONFIG)
    document["unstaffed"] = "wait"
    path = tmp_path / "wait.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    assert loaded_app.test_cli_runner().invoke(args=["config", "load", str(path)]).exit_code == 0
    _log_out(loaded_app)
    caller = Caller(loaded_app.test_client())
    assert _choose(caller, "1", "1").find("Enqueue").text == "et.pension"
