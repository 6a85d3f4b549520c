"""Reports computed by SQL aggregation over the call log: intervals × dimensions.

Every figure follows ``shared/design/metrics.md`` (see :mod:`reporting.metrics` for the
formulas). The database does the counting: one ``GROUP BY`` query returns, per 15-minute (or
hourly) UTC bucket and per dimension value, the sums a metric needs (offered, answered within
T, total wait, talk, hold, wrap-up, dispositions, repeat contacts). Python then adds those
partial sums up into the report's local intervals, so it touches at most a few rows per bucket,
never one row per call.

Why UTC buckets work for local intervals: Europe/Tallinn is UTC+2 or UTC+3, so every local
15/30/60-minute boundary and every local midnight is also a UTC quarter-hour (or hour)
boundary. A bucket therefore belongs to exactly one local interval, even on DST days: the
spring day has 23 hourly intervals (no 03:00), the autumn day 25 (03:00+03:00 and
03:00+02:00 are two rows, told apart by their offset). Time zones with offsets that are not
whole quarter-hours are refused.

Which calls count where:

* An **offered** call (it has a queue-entry time) belongs to the interval of its queue entry.
* A call that never reached a queue is **not offered**; it is counted, by outcome, in the
  interval of its arrival (IVR hang-ups, out of hours, transferred from the menu, …).
* **Repeat-contact FCR** for a window of W days: an answered call with an identifiable caller
  (``caller_key``) whose window [queue entry, queue entry + W] ends inside the data is in the
  base; it is a repeat when the same caller's next offered call starts within the window
  (``calls.next_offer_at``, stamped when that call is offered or after an import).
  The data ends *now* for live calls and at the last imported call for imported history,
  and a gap of more than a week without calls ends it too (see :func:`coverage_spans`).
  Scheduled callbacks (contacts the agency starts) are never a caller's repeat contact.
"""
from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from math import gcd
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import Boolean, Float, Integer, and_, case, false, func, literal, or_, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from db import UTCDateTime
from ivr.models import Call
from reporting.metrics import MetricsAccumulator, repeat_contact_fcr
from routing.models import Agent, Queue

INTERVALS = ("15min", "30min", "60min", "day", "week", "month", "quarter")
MINUTE_INTERVALS = {"15min": 15, "30min": 30, "60min": 60}
DIMENSIONS = ("queue", "agent", "language", "topic")
NO_VALUE = {"queue": "(no queue)", "agent": "(no agent)", "language": "(none)", "topic": "(none)"}
IN_IVR = "in_ivr"
# Offered calls the service moved on before an agent answered (overflow to a unit, the queue's
# maximum wait, no agent left, a full queue, closing time, a referral, a callback request that
# ended because the caller called again): neither answered nor abandoned by the caller.
DEQUEUED_OUTCOMES = ("transferred", "max_wait", "no_agent", "queue_full", "out_of_hours",
                     "referred", "called_again")


class ReportError(ValueError):
    """The report cannot be made as asked (bad interval, dimension, range or time zone)."""


# ---------------------------------------------------------------------------------------------
# Dialect-neutral time arithmetic (PostgreSQL and SQLite)

# SQLite keeps a UTC time as text 'YYYY-MM-DD HH:MM:SS.ffffff' (see db.UTCDateTime). Its
# strftime('%s') rounds to the millisecond, so whole seconds come from the first 19
# characters and the fraction from the rest: exact, as on PostgreSQL.
def _sqlite_whole(x: str) -> str:
    return f"CAST(strftime('%s', substr({x}, 1, 19)) AS INTEGER)"


def _sqlite_seconds(x: str) -> str:
    return f"({_sqlite_whole(x)} + COALESCE(CAST(substr({x}, 20) AS REAL), 0.0))"


class _EpochSeconds(FunctionElement):
    """Whole seconds since 1970-01-01 UTC of a timestamp column (an integer, floored)."""

    type = Integer()
    inherit_cache = True


@compiles(_EpochSeconds)
def _epoch_sqlite(element, compiler, **kw):
    return _sqlite_whole(compiler.process(element.clauses, **kw))


@compiles(_EpochSeconds, "postgresql")
def _epoch_pg(element, compiler, **kw):
    return "CAST(FLOOR(EXTRACT(EPOCH FROM %s)) AS BIGINT)" % compiler.process(element.clauses, **kw)


class _SecondsBetween(FunctionElement):
    """``a − b`` in seconds, never below 0 (float; exact to the microsecond on both databases).

    A negative wait (an answer time derived from the agent leg that falls before the queue
    entry) counts as 0, as in reporting.metrics.classify_offered."""

    type = Float()
    inherit_cache = True


def _sqlite_difference(element, compiler, **kw) -> str:
    """``a − b`` in seconds for the two columns of ``element`` (SQLite)."""
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"ROUND({_sqlite_seconds(a)} - {_sqlite_seconds(b)}, 6)"


@compiles(_SecondsBetween)
def _between_sqlite(element, compiler, **kw):
    return f"MAX({_sqlite_difference(element, compiler, **kw)}, 0.0)"


@compiles(_SecondsBetween, "postgresql")
def _between_pg(element, compiler, **kw):
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"GREATEST(CAST(EXTRACT(EPOCH FROM ({a} - {b})) AS DOUBLE PRECISION), 0.0)"


class _Within(FunctionElement):
    """True when ``later − earlier ≤ seconds`` (a literal number of seconds)."""

    type = Boolean()
    inherit_cache = True

    def __init__(self, later, earlier, seconds: float):
        self.seconds = float(seconds)
        super().__init__(later, earlier)


@compiles(_Within)
def _within_sqlite(element, compiler, **kw):
    return f"({_sqlite_difference(element, compiler, **kw)} <= {element.seconds!r})"


@compiles(_Within, "postgresql")
def _within_pg(element, compiler, **kw):
    # Plain timestamp arithmetic: no per-row conversion to seconds.
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"({a} <= {b} + INTERVAL '{element.seconds!r} seconds')"


class _Bucket(FunctionElement):
    """The start of the UTC bucket of ``size`` seconds holding a timestamp: epoch seconds on
    SQLite, a timestamptz on PostgreSQL (``date_bin``, whose groups the planner can estimate
    from the statistics migration 0009 creates)."""

    inherit_cache = True

    def __init__(self, column, size: int):
        self.size = int(size)
        super().__init__(column)


@compiles(_Bucket)
def _bucket_sqlite(element, compiler, **kw):
    x = _sqlite_whole(compiler.process(element.clauses, **kw))
    return f"({x} - {x} % {element.size})"


@compiles(_Bucket, "postgresql")
def _bucket_pg(element, compiler, **kw):
    x = compiler.process(element.clauses, **kw)
    return (f"date_bin(INTERVAL '{element.size} seconds', {x}, "
            f"TIMESTAMPTZ '1970-01-01 00:00:00+00')")


def epoch_seconds(column: ColumnElement) -> ColumnElement:
    """SQL: whole seconds since the Unix epoch (UTC) of ``column``."""
    return _EpochSeconds(column)


def seconds_between(later: ColumnElement, earlier: ColumnElement) -> ColumnElement:
    """SQL: ``later − earlier`` in seconds (float), 0 when negative."""
    return _SecondsBetween(later, earlier)


def within(later: ColumnElement, earlier: ColumnElement, seconds: float) -> ColumnElement:
    """SQL: ``later − earlier ≤ seconds``."""
    return _Within(later, earlier, seconds)


def _bucket_start(value) -> int:
    """A bucket key from the database (epoch seconds or an aware datetime) as epoch seconds."""
    return int(value.timestamp()) if isinstance(value, datetime) else int(value)


# ---------------------------------------------------------------------------------------------
# Intervals in local time

@dataclass(frozen=True)
class Interval:
    """One reporting interval: local start and end (aware, in the report's zone) and a label.

    Minute intervals are labelled ``2026-10-25 03:00+03:00`` (the offset tells the repeated
    hour apart), days ``2026-10-25``, weeks ``2026-W43``, months ``2026-10``, quarters
    ``2026-Q4``.
    """

    start: datetime
    end: datetime
    label: str

    @property
    def hours(self) -> float:
        """Length in hours (a day is 23, 24 or 25). Computed in UTC: Python subtracts two
        datetimes of the same zone by their wall clocks."""
        return (self.utc_end - self.utc_start).total_seconds() / 3600

    @property
    def utc_start(self) -> datetime:
        return self.start.astimezone(timezone.utc)

    @property
    def utc_end(self) -> datetime:
        return self.end.astimezone(timezone.utc)


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def _period_start(day: date, interval: str) -> date:
    if interval == "day":
        return day
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day.replace(month=3 * ((day.month - 1) // 3) + 1, day=1)


def _next_period(start: date, interval: str) -> date:
    if interval == "day":
        return start + timedelta(days=1)
    if interval == "week":
        return start + timedelta(days=7)
    months = 1 if interval == "month" else 3
    year, month = divmod(start.month - 1 + months, 12)
    return date(start.year + year, month + 1, 1)


def _period_label(start: date, interval: str) -> str:
    if interval == "day":
        return start.isoformat()
    if interval == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    if interval == "month":
        return f"{start.year}-{start.month:02d}"
    return f"{start.year}-Q{(start.month - 1) // 3 + 1}"


def intervals_between(start: date, end: date, interval: str, tz: ZoneInfo) -> list[Interval]:
    """The intervals covering local days ``start``..``end`` (inclusive), in order.

    Minute intervals step through UTC so that a DST day has 23 or 25 hourly intervals; day,
    week, month and quarter intervals run from local midnight to local midnight (the first and
    last may be cut to the range: a report from the 15th by month starts on the 15th).
    Raises ReportError for an unknown interval.
    """
    if interval not in INTERVALS:
        raise ReportError(f"unknown interval {interval!r}; use one of {', '.join(INTERVALS)}")
    lo, hi = _midnight(start, tz), _midnight(end + timedelta(days=1), tz)
    out: list[Interval] = []
    if interval in MINUTE_INTERVALS:
        step = timedelta(minutes=MINUTE_INTERVALS[interval])
        at = lo.astimezone(timezone.utc)
        stop = hi.astimezone(timezone.utc)
        while at < stop:
            local = at.astimezone(tz)
            out.append(Interval(local, (at + step).astimezone(tz),
                                local.strftime("%Y-%m-%d %H:%M") + _offset_text(local)))
            at += step
        return out
    day = _period_start(start, interval)
    while day <= end:
        nxt = _next_period(day, interval)
        s, e = max(day, start), min(nxt, end + timedelta(days=1))
        out.append(Interval(_midnight(s, tz), _midnight(e, tz), _period_label(day, interval)))
        day = nxt
    return out


def _offset_text(local: datetime) -> str:
    offset = local.utcoffset() or timedelta(0)
    sign = "+" if offset >= timedelta(0) else "-"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _bucket_seconds(intervals: list[Interval]) -> int:
    """The largest UTC bucket (900 or 3600 s) whose boundaries fall on every interval boundary.

    Raises ReportError when a boundary is not on a UTC quarter-hour (a zone offset such as
    +05:45 with 15-minute intervals is fine; +05:30 with hourly ones uses 15-minute buckets).
    """
    size = 3600
    for interval in intervals:
        for edge in (interval.utc_start, interval.utc_end):
            seconds = int(edge.timestamp())
            if seconds % 900:
                raise ReportError("the time zone's offset is not a whole quarter-hour")
            size = gcd(size, seconds % 3600 or 3600) if seconds % 3600 else size
    return 3600 if size == 3600 else 900


# ---------------------------------------------------------------------------------------------
# The report

@dataclass
class Group:
    """The sums for one interval × dimension values (``dims`` empty for an interval's total).

    ``fcr`` maps a window in days to (repeated, base); ``unidentified`` counts answered calls
    without an identifiable caller (left out of every FCR base). ``not_offered`` counts calls
    that never reached a queue, by outcome (interval totals only).
    """

    dims: tuple[str, ...]
    metrics: MetricsAccumulator
    fcr: dict[int, list[int]] = field(default_factory=dict)
    unidentified: int = 0
    not_offered: Counter = field(default_factory=Counter)
    ivr_struggle: int = 0

    def add(self, other: "Group") -> None:
        """Add ``other``'s sums to this group's."""
        self.metrics.merge(other.metrics)
        for window, (repeated, base) in other.fcr.items():
            mine = self.fcr.setdefault(window, [0, 0])
            mine[0] += repeated
            mine[1] += base
        self.unidentified += other.unidentified
        self.not_offered.update(other.not_offered)
        self.ivr_struggle += other.ivr_struggle

    def fcr_rate(self, window: int) -> float | None:
        """Repeat-contact FCR for ``window`` days, None with an empty base."""
        repeated, base = self.fcr.get(window, (0, 0))
        return repeat_contact_fcr(repeated, base)


@dataclass
class IntervalReport:
    """One interval: its total and a group per dimension value combination with calls."""

    interval: Interval
    total: Group
    groups: list[Group]


@dataclass(frozen=True)
class ReportSpec:
    """What to report: local days ``start``..``end`` (inclusive) in ``timezone``, cut into
    ``interval`` and grouped by ``dimensions`` (a subset of DIMENSIONS, in order).

    ``threshold`` and ``short_abandon`` are seconds; ``fcr_windows`` are days (repeat-contact
    FCR is computed for each); ``source`` limits the calls to ``live``, ``imported`` or
    ``callback`` (None: all); ``filters`` keeps only calls whose dimension equals a value
    (e.g. ``{"queue": "et.pension"}``).
    """

    start: date
    end: date
    timezone: str = "Europe/Tallinn"
    interval: str = "day"
    dimensions: tuple[str, ...] = ()
    threshold: float = 20.0
    short_abandon: float = 5.0
    fcr_windows: tuple[int, ...] = (7,)
    source: str | None = None
    filters: tuple[tuple[str, str], ...] = ()


@dataclass
class AggregateReport:
    """The report: its spec, the intervals in order, and the range total (with a group per
    dimension value combination over the whole range)."""

    spec: ReportSpec
    intervals: list[IntervalReport]
    total: Group
    groups: list[Group]
    generated_at: datetime


MAX_DAYS = 3660
MAX_FCR_WINDOW = 366


def check_dates(start: date, end: date) -> None:
    """Raise ReportError unless ``start`` ≤ ``end``, both in 1900–2999 and at most MAX_DAYS
    apart (the bounds every report, export and API shares)."""
    if start > end:
        raise ReportError(f"start {start} is after end {end}")
    if (end - start).days >= MAX_DAYS or start.year < 1900 or end.year > 2999:
        raise ReportError(f"report at most {MAX_DAYS} days between 1900 and 2999 at once")


def parse_fcr_windows(text: str) -> tuple[int, ...]:
    """'1,7' → (1, 7): repeat-contact FCR windows in days, 1–366, sorted and distinct.
    Raises ReportError for anything else."""
    try:
        windows = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise ReportError(f"{text!r} is not a list of days such as 1,7") from None
    if any(not 1 <= w <= MAX_FCR_WINDOW for w in windows):
        raise ReportError(f"FCR windows are 1 to {MAX_FCR_WINDOW} days")
    return windows


def parse_filters(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """['queue=et.pension', …] → (('queue', 'et.pension'), …). Raises ReportError for an item
    that is not DIMENSION=VALUE with a known dimension and a value."""
    out = []
    for item in items:
        name, sep, wanted = item.partition("=")
        if not sep or name not in DIMENSIONS or not wanted:
            raise ReportError(f"{item!r}: use DIMENSION=VALUE with one of {', '.join(DIMENSIONS)}")
        out.append((name, wanted))
    return tuple(out)


def validate(spec: ReportSpec) -> ZoneInfo:
    """Check ``spec``; return its time zone. Raises ReportError with a message for a person."""
    check_dates(spec.start, spec.end)
    if spec.interval not in INTERVALS:
        raise ReportError(f"unknown interval {spec.interval!r}; use one of {', '.join(INTERVALS)}")
    for dim in spec.dimensions + tuple(k for k, _ in spec.filters):
        if dim not in DIMENSIONS:
            raise ReportError(f"unknown dimension {dim!r}; use one of {', '.join(DIMENSIONS)}")
    if len(set(spec.dimensions)) != len(spec.dimensions):
        raise ReportError("a dimension is given twice")
    if not (math.isfinite(spec.threshold) and math.isfinite(spec.short_abandon)):
        raise ReportError("threshold and short-abandon cut-off are finite numbers of seconds")
    if spec.threshold < 0 or spec.short_abandon < 0:
        raise ReportError("threshold and short-abandon cut-off are seconds ≥ 0")
    if any(w < 1 or w > MAX_FCR_WINDOW for w in spec.fcr_windows):
        raise ReportError(f"FCR windows are 1 to {MAX_FCR_WINDOW} days")
    if spec.source not in (None, "live", "imported", "callback"):
        raise ReportError(f"unknown source {spec.source!r}; use live, imported or callback")
    try:
        return ZoneInfo(spec.timezone)
    except Exception:
        raise ReportError(f"unknown time zone {spec.timezone!r}") from None


def _dimension_columns() -> dict[str, ColumnElement]:
    return {"queue": Queue.name, "agent": Agent.name, "language": Call.language,
            "topic": Call.topic}


DATA_GAP = timedelta(days=7)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
DAY = 86400


def coverage_spans(session: Session, lo: datetime, hi: datetime, now: datetime,
                   ) -> dict[str, list[tuple[datetime, datetime]]]:
    """The stretches of time the call log covers, per kind of data, as (start, end) UTC
    instants, for offers in [``lo`` − 8 days, ``hi``).

    Live calls (every source but ``imported``) are logged as they happen, so live data runs
    up to ``now``: one stretch. Imported history has the gaps of its files: its stretches come
    from the UTC days that have imported offered calls; a gap of more than 7 days without any
    (longer than any holiday closure of a line) ends a stretch, and a stretch ends at its last
    imported call. Repeat-contact FCR only counts a call whose window ends inside its
    stretch, so history imported for January–February and October is not read as "nobody
    called back" from March to September.
    """
    day = epoch_seconds(Call.queue_entered_at) - epoch_seconds(Call.queue_entered_at) % DAY
    rows = session.execute(
        select(day, func.max(Call.queue_entered_at))
        .where(Call.source == "imported",
               Call.queue_entered_at >= lo - DATA_GAP - timedelta(days=1),
               Call.queue_entered_at < hi)
        .group_by(day).order_by(day)).all()
    imported: list[list] = []
    for start, last in rows:
        first = datetime.fromtimestamp(int(start), timezone.utc)
        if imported and first - imported[-1][1] <= DATA_GAP:
            imported[-1][1] = last
        else:
            imported.append([first, last])
    return {"live": [(EPOCH, now)], "imported": [(a, b) for a, b in imported]}


def _offered_query(spec: ReportSpec, lo: datetime, hi: datetime, bucket: int,
                   spans: dict[str, list[tuple[datetime, datetime]]]):
    """The GROUP BY query over offered calls; one row per (bucket, dimension values)."""
    dims = _dimension_columns()
    windows = sorted(set(spec.fcr_windows))

    columns: list[Any] = [
        Call.id.label("id"), Call.source.label("source"), Call.caller_key.label("caller_key"),
        Call.queue_entered_at.label("q"), Call.answered_at.label("a"), Call.ended_at.label("e"),
        Call.outcome.label("outcome"),
        Call.talk_seconds.label("talk"), Call.hold_seconds.label("hold"),
        Call.wrap_up_seconds.label("wrap"), Call.disposition.label("disposition"),
        Call.language.label("language"), Call.topic.label("topic"),
        Queue.name.label("queue"), Agent.name.label("agent"),
        Call.ivr_struggle.label("struggle"),
    ]
    if windows:
        columns.append(Call.next_offer_at.label("next_q"))
    inner = (select(*columns)
             .select_from(Call)
             .outerjoin(Queue, Queue.id == Call.queue_id)
             .outerjoin(Agent, Agent.id == Call.agent_id)
             .where(Call.queue_entered_at >= lo, Call.queue_entered_at < hi))
    if spec.source:
        inner = inner.where(Call.source == spec.source)
    for dim, value in spec.filters:
        inner = inner.where(dims[dim] == value)
    c = inner.subquery("c")

    answered = c.c.a.is_not(None)
    dequeued = and_(c.c.a.is_(None), c.c.e.is_not(None), c.c.outcome.in_(DEQUEUED_OUTCOMES))
    abandoned = and_(c.c.a.is_(None), c.c.e.is_not(None),
                     func.coalesce(c.c.outcome, "abandoned").not_in(DEQUEUED_OUTCOMES))
    def count_if(condition) -> ColumnElement:
        return func.count().filter(condition)

    handled = and_(answered, c.c.talk.is_not(None))
    keys: list[ColumnElement] = [_Bucket(c.c.q, bucket)]
    keys += [getattr(c.c, dim) for dim in spec.dimensions]
    outer_cols: list[Any] = [keys[0].label("bucket")]
    outer_cols += [key.label(f"dim_{dim}") for key, dim in zip(keys[1:], spec.dimensions)]
    outer_cols += [
        func.count().label("offered"),
        count_if(answered).label("answered"),
        count_if(abandoned).label("abandoned"),
        count_if(dequeued).label("dequeued"),
        count_if(and_(answered, within(c.c.a, c.c.q, spec.threshold))).label("answered_within"),
        count_if(and_(abandoned, within(c.c.e, c.c.q, spec.threshold))).label("abandoned_within"),
        count_if(and_(abandoned, within(c.c.e, c.c.q, spec.short_abandon))).label("short_abandoned"),
        func.sum(case((answered, seconds_between(c.c.a, c.c.q)), else_=0.0))
        .label("answered_wait_total"),
        func.sum(case((abandoned, seconds_between(c.c.e, c.c.q)), else_=0.0))
        .label("abandoned_wait_total"),
        func.sum(case((handled, c.c.talk), else_=0)).label("talk_total"),
        count_if(handled).label("talk_count"),
        func.sum(case((handled, func.coalesce(c.c.hold, 0)), else_=0)).label("hold_total"),
        func.sum(case((handled, func.coalesce(c.c.wrap, 0)), else_=0)).label("wrap_up_total"),
        count_if(and_(answered, c.c.disposition.is_not(None))).label("disposed"),
        count_if(and_(answered, c.c.disposition == "resolved")).label("resolved"),
        count_if(and_(answered, or_(c.c.caller_key.is_(None), c.c.source == "callback")))
        .label("unidentified"),
        count_if(c.c.struggle == True).label("ivr_struggle"),  # noqa: E712 (SQL comparison)
    ]
    identified = and_(answered, c.c.caller_key.is_not(None), c.c.source != "callback")
    for window in windows:
        span = timedelta(days=window)
        # The window [q, q + W] ends inside its stretch: q ≤ end − W (bound per stretch).
        inside = [and_(c.c.source == "imported" if name == "imported" else c.c.source != "imported",
                       c.c.q >= literal(start, UTCDateTime), c.c.q <= literal(end - span, UTCDateTime))
                  for name, stretches in spans.items() for start, end in stretches]
        in_base = and_(identified, or_(*inside) if inside else false())
        repeated = and_(in_base, c.c.next_q.is_not(None),
                        within(c.c.next_q, c.c.q, span.total_seconds()))
        outer_cols += [count_if(in_base).label(f"fcr_base_{window}"),
                       count_if(repeated).label(f"fcr_rep_{window}")]
    return select(*outer_cols).select_from(c).group_by(*keys)


def _not_offered_query(spec: ReportSpec, lo: datetime, hi: datetime, bucket: int):
    """Calls that never reached a queue, per (arrival bucket, outcome)."""
    label = func.coalesce(Call.outcome, case((Call.status == "ivr", IN_IVR), else_=Call.status))
    bucket_col = _Bucket(Call.arrived_at, bucket)
    struggle = func.sum(case((Call.ivr_struggle == True, 1), else_=0))  # noqa: E712
    stmt = (select(bucket_col.label("bucket"), label.label("kind"), func.count().label("n"),
                   struggle.label("ivr_struggle"))
            .where(Call.queue_entered_at.is_(None), Call.arrived_at >= lo, Call.arrived_at < hi)
            .group_by(bucket_col, label))
    if spec.source:
        stmt = stmt.where(Call.source == spec.source)
    return stmt


_SUM_FIELDS = ("offered", "answered", "abandoned", "dequeued", "answered_within", "abandoned_within",
               "short_abandoned", "answered_wait_total", "abandoned_wait_total", "talk_total",
               "talk_count", "hold_total", "wrap_up_total", "disposed", "resolved")


def run_report(session: Session, spec: ReportSpec, *, now: datetime | None = None) -> AggregateReport:
    """Compute the report described by ``spec`` from the call log, in the database.

    Returns the intervals in time order (every interval of the range, also those without
    calls: their rates are None, "no data"), each with its total and one group per dimension
    value combination that had offered calls, plus range totals. ``now`` (UTC) is where live
    data ends for repeat-contact FCR (default: the current time). Raises ReportError for a bad
    spec. Filters (``spec.filters``) apply to offered calls only; not-offered counts are then
    left out (they have no queue or agent).
    """
    tz = validate(spec)
    now = now or datetime.now(timezone.utc)
    intervals = intervals_between(spec.start, spec.end, spec.interval, tz)
    bucket = _bucket_seconds(intervals)
    lo, hi = intervals[0].utc_start, intervals[-1].utc_end
    windows = tuple(sorted(set(spec.fcr_windows)))

    def new_group(dims: tuple[str, ...]) -> Group:
        return Group(dims, MetricsAccumulator(spec.threshold, short_abandon=spec.short_abandon),
                     {w: [0, 0] for w in windows})

    starts = [int(i.utc_start.timestamp()) for i in intervals]

    def index_of(bucket_start: int) -> int:
        return bisect.bisect_right(starts, bucket_start) - 1

    per_interval: list[dict[tuple[str, ...], Group]] = [{} for _ in intervals]
    range_groups: dict[tuple[str, ...], Group] = {}
    spans = coverage_spans(session, lo, hi + timedelta(days=max(windows)), now) if windows else {}
    if session.get_bind().dialect.name == "postgresql":
        # The month-sized scans are cheap per row; compiling them to machine code costs more
        # (1.6–2.4 s a query at 1–10 million calls) than it saves.
        session.execute(text("SET LOCAL jit = off"))
    for row in session.execute(_offered_query(spec, lo, hi, bucket, spans)).mappings():
        dims = tuple((row[f"dim_{d}"] if row[f"dim_{d}"] is not None else NO_VALUE[d])
                     for d in spec.dimensions)
        part = new_group(dims)
        m = part.metrics
        for name in _SUM_FIELDS:
            value = row[name] or 0
            setattr(m, name, float(value) if isinstance(getattr(m, name), float) else int(value))
        m.handled = m.talk_count
        m.in_progress = m.offered - m.answered - m.abandoned - m.dequeued
        part.unidentified = int(row["unidentified"] or 0)
        part.ivr_struggle = int(row["ivr_struggle"] or 0)
        for w in windows:
            part.fcr[w] = [int(row[f"fcr_rep_{w}"] or 0), int(row[f"fcr_base_{w}"] or 0)]
        i = index_of(_bucket_start(row["bucket"]))
        target = per_interval[i].setdefault(dims, new_group(dims))
        target.add(part)
        range_groups.setdefault(dims, new_group(dims)).add(part)

    not_offered: list[Counter] = [Counter() for _ in intervals]
    struggled = [0] * len(intervals)
    if not spec.filters:
        for row in session.execute(_not_offered_query(spec, lo, hi, bucket)).mappings():
            i = index_of(_bucket_start(row["bucket"]))
            not_offered[i][row["kind"]] += int(row["n"])
            struggled[i] += int(row["ivr_struggle"] or 0)

    out: list[IntervalReport] = []
    grand = new_group(())
    for interval, groups, counts, struggle in zip(intervals, per_interval, not_offered, struggled):
        total = new_group(())
        for group in groups.values():
            total.add(group)
        total.not_offered.update(counts)
        total.ivr_struggle += struggle
        grand.add(total)
        ordered = [groups[k] for k in sorted(groups)] if spec.dimensions else []
        out.append(IntervalReport(interval, total, ordered))
    ordered_range = [range_groups[k] for k in sorted(range_groups)] if spec.dimensions else []
    return AggregateReport(spec, out, grand, ordered_range, now)


# ---------------------------------------------------------------------------------------------
# Presentation helpers shared by the CLI and the API

def formula_lines(spec: ReportSpec) -> list[str]:
    """The definitions, threshold and cut-offs a reader needs (metrics.md: every report states
    the formula, the threshold and the short-abandon cut-off it used)."""
    t, s = f"{spec.threshold:g}", f"{spec.short_abandon:g}"
    lines = [
        f"time zone {spec.timezone}; interval {spec.interval}; offered calls counted in the "
        "interval of their queue entry, not-offered calls in that of their arrival",
        f"threshold T = {t} s (within = wait ≤ {t} s); short abandon = abandoned with wait ≤ {s} s",
        "sl_offered = answered within T / offered (ICMI #3, default)",
        "sl_excl_early_abandons = answered within T / (answered + abandoned after T) (ICMI #4)",
        "sl_answered = answered within T / answered (ICMI #2)",
        "sl_excl_short_abandons = answered within T / (offered − short abandons)",
        "sl_abandons_met = (answered within T + abandoned within T) / offered (ICMI #1)",
        "abandoned = the caller hung up before an answer; dequeued = the service moved the "
        "caller on (unit, maximum wait, no agent, full queue): offered, neither answered nor "
        "abandoned",
        "answer rate = answered / offered; abandonment rate = abandoned / offered; "
        "excl. short = (abandoned − short) / (offered − short)",
        "ASA = wait of answered calls / answered (s), wait = queue entry → answer, IVR excluded",
        "AHT = (talk + hold + wrap-up) / handled (s); mean talk = talk / handled",
        "FCR repeat (W days) = 1 − answered calls followed by the same caller's next offered call "
        "within W days of their queue entry / answered calls with an identified caller whose "
        "window ends inside the data",
        "FCR disposition = answered calls marked resolved / answered calls with a disposition",
        "no data (null, '–') = the rate's denominator is 0",
    ]
    return lines


def group_values(group: Group, windows: Iterable[int]) -> dict[str, Any]:
    """The figures of one group as a flat dict (counts, rates as fractions 0–1 or None,
    seconds as floats or None)."""
    m = group.metrics
    values: dict[str, Any] = {
        "offered": m.offered, "answered": m.answered, "abandoned": m.abandoned,
        "short_abandoned": m.short_abandoned, "dequeued": m.dequeued,
        "in_progress": m.in_progress,
        "answered_within": m.answered_within, "abandoned_within": m.abandoned_within,
        "sl_offered": m.sl_offered, "sl_excl_early_abandons": m.sl_excl_early_abandons,
        "sl_answered": m.sl_answered, "sl_excl_short_abandons": m.sl_excl_short_abandons,
        "sl_abandons_met": m.sl_abandons_met, "answer_rate": m.answer_rate,
        "abandonment_rate": m.abandonment_rate,
        "abandonment_rate_excl_short": m.abandonment_rate_excl_short,
        "asa_seconds": m.asa, "aht_seconds": m.aht, "mean_talk_seconds": m.mean_talk,
        "handled": m.handled, "disposed": m.disposed, "resolved": m.resolved,
        "fcr_disposition": m.fcr_disposition, "unidentified_callers": group.unidentified,
    }
    for w in windows:
        repeated, base = group.fcr.get(w, (0, 0))
        values[f"fcr_repeat_{w}d"] = group.fcr_rate(w)
        values[f"fcr_repeat_{w}d_base"] = base
        values[f"fcr_repeat_{w}d_repeated"] = repeated
    return values


def report_as_dict(report: AggregateReport) -> dict[str, Any]:
    """The report as JSON-ready data: spec, formulas, intervals with rows, totals."""
    spec = report.spec
    windows = sorted(set(spec.fcr_windows))

    def group_dict(group: Group) -> dict[str, Any]:
        out: dict[str, Any] = dict(zip(spec.dimensions, group.dims))
        out.update(group_values(group, windows))
        if group.not_offered:
            out["not_offered"] = dict(sorted(group.not_offered.items()))
        return out

    return {
        "from": spec.start.isoformat(), "to": spec.end.isoformat(), "timezone": spec.timezone,
        "interval": spec.interval, "dimensions": list(spec.dimensions),
        "threshold_seconds": spec.threshold, "short_abandon_seconds": spec.short_abandon,
        "fcr_windows_days": windows, "source": spec.source or "all",
        "filters": dict(spec.filters), "formulas": formula_lines(spec),
        "generated_at": report.generated_at.isoformat(),
        "intervals": [{"label": i.interval.label, "start": i.interval.start.isoformat(),
                       "end": i.interval.end.isoformat(), "hours": i.interval.hours,
                       "total": group_dict(i.total), "rows": [group_dict(g) for g in i.groups]}
                      for i in report.intervals],
        "total": group_dict(report.total),
        "rows": [group_dict(g) for g in report.groups],
    }
