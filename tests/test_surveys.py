"""Post-call survey: the IVR survey's TwiML and answers, SMS replies, STOP, who is asked,
attribution after a transfer."""
from __future__ import annotations

import pytest

from reporting.metrics import nps_class
from tests.conftest import PUBLIC_BASE, Caller
from tests.survey_helpers import (agent_id, call_of, invitations, load_survey_config, responses,
                                  sms, talk, worker_round)
from tests.twiml import assert_gathers_have_fallback, assert_no_estonian_say, parse, verbs

START = PUBLIC_BASE + "/twilio/survey/start"


@pytest.fixture
def survey_app(loaded_app):
    loaded_app.config["CONFIG_REFRESH_SECONDS"] = 0
    loaded_app.config["HOURS_ALWAYS_OPEN"] = True  # the tests move the clock by weeks
    load_survey_config(loaded_app)
    return loaded_app


@pytest.fixture
def client(survey_app):
    return survey_app.test_client()


def _survey_call(survey_app, clock, caller, language="et"):
    """Talk, then follow the Redirect to the survey; return the question's TwiML root."""
    done = parse(talk(survey_app, clock, caller, language))
    assert verbs(done) == ["Redirect"] and done[0].text == START
    return parse(caller.post("/twilio/survey/start"))


# ------------------------------------------------------------------------- IVR


def test_keypad_0_is_stored_as_0_a_detractor(survey_app, clock, caller):
    _survey_call(survey_app, clock, caller)
    resolved = parse(caller.post("/twilio/survey/score?attempt=1", Digits="0"))
    assert verbs(resolved) == ["Gather", "Redirect"]
    assert resolved[0].get("action") == PUBLIC_BASE + "/twilio/survey/resolved?attempt=1"
    bye = parse(caller.post("/twilio/survey/resolved?attempt=1", Digits="2"))
    assert verbs(bye) == ["Play", "Hangup"]
    assert bye[0].text == PUBLIC_BASE + "/audio/et/survey_thanks.wav"
    [answer] = responses(survey_app)
    assert (answer.score, answer.resolved, answer.channel, answer.language) == (0, False, "ivr", "et")
    assert nps_class(answer.score) == "detractor"
    assert answer.agent_id == agent_id(survey_app, "Mari")


@pytest.mark.parametrize("language", ["et", "ru", "en"])
def test_ivr_survey_twiml_in_each_language_with_a_fallback_after_every_gather(
        survey_app, clock, caller, language):
    question = _survey_call(survey_app, clock, caller, language)
    documents = [question]
    assert verbs(question) == ["Gather", "Redirect"]
    gather = question[0]
    action = PUBLIC_BASE + "/twilio/survey/score?attempt=1"
    assert (gather.get("action"), gather.get("numDigits"), gather.get("finishOnKey")) == (
        action, "2", "#")
    assert question[1].text == action and question[1].get("method") == "POST"
    if language == "et":
        assert gather.get("input") is None  # keypad only: no Estonian speech answers
        assert [c.tag for c in gather] == ["Play"]
        assert gather[0].text == PUBLIC_BASE + "/audio/et/survey_question.wav"
    else:
        locale, voice, ten = {"ru": ("ru-RU", "Polly.Tatyana", "десять"),
                              "en": ("en-GB", "Polly.Amy", "ten")}[language]
        assert (gather.get("input"), gather.get("language")) == ("dtmf speech", locale)
        assert ten in gather.get("hints").split(", ")
        say = gather.find("Say")
        assert (say.get("language"), say.get("voice")) == (locale, voice)
        assert {"ru": "от нуля до десяти", "en": "from zero to ten"}[language] in say.text
    # No input: asked once more (after the no-input notice), then thanked and let go.
    again = parse(caller.post("/twilio/survey/score?attempt=1"))
    documents.append(again)
    assert verbs(again) == ["Play" if language == "et" else "Say", "Gather", "Redirect"]
    assert again[1].get("action") == PUBLIC_BASE + "/twilio/survey/score?attempt=2"
    bye = parse(caller.post("/twilio/survey/score?attempt=2"))
    documents.append(bye)
    assert verbs(bye)[-1] == "Hangup" and "Gather" not in verbs(bye)
    for root in documents:
        assert_gathers_have_fallback(root)
        assert_no_estonian_say(root)
    assert responses(survey_app) == []
    assert [i.state for i in invitations(survey_app)] == ["no_answer"]


def test_resolved_question_has_a_fallback_and_no_answer_keeps_the_score(survey_app, clock, caller):
    _survey_call(survey_app, clock, caller, "en")
    resolved = parse(caller.post("/twilio/survey/score?attempt=1", Digits="9"))
    assert_gathers_have_fallback(resolved)
    assert resolved[0].get("numDigits") == "1"
    assert "yes" in resolved[0].get("hints")
    again = parse(caller.post("/twilio/survey/resolved?attempt=1"))
    assert verbs(again) == ["Say", "Gather", "Redirect"]
    bye = parse(caller.post("/twilio/survey/resolved?attempt=2"))
    assert verbs(bye) == ["Say", "Hangup"]
    [answer] = responses(survey_app)
    assert (answer.score, answer.resolved) == (9, None)


@pytest.mark.parametrize("digits, stored", [("1", 1), ("10", 10), ("9", 9), ("0", 0)])
def test_one_then_the_timeout_is_1_and_10_is_10(survey_app, clock, caller, digits, stored):
    # numDigits=2 with '#' to finish: "1" then silence arrives as Digits=1 when the timeout
    # ends the input; "1", "0" arrives as 10.
    _survey_call(survey_app, clock, caller)
    caller.post("/twilio/survey/score?attempt=1", Digits=digits)
    assert [r.score for r in responses(survey_app)] == [stored]


@pytest.mark.parametrize("digits", ["11", "99", "05", "*"])
def test_an_impossible_score_is_asked_again(survey_app, clock, caller, digits):
    _survey_call(survey_app, clock, caller)
    again = parse(caller.post("/twilio/survey/score?attempt=1", Digits=digits))
    assert verbs(again) == ["Play", "Gather", "Redirect"]
    assert again[0].text.startswith(PUBLIC_BASE + "/audio/et/invalid_input.wav")
    assert responses(survey_app) == []


@pytest.mark.parametrize("language, phrase, stored", [("en", "ten", 10), ("ru", "десять", 10),
                                                      ("en", "I'd say 8", 8), ("ru", "ноль", 0)])
def test_a_spoken_score_is_understood_in_russian_and_english(survey_app, clock, caller, language,
                                                             phrase, stored):
    _survey_call(survey_app, clock, caller, language)
    caller.post("/twilio/survey/score?attempt=1", SpeechResult=phrase, Confidence="0.9")
    caller.post("/twilio/survey/resolved?attempt=1", SpeechResult={"en": "yes", "ru": "да"}[language])
    [answer] = responses(survey_app)
    assert (answer.score, answer.resolved, answer.language) == (stored, True, language)


def test_a_repeated_answer_is_stored_once(survey_app, clock, caller):
    _survey_call(survey_app, clock, caller)
    caller.post("/twilio/survey/score?attempt=1", Digits="8")
    assert verbs(parse(caller.post("/twilio/survey/score?attempt=1", Digits="3"))) == ["Hangup"]
    assert [r.score for r in responses(survey_app)] == [8]


def test_surveys_off_hang_up_after_the_conversation(loaded_app, clock, caller):
    assert verbs(parse(talk(loaded_app, clock, caller))) == ["Hangup"]


# ------------------------------------------------------------------------- who is asked


def test_at_most_one_survey_per_caller_in_30_days(survey_app, clock, caller):
    _survey_call(survey_app, clock, caller)
    caller.post("/twilio/survey/score?attempt=1", Digits="7")
    caller.post("/twilio/status", CallStatus="completed")
    clock.advance(10 * 86400)
    again = Caller(caller.client, "CA" + "2" * 32, caller.from_number)
    assert verbs(_survey_call(survey_app, clock, again)) == ["Hangup"]
    again.post("/twilio/status", CallStatus="completed")
    assert invitations(survey_app)[-1].reason == "recent_survey"
    clock.advance(21 * 86400)
    third = Caller(caller.client, "CA" + "3" * 32, caller.from_number)
    assert verbs(_survey_call(survey_app, clock, third)) == ["Gather", "Redirect"]
    # Another caller is not affected by the first one's survey.
    clock.advance(600)
    other = Caller(caller.client, "CA" + "4" * 32, "+37251111111")
    third.post("/twilio/status", CallStatus="completed")
    assert verbs(_survey_call(survey_app, clock, other)) == ["Gather", "Redirect"]


def test_share_and_queues_select_the_calls_surveyed(loaded_app, clock, caller):
    loaded_app.config["CONFIG_REFRESH_SECONDS"] = 0
    load_survey_config(loaded_app, queues=["et.pension"])
    assert verbs(_survey_call(loaded_app, clock, caller)) == ["Hangup"]
    assert invitations(loaded_app)[0].reason == "queue"
    from survey.policy import sampled
    sids = [f"CA{i:032x}" for i in range(4000)]
    share = sum(sampled(s, 0.25) for s in sids) / len(sids)
    assert 0.22 < share < 0.28
    assert all(sampled(s, 1.0) for s in sids[:10]) and not any(sampled(s, 0.0) for s in sids[:10])


def test_unanswered_calls_are_never_surveyed(survey_app, clock, caller):
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits="2")  # nobody available: queued
    clock.advance(30)
    caller.post("/twilio/queue/after", QueueResult="hangup", CallStatus="completed")
    caller.post("/twilio/status", CallStatus="completed")
    clock.advance(3600)
    report = worker_round(survey_app)
    assert report.plan.queued == 0 and survey_app.extensions["telephony"].messages == []
    assert call_of(survey_app, caller.call_sid).outcome == "abandoned"


def test_a_caller_who_hung_up_before_the_survey_gets_the_sms(survey_app, clock, caller, client):
    talk_done = talk(survey_app, clock, caller)  # the provider still asks the dial action ...
    caller.post("/twilio/status", CallStatus="completed")  # ... but the caller had gone
    assert verbs(parse(talk_done)) == ["Redirect"]
    clock.advance(30)
    assert worker_round(survey_app).plan.queued == 0  # SURVEY_SMS_DELAY_SECONDS not over yet
    clock.advance(60)
    report = worker_round(survey_app)
    assert (report.plan.queued, len(report.send.sent)) == (1, 1)
    [message] = survey_app.extensions["telephony"].messages
    assert (message["to"], message["from"]) == ("+37251234567", "+3726121360")
    assert "0–10" in message["body"] and "STOP" in message["body"]
    assert message["status_callback"].startswith(PUBLIC_BASE + "/twilio/sms/status?key=")
    assert worker_round(survey_app).plan.queued == 0  # decided once
    clock.advance(3600)
    answer = parse(sms(client, " 9! "))
    assert answer.find("Message").text == "Aitäh hinnangu eest!"
    [stored] = responses(survey_app)
    assert (stored.score, stored.channel, stored.agent_id) == (9, "sms", agent_id(survey_app, "Mari"))


def test_hanging_up_during_the_ivr_question_brings_the_sms(survey_app, clock, caller):
    _survey_call(survey_app, clock, caller)
    clock.advance(10)
    caller.post("/twilio/status", CallStatus="completed")
    clock.advance(120)
    report = worker_round(survey_app)
    assert (report.plan.ivr_abandoned, report.plan.queued) == (1, 1)
    assert sorted((i.channel, i.state) for i in invitations(survey_app)) == [
        ("ivr", "abandoned"), ("sms", "sent")]


def test_queues_configured_for_sms_get_the_sms_instead(loaded_app, clock, caller):
    loaded_app.config["CONFIG_REFRESH_SECONDS"] = 0
    load_survey_config(loaded_app, sms_queues=["et.family"])
    assert verbs(_survey_call(loaded_app, clock, caller)) == ["Hangup"]
    report = worker_round(loaded_app)
    assert len(report.send.sent) == 1


# ------------------------------------------------------------------------- SMS replies


@pytest.fixture
def sms_sent(survey_app, clock, caller):
    """The caller hung up on the agent; their survey SMS has been sent."""
    talk(survey_app, clock, caller)
    caller.post("/twilio/status", CallStatus="completed")
    clock.advance(120)
    assert len(worker_round(survey_app).send.sent) == 1
    return caller


def test_sms_0_is_stored_as_0_a_detractor(survey_app, client, sms_sent):
    sms(client, "0")
    [answer] = responses(survey_app)
    assert answer.score == 0 and nps_class(answer.score) == "detractor"


@pytest.mark.parametrize("body, score", [("  9!", 9), ("10.", 10), ("0", 0), ("(7)", 7),
                                         ("\n8\n", 8)])
def test_sms_scores_tolerate_whitespace_and_punctuation(survey_app, client, sms_sent, body, score):
    sms(client, body)
    assert [r.score for r in responses(survey_app)] == [score]


def test_the_same_sms_delivered_twice_counts_once(survey_app, client, sms_sent):
    first = parse(sms(client, "8", sid="SM" + "a" * 32))
    second = parse(sms(client, "8", sid="SM" + "a" * 32))
    assert first.find("Message") is not None and verbs(second) == []
    later = parse(sms(client, "3", sid="SM" + "b" * 32))  # a second opinion is not counted
    assert verbs(later) == []
    assert [(r.score, r.message_sid) for r in responses(survey_app)] == [(8, "SM" + "a" * 32)]


def test_anything_else_gets_one_clarifying_reply_and_nothing_is_stored(survey_app, client, sms_sent):
    first = parse(sms(client, "very good", sid="SM" + "c" * 32))
    assert first.find("Message").text.startswith("Palun vastake ühe numbriga")
    for body in ("11", "-5", "9.5"):
        assert verbs(parse(sms(client, body, sid="SM" + body.encode().hex().ljust(32, "0")))) == []
    assert responses(survey_app) == []
    sms(client, "10", sid="SM" + "d" * 32)
    assert [r.score for r in responses(survey_app)] == [10]


@pytest.mark.parametrize("word", ["STOP", "stop", "Stop", " stop. "])
def test_stop_opts_out_for_good_and_later_replies_get_no_answer(survey_app, client, sms_sent, word):
    from survey.models import SurveyOptOut

    stop = parse(sms(client, word, sid="SM" + "e" * 32))
    assert verbs(stop) == []  # the provider's opt-out handling confirms (stop_confirmation)
    with survey_app.extensions["db_sessionmaker"]() as s:
        [row] = s.query(SurveyOptOut).all()
        assert (row.number, row.message_sid) == ("+37251234567", "SM" + "e" * 32)
    ignored = sms(client, "9", sid="SM" + "f" * 32)
    assert ignored.status_code == 200 and verbs(parse(ignored)) == []
    assert responses(survey_app) == []


def test_a_reply_from_an_opted_out_number_is_ignored_with_no_answer(survey_app, clock, client, caller):
    sms(client, "STOP", sid="SM" + "0" * 32)  # opted out before any survey
    talk(survey_app, clock, caller)
    caller.post("/twilio/status", CallStatus="completed")
    clock.advance(120)
    assert worker_round(survey_app).plan.queued == 0  # never surveyed
    assert survey_app.extensions["telephony"].messages == []
    reply = sms(client, "10", sid="SM" + "9" * 32)
    assert reply.status_code == 200 and verbs(parse(reply)) == []
    assert responses(survey_app) == []


def test_stop_confirmation_by_the_service_when_configured(loaded_app, client, clock, caller):
    loaded_app.config["CONFIG_REFRESH_SECONDS"] = 0
    load_survey_config(loaded_app, stop_confirmation="service")
    reply = parse(sms(client, "Stop"))
    assert reply.find("Message").text == "Te ei saa meilt enam küsitlusi."


def test_replies_after_the_window_are_not_counted(survey_app, clock, client, sms_sent):
    clock.advance(48 * 3600 + 1)
    assert verbs(parse(sms(client, "9"))) == []
    assert responses(survey_app) == []


def test_sms_webhook_never_500_and_needs_a_signature(survey_app, client):
    assert client.post("/twilio/sms", data={"Body": "9"}).status_code == 403
    assert parse(sms(client, "")).tag == "Response"
    assert parse(sms(client, "9", from_number="anonymous")).tag == "Response"


# ------------------------------------------------------------------------- attribution


def test_after_an_escalation_to_a_queue_the_answer_belongs_to_the_last_agent(
        loaded_app, clock, caller):
    from tests.test_transfers import _reload, _token
    loaded_app.config["CONFIG_REFRESH_SECONDS"] = 0
    _reload(loaded_app, lambda d: (d.update(escalation={"queue": "et.general"}),
                                   d["surveys"].update(enabled=True, include_escalated=True)))
    with loaded_app.extensions["db_sessionmaker"]() as s:
        from routing.models import Agent
        s.execute(Agent.__table__.update().values(state="not_ready", not_ready_reason="setup"))
        s.commit()
    client = loaded_app.test_client()
    from routing.agents import set_state
    from sqlalchemy import select
    from routing.models import Agent
    with loaded_app.extensions["db_sessionmaker"]() as s:
        set_state(s, s.scalar(select(Agent).where(Agent.name == "Mari")), "available", clock())
        s.commit()
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits="2")
    caller.post(f"/twilio/agent/answer?call={caller.call_sid}")
    clock.advance(60)
    mari = _token(loaded_app, "agent", "Mari")
    assert client.post("/api/agents/Mari/escalate", json={}, headers=mari).status_code == 200
    # Mari's <Dial> ends with the redirect; its action changes nothing (the call is transferring).
    caller.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="60")
    with loaded_app.extensions["db_sessionmaker"]() as s:
        set_state(s, s.scalar(select(Agent).where(Agent.name == "Jaan")), "available", clock())
        s.commit()
    root = parse(caller.post("/twilio/transfer/queue?queue=et.general"))
    assert root.find("Dial/Number").text == "+37255500002"  # Jaan
    caller.post(f"/twilio/agent/answer?call={caller.call_sid}")
    clock.advance(120)
    done = parse(caller.post("/twilio/dial/after", DialCallStatus="completed",
                             DialCallDuration="120"))
    assert verbs(done) == ["Redirect"]
    caller.post("/twilio/survey/start")
    caller.post("/twilio/survey/score?attempt=1", Digits="10")
    [answer] = responses(loaded_app)
    assert answer.agent_id == agent_id(loaded_app, "Jaan")


def test_escalated_and_transferred_calls_are_configurable(survey_app, clock, caller):
    from survey.policy import ineligible_reason
    from line_config import current_line_config
    talk(survey_app, clock, caller)
    with survey_app.extensions["db_sessionmaker"]() as s:
        from ivr.models import Call
        from sqlalchemy import select
        call = s.scalar(select(Call).where(Call.call_sid == caller.call_sid))
        config = current_line_config(s)
        call.escalated = True
        assert ineligible_reason(s, config.surveys, call, clock()) == "escalated"
        call.escalated, call.transfer_kind, call.outcome = False, "blind", "transferred"
        assert ineligible_reason(s, config.surveys, call, clock()) == "transferred"
        allowed = config.surveys.model_copy(update={"include_transferred": True})
        assert ineligible_reason(s, allowed, call, clock()) is None
        s.rollback()
