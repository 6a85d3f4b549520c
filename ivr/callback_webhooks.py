"""Callback webhooks: the caller's answer to a callback offer, and the outbound callback call.

Registered on the voice blueprint (``/twilio/callback/…``). The offer itself is built by
:func:`ivr.webhooks.callback_offer_twiml`; what declining means depends on why it was made:
a caller who asked while waiting (``asked``) or was offered one at closing time (``closing``)
goes back to the queue in the same place; after a failed transfer (``transfer_failed``) to an
adviser; otherwise (no agent, line closed, maximum wait, full queue) they hear goodbye.
"""
from __future__ import annotations

import logging

from flask import current_app, request
from sqlalchemy import select

from db import get_session
from ivr import calls as call_log
from ivr.hours import next_opening
from ivr.models import Call
from ivr.webhooks import (_call_language, _config_or_fail, _current_call, _dial_agent,
                          _dispatch_and_commit, _enqueue_twiml, _gather, _line_open, _prompts,
                          _to_person, bp, callback_offer_twiml, dispatch_and_connect,
                          external_url, now)
from line_config import LineConfig
from routing import callbacks
from routing import dispatch as acd
from routing.models import Callback, Queue
from telephony.params import parse_int
from telephony.twiml import VoiceResponse, twiml_response

log = logging.getLogger(__name__)

OFFER_REASONS = ("asked", "closing", "transfer_failed", "no_agent", "out_of_hours", "max_wait",
                 "full")
# Declining an offer made for these reasons returns the caller to where they were.
_BACK_TO_QUEUE = ("asked", "closing")
# Outcome of a call that declined an offer made for these reasons (they leave without a person).
_GOODBYE_OUTCOME = {"no_agent": "no_agent", "out_of_hours": "out_of_hours",
                    "max_wait": "max_wait", "full": "queue_full"}
MAX_OFFER_ATTEMPTS = 2
MAX_NUMBER_ATTEMPTS = 3
MAX_NUMBER_DIGITS = 16


def _reason() -> str:
    reason = request.args.get("reason", "asked")
    return reason if reason in OFFER_REASONS else "asked"


def _attempt() -> int:
    value = parse_int(request.args.get("attempt"))
    return min(max(1, value or 1), 10)


# A caller in one of these states is past the offer: confirmed, ended, or being connected.
_PAST_THE_OFFER = ("ended", "callback", "connecting", "connected")


def _finished(session, call: Call):
    """The call is past the offer (already confirmed, ended, or being connected): no prompt."""
    session.commit()
    response = VoiceResponse()
    if call.status == "connecting":
        response.redirect(external_url("voice.queue_connect"), method="POST")
    else:
        response.hangup()
    return twiml_response(response)


@bp.post("/callback/offer")
def callback_offer():
    """Offer a callback to the caller (``?reason=``, see OFFER_REASONS; default ``asked``)."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    if call.status in _PAST_THE_OFFER:
        return _finished(session, call)
    call.callback_offered_at = now()
    session.commit()
    return twiml_response(callback_offer_twiml(config, call, _reason()))


@bp.post("/callback/choice")
def callback_choice():
    """The caller's key after the offer: 1 = call back this number, 2 = enter another."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    if call.status in _PAST_THE_OFFER:
        return _finished(session, call)
    reason, attempt = _reason(), _attempt()
    digits = request.form.get("Digits", "")
    own_number = callbacks.normalise_number(call.from_number)
    if digits == "1" and own_number is not None:
        return _confirm(session, config, call, own_number, reason)
    if digits == "2":
        session.commit()
        return twiml_response(_enter_number(config, call, reason, 1))
    if attempt < MAX_OFFER_ATTEMPTS:
        session.commit()
        lead = ("no_input",) if not digits else ("invalid_input",)
        return twiml_response(callback_offer_twiml(config, call, reason, attempt=attempt + 1,
                                                   lead=lead, reason_lead=False))
    return _decline(session, config, call, reason)


def _enter_number(config: LineConfig, call: Call, reason: str, attempt: int, *,
                  lead: tuple[str, ...] = ()) -> VoiceResponse:
    response = VoiceResponse()
    prompts = _prompts(config, slow=attempt > 1)
    language = _call_language(config, call)
    for key in lead:
        prompts.add(response, key, language)
    action = external_url("voice.callback_number", reason=reason, attempt=attempt)
    gather = response.gather(action=action, method="POST", finish_on_key="#",
                             num_digits=MAX_NUMBER_DIGITS, timeout=10)
    prompts.add(gather, "callback_enter_number", language)
    response.redirect(action, method="POST")
    return response


@bp.post("/callback/number")
def callback_number():
    """The number the caller entered for the callback: validated (E.164 via phonenumbers,
    default region of the line); an invalid one is asked again, at most three times."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    if call.status in _PAST_THE_OFFER:
        return _finished(session, call)
    reason, attempt = _reason(), _attempt()
    number = callbacks.callable_number(request.form.get("Digits", "")[:32])
    if number is not None:
        return _confirm(session, config, call, number, reason)
    session.commit()
    if attempt < MAX_NUMBER_ATTEMPTS:
        lead = ("callback_number_invalid",) if request.form.get("Digits") else ("no_input",)
        return twiml_response(_enter_number(config, call, reason, attempt + 1, lead=lead))
    return _decline(session, config, call, reason)


def _callback_queue(session, config: LineConfig, call: Call) -> Queue:
    if call.queue_id is not None:
        return session.get(Queue, call.queue_id)
    language = _call_language(config, call)
    return session.scalar(select(Queue).where(Queue.language == language,
                                              Queue.topic == config.general_topic))


def _confirm(session, config: LineConfig, call: Call, number: str, reason: str):
    """Arrange the callback: the caller keeps their place (or gets one from the next opening)."""
    opens = None
    if not _line_open(config):
        opens = next_opening(now(), config.hours, config.timezone)
        if opens is None:  # closed for the next two weeks: no promise we cannot keep
            return _decline(session, config, call, reason)
    queue = _callback_queue(session, config, call)
    call.language = _call_language(config, call)
    call.topic = call.topic or queue.topic
    call.outcome = None
    callbacks.request_keep_place(session, call, number=number, queue=queue, now=now(),
                                 not_before=opens)
    session.commit()
    dispatch_and_connect(session)  # an agent may be free for it right now
    response = VoiceResponse()
    _prompts(config).add(response, "callback_confirmed", _call_language(config, call))
    response.hangup()
    return twiml_response(response)


def _decline(session, config: LineConfig, call: Call, reason: str):
    """No callback: back to the queue, to an adviser, or goodbye, depending on ``reason``."""
    if reason in _BACK_TO_QUEUE and call.status == "queued" and call.queue_id is not None:
        queue = session.get(Queue, call.queue_id)
        mine, _ = _dispatch_and_commit(session, call)
        if mine is not None:
            response = VoiceResponse()
            _dial_agent(response, config, call, mine)
            return twiml_response(response)
        return twiml_response(_enqueue_twiml(config, call, queue, lead=()))
    if reason == "transfer_failed" and call.status in ("ivr", "transferring", "closing"):
        call.status = "ivr"
        return _to_person(session, config, call, lead=())
    if call.status in ("queued", "connecting"):
        acd.leave_queue(session, call.id, now())
    call.outcome = call.outcome or _GOODBYE_OUTCOME.get(reason, "no_agent")
    call.status = "closing"
    session.commit()
    response = VoiceResponse()
    _prompts(config).add(response, "callback_declined", _call_language(config, call))
    response.hangup()
    return twiml_response(response)


# --- The outbound callback call (its own CallSid; the contact is the callback's call row) ---

def _callback_and_call(session) -> tuple[Callback | None, Call | None]:
    """The callback named by ``?callback=`` and its contact, if this request is from its
    current outbound call: a request with another CallSid (an earlier attempt's late status,
    or anyone else's) gets (None, None) and changes nothing."""
    callback_id = parse_int(request.args.get("callback"))
    callback = session.get(Callback, callback_id) if callback_id is not None else None
    if callback is None:
        return None, None
    call_sid = request.form.get("CallSid", "")
    if callback.outbound_call_sid is not None and call_sid != callback.outbound_call_sid:
        log.warning("callback %s: request from %s, not its call %s: ignored", callback.id,
                    call_sid[:64], callback.outbound_call_sid)
        return None, None
    return callback, session.get(Call, callback.call_id)


@bp.post("/callback/answer")
def callback_answer():
    """The caller answered our callback: tell them who calls (and that it is recorded), then
    ring the agent reserved for them; the wait counts from their original queue entry."""
    session = get_session()
    config = _config_or_fail()
    callback, call = _callback_and_call(session)
    response = VoiceResponse()
    if callback is None or callback.state != "dialing":
        session.commit()
        response.hangup()
        return twiml_response(response)
    callbacks.dialled(session, callback, request.form.get("CallSid", ""))
    callback.state = "connected"
    call.last_event_at = max(call.last_event_at, now())
    agent = acd.offered_agent(session, call.id)
    language = _call_language(config, call)
    if agent is None:  # the reservation was withdrawn meanwhile
        callbacks.agent_missed(session, callback, now())
        session.commit()
        _prompts(config).add(response, "callback_agent_missed", language)
        response.hangup()
        return twiml_response(response)
    session.commit()
    _prompts(config).add(response, "callback_intro", language)
    _dial_agent(response, config, call, agent,
                action=external_url("voice.callback_after", callback=callback.id))
    return twiml_response(response)


@bp.post("/callback/after")
def callback_after():
    """The callback's ``<Dial>`` to the agent ended: done after a conversation; if the agent did
    not answer, the caller is told and the callback is tried again with the next agent."""
    session = get_session()
    config = _config_or_fail()
    callback, call = _callback_and_call(session)
    response = VoiceResponse()
    if callback is None:
        session.commit()
        response.hangup()
        return twiml_response(response)
    status = request.form.get("DialCallStatus", "failed")
    if status != "completed" and request.form.get("CallStatus") in call_log.FINAL_PROVIDER_STATUSES:
        # The caller hung up while the agent's phone rang: not the agent's failure; the
        # callback's final status (callback_status) counts the attempt.
        session.commit()
        return twiml_response(response)
    outcome = call_log.agent_leg_ended(session, call, status, parse_int(request.form.get("DialCallDuration")),
                                       now(), wrap_up_seconds=current_app.config["WRAP_UP_SECONDS"])
    if outcome == "done":
        call_log.end_call(session, call, now(), now())
        callbacks.finish(session, callback, now())
        session.commit()
        response.hangup()
        return twiml_response(response)
    if outcome == "requeue":
        callbacks.agent_missed(session, callback, now())
        session.commit()
        _prompts(config).add(response, "callback_agent_missed", _call_language(config, call))
        dispatch_and_connect(session)
    else:
        session.commit()
    response.hangup()
    return twiml_response(response)


@bp.post("/callback/status")
def callback_status():
    """Final status of the outbound callback call: not answered (busy, no-answer, failed,
    canceled) is a failed attempt, tried again after the configured delay; a caller who hung up
    while talking ends the contact."""
    session = get_session()
    config = _config_or_fail()
    callback, call = _callback_and_call(session)
    status = request.form.get("CallStatus", "")
    if callback is None or status not in call_log.FINAL_PROVIDER_STATUSES:
        session.commit()
        return twiml_response(VoiceResponse())
    if call.status == "connected":
        call_log.end_call(session, call, now(), now(),
                          wrap_up_seconds=current_app.config["WRAP_UP_SECONDS"])
        callbacks.finish(session, callback, now())
        session.commit()
    elif callback.state in ("dialing", "connected"):
        result = callbacks.attempt_failed(session, callback, status, now(),
                                          retry_seconds=config.callbacks.retry_seconds,
                                          max_attempts=config.callbacks.attempts)
        log.info("callback %s attempt %s: %s → %s", callback.id, callback.attempts, status, result)
        session.commit()
        dispatch_and_connect(session)  # the agent it held may take the next caller at once
    else:
        session.commit()
    return twiml_response(VoiceResponse())
