"""Callers who struggle: speech keywords, slower replays, raised priority and the struggle mark."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from ivr.models import Call
from ivr.speech import UNRECOGNISED, speech_to_key, words
from routing.models import Agent, QueueEntry
from tests.conftest import Caller
from tests.twiml import parse

OPTIONS = {"1": ["pension", "pensioni"], "2": ["child benefit", "family"], "3": ["other"]}
PERSON = ["operaator", "оператор", "operator"]


def test_russian_yo_and_ye_are_the_same_letter():
    assert speech_to_key("пособие на ребёнка", {"2": ["пособие на ребенка"]},
                         person_keywords=[], person_key="0") == "2"


def test_words_ignore_case_and_punctuation():
    assert words("Pensioni, palun!!") == ["pensioni", "palun"]
    assert words("ОПЕРАТОР… пожалуйста") == ["оператор", "пожалуйста"]


@pytest.mark.parametrize("phrase,key", [
    ("Pension.", "1"),
    ("mul on küsimus PENSIONI kohta", "1"),
    ("I'd like to ask about my child-benefit", "2"),
    ("Could I speak to an OPERATOR, please?", "0"),
    ("оператор!", "0"),
    ("pension or other", UNRECOGNISED),   # two options: not guessed
    ("pensionid", UNRECOGNISED),          # a word not listed is not matched by its stem
    ("mumble", UNRECOGNISED),
    ("pension\u200b", "1"),                 # a zero-width space from the recogniser
])
def test_speech_to_key(phrase, key):
    assert speech_to_key(phrase, OPTIONS, person_keywords=PERSON, person_key="0") == key


def _to_topic_menu(caller: Caller, language_key: str = "1"):
    caller.post("/twilio/voice")
    return parse(caller.post("/twilio/ivr/language?attempt=1", Digits=language_key))


def _call(app, call_sid: str) -> Call:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(Call).where(Call.call_sid == call_sid))


def test_topic_menu_listens_for_speech_in_the_callers_language(caller):
    gather = _to_topic_menu(caller, "2").find("Gather")
    assert (gather.get("input"), gather.get("language"), gather.get("speechTimeout")) == (
        "dtmf speech", "ru-RU", "auto")
    assert "пенсия" in gather.get("hints") and "оператор" in gather.get("hints")


def test_spoken_topic_queues_like_the_key(caller, loaded_app):
    _to_topic_menu(caller, "1")
    root = parse(caller.post("/twilio/ivr/topic?attempt=1", SpeechResult="Pensioni küsimus!",
                             Confidence="0.91"))
    assert root.find("Enqueue").text == "et.pension"
    call = _call(loaded_app, caller.call_sid)
    assert (call.priority, call.ivr_struggle) == (0, False)


def test_unrecognised_speech_is_invalid_input(caller, loaded_app):
    _to_topic_menu(caller, "3")
    root = parse(caller.post("/twilio/ivr/topic?attempt=1", SpeechResult="the weather is nice"))
    assert root[0].find("prosody").text == "That is not one of the options."
    assert _call(loaded_app, caller.call_sid).invalid_input_count == 1


@pytest.mark.parametrize("how", ["speech", "zero", "no input"])
def test_callers_who_struggle_get_a_person_with_raised_priority(caller, loaded_app, how):
    _to_topic_menu(caller, "1")
    if how == "speech":
        root = parse(caller.post("/twilio/ivr/topic?attempt=1", SpeechResult="Operaatoriga palun"))
    elif how == "zero":
        root = parse(caller.post("/twilio/ivr/topic?attempt=1", Digits="0"))
    else:
        for attempt in (1, 2):
            caller.post(f"/twilio/ivr/topic?attempt={attempt}")
        root = parse(caller.post("/twilio/ivr/topic?attempt=3"))
    assert root.find("Enqueue").text == "et.general"
    call = _call(loaded_app, caller.call_sid)
    assert (call.priority, call.ivr_struggle) == (1, True)
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert s.scalar(select(QueueEntry.priority)) == 1


def test_a_struggling_caller_is_served_before_an_earlier_one(loaded_app, clock):
    from routing.agents import set_state
    client = loaded_app.test_client()
    early, struggling = Caller(client, "CA" + "1" * 32), Caller(client, "CA" + "2" * 32)
    _to_topic_menu(early, "1")
    early.post("/twilio/ivr/topic?attempt=1", Digits="0")
    early_call = _call(loaded_app, early.call_sid)
    with loaded_app.extensions["db_sessionmaker"]() as s:  # make the early caller ordinary
        s.execute(QueueEntry.__table__.update().values(priority=0))
        s.commit()
    clock.advance(30)
    _to_topic_menu(struggling, "1")
    struggling.post("/twilio/ivr/topic?attempt=1", Digits="0")
    with loaded_app.extensions["db_sessionmaker"]() as s:
        set_state(s, s.scalar(select(Agent).where(Agent.name == "Jaan")), "available", clock())
        s.commit()
    parse(struggling.post("/twilio/queue/wait"))
    assert _call(loaded_app, struggling.call_sid).status == "connecting"
    assert _call(loaded_app, early.call_sid).status == "queued"
    assert early_call.queue_entered_at < _call(loaded_app, struggling.call_sid).queue_entered_at


def test_slow_audio_is_rendered_slower(loaded_app):
    client = loaded_app.test_client()
    normal = client.get("/audio/et/welcome.wav")
    slow = client.get("/audio/et/welcome.wav?slow=1")
    assert normal.status_code == slow.status_code == 200
    assert len(slow.data) > len(normal.data) * 1.15
    assert client.get("/audio/et/welcome.wav?slow=2").status_code == 400


def test_report_counts_struggling_callers_per_day(loaded_app, clock):
    client = loaded_app.test_client()
    for i, keys in enumerate(("0", "1", None)):
        caller = Caller(client, f"CA{i:032d}")
        _to_topic_menu(caller, "1")
        if keys is None:   # three plays without a key
            for attempt in (1, 2, 3):
                caller.post(f"/twilio/ivr/topic?attempt={attempt}")
        else:
            caller.post("/twilio/ivr/topic?attempt=1", Digits=keys)
    result = loaded_app.test_cli_runner().invoke(
        args=["report", "--from", "2026-12-01", "--to", "2026-12-01"])
    assert result.exit_code == 0, result.output
    assert "2026-12-01  not offered: 0; IVR struggle: 2" in result.output
