"""Daily report over the call log: per local day × queue, per day and for the whole range.

Days are calendar days in the report's time zone (default Europe/Tallinn, from config). An
offered call belongs to the local day of its queue entry (the offer); a call that never reached
a queue is "not offered" and belongs to the local day of its arrival. Day bounds are local
midnights converted to UTC with zoneinfo, so a DST day has 23 or 25 hours.

The call log is read column by column (no ORM objects) and streamed with ``yield_per``; only
the per-group sums of :mod:`reporting.metrics` are kept in memory.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from ivr.models import Call
from reporting.metrics import MetricsAccumulator, classify_offered
from routing.models import Queue

YIELD_PER = 2000
# A call enters its queue at most this long after it arrived. Used only to let the query use
# the index on arrived_at; a phone call (and the stale-call sweep) never comes near it.
MAX_ARRIVAL_TO_QUEUE = timedelta(days=1)
NO_QUEUE = "(no queue)"
# Not-offered calls with no outcome yet are labelled by where they are.
IN_IVR = "in_ivr"


def local_day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Return the UTC instants of local midnight at the start of ``day`` and of the next day.

    On a DST change the span is 23 or 25 hours (e.g. Europe/Tallinn 2026-10-25: 25 h).
    """
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(timezone.utc)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(timezone.utc)
    return start, end


@dataclass
class DayReport:
    """One local day: a group per queue, their total, and the calls that were not offered."""

    day: date
    utc_start: datetime
    utc_end: datetime
    total: MetricsAccumulator
    queues: dict[str, MetricsAccumulator] = field(default_factory=dict)
    not_offered: Counter = field(default_factory=Counter)
    ivr_struggle: int = 0

    @property
    def hours(self) -> float:
        """Length of the local day in hours: 24, or 23 / 25 on a DST change."""
        return (self.utc_end - self.utc_start).total_seconds() / 3600

    @property
    def not_offered_total(self) -> int:
        return sum(self.not_offered.values())


@dataclass
class Report:
    """The report for local days ``start``..``end`` (both included) in ``timezone``."""

    start: date
    end: date
    timezone: str
    threshold: float
    days: list[DayReport]
    total: MetricsAccumulator
    not_offered: Counter

    @property
    def not_offered_total(self) -> int:
        return sum(self.not_offered.values())


def build_report(session: Session, start: date, end: date, tz_name: str,
                 threshold: float) -> Report:
    """Read the call log for local days ``start``..``end`` (inclusive) and return the report.

    Offered = the call has a queue-entry time; it is counted on the local day of that entry in
    its queue (answered / abandoned / in progress, see :func:`reporting.metrics.classify_offered`).
    Other calls (IVR hang-ups, out of hours, transferred from the menu, still in the IVR) are
    counted as not offered on the local day of arrival, by outcome (``in_ivr`` or the current
    status when there is no outcome yet). Raises ValueError if ``start`` > ``end`` and
    ``zoneinfo.ZoneInfoNotFoundError`` for an unknown time zone.
    """
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    tz = ZoneInfo(tz_name)
    days: dict[date, DayReport] = {}
    day = start
    while day <= end:
        lo, hi = local_day_bounds(day, tz)
        days[day] = DayReport(day, lo, hi, MetricsAccumulator(threshold))
        day += timedelta(days=1)
    range_start, range_end = days[start].utc_start, days[end].utc_end

    stmt = (
        select(Call.queue_entered_at, Call.arrived_at, Call.answered_at, Call.ended_at,
               Call.talk_seconds, Call.status, Call.outcome, Call.ivr_struggle, Queue.name)
        .outerjoin(Queue, Queue.id == Call.queue_id)
        .where(
            Call.arrived_at < range_end,
            Call.arrived_at >= range_start - MAX_ARRIVAL_TO_QUEUE,
            or_(and_(Call.queue_entered_at >= range_start, Call.queue_entered_at < range_end),
                and_(Call.queue_entered_at.is_(None), Call.arrived_at >= range_start)),
        )
        .execution_options(yield_per=YIELD_PER)
    )
    for (queue_entered_at, arrived_at, answered_at, ended_at, talk_seconds, status, outcome,
         struggled, queue_name) in session.execute(stmt):
        if queue_entered_at is None:
            bucket = days[arrived_at.astimezone(tz).date()]
            bucket.ivr_struggle += bool(struggled)
            bucket.not_offered[outcome or (IN_IVR if status == "ivr" else status)] += 1
            continue
        bucket = days[queue_entered_at.astimezone(tz).date()]
        bucket.ivr_struggle += bool(struggled)
        name = queue_name or NO_QUEUE
        group = bucket.queues.get(name)
        if group is None:
            group = bucket.queues[name] = MetricsAccumulator(threshold)
        group.add(classify_offered(queue_entered_at, answered_at, ended_at, talk_seconds))

    total = MetricsAccumulator(threshold)
    not_offered: Counter = Counter()
    ordered = [days[d] for d in sorted(days)]
    for day_report in ordered:
        day_report.queues = dict(sorted(day_report.queues.items()))
        for group in day_report.queues.values():
            day_report.total.merge(group)
        total.merge(day_report.total)
        not_offered.update(day_report.not_offered)
    return Report(start, end, tz_name, threshold, ordered, total, not_offered)
