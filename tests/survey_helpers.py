"""Shared set-up of the survey tests: the sample line with surveys on, a caller talking to an
agent, SMS replies signed like the provider's."""
from __future__ import annotations

from sqlalchemy import select

from ivr.models import Call
from routing.agents import set_state
from routing.models import Agent
from survey.models import SurveyInvitation, SurveyResponse
from tests.conftest import PUBLIC_BASE, SAMPLE_CONFIG, Caller, load_yaml, sign
from tests.twiml import parse

LANG_KEYS = {"et": "1", "ru": "2", "en": "3"}
# A topic each language's sample agents serve: et family (Mari), ru family (Olga), en family (Kadri).
TOPIC_KEY = "2"
AGENT_OF = {"et": "Mari", "ru": "Olga", "en": "Kadri"}


def load_survey_config(app, **changes) -> None:
    """Load the sample line with ``surveys.enabled`` and ``changes`` to the surveys section."""
    from admin.config_loader import apply_line_config
    from line_config import parse_line_config

    document = load_yaml(SAMPLE_CONFIG)
    document["surveys"] = dict(document["surveys"], enabled=True, **changes)
    with app.extensions["db_sessionmaker"]() as s:
        apply_line_config(s, parse_line_config(document), document, app.config["CLOCK"]())
        s.execute(Agent.__table__.update().values(state="not_ready", not_ready_reason="setup"))
        s.commit()
    app.extensions.pop("line_config_cache", None)


def talk(app, clock, caller: Caller, language: str = "et", seconds: int = 90):
    """The caller picks ``language`` and family benefits, the agent answers and talks for
    ``seconds``; returns the TwiML of the agent leg's end (``/twilio/dial/after``) as the
    caller's leg gets it, not yet executed."""
    agent = AGENT_OF[language]
    with app.extensions["db_sessionmaker"]() as s:
        set_state(s, s.scalar(select(Agent).where(Agent.name == agent)), "available", clock())
        s.commit()
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits=LANG_KEYS[language])
    dial = parse(caller.post("/twilio/ivr/topic?attempt=1", Digits=TOPIC_KEY))
    assert dial.find("Dial") is not None, "the agent should be dialled"
    clock.advance(3)
    caller.post(f"/twilio/agent/answer?call={caller.call_sid}", CallSid="CA" + "b" * 32,
                ParentCallSid=caller.call_sid)
    clock.advance(seconds)
    return caller.post("/twilio/dial/after", DialCallStatus="completed",
                       DialCallDuration=str(seconds), DialCallSid="CA" + "b" * 32,
                       DialBridged="true")


def sms(client, body: str, *, from_number: str = "+37251234567", sid: str = "SM" + "1" * 32):
    """Post an incoming SMS to /twilio/sms, signed like the provider."""
    url = PUBLIC_BASE + "/twilio/sms"
    data = {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid,
            "AccountSid": "AC0f1e2d3c4b5a69788796a5b4c3d2e1f0", "From": from_number,
            "To": "+3726121360", "Body": body, "NumMedia": "0", "NumSegments": "1",
            "SmsStatus": "received", "ApiVersion": "2010-04-01"}
    return client.post("/twilio/sms", data=data, headers={"X-Twilio-Signature": sign(url, data)})


def responses(app) -> list[SurveyResponse]:
    with app.extensions["db_sessionmaker"]() as s:
        return list(s.scalars(select(SurveyResponse).order_by(SurveyResponse.id)))


def invitations(app) -> list[SurveyInvitation]:
    with app.extensions["db_sessionmaker"]() as s:
        return list(s.scalars(select(SurveyInvitation).order_by(SurveyInvitation.id)))


def call_of(app, call_sid: str) -> Call:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(Call).where(Call.call_sid == call_sid))


def agent_id(app, name: str) -> int:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(Agent.id).where(Agent.name == name))


def worker_round(app):
    """One survey round of `flask worker` (plan and send SMS)."""
    from db import get_session
    from survey.jobs import survey_round

    with app.test_request_context("/"):
        return survey_round(get_session())
