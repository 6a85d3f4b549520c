"""Voice webhooks: the provider calls these for every step of a call and gets TwiML back.

Each view parses the request, calls domain functions, commits once, then does outbound REST
(redirecting other waiting callers to their agent) after the commit.
"""
from __future__ import annotations

import logging
import math
import time
from datetime import datetime, timedelta

from flask import Response, abort, current_app, request, url_for
from sqlalchemy import select

from db import get_read_session, get_session, single_statement
from ivr import calls as call_log
from ivr.hours import is_open, next_opening
from ivr.menu import interpret
from ivr.models import Call
from ivr.prompts import Prompts
from ivr.speech import speech_to_key
from line_config import LineConfig, current_line_config, find_referral
from routing import callbacks
from routing import dispatch as acd
from routing.models import Agent, Callback, Queue, Unit
from telephony.client import TelephonyError
from telephony.params import parse_int, parse_timestamp
from telephony.signature import provider_blueprint
from telephony.twiml import VoiceResponse, dial_endpoint, twiml_response

log = logging.getLogger(__name__)


def _technical_error():
    response = VoiceResponse()
    try:
        session = get_session()
        session.rollback()
        config = current_line_config(session)
        if config is not None:
            _prompts(config).add(response, "technical_error", _call_language(config, None))
        response.hangup()
    except Exception:  # the database itself may be what failed
        log.exception("could not build the technical-error prompt")
        response = VoiceResponse()
        response.say("Sorry, a technical problem occurred.", language="en-GB")
        response.hangup()
    return twiml_response(response)


bp = provider_blueprint("voice", __name__, url_prefix="/twilio", on_error=_technical_error)


def now() -> datetime:
    """The service clock (UTC); the simulator replaces it with a virtual one."""
    return current_app.config["CLOCK"]()


def external_url(endpoint: str, **params) -> str:
    """Absolute URL of ``endpoint`` as the provider must request it (PUBLIC_BASE_URL when set)."""
    base = current_app.config["PUBLIC_BASE_URL"]
    if base:
        return base.rstrip("/") + url_for(endpoint, **params)
    return url_for(endpoint, _external=True, **params)


def _audio_url(language: str, key: str, params: dict[str, int], slow: bool) -> str:
    if slow:
        params = dict(params, slow=1)
    return external_url("audio.prompt", language=language, key=key, **params)


def _prompts(config: LineConfig, *, slow: bool = False) -> Prompts:
    return Prompts(config, _audio_url, slow=slow)


# Priority of callers who struggled with the menus (others have 0): they are served first.
STRUGGLE_PRIORITY = 1


def _call_language(config: LineConfig, call: Call | None) -> str:
    return (call.language if call is not None and call.language else config.default_language)


def _config_or_fail() -> LineConfig:
    """The configuration in force, re-read from the database at most every CONFIG_REFRESH_SECONDS.

    Read through a read-only session that is released at once, so the lookup never holds a
    lock the request's own writes need.
    """
    cache = current_app.extensions.setdefault("line_config_cache", {})
    checked = cache.get("checked_at")
    clock = time.monotonic()
    if checked is None or clock - checked >= current_app.config["CONFIG_REFRESH_SECONDS"]:
        reader = get_read_session()
        config = current_line_config(reader)
        reader.rollback()
        if config is None:
            raise RuntimeError("no line configuration loaded: run 'flask config load FILE'")
        if cache.get("config") is not config:
            cache.clear()
            cache["config"] = config
        cache["checked_at"] = clock
    return cache["config"]


def _cached_twiml(key: str, build) -> bytes:
    """TwiML that depends only on the configuration and the public URL, built once per both."""
    cache = current_app.extensions["line_config_cache"]
    full_key = (key, current_app.config["PUBLIC_BASE_URL"] or request.host_url)
    body = cache.get(full_key)
    if body is None:
        body = cache[full_key] = build().to_xml(xml_declaration=True).encode("utf-8")
    return body


def _call_sid() -> str:
    """The request's CallSid; 400 when it is missing or not a plausible SID."""
    call_sid = request.form.get("CallSid", "")
    if not call_sid or len(call_sid) > 64 or not call_sid.isprintable():
        abort(400, "CallSid missing or malformed")
    return call_sid


def _current_call(session) -> Call:
    form = request.form
    return call_log.upsert_call(session, _call_sid(), now(),
                                from_number=form.get("From", ""), to_number=form.get("To", ""))


def _int_arg(name: str, default: int = 1) -> int:
    try:
        return max(1, int(request.args.get(name, default)))
    except ValueError:
        return default


def _gather(response: VoiceResponse, action: str, *, speech_language: str | None = None,
            hints: list[str] | None = None):
    # finishOnKey="" so that '#' arrives as a key (an invalid choice) instead of ending input.
    kwargs = dict(action=action, method="POST", num_digits=1, finish_on_key="",
                  timeout=current_app.config["GATHER_TIMEOUT_SECONDS"])
    if speech_language:
        kwargs.update(input="dtmf speech", language=speech_language, speech_timeout="auto")
        if hints:
            kwargs["hints"] = ", ".join(hints)
    return response.gather(**kwargs)


# Notice played before a menu is repeated, by the reason the menu interpreter gives.
_NOTICE = {"no_input": "no_input", "invalid": "invalid_input"}


def _notice(reason: str | None) -> tuple[str, ...]:
    return (_NOTICE[reason],) if reason in _NOTICE else ()


def _language_menu(config: LineConfig, attempt: int, *, lead: tuple[str, ...],
                   slow: bool = False) -> VoiceResponse:
    prompts = _prompts(config, slow=slow)
    response = VoiceResponse()
    for key in lead:
        prompts.add(response, key, config.default_language)
    action = external_url("voice.language", attempt=attempt)
    gather = _gather(response, action)
    for lang in config.languages:
        prompts.add(gather, "language_menu", lang.code)
    # No key pressed: the Redirect posts without Digits, which the action reads as no input.
    response.redirect(action, method="POST")
    return response


def _topic_menu(config: LineConfig, language: str, attempt: int, *,
                lead: tuple[str, ...] = (), slow: bool = False) -> VoiceResponse:
    prompts = _prompts(config, slow=slow)
    response = VoiceResponse()
    for key in lead:
        prompts.add(response, key, language)
    action = external_url("voice.topic", attempt=attempt)
    hints = [word for option in config.topic_menu.values()
             for word in option.keywords.get(language, [])]
    hints += config.person_keywords.get(language, [])
    gather = _gather(response, action, speech_language=config.language(language).speech,
                     hints=hints)
    prompts.add(gather, "topic_menu", language)
    response.redirect(action, method="POST")
    return response


@bp.post("/voice")
def incoming():
    """Incoming call: greeting with the recording notice, then the language menu."""
    config = _config_or_fail()
    form = request.form
    call_sid = _call_sid()  # 400 before a database connection is taken
    with single_statement(current_app.extensions["db_engine"]) as conn:
        call_log.record_arrival(conn, call_sid, now(),
                                from_number=form.get("From", ""), to_number=form.get("To", ""))
    body = _cached_twiml("incoming", lambda: _language_menu(config, 1, lead=("welcome",)))
    return Response(body, content_type="text/xml; charset=utf-8")


@bp.post("/ivr/language")
def language():
    """Language menu action: pick et/ru/en by key; re-prompt, then go to a person."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    if call.status != "ivr":
        return _stray(session, call)
    attempt = _int_arg("attempt")
    decision = interpret(request.form.get("Digits"), config.language_keys(), attempt=attempt,
                         max_attempts=current_app.config["MAX_MENU_ATTEMPTS"],
                         person_key=config.person_key, repeat_key=config.repeat_key)
    _count_input(call, decision.reason)
    if decision.kind in ("repeat", "reprompt"):
        session.commit()
        return twiml_response(_language_menu(config, decision.next_attempt,
                                             lead=_notice(decision.reason),
                                             slow=decision.reason is not None))
    call.language = decision.value if decision.kind == "choice" else config.default_language
    if not _line_open(config):
        return _closed(session, config, call)
    if decision.kind == "person":
        return _to_person(session, config, call, lead=("to_person",), struggled=True)
    lead = () if call.language == config.default_language else ("welcome",)
    session.commit()
    return twiml_response(_topic_menu(config, call.language, 1, lead=lead))


@bp.post("/ivr/topic")
def topic():
    """Topic menu action: a skill queue, a transfer to a unit, or a person."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    if call.status != "ivr":
        return _stray(session, call)
    language = _call_language(config, call)
    attempt = _int_arg("attempt")
    options = {key: (opt.topic or (f"unit:{opt.transfer}" if opt.transfer else f"refer:{opt.refer}"))
               for key, opt in config.topic_menu.items()}
    digits = request.form.get("Digits")
    phrase = request.form.get("SpeechResult", "")
    if not digits and phrase.strip():
        digits = speech_to_key(
            phrase, {key: opt.keywords.get(language, []) for key, opt in config.topic_menu.items()},
            person_keywords=[w for words in config.person_keywords.values() for w in words],
            person_key=config.person_key)
    decision = interpret(digits, options, attempt=attempt,
                         max_attempts=current_app.config["MAX_MENU_ATTEMPTS"],
                         person_key=config.person_key, repeat_key=config.repeat_key)
    _count_input(call, decision.reason)
    if decision.kind in ("repeat", "reprompt"):
        session.commit()
        return twiml_response(_topic_menu(config, language, decision.next_attempt,
                                          lead=_notice(decision.reason),
                                          slow=decision.reason is not None))
    if not _line_open(config):
        return _closed(session, config, call)
    if decision.kind == "person":
        return _to_person(session, config, call, lead=("to_person",), struggled=True)
    if decision.value.startswith("unit:"):
        return _transfer(session, config, call, decision.value[5:])
    if decision.value.startswith("refer:"):
        return _refer(session, config, call, decision.value[6:])
    call.topic = decision.value
    queue = session.scalar(select(Queue).where(Queue.language == language,
                                               Queue.topic == decision.value))
    return _queue_call(session, config, call, queue)


def _stray(session, call: Call):
    """A request that does not fit the call's state (a repeat, or out of order): change nothing,
    and keep a live caller where they are (waiting, or being connected)."""
    log.warning("request to %s for %s in state %s ignored", request.path, call.call_sid,
                call.status)
    session.commit()
    response = VoiceResponse()
    if call.status == "queued" and call.queue_id is not None:
        return twiml_response(_enqueue_twiml(_config_or_fail(), call,
                                             session.get(Queue, call.queue_id), lead=()))
    if call.status == "connecting":
        response.redirect(external_url("voice.queue_connect"), method="POST")
    else:
        response.hangup()
    return twiml_response(response)


def _count_input(call: Call, reason: str | None) -> None:
    if reason == "no_input":
        call.no_input_count += 1
    elif reason == "invalid":
        call.invalid_input_count += 1


def _line_open(config: LineConfig) -> bool:
    if current_app.config["HOURS_ALWAYS_OPEN"]:
        return True
    return is_open(now(), config.hours, config.timezone)


def _closed(session, config: LineConfig, call: Call):
    """The line is closed: say so, with the opening hours, and offer a callback when it opens."""
    call_log.leave_ivr(call, now())
    call.outcome, call.status = "out_of_hours", "closing"
    call.callback_offered_at = now()
    session.commit()
    return twiml_response(callback_offer_twiml(config, call, "out_of_hours"))


def _to_person(session, config: LineConfig, call: Call, *, lead: tuple[str, ...],
               struggled: bool = False):
    """To the general queue of the caller's language; a caller who struggled (failed or no
    input, or asked for a person) is marked and gets raised priority."""
    if struggled:
        call.ivr_struggle = True
        call.priority = max(call.priority, STRUGGLE_PRIORITY)
    language = _call_language(config, call)
    call.language = language
    call.topic = call.topic or config.general_topic
    queue = session.scalar(select(Queue).where(Queue.language == language,
                                               Queue.topic == config.general_topic))
    return _queue_call(session, config, call, queue, lead=lead)


def _refer(session, config: LineConfig, call: Call, referral_code: str):
    """Out of the agency's remit: read out the competent authority's number, log it as referred."""
    referral = find_referral(config, referral_code)
    call_log.leave_ivr(call, now())
    call.outcome, call.status = "referred", "closing"
    call.topic = f"referral:{referral.code}"[:32]
    session.commit()
    response = VoiceResponse()
    prompts = _prompts(config)
    language = _call_language(config, call)
    prompts.add(response, referral.prompt, language)
    response.pause(length=1)
    prompts.add(response, referral.prompt, language)  # said twice, so the number can be noted
    response.hangup()
    return twiml_response(response)


def _transfer(session, config: LineConfig, call: Call, unit_code: str):
    unit = session.scalar(select(Unit).where(Unit.code == unit_code))
    if unit is None:
        raise RuntimeError(f"unit {unit_code!r} of the menu is not loaded")
    call_log.leave_ivr(call, now())
    call.unit_id = unit.id
    call.status = "transferring"
    session.commit()
    response = VoiceResponse()
    _prompts(config).add(response, "transfer", _call_language(config, call))
    dial = response.dial(action=external_url("voice.transfer_after"), method="POST",
                         timeout=30, ring_tone="ee")
    dial.number(unit.phone_number)
    return twiml_response(response)


def _queue_call(session, config: LineConfig, call: Call, queue: Queue | None, *,
                lead: tuple[str, ...] = ()):
    """Enter the queue; connect at once if an agent is free, else wait in the provider's queue.

    Nobody waits in a queue that nobody can serve: with ``unstaffed: overflow`` a queue with no
    agent logged in overflows to the language's general queue, and if that has none either the
    caller hears that no one can answer.
    """
    if queue is None:
        raise RuntimeError(f"no queue for {call.language}.{call.topic}: reload the configuration")
    chosen = queue
    queue = _staffed_queue(session, config, queue)
    if queue is None:
        call.queue_id = chosen.id  # a callback, if the caller wants one, is for this queue
        return _no_agent(session, config, call, lead=lead)
    policy = config.policy(queue.name)
    if policy.max_length is not None and acd.callers_waiting(session, queue.id) >= policy.max_length:
        target = _overflow_target(session, config, call, policy)
        if target[0] == "unit":
            call.overflowed_at = now()
            return _transfer(session, config, call, target[1])
        if target[0] == "offer":
            call_log.leave_ivr(call, now())
            call.queue_id = queue.id
            call.outcome, call.status, call.callback_offered_at = "queue_full", "closing", now()
            session.commit()
            return twiml_response(callback_offer_twiml(config, call, "full", lead=lead))
        queue = target[1]
        call.overflowed_at = now()
    # A caller with a callback pending who calls again is not called twice: the callback is
    # canceled and this call takes its place in the queue.
    place = callbacks.cancel_for_caller(session, callbacks.normalise_number(call.from_number), now())
    call_log.enter_queue(session, call, queue, now(), place=place)
    connect_now, _ = _dispatch_and_commit(session, call)
    language = _call_language(config, call)
    if connect_now is not None:
        response = VoiceResponse()
        for key in lead:
            _prompts(config).add(response, key, language)
        _dial_agent(response, config, call, connect_now)
        return twiml_response(response)
    return twiml_response(_enqueue_twiml(config, call, queue, lead=lead + ("queue_wait",)))


def _staffed_queue(session, config: LineConfig, queue: Queue) -> Queue | None:
    """``queue`` if someone can serve it, else the language's general queue if someone can serve
    that, else None. With ``unstaffed: wait`` always ``queue``."""
    if config.unstaffed == "wait" or acd.staffed(session, queue.name):
        return queue
    if queue.topic != config.general_topic:
        general = session.scalar(select(Queue).where(Queue.language == queue.language,
                                                     Queue.topic == config.general_topic))
        if general is not None and acd.staffed(session, general.name):
            return general
    return None


def _no_agent(session, config: LineConfig, call: Call, *, lead: tuple[str, ...] = ()):
    """No agent is logged in who could take the call: say so and offer a callback at once
    (the caller is not left waiting)."""
    call_log.leave_ivr(call, now())
    call.outcome, call.status, call.callback_offered_at = "no_agent", "closing", now()
    session.commit()
    return twiml_response(callback_offer_twiml(config, call, "no_agent", lead=lead))


# Prompts said before the callback offer, by why it is made.
_OFFER_LEAD = {"out_of_hours": ("out_of_hours",), "no_agent": ("no_agent",),
               "max_wait": ("max_wait_reached",), "closing": ("closing_callback_offer",),
               "full": ("queue_wait",), "asked": (), "transfer_failed": ()}


def callback_offer_twiml(config: LineConfig, call: Call, reason: str, *, attempt: int = 1,
                         lead: tuple[str, ...] = (), reason_lead: bool = True) -> VoiceResponse:
    """The callback offer: 1 = call back the number calling (when it is a valid number),
    2 = enter another. ``reason`` (a key of ``_OFFER_LEAD``) picks the lead prompt and what
    declining it means (see ``ivr.callback_webhooks``). A Redirect follows the Gather, so no
    input is an answer too."""
    response = VoiceResponse()
    prompts = _prompts(config, slow=attempt > 1)
    language = _call_language(config, call)
    for key in lead + (_OFFER_LEAD.get(reason, ()) if reason_lead else ()):
        prompts.add(response, key, language)
    action = external_url("voice.callback_choice", reason=reason, attempt=attempt)
    gather = _gather(response, action)
    has_number = callbacks.normalise_number(call.from_number) is not None
    prompts.add(gather, "callback_offer" if has_number else "callback_offer_no_number", language)
    response.redirect(action, method="POST")
    return response


def _waited(call: Call) -> float:
    """Seconds the caller has waited for the current queue's limit: since entering the queue,
    since overflowing to it, or, for a caller back in a queue after a conversation (a unit did
    not answer a transfer), since that conversation ended."""
    starts = [call.queue_entered_at, call.overflowed_at]
    if call.answered_at is not None:
        starts.append(call.answered_at + timedelta(seconds=call.talk_seconds or 0))
    starts = [t for t in starts if t is not None]
    return (now() - max(starts)).total_seconds() if starts else 0.0


def _overflow_target(session, config: LineConfig, call: Call, policy) -> tuple[str, object]:
    """Where a caller goes when a queue limit is reached: ``("queue", Queue)`` (once per call,
    and only to a queue someone can serve), ``("unit", code)``, or ``("offer", None)`` (callback)."""
    target = policy.overflow
    if call.overflowed_at is not None:
        return ("offer", None)  # a call overflows once; after that its limit is the offer
    if target.queue is not None:
        other = session.scalar(select(Queue).where(Queue.name == target.queue))
        if other is not None and _staffed_queue(session, config, other) is other:
            limit = config.policy(other.name).max_length
            if limit is None or acd.callers_waiting(session, other.id) < limit:
                return ("queue", other)
    if target.unit is not None:
        return ("unit", target.unit)
    return ("offer", None)


def _waiting_decision(session, config: LineConfig, call: Call) -> tuple[str, object]:
    """What happens to a caller waiting in a queue now: ``("stay", None)``, ``("move", Queue)``
    (their queue lost its agents), ``("overflow", Queue)`` (its maximum wait was reached),
    ``("unit", code)`` or ``("offer", reason)``."""
    queue = session.get(Queue, call.queue_id)
    target = _staffed_queue(session, config, queue)
    if target is None:
        return ("offer", "no_agent")
    if target.id != queue.id:
        return ("move", target)
    if not _line_open(config) and (call.callback_offered_at is None
                                   or _was_open(config, call.callback_offered_at)):
        return ("offer", "closing")
    policy = config.policy(queue.name)
    if policy.max_wait_seconds is not None and _waited(call) >= policy.max_wait_seconds:
        kind, value = _overflow_target(session, config, call, policy)
        if kind == "queue":
            return ("overflow", value)
        return (kind, value if kind == "unit" else "max_wait")
    return ("stay", None)


def _was_open(config: LineConfig, at: datetime) -> bool:
    return current_app.config["HOURS_ALWAYS_OPEN"] or is_open(at, config.hours, config.timezone)


def _dispatch_and_commit(session, call: Call | None) -> tuple[Agent | None, int]:
    """Run dispatch, commit, then redirect every other caller just offered an agent.

    Returns the agent offered ``call`` itself (its TwiML is this request's answer) and how
    many calls were offered in all.
    """
    config = _config_or_fail()
    assignments = acd.dispatch(session, now(), callbacks_open=_line_open(config))
    offered = {c.id: c for c in call_log.mark_offered(
        session, [a.call_id for a in assignments if a.callback_id is None])}
    to_dial = [cb for a in assignments if a.callback_id is not None
               if (cb := callbacks.start_attempt(session, a.callback_id, now())) is not None]
    mine = None
    others = []
    for assignment in assignments:
        if call is not None and assignment.call_id == call.id:
            mine = session.get(Agent, assignment.agent_id)
        elif assignment.call_id in offered:
            others.append(offered[assignment.call_id].call_sid)
    session.commit()
    _redirect_to_agents(others)
    _dial_callbacks(session, config, to_dial)
    return mine, len(assignments)


def _dial_callbacks(session, config: LineConfig, to_dial: list[Callback]) -> None:
    """After commit: ring the callers of callbacks an agent was just reserved for.

    The attempt was committed as ``dialing`` first, so each reservation dials at most once; a
    dial the provider refuses counts as a failed attempt (retried later, agent freed).
    """
    client = current_app.extensions["telephony"]
    for callback in to_dial:
        try:
            call_sid = client.create_call(
                to=callback.number, from_=config.callbacks.caller_id,
                url=external_url("voice.callback_answer", callback=callback.id),
                status_callback=external_url("voice.callback_status", callback=callback.id),
                timeout=config.callbacks.ring_seconds)
        except TelephonyError as exc:
            log.warning("callback %s: dial failed: %s", callback.id, exc)
            callbacks.attempt_failed(session, callback, "dial_failed", now(),
                                     retry_seconds=config.callbacks.retry_seconds,
                                     max_attempts=config.callbacks.attempts)
        else:
            callbacks.dialled(session, callback, call_sid)
        session.commit()


def _redirect_to_agents(call_sids: list[str]) -> None:
    """After commit: move callers who were just offered an agent out of their hold music."""
    client = current_app.extensions["telephony"]
    for call_sid in call_sids:
        try:
            client.redirect_call(call_sid, external_url("voice.queue_connect"))
        except TelephonyError:
            # The caller's next hold-loop request picks the offer up (see queue_wait).
            log.warning("redirect of %s failed; the hold loop will connect it", call_sid)


def _enqueue_twiml(config: LineConfig, call: Call, queue: Queue, *,
                   lead: tuple[str, ...]) -> VoiceResponse:
    response = VoiceResponse()
    for key in lead:
        _prompts(config).add(response, key, _call_language(config, call))
    response.enqueue(queue.name, action=external_url("voice.queue_after"), method="POST",
                     wait_url=external_url("voice.queue_wait"), wait_url_method="POST")
    return response


def _dial_agent(response: VoiceResponse, config: LineConfig, call: Call, agent: Agent, *,
                action: str | None = None) -> None:
    dial = response.dial(action=action or external_url("voice.dial_after"), method="POST",
                         timeout=current_app.config["AGENT_RING_SECONDS"],
                         record="record-from-answer-dual",
                         recording_status_callback=external_url("recording.callback"),
                         recording_status_callback_method="POST",
                         recording_status_callback_event="completed absent")
    dial_endpoint(dial, agent.endpoint_kind, agent.endpoint,
                  answer_url=external_url("voice.agent_answer", call=call.call_sid))


@bp.post("/queue/wait")
def queue_wait():
    """Hold loop (Enqueue waitUrl): connect if an agent was offered, else position, estimated
    wait, the options (a key for a callback, ``*`` to repeat) and music.

    Dispatch runs here too, so a caller is connected even if no other event triggered it. An
    offer made by another request was already redirected by REST; the hold loop redirects it
    only if that evidently failed (the offer is older than ``OFFER_REDIRECT_GRACE`` seconds).
    A caller whose queue lost its agents, whose wait reached the queue's maximum, or who is
    still waiting when the line closes leaves the provider's queue (``<Leave>``); the Enqueue
    action (:func:`queue_after`) then moves them on.
    """
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    mine = None
    if call.status == "queued":
        decision, _ = _waiting_decision(session, config, call)
        if decision != "stay":
            session.commit()
            response = VoiceResponse()
            response.leave()
            return twiml_response(response)
        mine, _ = _dispatch_and_commit(session, call)
    session.commit()
    response = VoiceResponse()
    if mine is not None or (call.status == "connecting" and _offer_is_stale(session, call)):
        response.redirect(external_url("voice.queue_connect"), method="POST")
        return twiml_response(response)
    response = _hold_twiml(session, config, call)
    session.commit()
    return twiml_response(response)


def _hold_twiml(session, config: LineConfig, call: Call) -> VoiceResponse:
    """One round of the hold loop: position (never a worse one than last announced), estimated
    wait from the queue's recent speed of answer, the options, then music or silence up to
    HOLD_SECONDS (less if the queue's maximum wait comes sooner). A key pressed at any point
    goes to :func:`queue_key`."""
    response = VoiceResponse()
    language = _call_language(config, call)
    prompts = _prompts(config)
    gather = response.gather(action=external_url("voice.queue_key"), method="POST", num_digits=1,
                             finish_on_key="", timeout=1)
    position = acd.queue_position(session, call.id, now())
    if position is not None and (call.announced_position is None
                                 or position <= call.announced_position):
        call.announced_position = position
        prompts.add(gather, "queue_position", language, position=position)
        if call.queue_id is not None:
            rate = call_log.recent_answer_rate(session, call.queue_id, now())
            if rate:
                minutes = math.ceil(position / rate / 60)
                if minutes <= 60:
                    prompts.add(gather, "queue_estimated_wait", language, minutes=minutes)
    prompts.add(gather, "queue_options", language)
    music = current_app.config["HOLD_MUSIC_URL"]
    hold = current_app.config["HOLD_SECONDS"]
    queue = session.get(Queue, call.queue_id) if call.queue_id is not None else None
    limit = config.policy(queue.name).max_wait_seconds if queue is not None else None
    short = False
    if limit is not None:
        remaining = max(1, math.ceil(limit - _waited(call)))
        short = remaining < hold
        hold = min(hold, remaining)
    if music and not short:
        gather.play(music)
    else:  # silence, or only the seconds left before the queue's maximum wait
        gather.pause(length=hold)
    return response


@bp.post("/queue/key")
def queue_key():
    """A key pressed while waiting: the callback key leaves the queue for the callback offer
    (keeping the caller's place); any other key repeats the announcements and options."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    response = VoiceResponse()
    if call.status != "queued":
        session.commit()
        if call.status == "connecting":
            response.redirect(external_url("voice.queue_connect"), method="POST")
        return twiml_response(response)
    if request.form.get("Digits", "") == config.callbacks.key:
        call.callback_offered_at = now()
        session.commit()
        response.leave()
        return twiml_response(response)
    call.announced_position = None  # asked to hear it again: say the current position
    response = _hold_twiml(session, config, call)
    session.commit()
    return twiml_response(response)


OFFER_REDIRECT_GRACE = 10


def _offer_is_stale(session, call: Call) -> bool:
    offered_at = acd.offered_at(session, call.id)
    return offered_at is not None and (now() - offered_at).total_seconds() >= OFFER_REDIRECT_GRACE


@bp.post("/queue/connect")
def queue_connect():
    """A waiting caller was offered an agent: dial the agent, recording both channels."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    agent = acd.offered_agent(session, call.id) if call.status == "connecting" else None
    session.commit()
    response = VoiceResponse()
    if agent is not None:
        _dial_agent(response, config, call, agent)
        return twiml_response(response)
    if call.status == "queued" and call.queue_id is not None:
        # The offer was withdrawn meanwhile: back to hold, same place.
        return twiml_response(_enqueue_twiml(config, call, session.get(Queue, call.queue_id), lead=()))
    response.hangup()
    return twiml_response(response)


@bp.post("/queue/after")
def queue_after():
    """Enqueue action: the caller left the provider's queue (hung up, redirected to an agent, …)."""
    session = get_session()
    call = _current_call(session)
    result = request.form.get("QueueResult", "")
    response = VoiceResponse()
    if result == "hangup":
        call_log.end_call(session, call, now(), now())
        dispatch_and_connect(session)  # an agent it held may take the next caller at once
        return twiml_response(response)
    elif result == "leave" and call.status == "queued":
        return _after_leave(session, _config_or_fail(), call)
    elif result == "leave" and call.status == "connecting":
        # Offered an agent between its <Leave> and this request: connect it.
        session.commit()
        response.redirect(external_url("voice.queue_connect"), method="POST")
        return twiml_response(response)
    elif result in ("error", "system-error", "queue-full"):
        log.error("provider queue error %s for %s", result, call.call_sid)
        config = _config_or_fail()
        call_log.end_call(session, call, now(), now())
        _prompts(config).add(response, "technical_error", _call_language(config, call))
        response.hangup()
    session.commit()
    return twiml_response(response)


def _after_leave(session, config: LineConfig, call: Call):
    """The caller left the provider's queue by ``<Leave>``: move them on (another queue in the
    same place, a unit, a callback offer), or back into the queue if nothing applies any more."""
    decision, value = _waiting_decision(session, config, call)
    if decision == "stay" and call.callback_offered_at is not None \
            and (now() - call.callback_offered_at).total_seconds() < 60:
        decision, value = "offer", "asked"
    if decision == "offer":
        call.callback_offered_at = now()
        session.commit()
        return twiml_response(callback_offer_twiml(config, call, value))
    if decision == "unit":
        acd.leave_queue(session, call.id, now())
        call.overflowed_at = now()  # back from a unit that did not answer: no second overflow
        return _transfer(session, config, call, value)
    queue = session.get(Queue, call.queue_id)
    if decision in ("move", "overflow"):
        if decision == "overflow":
            call.overflowed_at = now()  # the new queue's maximum wait counts from now
        acd.move(session, call.id, value)
        call.queue_id, queue = value.id, value
    mine, _ = _dispatch_and_commit(session, call)
    if mine is not None:
        response = VoiceResponse()
        _dial_agent(response, config, call, mine)
        return twiml_response(response)
    return twiml_response(_enqueue_twiml(config, call, queue, lead=()))


@bp.post("/agent/answer")
def agent_answer():
    """Agent leg answered (``<Number url>``): stamp the answer, then tell the agent the call is recorded."""
    session = get_session()
    config = _config_or_fail()
    call_sid = request.args.get("call") or request.form.get("ParentCallSid", "")
    call = call_log.find_call(session, call_sid)
    response = VoiceResponse()
    if call is not None:
        call.last_event_at = max(call.last_event_at, now())
        call_log.agent_answered(session, call, now())
        _prompts(config).add(response, "agent_whisper", _call_language(config, call))
    session.commit()
    return twiml_response(response)


@bp.post("/dial/after")
def dial_after():
    """Agent ``<Dial>`` ended: done after a conversation, otherwise back to the queue in place."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    status = request.form.get("DialCallStatus", "failed")
    duration = parse_int(request.form.get("DialCallDuration"))
    if status != "completed" and request.form.get("CallStatus") in call_log.FINAL_PROVIDER_STATUSES:
        # The caller hung up while the agent's phone rang: not the agent's failure.
        call_log.end_call(session, call, now(), now())
        dispatch_and_connect(session)  # an agent it held may take the next caller at once
        return twiml_response(VoiceResponse())
    if call.conference is not None and call.status in ("connected", "transferring"):
        # A warm transfer moved the conversation into a conference: the agent's first
        # <Dial> ending is not the end of the conversation (the conference's action is).
        return _stray(session, call)
    outcome = call_log.agent_leg_ended(session, call, status, duration, now(),
                                       wrap_up_seconds=current_app.config["WRAP_UP_SECONDS"])
    response = VoiceResponse()
    if outcome == "ignored":
        return _stray(session, call)
    if outcome == "done":
        session.commit()
        after_conversation(response, config)
        return twiml_response(response)
    queue = session.get(Queue, call.queue_id)
    mine, _ = _dispatch_and_commit(session, call)
    if mine is not None:
        _dial_agent(response, config, call, mine)
        return twiml_response(response)
    return twiml_response(_enqueue_twiml(config, call, queue, lead=("queue_wait",)))


def after_conversation(response: VoiceResponse, config: LineConfig) -> None:
    """The conversation ended with the caller on the line: on to the post-call survey
    (``/twilio/survey/start``, which decides whether to ask) when the line's surveys are
    enabled, otherwise hang up. Referenced by URL only: ivr does not import survey."""
    if config.surveys.enabled and request.form.get("CallStatus") not in call_log.FINAL_PROVIDER_STATUSES:
        response.redirect(external_url("survey_voice.start"), method="POST")
    else:
        response.hangup()


@bp.post("/transfer/after")
def transfer_after():
    """Unit ``<Dial>`` ended (menu option, queue overflow, an agent's blind transfer): the
    unit answered → hang up; busy, no answer, failed → the caller is offered a person or a
    callback at once. See :func:`ivr.transfers.unit_dial_ended`."""
    from ivr.transfers import unit_dial_ended
    return unit_dial_ended()


@bp.post("/status")
def status():
    """Call status callback: a final status ends the call; duplicates and late ones change nothing."""
    session = get_session()
    call = _current_call(session)
    if call.status in ("connecting", "connected") and callbacks.callback_of(session, call.id):
        # A late status of the caller's own line, which ended when they chose a callback: the
        # callback's outbound call (with its own status URL) is what is live now.
        session.commit()
        return twiml_response(VoiceResponse())
    freed_agent = call.status in ("queued", "connecting")
    ended = call_log.apply_status_callback(
        session, call, request.form.get("CallStatus", ""), now(),
        timestamp=parse_timestamp(request.form.get("Timestamp")),
        wrap_up_seconds=current_app.config["WRAP_UP_SECONDS"])
    if ended and freed_agent:
        dispatch_and_connect(session)  # an agent it held may take the next caller at once
        return twiml_response(VoiceResponse())
    session.commit()
    return twiml_response(VoiceResponse())


def dispatch_and_connect(session) -> int:
    """Offer waiting calls to free agents, commit, then redirect those callers to their agent.

    For edges other than the call's own webhooks (the agent API, jobs). Returns how many
    calls were offered.
    """
    return _dispatch_and_commit(session, None)[1]


def recover_lost_dials(session) -> int:
    """Count callback dials lost by a dying process as failed attempts (freeing their agents),
    commit, and return how many there were."""
    config = _config_or_fail()
    lost = callbacks.lost_dials(session, now())
    for callback in lost:
        callbacks.attempt_failed(session, callback, "lost", now(),
                                 retry_seconds=config.callbacks.retry_seconds,
                                 max_attempts=config.callbacks.attempts)
    session.commit()
    return len(lost)


def connect_accepted(session, assignment: acd.Assignment) -> None:
    """An agent accepted a waiting call through the API: mark it, commit, redirect the caller."""
    offered = call_log.mark_offered(session, [assignment.call_id])
    session.commit()
    _redirect_to_agents([c.call_sid for c in offered])
