"""Dispositions (the agent's outcome of a call) and caller feedback: domain rules, no Flask.

An agent who handled a call records its **disposition**, one of :data:`DISPOSITIONS`, on the call
row (``calls.disposition``, ``disposition_agent_id``, ``disposition_at``); recording it again
overwrites it with the latest. Disposition FCR (metrics.md, "First-contact resolution" #2) is the
share of answered calls marked ``resolved``.

When the caller gave feedback, the agent records its category (:data:`FEEDBACK_CATEGORIES`) and a
short note (at most :data:`MAX_NOTE_LENGTH` characters) as a :class:`ivr.models.CallFeedback`
row; it stays on the supervisors' list until one of them marks it reviewed.

Functions take the session first and ``now`` (aware UTC) where time matters; none commits
(the API edge owns the transaction).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, exists, func, select, update
from sqlalchemy.orm import Session, aliased

from ivr.models import Call, CallFeedback
from routing.models import Agent, AgentStateChange, Queue

DISPOSITIONS = ("resolved", "callback_promised", "transferred", "referred", "escalated")
FEEDBACK_CATEGORIES = ("complaint", "suggestion", "wish", "praise", "thanks")
MAX_NOTE_LENGTH = 500
# States of an agent's history that mean the agent was on the call (talking or after-call work).
HANDLING_STATES = ("busy", "wrap_up")


class DispositionError(ValueError):
    """Bad input: ``field`` names the offending field, the message says what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def handled_by(session: Session, call: Call, agent_id: int) -> bool:
    """True if agent ``agent_id`` handled ``call``: it is the call's agent (``calls.agent_id``), or
    the agent's state history has them talking to it or in its wrap-up (``busy`` / ``wrap_up``
    with the call's id), e.g. the first agent of a call transferred to a queue."""
    if call.agent_id == agent_id:
        return True
    return bool(session.scalar(select(exists().where(
        AgentStateChange.agent_id == agent_id, AgentStateChange.call_id == call.id,
        AgentStateChange.state.in_(HANDLING_STATES)))))


def check_disposition(value: object) -> str:
    """Return ``value`` if it is one of :data:`DISPOSITIONS`; raise DispositionError otherwise."""
    if not isinstance(value, str) or value not in DISPOSITIONS:
        raise DispositionError("disposition", f"disposition must be one of {', '.join(DISPOSITIONS)}")
    return value


def check_feedback(category: object, note: object) -> tuple[str, str]:
    """Validate feedback: return ``(category, note)`` with the note stripped ('' if None).

    Raises DispositionError (field ``category``) unless ``category`` is one of
    :data:`FEEDBACK_CATEGORIES`, and (field ``note``) if ``note`` is not a string, holds a NUL
    character, or is longer than :data:`MAX_NOTE_LENGTH` characters after stripping.
    """
    if not isinstance(category, str) or category not in FEEDBACK_CATEGORIES:
        raise DispositionError("category",
                               f"feedback category must be one of {', '.join(FEEDBACK_CATEGORIES)}")
    if note is None:
        note = ""
    if not isinstance(note, str):
        raise DispositionError("note", "the note must be a string")
    note = note.strip()
    if "\x00" in note:
        raise DispositionError("note", "the note must not contain NUL characters")
    if len(note) > MAX_NOTE_LENGTH:
        raise DispositionError("note", f"the note is {len(note)} characters long; "
                                       f"at most {MAX_NOTE_LENGTH} are allowed")
    return category, note


def record_disposition(session: Session, call: Call, disposition: str, now: datetime, *,
                       agent_id: int | None) -> Call:
    """Set the call's disposition at ``now`` by ``agent_id`` (None: a supervisor recorded it).

    A disposition recorded before is overwritten, with its time and agent. Raises
    DispositionError for a value not in :data:`DISPOSITIONS`. Does not check who may record it
    (see :func:`handled_by`).
    """
    call.disposition = check_disposition(disposition)
    call.disposition_agent_id = agent_id
    call.disposition_at = now
    session.flush()
    return call


def add_feedback(session: Session, call: Call, category: str, note: str | None, now: datetime, *,
                 agent_id: int | None) -> tuple[CallFeedback, bool]:
    """Record the caller's feedback on ``call``; return ``(feedback, created)``.

    The same category and note already recorded for the call (a retried request) is not stored
    twice: the existing row is returned with ``created`` False. Raises DispositionError for a
    bad category or note (:func:`check_feedback`).
    """
    category, note = check_feedback(category, note)
    existing = session.scalar(select(CallFeedback).where(
        CallFeedback.call_id == call.id, CallFeedback.category == category,
        CallFeedback.note == note).order_by(CallFeedback.id).limit(1))
    if existing is not None:
        return existing, False
    feedback = CallFeedback(call_id=call.id, agent_id=agent_id, category=category, note=note,
                            created_at=now)
    session.add(feedback)
    session.flush()
    return feedback, True


def mark_reviewed(session: Session, feedback_id: int, now: datetime, reviewer: str) -> CallFeedback | None:
    """Mark feedback ``feedback_id`` reviewed by ``reviewer`` (≤ 64 characters kept) at ``now``.

    Idempotent: feedback already reviewed keeps its first reviewer and time (a compare-and-set
    update, so two supervisors at once cannot both win). Returns the row, or None if unknown.
    """
    session.execute(update(CallFeedback)
                    .where(CallFeedback.id == feedback_id, CallFeedback.reviewed_at.is_(None))
                    .values(reviewed_at=now, reviewed_by=reviewer[:64])
                    .execution_options(synchronize_session=False))
    feedback = session.get(CallFeedback, feedback_id)
    if feedback is not None:
        session.refresh(feedback)
    return feedback


@dataclass(frozen=True)
class FeedbackFilter:
    """Filters of the supervisors' list: category, reviewed or not (None: both), and
    ``created_at`` in [since, until) (aware datetimes, None: open)."""

    category: str | None = None
    reviewed: bool | None = None
    since: datetime | None = None
    until: datetime | None = None


def _filtered(stmt: Select, filters: FeedbackFilter) -> Select:
    if filters.category is not None:
        stmt = stmt.where(CallFeedback.category == filters.category)
    if filters.reviewed is True:
        stmt = stmt.where(CallFeedback.reviewed_at.is_not(None))
    elif filters.reviewed is False:
        stmt = stmt.where(CallFeedback.reviewed_at.is_(None))
    if filters.since is not None:
        stmt = stmt.where(CallFeedback.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(CallFeedback.created_at < filters.until)
    return stmt


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def feedback_page(session: Session, filters: FeedbackFilter, *, page: int = 1,
                  per_page: int = 50) -> tuple[int, list[dict]]:
    """One page of feedback, newest first, each with its call attached; returns ``(total, items)``.

    ``total`` counts all items matching ``filters``; ``page`` is 1-based. Each item is a dict:
    ``id, category, note, created_at, agent, reviewed, reviewed_at, reviewed_by`` and ``call``
    ``{call_sid, arrived_at, queue_entered_at, answered_at, ended_at, outcome, queue, agent,
    disposition, disposition_at, disposition_agent}`` (times ISO 8601 UTC, names of queue and
    agents, None where unknown). One query per page (joins, no per-item look-ups). Raises
    ValueError for ``page`` < 1 or ``per_page`` < 1.
    """
    if page < 1 or per_page < 1:
        raise ValueError("page and per_page start at 1")
    total = session.scalar(_filtered(select(func.count()).select_from(CallFeedback), filters)) or 0
    recorder = aliased(Agent)
    handler = aliased(Agent)
    disposer = aliased(Agent)
    stmt = _filtered(
        select(CallFeedback, Call.call_sid, Call.arrived_at, Call.queue_entered_at,
               Call.answered_at, Call.ended_at, Call.outcome, Queue.name, handler.name,
               Call.disposition, Call.disposition_at, disposer.name, recorder.name)
        .join(Call, Call.id == CallFeedback.call_id)
        .outerjoin(Queue, Queue.id == Call.queue_id)
        .outerjoin(handler, handler.id == Call.agent_id)
        .outerjoin(disposer, disposer.id == Call.disposition_agent_id)
        .outerjoin(recorder, recorder.id == CallFeedback.agent_id), filters)
    stmt = (stmt.order_by(CallFeedback.created_at.desc(), CallFeedback.id.desc())
            .offset((page - 1) * per_page).limit(per_page))
    items = []
    for (feedback, call_sid, arrived, entered, answered, ended, outcome, queue, agent, disposition,
         disposition_at, disposition_agent, recorded_by) in session.execute(stmt):
        items.append({
            "id": feedback.id, "category": feedback.category, "note": feedback.note,
            "created_at": _iso(feedback.created_at), "agent": recorded_by,
            "reviewed": feedback.reviewed_at is not None,
            "reviewed_at": _iso(feedback.reviewed_at), "reviewed_by": feedback.reviewed_by,
            "call": {"call_sid": call_sid, "arrived_at": _iso(arrived),
                     "queue_entered_at": _iso(entered), "answered_at": _iso(answered),
                     "ended_at": _iso(ended), "outcome": outcome, "queue": queue, "agent": agent,
                     "disposition": disposition, "disposition_at": _iso(disposition_at),
                     "disposition_agent": disposition_agent}})
    return int(total), items
