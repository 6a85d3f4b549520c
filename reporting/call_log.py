"""The call log for reporting jobs: one row per call, filtered, paged by id, with the caller's
number shown or pseudonymised.

Pseudonyms are a keyed hash: ``p-`` + the first 20 hex digits of HMAC-SHA256(key, caller
identity). The same caller gets the same pseudonym in every export made with the same key, so
repeat contacts can still be counted, but the number cannot be recovered without the key
(a plain hash of an Estonian number could be reversed by trying all 10⁸ of them).
Withheld and invalid numbers have no identity and export as an empty caller.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Iterator
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ivr.models import Call
from line_config import normalise_number
from reporting.aggregate import DIMENSIONS, ReportError, check_dates
from routing.models import Agent, Queue

# Roles that may see callers' numbers in the call log; the others get pseudonyms.
NUMBER_ROLES = ("admin", "supervisor")
COLUMNS = ("call_sid", "source", "caller", "arrived_at", "queue_entered_at", "answered_at",
           "ended_at", "wait_seconds", "talk_seconds", "hold_seconds", "wrap_up_seconds",
           "queue", "agent", "language", "topic", "status", "outcome", "disposition",
           "transfer_kind", "escalated")
MAX_PAGE = 5000
MAX_ID = 2**63 - 1


class PseudonymKeyMissing(RuntimeError):
    """Pseudonyms were needed but REPORT_PSEUDONYM_KEY is not set."""


def pseudonym(key: bytes, caller_key: str | None) -> str:
    """The pseudonym of a caller identity (E.164 number or imported customer id): ``p-`` and
    20 hex digits of HMAC-SHA256 under ``key``; '' for an unidentified caller."""
    if not caller_key:
        return ""
    return "p-" + hmac.new(key, caller_key.encode(), hashlib.sha256).hexdigest()[:20]


@dataclass(frozen=True)
class CallLogQuery:
    """Calls that arrived on local days ``start``..``end`` (inclusive) in ``timezone``, with
    optional equality filters on queue, agent, language, topic and source."""

    start: date
    end: date
    timezone: str = "Europe/Tallinn"
    filters: tuple[tuple[str, str], ...] = ()
    source: str | None = None

    def utc_bounds(self) -> tuple[datetime, datetime]:
        """The UTC instants of the first local midnight and of the midnight after ``end``.
        Raises ReportError for an unknown time zone, ``start`` after ``end``, or dates outside
        1900–2999 or more than 3,660 days apart."""
        check_dates(self.start, self.end)
        try:
            tz = ZoneInfo(self.timezone)
        except Exception:
            raise ReportError(f"unknown time zone {self.timezone!r}") from None
        return (datetime.combine(self.start, time(0), tzinfo=tz),
                datetime.combine(self.end + timedelta(days=1), time(0), tzinfo=tz))


def _statement(query: CallLogQuery):
    lo, hi = query.utc_bounds()
    dims = {"queue": Queue.name, "agent": Agent.name, "language": Call.language,
            "topic": Call.topic}
    stmt = (select(Call, Queue.name, Agent.name)
            .outerjoin(Queue, Queue.id == Call.queue_id)
            .outerjoin(Agent, Agent.id == Call.agent_id)
            .where(Call.arrived_at >= lo, Call.arrived_at < hi))
    for name, value in query.filters:
        if name not in DIMENSIONS:
            raise ReportError(f"unknown filter {name!r}; use one of {', '.join(DIMENSIONS)}")
        stmt = stmt.where(dims[name] == value)
    if query.source:
        stmt = stmt.where(Call.source == query.source)
    return stmt


def _iso(value: datetime | None, tz: ZoneInfo) -> str | None:
    return value.astimezone(tz).isoformat() if value is not None else None


def _row(call: Call, queue: str | None, agent: str | None, tz: ZoneInfo, *, reveal: bool,
         key: bytes | None) -> dict[str, Any]:
    if call.queue_entered_at is not None and (call.answered_at or call.ended_at) is not None:
        wait = ((call.answered_at or call.ended_at) - call.queue_entered_at).total_seconds()
        wait = max(0.0, wait)
    else:
        wait = None
    if reveal:
        # A call that never reached a queue has no caller_key yet (it is parsed on offer).
        caller = call.caller_key or normalise_number(call.from_number) or ""
    else:
        if key is None:
            raise PseudonymKeyMissing("REPORT_PSEUDONYM_KEY is not set")
        caller = pseudonym(key, call.caller_key)
    return {"call_sid": call.call_sid, "source": call.source, "caller": caller,
            "arrived_at": _iso(call.arrived_at, tz),
            "queue_entered_at": _iso(call.queue_entered_at, tz),
            "answered_at": _iso(call.answered_at, tz), "ended_at": _iso(call.ended_at, tz),
            "wait_seconds": wait, "talk_seconds": call.talk_seconds,
            "hold_seconds": call.hold_seconds, "wrap_up_seconds": call.wrap_up_seconds,
            "queue": queue, "agent": agent, "language": call.language, "topic": call.topic,
            "status": call.status, "outcome": call.outcome, "disposition": call.disposition,
            "transfer_kind": call.transfer_kind, "escalated": bool(call.escalated)}


def page(session: Session, query: CallLogQuery, *, after_id: int = 0, limit: int = 500,
         reveal: bool, key: bytes | None) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the call log: up to ``limit`` calls with id > ``after_id``, in id order,
    and the cursor of the next page (None on the last). Times are ISO 8601 in the query's
    time zone, durations in seconds. ``reveal`` shows the caller's number (E.164), otherwise
    its pseudonym under ``key``. Raises ReportError for a bad query, PseudonymKeyMissing when a
    pseudonym is needed and ``key`` is None."""
    if not 1 <= limit <= MAX_PAGE:
        raise ReportError(f"limit is 1 to {MAX_PAGE}")
    if not 0 <= after_id <= MAX_ID:
        raise ReportError(f"after is a call id from 0 to {MAX_ID}")
    query.utc_bounds()   # checks the dates and the time zone first
    tz = ZoneInfo(query.timezone)
    stmt = _statement(query).where(Call.id > after_id).order_by(Call.id).limit(limit + 1)
    rows = session.execute(stmt).all()
    more = len(rows) > limit
    rows = rows[:limit]
    out = [_row(call, queue, agent, tz, reveal=reveal, key=key) for call, queue, agent in rows]
    return out, (rows[-1][0].id if more and rows else None)


def iterate(session: Session, query: CallLogQuery, *, reveal: bool, key: bytes | None,
            batch: int = 2000) -> Iterator[dict[str, Any]]:
    """Every call of the query, in id order, read ``batch`` at a time (constant memory)."""
    after = 0
    while True:
        rows, cursor = page(session, query, after_id=after, limit=batch, reveal=reveal, key=key)
        yield from rows
        if cursor is None:
            return
        after = cursor
        session.expunge_all()


def count(session: Session, query: CallLogQuery) -> int:
    """How many calls the query selects (for progress reports)."""
    return session.scalar(select(func.count()).select_from(_statement(query).subquery())) or 0
