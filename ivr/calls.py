"""Call-log domain functions: upsert by CallSid, status changes, queue entry, sweeping stale calls.

All take the session first and ``now`` (aware UTC); none commits. Callbacks arrive twice,
late and out of order, so every function is idempotent and an ended call stays ended.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from db import UTCDateTime
from ivr.models import Call
from line_config import normalise_number
from recording.callbacks import close_open_pauses
from routing import dispatch as acd
from routing.models import Callback, Queue

# Provider event times further than this from our clock are not believed (seconds).
TRUSTED_CLOCK_SKEW = 3600
FINAL_PROVIDER_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


# One statement for the busiest webhook: the same SQL on PostgreSQL and SQLite, compiled once.
_RECORD_ARRIVAL = text("""
    INSERT INTO calls (call_sid, from_number, to_number, arrived_at, last_event_at, status,
                       priority, no_input_count, invalid_input_count, closed_by_sweep, source)
    VALUES (:call_sid, :from_number, :to_number, :now, :now, 'ivr', 0, 0, 0, :false, :source)
    ON CONFLICT (call_sid) DO UPDATE SET last_event_at = CASE
        WHEN excluded.last_event_at > calls.last_event_at THEN excluded.last_event_at
        ELSE calls.last_event_at END
""").bindparams(bindparam("now", type_=UTCDateTime), bindparam("false", value=False))


def record_arrival(session: Session | Connection, call_sid: str, now: datetime, *, from_number: str = "",
                   to_number: str = "", source: str = "live") -> None:
    """Log an incoming call (arrived at ``now``) in one statement; a repeated webhook only
    moves ``last_event_at`` forward. Use :func:`upsert_call` when the row is needed."""
    session.execute(_RECORD_ARRIVAL, {"call_sid": call_sid, "from_number": from_number[:64],
                                      "to_number": to_number[:64], "now": now, "source": source})


def upsert_call(session: Session, call_sid: str, now: datetime, *, from_number: str = "",
                to_number: str = "", source: str = "live") -> Call:
    """Return the call with ``call_sid``, creating it (arrived at ``now``) if this is its first event.

    Safe when two requests for a new CallSid race on several workers (insert on conflict
    update). Moves ``last_event_at`` forward, never back.
    """
    record_arrival(session, call_sid, now, from_number=from_number, to_number=to_number,
                   source=source)
    return session.scalar(select(Call).where(Call.call_sid == call_sid))


def find_call(session: Session, call_sid: str) -> Call | None:
    """Return the call with ``call_sid`` or None."""
    return session.scalar(select(Call).where(Call.call_sid == call_sid))


def leave_ivr(call: Call, now: datetime) -> None:
    """Stamp the moment the caller left the menus (first time only)."""
    if call.ivr_exited_at is None:
        call.ivr_exited_at = now


# Repeat contacts (FCR): every offered call of an identified caller keeps the queue entry of
# that caller's next offered call at a later time, ``next_offer_at``. Scheduled callbacks are
# the agency's contacts, never a caller's repeat, and calls at the same instant are not each
# other's next.
_NEXT_AFTER = """(SELECT MIN(later.queue_entered_at) FROM calls AS later
        WHERE later.caller_key = calls.caller_key AND later.source <> 'callback'
          AND later.queue_entered_at > calls.queue_entered_at)"""

# A new offer at :at: earlier calls whose next is unknown or later learn it is this one, and
# the new call learns its own next if one was committed before it (two offers racing).
_LINK_REPEAT = text("""
    UPDATE calls SET next_offer_at = :at
    WHERE caller_key = :caller_key AND queue_entered_at < :at AND source <> 'callback'
      AND (next_offer_at IS NULL OR next_offer_at > :at)
""").bindparams(bindparam("at", type_=UTCDateTime))
_LINK_OWN_NEXT = text(f"""
    UPDATE calls SET next_offer_at = {_NEXT_AFTER} WHERE id = :call_id
""")
# An offer withdrawn (a canceled callback contact): the calls that pointed at it look again.
_UNLINK_REPEAT = text(f"""
    UPDATE calls SET next_offer_at = {_NEXT_AFTER}
    WHERE caller_key = :caller_key AND next_offer_at = :at AND source <> 'callback'
""").bindparams(bindparam("at", type_=UTCDateTime))

# Recompute next_offer_at wherever it differs from the caller's actual next offer (after an
# import, which may bring calls older than or between those already logged, or a migration).
# {since} is empty, or a lower bound on the calls' queue entry (later offers are all after it,
# so limiting both the calls and their candidates changes nothing for the calls it keeps).
_FILL_SQLITE = f"""
    UPDATE calls SET next_offer_at = {_NEXT_AFTER}
    WHERE caller_key IS NOT NULL AND queue_entered_at IS NOT NULL{{since}}
      AND source <> 'callback' AND next_offer_at IS NOT {_NEXT_AFTER}
"""
# The same on PostgreSQL in one pass: a window over each caller's offers instead of a probe
# per call (10 million calls: one sort instead of 10 million index look-ups). The frame is the
# following offers without the current instant's peers: the next *later* offer.
_FILL_POSTGRESQL = """
    UPDATE calls SET next_offer_at = later.next_offer_at
    FROM (SELECT id, MIN(queue_entered_at) OVER (
                     PARTITION BY caller_key ORDER BY queue_entered_at
                     RANGE BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING EXCLUDE GROUP
                 ) AS next_offer_at
          FROM calls
          WHERE caller_key IS NOT NULL AND queue_entered_at IS NOT NULL{since}
            AND source <> 'callback') AS later
    WHERE calls.id = later.id AND calls.next_offer_at IS DISTINCT FROM later.next_offer_at
"""
_SINCE = " AND queue_entered_at >= :since"
FILL_NEXT_OFFER = _FILL_SQLITE.format(since="")
FILL_NEXT_OFFER_POSTGRESQL = _FILL_POSTGRESQL.format(since="")


def link_repeat_contact(session: Session, call: Call) -> None:
    """``call`` (from an identified caller) was just offered: it becomes the next offer of
    the caller's earlier calls that had none or a later one, and learns its own next offer if
    a later one exists already. Two probes on the caller's index."""
    session.flush()
    session.execute(_LINK_REPEAT, {"caller_key": call.caller_key, "at": call.queue_entered_at})
    session.execute(_LINK_OWN_NEXT, {"call_id": call.id})
    session.expire(call, ["next_offer_at"])


def unlink_repeat_contact(session: Session, caller_key: str | None, at: datetime) -> None:
    """The offer of ``caller_key`` at ``at`` (UTC) no longer counts (its queue entry was
    cleared): the calls that had it as their next offer find their next one again."""
    if caller_key:
        session.execute(_UNLINK_REPEAT, {"caller_key": caller_key, "at": at})


def fill_next_offers(session: Session, since: datetime | None = None) -> int:
    """Make ``next_offer_at`` right on every offered call of an identified caller (the
    earliest later offer of the same caller, scheduled callbacks excluded), or only on calls
    offered from ``since`` (UTC) on; returns the rows changed. Idempotent.

    Run after an import (all calls), and from cron over the last days (``flask calls
    relink``): two offers of one number racing on two lines can each commit without seeing
    the other, which leaves the earlier one unlinked until then.
    """
    template = (_FILL_POSTGRESQL if session.get_bind().dialect.name == "postgresql"
                else _FILL_SQLITE)
    if since is None:
        return session.execute(text(template.format(since=""))).rowcount or 0
    statement = text(template.format(since=_SINCE)).bindparams(bindparam("since", type_=UTCDateTime))
    return session.execute(statement, {"since": since}).rowcount or 0


def enter_queue(session: Session, call: Call, queue: Queue, now: datetime, *,
                place: datetime | None = None) -> None:
    """Put the call in ``queue``; the wait starts now unless it already started earlier.

    ``place`` is an earlier entry time the caller keeps (their canceled callback's place): the
    call is served as if it had entered then, while its own wait still starts now.
    """
    if call.status == "ended":
        return
    leave_ivr(call, now)
    call.queue_id = queue.id
    call.language = call.language or queue.language
    call.topic = call.topic or queue.topic
    if call.queue_entered_at is None:
        call.queue_entered_at = now
        # Only offered calls take part in repeat-contact FCR, so the number is parsed here and
        # not on the incoming-call webhook.
        call.caller_key = normalise_number(call.from_number)
        if call.caller_key is not None and call.source != "callback":
            link_repeat_contact(session, call)
    call.status = "queued"
    entered_at = call.queue_entered_at if place is None else min(place, call.queue_entered_at)
    acd.enqueue(session, call_id=call.id, queue=queue, priority=call.priority,
                entered_at=entered_at)


def mark_offered(session: Session, call_ids: list[int]) -> list[Call]:
    """Mark calls that dispatch just offered to an agent as ringing (``connecting``); return them."""
    calls = list(session.scalars(select(Call).where(Call.id.in_(call_ids)))) if call_ids else []
    for call in calls:
        if call.status == "queued":
            call.status = "connecting"
    return calls


def agent_answered(session: Session, call: Call, now: datetime) -> None:
    """The offered agent picked up: the wait ends now (or ended at an earlier answer of the
    same call). Repeated notices change nothing."""
    if call.status != "connecting":
        return
    agent_id = acd.offer_answered(session, call.id, now)
    call.agent_id = agent_id
    # A caller back in the queue after a conversation (a unit did not answer a transfer) keeps
    # the first answer: their wait ended then.
    call.answered_at = call.answered_at or now
    call.status = "connected"


MAX_TALK_SECONDS = 24 * 3600


def agent_leg_ended(session: Session, call: Call, dial_status: str, duration: int | None,
                    now: datetime, *, wrap_up_seconds: float = 0) -> str:
    """Handle the end of the caller's ``<Dial>`` to an agent; return ``done``, ``requeue`` or ``ignored``.

    ``completed`` means the agent talked to the caller for ``duration`` seconds: the call is
    answered (if the answer notice never came, the answer time is derived from the duration, never
    before the queue entry) and the agent goes to wrap-up. Any other status (busy, no-answer,
    failed, canceled) puts the caller back in the queue in their original place. A report
    for a call that was not ringing or talking to an agent, or a repeated one, is ``ignored``;
    a duration outside 0…24 h is not stored.
    """
    if duration is not None and not 0 <= duration <= MAX_TALK_SECONDS:
        duration = None
    if dial_status == "completed":
        if call.status not in ("connecting", "connected") or call.outcome == "answered":
            return "ignored"
        if call.status == "connecting":  # the answer notice never came: the offer ends here
            call.agent_id = acd.offer_answered(session, call.id, now) or call.agent_id
        if call.answered_at is None:
            derived = now - timedelta(seconds=duration or 0)
            call.answered_at = max(derived, call.queue_entered_at or derived)
        call.status = "connected"
        call.outcome = "answered"
        if duration is not None:  # added to an earlier conversation of the same call, if any
            call.talk_seconds = (call.talk_seconds or 0) + duration
        if call.agent_id is not None:
            acd.call_finished(session, call.agent_id, call.id, now, wrap_up_seconds=wrap_up_seconds)
        return "done"
    if call.status != "connecting":
        return "ignored"
    acd.offer_declined(session, call.id, now)
    call.status = "queued"
    return "requeue"


def end_call(session: Session, call: Call, ended_at: datetime, now: datetime, *,
             wrap_up_seconds: float = 0) -> bool:
    """Close the call at ``ended_at``; return False if it had already ended (duplicate or late).

    The outcome follows from where the call was: in the menus → ``ivr_abandoned`` (unless it
    was told the line is closed), waiting or ringing an agent → ``abandoned``, talking →
    ``answered`` (talk time from the answer if the agent leg never reported it), at a unit →
    ``transferred``. Frees the ACD entry and any agent still tied to the call, and closes a
    recording pause that was never resumed.
    """
    if call.status in ("ended", "callback"):
        return False  # a caller waiting for a callback hung up on purpose: the contact is open
    if call.status == "ivr":
        call.outcome = call.outcome or "ivr_abandoned"
    elif call.status == "closing":
        pass  # out_of_hours, referred or no_agent, set when the final message was given
    elif call.status in ("queued", "connecting"):
        call.outcome = "abandoned"
        acd.leave_queue(session, call.id, now)
    elif call.status == "connected":
        call.outcome = "answered"
        if call.talk_seconds is None and call.answered_at is not None:
            call.talk_seconds = max(0, int((ended_at - call.answered_at).total_seconds()))
        if call.agent_id is not None:
            acd.call_finished(session, call.agent_id, call.id, now,
                              wrap_up_seconds=wrap_up_seconds)
    elif call.status == "transferring":
        call.outcome = call.outcome or "transferred"
    call.status = "ended"
    # A provider clock a little behind ours must not end the call before it began.
    call.ended_at = max(t for t in (ended_at, call.arrived_at, call.queue_entered_at,
                                    call.answered_at) if t is not None)
    close_open_pauses(session, call.call_sid, call.ended_at)  # a pause never resumed ends here
    return True


def apply_status_callback(session: Session, call: Call, provider_status: str,
                          now: datetime, timestamp: datetime | None = None, *,
                          wrap_up_seconds: float = 0) -> bool:
    """Record a status callback; a final status ends the call. Returns True if the call changed state.

    ``timestamp`` is the provider's event time (UTC) when it sent one; the end time is that, or
    ``now``. Statuses after the end, and duplicates, change nothing.
    """
    if call.status == "ended":
        return False
    call.provider_status = provider_status[:16]
    if provider_status in FINAL_PROVIDER_STATUSES:
        if timestamp is not None and abs((timestamp - now).total_seconds()) > TRUSTED_CLOCK_SKEW:
            timestamp = None  # an implausible provider time: our own clock is better
        return end_call(session, call, timestamp or now, now, wrap_up_seconds=wrap_up_seconds)
    return False


def close_stale(session: Session, now: datetime, older_than: timedelta, *,
                limit: int = 1000) -> list[Call]:
    """Close calls whose final status never came: no event for ``older_than``. Returns them.

    Calls waiting for a callback are not stale: their callback closes them.

    Each is ended at its last known event: the latest of its last webhook and, for an answered
    call, the answer time plus the talk time reported by the agent leg.
    """
    stale = list(session.scalars(
        select(Call).where(Call.status.not_in(("ended", "callback")),
                           Call.last_event_at < now - older_than)
        .order_by(Call.id).limit(limit)))
    for call in stale:
        last = call.last_event_at
        if call.answered_at is not None and call.talk_seconds is not None:
            last = max(last, call.answered_at + timedelta(seconds=call.talk_seconds))
        end_call(session, call, last, now)
        call.closed_by_sweep = True
        for callback in session.scalars(select(Callback).where(
                Callback.call_id == call.id, Callback.state.in_(("pending", "dialing", "connected")))):
            callback.state, callback.closed_at, callback.last_result = "failed", now, "stale"
    return stale


def recent_answer_rate(session: Session, queue_id: int, now: datetime, *,
                       window_seconds: int = 1800, minimum: int = 3) -> float | None:
    """Calls answered per second in the queue over the last ``window_seconds`` (the queue's
    recent speed of answer), or None with fewer than ``minimum`` answers (too little to say)."""
    answered = session.scalar(
        select(func.count()).select_from(Call)
        .where(Call.queue_id == queue_id, Call.answered_at > now - timedelta(seconds=window_seconds),
               Call.answered_at <= now)) or 0
    return answered / window_seconds if answered >= minimum else None
