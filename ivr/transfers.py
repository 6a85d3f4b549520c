"""Transfers to structural units: blind and warm transfers by agents, complaint escalation, and
the fallback when a unit does not answer.

How each transfer runs (Twilio facts in ``shared/reference/twilio-protocol.md``):

* **Blind** (an agent, or the escalation route): the caller's call is redirected by REST to
  :func:`unit` (``<Dial>`` the unit, action ``/twilio/transfer/after``). Redirecting the
  caller ends the agent's ``<Dial>`` leg; its action request still arrives but its TwiML is
  not executed (Twilio changelog 2021-05-24, "Changes to <Dial> behavior"), and the call is
  already ``transferring`` so the agent-leg handler leaves it alone. The agent goes to wrap-up
  at once; the talk time is the agent's part (answer → transfer).
* **Warm**: the caller is redirected into a conference room of their own where they hold
  (``startConferenceOnEnter=false``, hold prompt and music from :func:`hold`), and the agent
  (whose ``<Dial>`` leg ended with the redirect) and the unit are dialled by REST into a
  consultation room next to it. *Complete*: the unit's leg is redirected into the caller's room
  and the agent's leg is hung up (the agent hanging up once the unit has answered completes too,
  as on a PBX). *Unit busy, no answer, failed, or the agent cancels*: the agent's leg is
  redirected into the caller's room, so the caller is back with the agent. The caller leaving
  the room ends it (``endConferenceOnExit``); so does whoever talks with them last.
* **Fallback**: a unit ``<Dial>`` that ends busy, no-answer, failed or canceled answers that
  very request with an offer (:func:`offer_twiml`): 1 or no key = back to an adviser (the
  language's general queue, raised priority), 2 = a callback (the callback offer,
  ``/twilio/callback/offer?reason=transfer_failed``, whose "no" is an adviser too).
  ``completed`` means the unit talked with the caller: the call hangs up, outcome
  ``transferred``, no prompt of any kind.
* **Escalation**: the line's ``escalation`` route (a unit, blind or warm, or a queue), with
  ``calls.escalated`` set.

The agent who answered stays the call's agent (``agent_id``, ``answered_at``,
``talk_seconds`` = their part), so reports count the call as answered by them.
"""
from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta

from flask import Response, current_app, request
from sqlalchemy import select, update
from werkzeug.routing import BuildError

from db import get_session
from ivr import calls as call_log
from ivr.models import Call
from ivr.webhooks import (STRUGGLE_PRIORITY, _call_language, _call_sid, _closed,
                          _config_or_fail, _current_call, _gather, _line_open, _prompts,
                          _queue_call, _stray, _technical_error, _to_person, after_conversation,
                          external_url, now)
from line_config import LineConfig
from routing import dispatch as acd
from routing.callbacks import callback_of
from routing.models import Agent, Queue, Unit
from telephony.client import TelephonyError
from telephony.params import parse_int
from telephony.signature import provider_blueprint
from telephony.twiml import VoiceResponse, twiml_response

log = logging.getLogger(__name__)

bp = provider_blueprint("transfers", __name__, url_prefix="/twilio/transfer",
                        on_error=_technical_error)

MODES = ("blind", "warm")
# Seconds a unit's phone rings (blind <Dial> and warm consultation alike).
UNIT_RING_SECONDS = 30
# Where a transfer stands (calls.transfer_state):
#   dialling    the caller is on their way to the unit (blind) or to the escalation queue
#   consulting  warm: the caller holds in their room; the agent and the unit are dialled
#   returned    warm: the unit did not take the call; caller and agent talk again
#   handed_over warm: the unit joined the caller; the agent left
#   connected   blind / menu: the unit answered and talked with the caller
#   offer       the unit did not answer: the caller hears the offer (adviser or callback)
#   requeued    the caller chose an adviser;  callback  the caller chose a callback
#   queued      escalated into a queue;  abandoned  the caller hung up before the unit answered
TRANSFER_STATES = ("dialling", "consulting", "returned", "handed_over", "connected", "offer",
                   "requeued", "callback", "queued", "abandoned")


class TransferRefused(Exception):
    """The agent cannot transfer now: ``status`` (HTTP), a short ``error`` and a ``detail``."""

    def __init__(self, status: int, error: str, detail: str = ""):
        super().__init__(f"{error}: {detail}" if detail else error)
        self.status, self.error, self.detail = status, error, detail


def _telephony():
    return current_app.extensions["telephony"]


def _talk_ends(session, call: Call, at: datetime) -> None:
    """The agent's part of the call ends at ``at``: talk time from the answer, wrap-up starts."""
    if call.answered_at is not None:
        call.talk_seconds = max(0, int((at - call.answered_at).total_seconds()))
    if call.agent_id is not None:
        acd.call_finished(session, call.agent_id, call.id, at,
                          wrap_up_seconds=current_app.config["WRAP_UP_SECONDS"])


def _unanswered_outcome(call: Call) -> str:
    """How a call whose transfer never reached the unit ended, if the caller hangs up now."""
    if call.answered_at is not None:
        return "answered"
    return "abandoned" if call.queue_entered_at is not None else "ivr_abandoned"


def _hang_up(*call_sids: str | None) -> None:
    """After commit: end other legs (best effort; they end on their own when the room does)."""
    for call_sid in call_sids:
        if call_sid:
            try:
                _telephony().hangup_call(call_sid)
            except TelephonyError as exc:
                log.warning("hang-up of leg %s failed: %s", call_sid, exc)


# ----------------------------------------------------------------------------- TwiML

def unit_twiml(config: LineConfig, call: Call, unit: Unit) -> VoiceResponse:
    """Tell the caller they are being connected, then ``<Dial>`` the unit."""
    response = VoiceResponse()
    _prompts(config).add(response, "transfer", _call_language(config, call))
    dial = response.dial(action=external_url("voice.transfer_after"), method="POST",
                         timeout=UNIT_RING_SECONDS, ring_tone="ee")
    dial.number(unit.phone_number)
    return response


def offer_twiml(config: LineConfig, call: Call) -> VoiceResponse:
    """The unit could not answer: 1 (or no key) = back to an adviser, 2 = a callback. The
    Redirect after the Gather makes no input an answer too."""
    response = VoiceResponse()
    action = external_url("transfers.choice")
    gather = _gather(response, action)
    _prompts(config).add(gather, "transfer_unanswered", _call_language(config, call))
    response.redirect(action, method="POST")
    return response


def _room_twiml(call: Call) -> VoiceResponse:
    """The caller's own conference room: they hold (prompt and music) until the agent or the
    unit joins; when they leave, the room ends."""
    response = VoiceResponse()
    dial = response.dial(action=external_url("transfers.room_after", room=call.conference),
                         method="POST")
    dial.conference(call.conference, start_conference_on_enter=False,
                    end_conference_on_exit=True, beep=False,
                    wait_url=external_url("transfers.hold"), wait_method="POST")
    return response


def _join_twiml(room: str) -> VoiceResponse:
    """For the agent's or the unit's leg: join the caller's room and talk; leaving ends it."""
    response = VoiceResponse()
    dial = response.dial()
    dial.conference(room, start_conference_on_enter=True, end_conference_on_exit=True,
                    beep=False)
    return response


def callback_offer_url() -> str:
    """The callback offer after a failed transfer (``voice.callback_offer``, POST, same CallSid)."""
    try:
        return external_url("voice.callback_offer", reason="transfer_failed")
    except BuildError:  # not registered in this build: the documented path
        base = current_app.config["PUBLIC_BASE_URL"] or request.host_url
        return base.rstrip("/") + "/twilio/callback/offer?reason=transfer_failed"


def _resume(session, config: LineConfig, call: Call) -> Response:
    """A request that does not fit the transfer's state: keep the caller where they are."""
    if call.status != "ended" and call.transfer_state == "offer":
        session.commit()
        return twiml_response(offer_twiml(config, call))
    if call.status != "ended" and call.transfer_state in ("consulting", "returned") \
            and call.conference:
        session.commit()
        return twiml_response(_room_twiml(call))
    return _stray(session, call)


# ------------------------------------------------------------- the caller's webhooks

@bp.post("/unit")
def unit():
    """Blind transfer (REST redirect of the caller): dial the call's unit."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    target = session.get(Unit, call.unit_id) if call.unit_id is not None else None
    if call.status != "transferring" or call.transfer_state != "dialling" or target is None \
            or call.transfer_kind not in MODES:
        return _resume(session, config, call)
    session.commit()
    return twiml_response(unit_twiml(config, call, target))


def unit_dial_ended() -> Response:
    """The unit's ``<Dial>`` ended (``/twilio/transfer/after``): see the module docstring."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    status = request.form.get("DialCallStatus", "failed")
    answered = status in ("completed", "answered")
    if call.status == "ended":
        if call.outcome == "transferred" and call.transfer_state not in ("connected",
                                                                          "handed_over"):
            # The final status came first and logged a transfer: put the log right.
            if call.transfer_state != "dialling":
                call.transfer_kind = "ivr"
            call.transfer_result = "completed" if answered else status[:16]
            call.transfer_state = "connected" if answered else "abandoned"
            call.outcome = "transferred" if answered else _unanswered_outcome(call)
        session.commit()
        return twiml_response(VoiceResponse())
    if call.status != "transferring" or call.transfer_state in ("consulting", "handed_over"):
        return _resume(session, config, call)
    if call.transfer_state == "connected":
        # A repeated or stale action after the unit took the caller: nothing changes.
        session.commit()
        response = VoiceResponse()
        response.hangup()
        return twiml_response(response)
    if call.transfer_state != "dialling":
        # Started by the service (menu option, queue overflow): the caller is handed over
        # when the unit answers.
        call.transfer_kind, call.transferred_at = "ivr", None
    call.transfer_result = "completed" if answered else status[:16]
    if answered:
        if call.transferred_at is None:
            talk = parse_int(request.form.get("DialCallDuration"))
            call.transferred_at = now() - timedelta(seconds=talk if talk and talk > 0 else 0)
        call.outcome, call.transfer_state = "transferred", "connected"
        session.commit()
        response = VoiceResponse()
        response.hangup()
        return twiml_response(response)
    if request.form.get("CallStatus") in call_log.FINAL_PROVIDER_STATUSES:
        # The caller hung up while the unit rang.
        call.outcome, call.transfer_state = _unanswered_outcome(call), "abandoned"
        call_log.end_call(session, call, now(), now())
        session.commit()
        return twiml_response(VoiceResponse())
    return _offer(session, config, call)


def _offer(session, config: LineConfig, call: Call) -> Response:
    """Answer this request with the fallback offer."""
    call.status, call.transfer_state = "ivr", "offer"
    # Hanging up during the offer ends the call as what it was so far.
    call.outcome = "answered" if call.answered_at is not None else None
    session.commit()
    return twiml_response(offer_twiml(config, call))


@bp.post("/offer")
def offer():
    """The fallback offer, for a caller moved here by REST (a warm transfer that fell through)."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    if call.status == "ended" or call.transfer_state != "offer":
        return _resume(session, config, call)
    session.commit()
    return twiml_response(offer_twiml(config, call))


@bp.post("/choice")
def choice():
    """The caller's answer to the offer: 2 = a callback; 1, no key or any other = an adviser."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    if call.status != "ivr" or call.transfer_state != "offer":
        return _stray(session, call)
    if request.form.get("Digits", "") == "2":
        call.transfer_state = "callback"
        session.commit()
        response = VoiceResponse()
        response.redirect(callback_offer_url(), method="POST")
        return twiml_response(response)
    call.transfer_state, call.outcome = "requeued", None
    call.priority = max(call.priority, STRUGGLE_PRIORITY)
    if call.answered_at is None and not _line_open(config):
        return _closed(session, config, call)
    return _to_person(session, config, call, lead=("to_person",))


@bp.post("/queue")
def queue():
    """Escalation to a queue (REST redirect of the caller): into ``?queue=``, raised priority."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    target = session.scalar(select(Queue).where(Queue.name == request.args.get("queue", "")))
    if call.status != "transferring" or call.transfer_state != "dialling" or target is None \
            or call.transfer_kind != "queue":
        return _resume(session, config, call)
    call.transfer_state, call.transfer_result, call.outcome = "queued", "queued", None
    call.priority = max(call.priority, STRUGGLE_PRIORITY)
    return _queue_call(session, config, call, target, lead=("transfer",))


@bp.post("/room")
def room():
    """Warm transfer (REST redirect of the caller): into the caller's own conference room."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    if call.status == "ended" or call.transfer_state != "consulting" or not call.conference:
        return _resume(session, config, call)
    session.commit()
    return twiml_response(_room_twiml(call))


@bp.post("/hold")
def hold():
    """Conference waitUrl of the caller's room (repeated while they hold): prompt, music."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    session.commit()
    response = VoiceResponse()
    _prompts(config).add(response, "transfer_hold", _call_language(config, call))
    music = current_app.config["HOLD_MUSIC_URL"]
    if music:
        response.play(music)
    else:
        response.pause(length=current_app.config["HOLD_SECONDS"])
    return twiml_response(response)


@bp.post("/room/after")
def room_after():
    """The caller's ``<Dial><Conference>`` ended: the caller hung up, or the room ended because
    whoever talked with them (the unit after a hand-over, the agent after a return) left."""
    session = get_session()
    config = _config_or_fail()
    call = _current_call(session)
    caller_gone = request.form.get("CallStatus") in call_log.FINAL_PROVIDER_STATUSES
    state = call.transfer_state
    if request.args.get("room") != call.conference:
        state = None  # an earlier room the caller was moved out of
    if state == "consulting" and (caller_gone or call.status == "ended"):
        # The caller hung up while holding: the consultation is pointless now.
        legs = (call.unit_leg_sid, call.agent_leg_sid)
        _talk_ends(session, call, now())
        call.transfer_state, call.transfer_result = "abandoned", "caller-hangup"
        call.outcome = "answered"
        call_log.end_call(session, call, now(), now())
        session.commit()
        _hang_up(*legs)
        return twiml_response(VoiceResponse())
    if state in ("handed_over", "returned"):
        call_log.end_call(session, call, now(), now(),
                          wrap_up_seconds=current_app.config["WRAP_UP_SECONDS"])
        session.commit()
        response = VoiceResponse()
        if not caller_gone:
            after_conversation(response, config)
        return twiml_response(response)
    if state == "consulting":
        # The room ended with the caller still there (not expected): never leave them in silence.
        legs = (call.unit_leg_sid, call.agent_leg_sid)
        _talk_ends(session, call, now())
        answer = _offer(session, config, call)
        _hang_up(*legs)
        return answer
    # The caller was moved on by REST (a new transfer, the offer): Twilio does not run this
    # answer (the call was modified), so it changes nothing.
    session.commit()
    return twiml_response(VoiceResponse())


# ------------------------------------------------------ the agent's and the unit's legs

def _leg_request(session) -> tuple[Call | None, str]:
    """The caller's call (``?call=``), locked: a request about a leg the agent API is creating
    or moving waits for that change to commit. And the leg's own CallSid."""
    leg = _call_sid()
    call = session.scalar(select(Call).where(Call.call_sid == request.args.get("call", "")[:64])
                          .with_for_update())
    return call, leg


@bp.post("/join")
def join():
    """REST redirect of the agent's leg (``role=agent``, back with the caller) or the unit's
    (``role=unit``, the hand-over) into the caller's room. Anything else hangs the leg up."""
    session = get_session()
    call, leg = _leg_request(session)
    role = request.args.get("role")
    session.commit()
    ok = call is not None and call.status != "ended" and call.conference and (
        (role == "agent" and call.transfer_state == "returned" and leg == call.agent_leg_sid)
        or (role == "unit" and call.transfer_state == "handed_over" and leg == call.unit_leg_sid))
    if not ok:
        log.warning("join request of leg %s (%s) does not fit; hanging it up", leg, role)
        response = VoiceResponse()
        response.hangup()
        return twiml_response(response)
    return twiml_response(_join_twiml(call.conference))


@bp.post("/leg")
def leg_status():
    """Status callbacks of the warm transfer's legs (``answered``, ``completed``)."""
    session = get_session()
    call, leg = _leg_request(session)
    role = request.args.get("role")
    status = request.form.get("CallStatus", "")
    final = status in call_log.FINAL_PROVIDER_STATUSES
    if call is None or call.transfer_state != "consulting":
        session.commit()
        return twiml_response(VoiceResponse())
    if call.status == "ended":
        # The caller hung up and the room's action has not come yet: free the agent now.
        if final and role == "agent" and leg == call.agent_leg_sid:
            legs = (call.unit_leg_sid,)
            _talk_ends(session, call, now())
            call.transfer_state, call.transfer_result = "abandoned", "caller-hangup"
            call.outcome = "answered"
            session.commit()
            _hang_up(*legs)
        session.commit()
        return twiml_response(VoiceResponse())
    if role == "unit" and leg == call.unit_leg_sid:
        if status == "in-progress":
            call.transfer_result = "answered"
            session.commit()
        elif final:
            result = "declined" if call.transfer_result == "answered" else status[:16]
            _return_to_agent(session, call, result)
    elif role == "agent" and leg == call.agent_leg_sid and final:
        # Hanging up once the unit answered completes the transfer, as on a PBX; before, the
        # caller is offered an adviser or a callback.
        if call.transfer_result != "answered" or not _hand_over(session, call,
                                                                 agent_left=True):
            _fall_through(session, call, "agent-left")
    session.commit()
    return twiml_response(VoiceResponse())


def _return_to_agent(session, call: Call, result: str) -> None:
    """The unit did not take the call: the caller is back with the agent (commits)."""
    call.transfer_state, call.transfer_result, call.status = "returned", result, "connected"
    session.commit()
    try:
        _telephony().redirect_call(call.agent_leg_sid,
                                   external_url("transfers.join", call=call.call_sid, role="agent"))
    except TelephonyError as exc:
        log.warning("could not bring agent leg %s back to %s: %s", call.agent_leg_sid,
                    call.call_sid, exc)
        _fall_through(session, call, result)


def _hand_over(session, call: Call, *, agent_left: bool = False) -> bool:
    """The unit takes the call: its leg joins the caller's room; the agent's part ends and their
    leg is hung up unless ``agent_left`` (commits).

    Returns False, with nothing changed (rolled back), if the unit's leg cannot be moved.
    """
    agent_leg = None if agent_left else call.agent_leg_sid
    call.transfer_state, call.transfer_result = "handed_over", "completed"
    call.outcome, call.transferred_at = "transferred", now()
    _talk_ends(session, call, now())
    session.flush()
    try:
        _telephony().redirect_call(call.unit_leg_sid, external_url(
            "transfers.join", call=call.call_sid, role="unit"))
    except TelephonyError as exc:
        log.warning("hand-over of %s to unit leg %s failed: %s", call.call_sid,
                    call.unit_leg_sid, exc)
        session.rollback()
        return False
    session.commit()
    _hang_up(agent_leg)
    return True


def _fall_through(session, call: Call, result: str) -> None:
    """The warm transfer cannot go on (no agent to return to): the caller gets the offer, the
    unit's leg is ended, the agent's part ends (commits)."""
    legs = (call.unit_leg_sid, call.agent_leg_sid)
    _talk_ends(session, call, now())
    call.transfer_result = result[:16]
    call.status, call.transfer_state = "ivr", "offer"
    call.outcome = "answered" if call.answered_at is not None else None
    session.commit()
    _hang_up(*legs)
    try:
        _telephony().redirect_call(call.call_sid, external_url("transfers.offer"))
    except TelephonyError as exc:
        log.error("could not move %s to the offer: %s", call.call_sid, exc)


# ------------------------------------------------------------ agent actions (the API)

def _agent_call(session, agent: Agent) -> Call:
    if agent.current_call_id is None:
        raise TransferRefused(409, "agent not on a call", f"{agent.name} has no call now")
    call = session.get(Call, agent.current_call_id)
    if callback_of(session, call.id) is not None:
        # The live leg is the service's outbound call, not the caller's (ended) inbound one.
        raise TransferRefused(409, "callback conversation",
                              "a callback conversation cannot be transferred; schedule a "
                              "callback or give the caller the unit's number")
    return call


def _claim(session, call: Call) -> None:
    """Compare-and-set ``connected`` → ``transferring``: one transfer at a time."""
    took = session.execute(
        update(Call).where(Call.id == call.id, Call.status == "connected")
        .values(status="transferring")
        .execution_options(synchronize_session="fetch")).rowcount
    if took != 1:
        raise TransferRefused(409, "call not connected",
                              f"the call is {call.status}; only a call in conversation is "
                              "transferred")


def transfer(session, agent: Agent, unit_code: object, mode: object, *,
             escalated: bool = False) -> Call:
    """The agent transfers their call to the unit ``unit_code``, ``blind`` or ``warm``.

    Commits; raises TransferRefused (nothing changed, unless its detail says otherwise):
    422 unknown unit or mode, 409 the agent is on no call or it is not in conversation, 502 the
    provider refused.
    """
    if mode not in MODES:
        raise TransferRefused(422, "unknown mode", f"mode is one of {', '.join(MODES)}")
    target = session.scalar(select(Unit).where(Unit.code == unit_code)) \
        if isinstance(unit_code, str) else None
    if target is None:
        raise TransferRefused(422, "unknown unit", f"no unit {unit_code!r} in the configuration")
    call = _agent_call(session, agent)
    _claim(session, call)
    call.unit_id, call.transfer_kind, call.transfer_result = target.id, mode, None
    call.escalated = call.escalated or escalated
    if mode == "blind":
        return _blind(session, call, external_url("transfers.unit"))
    return _warm(session, call, agent, target)


def escalate(session, agent: Agent, config: LineConfig, mode: object = None) -> Call:
    """The agent escalates a complaint along the line's ``escalation`` route (see transfer)."""
    route = config.escalation
    if route is None:
        raise TransferRefused(409, "no escalation route",
                              "the line's configuration has no 'escalation' section")
    if route.unit is not None:
        return transfer(session, agent, route.unit, route.mode if mode is None else mode,
                        escalated=True)
    if mode not in (None, "blind"):
        raise TransferRefused(422, "unknown mode", "an escalation to a queue is blind")
    target = session.scalar(select(Queue).where(Queue.name == route.queue))
    if target is None:
        raise TransferRefused(409, "no escalation route", f"queue {route.queue!r} is not loaded")
    if config.unstaffed == "overflow" and not acd.staffed(session, target.name):
        raise TransferRefused(409, "escalation queue unstaffed",
                              f"nobody who serves {target.name} is logged in")
    call = _agent_call(session, agent)
    _claim(session, call)
    call.transfer_kind, call.transfer_result, call.escalated = "queue", None, True
    return _blind(session, call, external_url("transfers.queue", queue=target.name))


def _blind(session, call: Call, url: str) -> Call:
    """Hand the caller over at once: the agent's part ends, the caller is redirected to ``url``.

    The redirect is sent before the commit, so a refusal changes nothing; the provider's
    request for ``url`` waits for the commit (it updates the same call row).
    """
    call.transfer_state, call.transferred_at = "dialling", now()
    _talk_ends(session, call, now())
    session.flush()
    try:
        _telephony().redirect_call(call.call_sid, url)
    except TelephonyError as exc:
        raise TransferRefused(502, "provider request failed", str(exc)) from exc
    session.commit()
    return call


def _warm(session, call: Call, agent: Agent, target: Unit) -> Call:
    """Caller to their room (holding), then the unit and the agent into the consultation room."""
    client = _telephony()
    call.transfer_state = "consulting"
    call.conference = f"transfer-{call.id}-{secrets.token_hex(4)}"
    call.agent_leg_sid = call.unit_leg_sid = None
    session.flush()
    try:
        client.redirect_call(call.call_sid, external_url("transfers.room"))
    except TelephonyError as exc:
        raise TransferRefused(502, "provider request failed", str(exc)) from exc
    consult = call.conference + "-consult"
    line = call.to_number or call.from_number

    def leg_url(role: str) -> str:
        return external_url("transfers.leg_status", call=call.call_sid, role=role)

    try:
        call.unit_leg_sid = client.add_conference_participant(
            consult, from_=line, to=target.phone_number, label="unit",
            status_callback=leg_url("unit"), timeout=UNIT_RING_SECONDS, early_media=True)
    except TelephonyError as exc:
        # Nobody to consult: the agent joins the caller's room instead.
        log.warning("warm transfer of %s: dialling the unit failed: %s", call.call_sid, exc)
        call.transfer_state, call.transfer_result, call.status = "returned", "failed", "connected"
        consult, detail = call.conference, "the unit could not be dialled; you are put back " \
                                           "through to the caller"
    else:
        detail = None
    try:
        call.agent_leg_sid = client.add_conference_participant(
            consult, from_=line, to=_agent_address(agent), label="agent",
            status_callback=leg_url("agent"), timeout=current_app.config["AGENT_RING_SECONDS"],
            end_conference_on_exit=call.transfer_state == "returned")
    except TelephonyError as exc:
        log.warning("warm transfer of %s: calling the agent back failed: %s", call.call_sid, exc)
        _fall_through(session, call, "agent-failed")
        raise TransferRefused(502, "provider request failed",
                              "the agent could not be called back; the caller was offered an "
                              "adviser or a callback") from exc
    session.commit()
    if detail:
        raise TransferRefused(502, "provider request failed", detail)
    return call


def _agent_address(agent: Agent) -> str:
    return f"client:{agent.endpoint}" if agent.endpoint_kind == "client" else agent.endpoint


def _warm_in_progress(session, agent: Agent) -> Call:
    call = _agent_call(session, agent)
    if call.status != "transferring" or call.transfer_kind != "warm" \
            or call.transfer_state != "consulting":
        raise TransferRefused(409, "no warm transfer in progress",
                              "complete or cancel applies while the agent consults the unit")
    return call


def complete(session, agent: Agent) -> Call:
    """The agent hands the caller to the unit they consulted (the unit must have answered)."""
    call = _warm_in_progress(session, agent)
    if call.transfer_result != "answered":
        raise TransferRefused(409, "unit has not answered",
                              "wait for the unit to answer, or cancel the transfer")
    if not _hand_over(session, call):
        raise TransferRefused(502, "provider request failed",
                              "the unit's leg could not be moved to the caller")
    return call


def cancel(session, agent: Agent) -> Call:
    """The agent goes back to the caller; the unit's leg is ended."""
    call = _warm_in_progress(session, agent)
    unit_leg = call.unit_leg_sid
    call.transfer_state, call.transfer_result, call.status = "returned", "canceled", "connected"
    session.flush()
    try:
        _telephony().redirect_call(call.agent_leg_sid,
                                   external_url("transfers.join", call=call.call_sid, role="agent"))
    except TelephonyError as exc:
        raise TransferRefused(502, "provider request failed", str(exc)) from exc
    session.commit()
    _hang_up(unit_leg)
    return call


def describe(session, call: Call) -> dict:
    """The call's transfer as the API reports it."""
    target = session.get(Unit, call.unit_id) \
        if call.unit_id is not None and call.transfer_kind in MODES else None
    return {"call_sid": call.call_sid, "transfer": {
        "kind": call.transfer_kind, "state": call.transfer_state, "result": call.transfer_result,
        "unit": target.code if target is not None else None, "escalated": call.escalated,
        "transferred_at": call.transferred_at.isoformat() if call.transferred_at else None}}
