"""Callbacks: a caller's place kept in the queue (virtual hold), and callbacks at an agreed time.

A callback waits in the ACD as a queue entry like a caller on the line, so it is served in the
same order (priority, then original entry time) by the same atomic dispatch. When dispatch
reserves an agent for it, the edge dials the caller (:func:`start_attempt` before, the REST call
after the commit) and connects them to the reserved agent when they answer. A failed attempt
frees the agent and puts the callback back in its place, to be tried again after a delay; after
the last attempt the contact ends unanswered.

Every function takes the session first and ``now`` (aware UTC) where time matters; none commits.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import phonenumbers

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ivr.calls import link_repeat_contact, unlink_repeat_contact
from ivr.models import Call
from line_config import e164, normalise_number
from routing.agents import record_state
from routing.models import Agent, Callback, Queue, QueueEntry

# Calls waiting for their callback have this status; the caller's own line has ended.
WAITING_FOR_CALLBACK = "callback"
OPEN_STATES = ("pending", "dialing", "connected")


class CallbackRefused(ValueError):
    """A callback cannot be arranged as asked; the message says why."""


_CALLABLE_TYPES = frozenset({phonenumbers.PhoneNumberType.MOBILE,
                             phonenumbers.PhoneNumberType.FIXED_LINE,
                             phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
                             phonenumbers.PhoneNumberType.VOIP,
                             phonenumbers.PhoneNumberType.PERSONAL_NUMBER})


def callable_number(digits: str, region: str = "EE") -> str | None:
    """Return keypad-entered ``digits`` as an E.164 number we may call back, or None.

    National (``51234567``) and international (``00358…``) forms are read with ``region``'s
    rules (phonenumbers); the number must be valid and a mobile, fixed-line, VoIP or personal
    number: premium-rate, shared-cost and unknown kinds are refused.
    """
    if not digits or not digits.isdigit():
        return None
    try:
        number = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number) \
            or phonenumbers.number_type(number) not in _CALLABLE_TYPES:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def request_keep_place(session: Session, call: Call, *, number: str, queue: Queue,
                       now: datetime, not_before: datetime | None = None) -> Callback:
    """The caller of ``call`` asks to be called back on ``number`` (E.164) instead of waiting.

    The call keeps its queue entry, and with it its place; a caller who was not in a queue yet
    (no agent logged in, line closed) gets an entry in ``queue`` whose wait starts at
    ``not_before`` (the next opening) or now. The call's status becomes ``callback``: the
    caller's line ends but the contact stays open until the callback connects or fails.
    Returns the callback; a second request for the same call returns the first.
    """
    existing = session.scalar(select(Callback).where(Callback.call_id == call.id))
    if existing is not None:
        return existing
    # The same caller asked before (an earlier call): that request is replaced, not doubled,
    # and its place is kept if it was earlier.
    earlier = cancel_for_caller(session, number, now)
    start = not_before or now
    callback = Callback(kind="keep_place", call_id=call.id, number=number, queue_id=queue.id,
                        state="pending", due_at=start, attempts=0, created_at=now)
    session.add(callback)
    session.flush()
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call.id))
    if entry is None:
        if call.queue_entered_at is None:
            call.queue_entered_at = start
            call.caller_key = normalise_number(call.from_number)
            if call.caller_key is not None:
                link_repeat_contact(session, call)
        if call.ivr_exited_at is None:
            call.ivr_exited_at = now
        entry = QueueEntry(call_id=call.id, queue_id=queue.id, priority=call.priority,
                           entered_at=call.queue_entered_at, state="waiting")
        session.add(entry)
    if earlier is not None and earlier < entry.entered_at:
        entry.entered_at = earlier
    elif entry.state == "offered":
        _release_agent(session, call.id, now, reason="caller_chose_callback")
        entry.state, entry.agent_id, entry.offered_at = "waiting", None, None
    call.queue_id = entry.queue_id if entry.queue_id is not None else queue.id
    callback.queue_id = call.queue_id
    entry.callback_id = callback.id
    entry.not_before = not_before
    call.status = WAITING_FOR_CALLBACK
    session.flush()
    return callback


def schedule(session: Session, *, number: str, queue: Queue, due_at: datetime,
             now: datetime, agent_id: int | None = None, requested_by: int | None = None,
             origin: Call | None = None, language: str | None = None) -> Callback:
    """An agent agreed with a caller to call them on ``number`` (E.164) at ``due_at`` (UTC).

    A new contact (call row, source ``callback``) is logged for the same caller and linked to
    ``origin``, their earlier call; it waits in ``queue`` from ``due_at`` on, reserved for
    ``agent_id`` if given (the agent who agreed it). Raises CallbackRefused if ``due_at`` is in
    the past or the number already has an open callback.
    """
    if due_at < now:
        raise CallbackRefused("the agreed time is in the past")
    if session.scalar(select(Callback.id).where(Callback.number == number,
                                                Callback.state.in_(OPEN_STATES))) is not None:
        raise CallbackRefused(f"{number} already has an open callback")
    call = Call(call_sid=f"CB{secrets.token_hex(16)}", from_number=number, to_number="",
                language=language or queue.language, topic=queue.topic, queue_id=queue.id,
                status=WAITING_FOR_CALLBACK, arrived_at=due_at, ivr_exited_at=due_at,
                queue_entered_at=due_at, last_event_at=now, source="callback", priority=0,
                caller_key=normalise_number(number),
                no_input_count=0, invalid_input_count=0)
    session.add(call)
    session.flush()
    callback = Callback(kind="scheduled", call_id=call.id, number=number, queue_id=queue.id,
                        state="pending", due_at=due_at, attempts=0, created_at=now,
                        requested_by_agent_id=requested_by,
                        origin_call_id=origin.id if origin is not None else None)
    session.add(callback)
    session.flush()
    session.add(QueueEntry(call_id=call.id, queue_id=queue.id, priority=0, entered_at=due_at,
                           state="waiting", callback_id=callback.id, not_before=due_at,
                           reserved_agent_id=agent_id))
    session.flush()
    return callback


def start_attempt(session: Session, callback_id: int, now: datetime) -> Callback | None:
    """Dispatch reserved an agent for the callback: count the attempt and mark it dialing.

    Returns the callback, or None if it is no longer pending (then nothing is dialled).
    """
    callback = session.get(Callback, callback_id)
    if callback is None or callback.state != "pending":
        return None
    callback.state = "dialing"
    callback.attempts += 1
    callback.last_attempt_at = now
    callback.outbound_call_sid = None
    call = session.get(Call, callback.call_id)
    call.status = "connecting"
    call.last_event_at = max(call.last_event_at, now)
    session.flush()
    return callback


def lost_dials(session: Session, now: datetime, *, older_than: float = 120) -> list[Callback]:
    """Callbacks marked ``dialing`` ``older_than`` seconds ago or earlier whose outbound call
    never got a CallSid: the process died between committing the attempt and asking the
    provider. Returns them (locked); the caller passes each to :func:`attempt_failed`."""
    stmt = (select(Callback).where(Callback.state == "dialing",
                                   Callback.outbound_call_sid.is_(None),
                                   Callback.last_attempt_at <= now - timedelta(seconds=older_than))
            .order_by(Callback.id).limit(100))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(session.scalars(stmt))


def dialled(session: Session, callback: Callback, outbound_call_sid: str) -> None:
    """The provider accepted the outbound call: remember its CallSid."""
    if callback.outbound_call_sid is None:
        callback.outbound_call_sid = outbound_call_sid[:64]
        session.flush()


def attempt_failed(session: Session, callback: Callback, result: str, now: datetime, *,
                   retry_seconds: float, max_attempts: int) -> str:
    """The caller did not answer (``result``: busy, no-answer, failed, …) or the dial failed.

    The reserved agent is free again (keeping their idle position: not their failure). The
    callback goes back to its place and is tried again ``retry_seconds`` later; after
    ``max_attempts`` attempts, or if the caller is already on a new call to us, it is closed
    (``failed`` or ``canceled``) and the contact ends unanswered. Returns ``retry``, ``failed``
    or ``canceled``.
    """
    if callback.state not in ("dialing", "connected"):
        return callback.state
    call = session.get(Call, callback.call_id)
    _release_agent(session, call.id, now, reason="callback_not_answered")
    if call.status == "ended":  # closed meanwhile (the stale-call sweep): nothing to retry
        callback.state, callback.closed_at, callback.last_result = "failed", now, result[:32]
        session.flush()
        return "failed"
    callback.last_result = result[:32]
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call.id))
    if _caller_is_on_a_new_call(session, callback):
        return _close(session, callback, call, entry, now, "canceled", "called_again")
    if callback.attempts >= max_attempts:
        return _close(session, callback, call, entry, now, "failed", "callback_failed")
    callback.state = "pending"
    call.status = WAITING_FOR_CALLBACK
    if entry is not None:
        entry.state, entry.agent_id, entry.offered_at = "waiting", None, None
        entry.not_before = now + timedelta(seconds=retry_seconds)
    session.flush()
    return "retry"


def agent_missed(session: Session, callback: Callback, now: datetime) -> None:
    """The caller answered but the reserved agent did not: the caller is told, the agent is set
    not ready (as for any missed offer, by the caller's webhook) and the callback is tried
    again at once with the next agent; the attempt does not count against the caller."""
    if callback.state not in ("dialing", "connected"):
        return
    callback.state = "pending"
    callback.attempts = max(0, callback.attempts - 1)
    callback.last_result = "agent_missed"
    call = session.get(Call, callback.call_id)
    call.status = WAITING_FOR_CALLBACK
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call.id))
    if entry is not None:
        entry.not_before = None
    session.flush()


def finish(session: Session, callback: Callback, now: datetime) -> None:
    """The callback conversation ended: the callback is done."""
    if callback.state in OPEN_STATES:
        callback.state, callback.closed_at = "done", now
        session.flush()


def cancel_for_caller(session: Session, number: str | None, now: datetime) -> datetime | None:
    """A caller with a pending keep-place callback called again: cancel it so they are not
    called twice (a callback at an agreed time stays).

    Returns the earliest queue entry time of the canceled callbacks (the new call takes that
    place), or None if there were none. Callbacks being dialled are left alone: the caller's
    line is busy with this call, so that attempt fails and is closed then.
    """
    if number is None:
        return None
    pending = list(session.scalars(select(Callback).where(Callback.number == number,
                                                          Callback.kind == "keep_place",
                                                          Callback.state == "pending")
                                   .with_for_update()))
    earliest = None
    for callback in pending:
        call = session.get(Call, callback.call_id)
        entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call.id))
        if entry is not None and callback.kind == "keep_place":
            earliest = entry.entered_at if earliest is None else min(earliest, entry.entered_at)
        _close(session, callback, call, entry, now, "canceled", "called_again")
    return earliest


def cancel(session: Session, callback: Callback, now: datetime) -> bool:
    """Cancel a pending callback (not yet being dialled). Returns False if it is not pending.

    A scheduled callback canceled before its time was never offered: its contact is removed
    from the offered calls (no queue entry time) rather than counted as abandoned.
    """
    if callback.state != "pending":
        return False
    # Compare-and-set: only a callback still waiting (not reserved by a dispatch that is
    # committing at this moment: its row lock makes this wait, then find it offered).
    taken = session.execute(
        delete(QueueEntry).where(QueueEntry.callback_id == callback.id,
                                 QueueEntry.state == "waiting")
        .execution_options(synchronize_session="fetch")).rowcount
    took = session.execute(
        update(Callback).where(Callback.id == callback.id, Callback.state == "pending")
        .values(state="canceled", closed_at=now)
        .execution_options(synchronize_session="fetch")).rowcount
    if taken != 1 or took != 1:
        return False
    call = session.get(Call, callback.call_id)
    _close(session, callback, call, None, now, "canceled", "canceled")
    return True


def _caller_is_on_a_new_call(session: Session, callback: Callback) -> bool:
    return session.scalar(
        select(Call.id).where(Call.from_number == callback.number, Call.id != callback.call_id,
                              Call.status.in_(("ivr", "queued", "connecting", "connected")))
        .limit(1)) is not None


def _close(session: Session, callback: Callback, call: Call, entry: QueueEntry | None,
           now: datetime, state: str, outcome: str) -> str:
    """Close the callback and its contact. A canceled one (the caller called again, or it was
    called off) is not an offered call: metrics.md counts a callback never answered as
    abandoned only if the caller could not be reached."""
    callback.state, callback.closed_at = state, now
    if entry is not None:
        session.delete(entry)
    if call.status != "ended":
        call.status, call.outcome, call.ended_at = "ended", outcome, now
        if state == "canceled":
            withdrawn, call.queue_entered_at = call.queue_entered_at, None
            if withdrawn is not None and call.source != "callback":
                session.flush()
                unlink_repeat_contact(session, call.caller_key, withdrawn)
    session.flush()
    return state


def _release_agent(session: Session, call_id: int, now: datetime, *, reason: str) -> None:
    """Free an agent reserved (``offered``) for ``call_id``, keeping their idle position."""
    agent = session.scalar(select(Agent).where(Agent.current_call_id == call_id))
    if agent is None or agent.state != "offered":
        return
    agent.state, agent.current_call_id, agent.state_changed_at = "available", None, now
    if agent.idle_since is None:
        agent.idle_since = now
    record_state(session, agent.id, "available", now, reason=reason, call_id=call_id)
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
    if entry is not None and entry.agent_id == agent.id:
        entry.state, entry.agent_id, entry.offered_at = "waiting", None, None
    session.flush()


def callback_of(session: Session, call_id: int) -> Callback | None:
    """Return the callback of the contact ``call_id``, or None."""
    return session.scalar(select(Callback).where(Callback.call_id == call_id))
