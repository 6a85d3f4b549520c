"""The IVR survey: the caller's leg after the agent hung up (``/twilio/dial/after`` and the warm
transfer's room redirect here when the line's ``surveys`` are enabled).

``/twilio/survey/start`` decides (:func:`survey.policy.start_ivr_survey`) and asks the
recommendation question: 0–10 by keypad (``numDigits=2``, ``#`` ends, so "1" then the timeout
or "1#" is 1 and "10" is 10), by speech too where the language has spoken numbers (Russian,
English; Estonian is keypad only). ``/twilio/survey/score`` stores the score and asks "was your
question resolved?" (1 yes, 2 no) when configured; ``/twilio/survey/resolved`` stores that.
Every ``<Gather>`` is followed by a ``<Redirect>`` to its own action: no input is asked once
more, then the caller is thanked and the call ends.
"""
from __future__ import annotations

import logging

from flask import current_app, request
from sqlalchemy import select

from db import get_session
from ivr.webhooks import (_call_language, _config_or_fail, _current_call, _int_arg, _prompts,
                          _technical_error, external_url, now)
from line_config import LineConfig
from survey.answers import (SPOKEN_SCORES, SPOKEN_YES_NO, parse_keypad_score, parse_resolved,
                            parse_spoken_score, response_of, store_score)
from survey.models import SurveyInvitation
from survey.policy import start_ivr_survey
from telephony.signature import provider_blueprint
from telephony.twiml import VoiceResponse, twiml_response

log = logging.getLogger(__name__)

bp = provider_blueprint("survey_voice", __name__, url_prefix="/twilio/survey",
                        on_error=_technical_error)

# Plays of each survey question: the first and one repeat after no (or invalid) input.
SURVEY_ATTEMPTS = 2


def _gather(response: VoiceResponse, config: LineConfig, language: str, action: str, *,
            num_digits: int, finish_on_key: str, hints: list[str]):
    kwargs = dict(action=action, method="POST", num_digits=num_digits, finish_on_key=finish_on_key,
                  timeout=current_app.config["GATHER_TIMEOUT_SECONDS"])
    if hints:  # speech only where spoken answers are understood (not Estonian)
        kwargs.update(input="dtmf speech", language=config.language(language).speech,
                      speech_timeout="auto", hints=", ".join(hints))
    return response.gather(**kwargs)


def _ask(config: LineConfig, language: str, lead: tuple[str, ...], *, endpoint: str,
         attempt: int, num_digits: int, finish_on_key: str, hints: list[str],
         prompt: str) -> VoiceResponse:
    """One survey question: the ``lead`` prompts, a Gather posting to ``endpoint`` that asks
    ``prompt``, then the fallback Redirect to the same action (no input)."""
    prompts = _prompts(config, slow=bool(lead))
    response = VoiceResponse()
    for key in lead:
        prompts.add(response, key, language)
    action = external_url(endpoint, attempt=attempt)
    gather = _gather(response, config, language, action, num_digits=num_digits,
                     finish_on_key=finish_on_key, hints=hints)
    prompts.add(gather, prompt, language)
    response.redirect(action, method="POST")
    return response


def question_twiml(config: LineConfig, language: str, attempt: int, *,
                   lead: tuple[str, ...] = ()) -> VoiceResponse:
    """The recommendation question in ``language`` (a Gather, then its fallback Redirect)."""
    return _ask(config, language, lead, endpoint="survey_voice.score", attempt=attempt,
                num_digits=2, finish_on_key="#", hints=list(SPOKEN_SCORES.get(language, {})),
                prompt="survey_question")


def resolved_twiml(config: LineConfig, language: str, attempt: int, *,
                   lead: tuple[str, ...] = ()) -> VoiceResponse:
    """"Was your question resolved?" (1 yes, 2 no; a Gather, then its fallback Redirect)."""
    return _ask(config, language, lead, endpoint="survey_voice.resolved", attempt=attempt,
                num_digits=1, finish_on_key="", hints=list(SPOKEN_YES_NO.get(language, {})),
                prompt="survey_resolved")


def _goodbye(config: LineConfig, language: str, *, thanks: bool = True) -> VoiceResponse:
    response = VoiceResponse()
    if thanks:
        _prompts(config).add(response, "survey_thanks", language)
    response.hangup()
    return response


def _hangup() -> VoiceResponse:
    response = VoiceResponse()
    response.hangup()
    return response


def _invitation(session, call_id: int) -> SurveyInvitation | None:
    return session.scalar(select(SurveyInvitation).where(SurveyInvitation.call_id == call_id,
                                                         SurveyInvitation.channel == "ivr"))


@bp.post("/start")
def start():
    """The agent's leg ended with the caller on the line: ask, or hang up if not surveyed."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    # The call may already be ended in the log (a warm transfer's room ended): the caller is
    # still on the line, or the provider would not ask.
    invitation = start_ivr_survey(session, config, call, now())
    session.commit()
    if invitation is None:
        return twiml_response(_hangup())
    return twiml_response(question_twiml(config, _call_language(config, call), 1))


@bp.post("/score")
def score():
    """Answer to the recommendation question (``Digits`` or ``SpeechResult``); none or an
    invalid one asks once more, then thanks and hangs up."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    invitation = _invitation(session, call.id)
    if invitation is None or invitation.state != "offered":
        session.commit()
        return twiml_response(_hangup())
    language = invitation.language or _call_language(config, call)
    digits = request.form.get("Digits")
    phrase = request.form.get("SpeechResult", "")
    value = parse_keypad_score(digits) if digits else parse_spoken_score(phrase, language)
    if value is None:
        invitation.attempts += 1
        attempt = _int_arg("attempt")
        if attempt >= SURVEY_ATTEMPTS:
            invitation.state = "no_answer"
            session.commit()
            return twiml_response(_goodbye(config, language))
        session.commit()
        notice = "invalid_input" if (digits or phrase.strip()) else "no_input"
        return twiml_response(question_twiml(config, language, attempt + 1, lead=(notice,)))
    store_score(session, invitation, value, now())
    session.commit()
    if config.surveys.ask_resolved:
        return twiml_response(resolved_twiml(config, language, 1))
    return twiml_response(_goodbye(config, language))


@bp.post("/resolved")
def resolved():
    """Answer to "was your question resolved?" (1 yes, 2 no, or spoken); none or an invalid
    one asks once more; then thanks and hangs up (the score is kept either way)."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    invitation = _invitation(session, call.id)
    answer = response_of(session, call.id)
    if invitation is None or answer is None or answer.resolved is not None:
        session.commit()
        return twiml_response(_hangup())
    language = invitation.language or _call_language(config, call)
    digits = request.form.get("Digits")
    phrase = request.form.get("SpeechResult", "")
    value = parse_resolved(digits, phrase, language)
    if value is None:
        attempt = _int_arg("attempt")
        if attempt >= SURVEY_ATTEMPTS:
            session.commit()
            return twiml_response(_goodbye(config, language))
        session.commit()
        notice = "invalid_input" if (digits or phrase.strip()) else "no_input"
        return twiml_response(resolved_twiml(config, language, attempt + 1, lead=(notice,)))
    answer.resolved = value
    session.commit()
    return twiml_response(_goodbye(config, language))
