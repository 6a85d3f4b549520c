"""Daily report over the call log: per local day × queue, per day and for the whole range.

Days are calendar days in the report's time zone (default Europe/Tallinn, from config). An
offered call belongs to the local day of its queue entry (the offer); a call that never reached
a queue is "not offered" and belongs to the local day of its arrival. Day bounds are local
midnights converted to UTC with zoneinfo, so a DST day has 23 or 25 hours.

The sums come from the database (:mod:`reporting.aggregate`); this module only shapes them
into days and queues for ``flask report``'s classic table.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from reporting.aggregate import IN_IVR, NO_VALUE, ReportSpec, run_report  # noqa: F401 (IN_IVR re-exported)
from reporting.metrics import MetricsAccumulator

NO_QUEUE = NO_VALUE["queue"]


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
    """The daily report for local days ``start``..``end`` (inclusive), per queue and day.

    Computed by :func:`reporting.aggregate.run_report` (SQL aggregation) with a day interval
    and the queue dimension. Offered = the call has a queue-entry time; it is counted on the
    local day of that entry in its queue (answered / abandoned / in progress). Other calls (IVR
    hang-ups, out of hours, transferred from the menu, still in the IVR) are counted as not
    offered on the local day of arrival, by outcome (``in_ivr`` or the current status when
    there is no outcome yet). Raises ValueError (ReportError) if ``start`` > ``end`` or for an
    unknown time zone.
    """
    spec = ReportSpec(start, end, timezone=tz_name, interval="day", dimensions=("queue",),
                      threshold=threshold, fcr_windows=())
    result = run_report(session, spec)
    days: list[DayReport] = []
    for item in result.intervals:
        day = DayReport(item.interval.start.date(), item.interval.utc_start,
                        item.interval.utc_end, item.total.metrics,
                        {g.dims[0]: g.metrics for g in item.groups},
                        Counter(item.total.not_offered), item.total.ivr_struggle)
        days.append(day)
    return Report(start, end, tz_name, threshold, days, result.total.metrics,
                  Counter(result.total.not_offered))
