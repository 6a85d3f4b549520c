"""Staffing: agents needed per interval for a service-level target, by Erlang C and Erlang A.

Two uses:

* **calculator**: for a volume per interval, a mean handle time and (Erlang A) a mean patience,
  the smallest number of agents N that meets the target, with P(wait), SL and ASA
  (:func:`recommend_erlang_c`, :func:`recommend_erlang_a`);
* **from history**: the last weeks of the call log summed per local weekday × interval by SQL
  (``GROUP BY``, :func:`load_history`), giving the mean offered volume and mean handle time of
  each weekday × interval, and a recommendation for each (:func:`recommend_from_history`).

Units: times in **seconds**, volumes in **calls per interval**, interval length in seconds,
target a fraction (0.8 = 80 %). The queueing formulas are in :mod:`reporting.erlang` (sources
there); with them, for λ = calls / interval length and AHT = mean handle time:

    A = λ·AHT (Erlangs); P(wait) = C(N, A); SL(t) = 1 − P(wait)·e^(−(N−A)·t/AHT);
    ASA = P(wait)·AHT/(N − A)                             (Erlang C, M/M/N)
    Erlang A (M/M/N+M): callers abandon after an exponential patience with mean 1/θ; SL is
    P(answered within t) per offered call (abandons count against it), ASA = E[wait | answered].

The recommendation is the smallest N whose SL(t) ≥ target; an interval with no calls gets 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Float, and_, case, cast, func, literal_column, select
from sqlalchemy.orm import Session

from ivr.models import Call
from reporting.erlang import erlang_a, erlang_c_figures

MAX_AGENTS = 100_000
EPOCH = datetime(1970, 1, 1)
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

FORMULAS = (
    "λ = mean offered calls per interval / interval length (s); AHT = mean handle time (s); "
    "A = λ·AHT (Erlangs)",
    "Erlang C (M/M/N): P(wait) = C(N, A) = N·B(N, A) / (N − A·(1 − B(N, A))), B = Erlang B; "
    "SL(t) = 1 − P(wait)·e^(−(N−A)·t/AHT); ASA = P(wait)·AHT / (N − A)",
    "Erlang A (M/M/N+M, Palm): callers abandon after an exponential patience of mean 1/θ; "
    "SL(t) = P(answered with wait ≤ t) / offered (abandons count against it); "
    "ASA = E[wait | answered]; P(abandon) = θ·E[queue length] / λ "
    "(Garnett, Mandelbaum & Reiman 2002; Mandelbaum & Zeltyn)",
    "recommended agents = the smallest N with SL(t) ≥ target; an interval with no calls gets 0",
)
HISTORY_FORMULAS = (
    "offered = calls that entered a queue; mean offered = offered in the weekday × interval / "
    "times that weekday × interval occurred in the history",
    "AHT = Σ (talk + hold + wrap-up) / answered calls with a talk time (hold and wrap-up where "
    "recorded); an interval without answered calls uses the history's AHT",
    "patience = Σ wait of offered calls (answered: queue entry → answer, abandoned: → hang-up) "
    "/ abandoned calls (exponential-patience estimate, Mandelbaum & Zeltyn 2004); "
    "none (infinite: Erlang A = Erlang C) without abandons",
)


@dataclass(frozen=True)
class Staffing:
    """One model's figures for one interval; None figures when there are no calls.

    ``model`` 'erlang_c' or 'erlang_a'; ``agents`` N (the recommendation, or the N asked for);
    ``load`` A in Erlangs; ``p_wait`` P(wait > 0); ``service_level`` SL(t) as a fraction;
    ``asa`` seconds; ``p_abandon`` (Erlang A; 0 for Erlang C); ``occupancy`` fraction.
    """

    model: str
    agents: int
    load: float
    threshold: float
    p_wait: float | None = None
    service_level: float | None = None
    asa: float | None = None
    p_abandon: float | None = None
    occupancy: float | None = None


def _check_inputs(calls: float, interval_seconds: float, aht: float, target: float,
                  threshold: float) -> None:
    if not (calls >= 0 and math.isfinite(calls)):
        raise ValueError(f"calls must be ≥ 0 and finite, not {calls!r}")
    if not (interval_seconds > 0 and math.isfinite(interval_seconds)):
        raise ValueError(f"the interval must be a positive number of seconds, not {interval_seconds!r}")
    if not (aht > 0 and math.isfinite(aht)):
        raise ValueError(f"AHT must be a positive number of seconds, not {aht!r}")
    if not 0 < target < 1:
        raise ValueError(f"the target must be a fraction strictly between 0 and 1, not {target!r}")
    if not (threshold >= 0 and math.isfinite(threshold)):
        raise ValueError(f"the threshold must be ≥ 0 seconds, not {threshold!r}")


def erlang_c_staffing(calls: float, interval_seconds: float, aht: float, agents: int,
                      threshold: float = 20.0) -> Staffing:
    """Erlang C figures for ``agents`` N serving ``calls`` per ``interval_seconds`` at AHT ``aht`` s.

    Raises ValueError when N ≤ A (no steady state: the queue grows without bound) or for
    non-positive inputs. ``calls`` 0 gives an empty :class:`Staffing` with N as given.
    """
    if calls == 0:
        return Staffing("erlang_c", agents, 0.0, threshold)
    f = erlang_c_figures(calls / interval_seconds, aht, agents, threshold)
    return Staffing("erlang_c", agents, f.load, threshold, p_wait=f.p_wait,
                    service_level=f.service_level, asa=f.asa, p_abandon=0.0,
                    occupancy=f.occupancy)


def erlang_a_staffing(calls: float, interval_seconds: float, aht: float, agents: int,
                      patience: float, threshold: float = 20.0) -> Staffing:
    """Erlang A figures for N = ``agents``, mean patience ``patience`` s (``math.inf``: nobody
    abandons, which is Erlang C and needs N > A). Raises ValueError as
    :func:`reporting.erlang.erlang_a` does."""
    if calls == 0:
        return Staffing("erlang_a", agents, 0.0, threshold)
    f = erlang_a(calls / interval_seconds, aht, agents, patience, threshold)
    return Staffing("erlang_a", agents, f.load, threshold, p_wait=f.p_wait,
                    service_level=f.service_level, asa=f.asa, p_abandon=f.p_abandon,
                    occupancy=f.occupancy)


def recommend_erlang_c(calls: float, interval_seconds: float, aht: float, *,
                       target: float = 0.8, threshold: float = 20.0) -> Staffing:
    """The smallest N with Erlang C SL(t) ≥ ``target`` and its figures (N = 0 without calls).

    ``calls`` per ``interval_seconds`` (λ = calls / interval), ``aht`` seconds, ``threshold`` t
    seconds, ``target`` a fraction. N runs up from ⌊A⌋ + 1 (the least with a steady state).
    Checks (metrics.md): 100 calls / 1800 s, AHT 180 s, 80 % in 20 s → 14 (13 give 79.56 %);
    200 calls / 1800 s, AHT 180 s, 80 % in 60 s → 23. Raises ValueError for bad inputs.
    """
    _check_inputs(calls, interval_seconds, aht, target, threshold)
    if calls == 0:
        return Staffing("erlang_c", 0, 0.0, threshold)
    load = calls / interval_seconds * aht
    agents = max(1, math.floor(load) + 1)
    while True:
        figures = erlang_c_staffing(calls, interval_seconds, aht, agents, threshold)
        if figures.service_level >= target:
            return figures
        agents += 1
        if agents > MAX_AGENTS:
            raise ValueError(f"more than {MAX_AGENTS} agents would be needed")


def recommend_erlang_a(calls: float, interval_seconds: float, aht: float, patience: float, *,
                       target: float = 0.8, threshold: float = 20.0) -> Staffing:
    """The smallest N with Erlang A SL(t) ≥ ``target`` and its figures (N = 0 without calls).

    ``patience`` is the callers' mean patience in seconds (``math.inf``: nobody abandons, and
    the result equals :func:`recommend_erlang_c`). SL rises with N, so N is found by doubling
    and bisection; with infinite patience an N ≤ A counts as missing the target. Raises
    ValueError for bad inputs or a patience ≤ 0.
    """
    _check_inputs(calls, interval_seconds, aht, target, threshold)
    if not patience > 0:
        raise ValueError(f"the mean patience must be > 0 seconds, not {patience!r}")
    if calls == 0:
        return Staffing("erlang_a", 0, 0.0, threshold)
    load = calls / interval_seconds * aht
    cache: dict[int, Staffing | None] = {}

    def figures(n: int) -> Staffing | None:
        if n not in cache:
            if math.isinf(patience) and n <= load:
                cache[n] = None  # unstable without abandonment: misses any target
            else:
                cache[n] = erlang_a_staffing(calls, interval_seconds, aht, n, patience, threshold)
        return cache[n]

    def meets(n: int) -> bool:
        f = figures(n)
        return f is not None and f.service_level >= target

    high = max(1, math.ceil(load))
    while not meets(high):
        high *= 2
        if high > MAX_AGENTS:
            raise ValueError(f"more than {MAX_AGENTS} agents would be needed")
    low = 0  # N = 0 never meets a target > 0
    while high - low > 1:
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    return figures(high)


def estimate_patience(total_wait_seconds: float, abandoned: int) -> float:
    """Mean patience (s) from the call log: Σ wait of all offered calls / abandoned calls.

    The standard estimate for exponential patience: every offered caller's wait is a (possibly
    censored) observation of their patience, so the maximum-likelihood rate is θ̂ = abandoned /
    Σ wait, which is also the M/M/N+M identity P(abandon) = θ·E[wait] (A. Mandelbaum and
    S. Zeltyn, "The impact of customers' patience on delay and abandonment: some
    empirically-driven experiments with the M/M/n+G queue", OR Spectrum 26(3), 2004; see also
    Brown et al., "Statistical analysis of a telephone call center", JASA 100, 2005).
    Returns ``math.inf`` (nobody abandons) when ``abandoned`` is 0. Raises ValueError for
    negative inputs.
    """
    if total_wait_seconds < 0 or abandoned < 0:
        raise ValueError("waits and abandons cannot be negative")
    if abandoned == 0:
        return math.inf
    return total_wait_seconds / abandoned


# --------------------------------------------------------------------------- history


@dataclass
class IntervalHistory:
    """Sums of one local weekday × interval over the history.

    ``weekday`` 0 = Monday; ``start_minute`` local minutes after midnight; ``occurrences`` how
    many times this weekday × interval occurred in the history (a DST day may lack or repeat
    one); ``offered``/``answered``/``abandoned`` calls; ``handled`` answered calls with a talk
    time and ``handle_seconds`` their talk + hold + wrap-up; ``wait_seconds`` the waits of the
    offered calls that ended (answered or abandoned).
    """

    weekday: int
    start_minute: int
    occurrences: int = 0
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    handled: int = 0
    handle_seconds: float = 0.0
    wait_seconds: float = 0.0

    @property
    def mean_offered(self) -> float:
        """Offered calls per occurrence (0 if the interval never occurred)."""
        return self.offered / self.occurrences if self.occurrences else 0.0

    @property
    def aht(self) -> float | None:
        """Mean handle time (s) of the handled calls, or None."""
        return self.handle_seconds / self.handled if self.handled else None

    @property
    def label(self) -> str:
        return f"{self.start_minute // 60:02d}:{self.start_minute % 60:02d}"


@dataclass
class History:
    """The call log's last weeks per local weekday × interval (keys ``(weekday, start_minute)``,
    every weekday × interval of the day present, also those without calls)."""

    start: datetime            # UTC, local midnight of the first day
    end: datetime              # UTC, local midnight after the last day (excluded)
    first_day: date
    last_day: date
    timezone: str
    interval_minutes: int
    intervals: dict[tuple[int, int], IntervalHistory] = field(default_factory=dict)

    def _total(self, name: str):
        return sum(getattr(i, name) for i in self.intervals.values())

    @property
    def offered(self) -> int:
        return self._total("offered")

    @property
    def abandoned(self) -> int:
        return self._total("abandoned")

    @property
    def aht(self) -> float | None:
        """Mean handle time (s) over the whole history, or None without handled calls."""
        handled = self._total("handled")
        return self._total("handle_seconds") / handled if handled else None

    @property
    def patience(self) -> float:
        """Estimated mean patience (s), :func:`estimate_patience`; ``math.inf`` without abandons."""
        return estimate_patience(self._total("wait_seconds"), self.abandoned)


def _offsets(start: datetime, end: datetime, zone: ZoneInfo, step: int):
    """UTC instants from ``start`` to ``end`` every ``step`` s with their UTC offsets (s), and the
    segments ``[(from, offset)]`` of constant offset. Every real zone's offsets and changes fall
    on quarter hours, so with ``step`` dividing 900 nothing is missed."""
    instants = []
    segments: list[tuple[datetime, int]] = []
    t = start
    while t < end:
        offset = int(t.astimezone(zone).utcoffset().total_seconds())
        if not segments or segments[-1][1] != offset:
            segments.append((t, offset))
        instants.append((t, offset))
        t += timedelta(seconds=step)
    return instants, segments


def _epoch_seconds(column, dialect: str):
    """SQL: whole seconds since 1970 (UTC) of a UTC timestamp column, as an integer."""
    if dialect == "sqlite":  # stored as naive UTC text
        return cast(func.strftime("%s", column), BigInteger)
    return cast(func.floor(func.extract("epoch", column)), BigInteger)


def _seconds_between(later, earlier, dialect: str):
    """SQL: ``later − earlier`` in (fractional) seconds."""
    if dialect == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return func.extract("epoch", later - earlier)


def load_history(session: Session, last_day: date, weeks: int, tz_name: str,
                 interval_minutes: int) -> History:
    """Sum the offered calls of the ``weeks`` weeks of local days ending with ``last_day``
    (included) per local weekday × interval, in the database.

    A call counts in the interval of its queue entry (the offer) in ``tz_name``. The local
    interval of each call is computed in SQL: its epoch seconds plus the zone's UTC offset,
    integer-divided by the interval length, with one offset per stretch between DST changes
    (a CASE over the few changes in the range), then ``GROUP BY`` that bucket; only the
    (at most weeks × 7 × intervals-per-day) bucket sums come back. The repeated autumn hour
    and the missing spring hour are counted as they occurred.

    ``interval_minutes`` must divide a day (1440). Raises ValueError for bad arguments and
    ``zoneinfo.ZoneInfoNotFoundError`` for an unknown zone.
    """
    if not (isinstance(weeks, int) and 1 <= weeks <= 520):
        raise ValueError("weeks must be from 1 to 520")
    if not (isinstance(interval_minutes, int) and 0 < interval_minutes <= 1440
            and 1440 % interval_minutes == 0):
        raise ValueError("the interval must be a whole number of minutes that divides a day "
                         "(e.g. 15, 30 or 60)")
    zone = ZoneInfo(tz_name)
    first_day = last_day - timedelta(days=7 * weeks - 1)
    start = datetime.combine(first_day, time(0), tzinfo=zone).astimezone(timezone.utc)
    end = datetime.combine(last_day + timedelta(days=1), time(0), tzinfo=zone).astimezone(timezone.utc)
    length = interval_minutes * 60
    history = History(start, end, first_day, last_day, tz_name, interval_minutes)
    for weekday in range(7):
        for minute in range(0, 1440, interval_minutes):
            history.intervals[(weekday, minute)] = IntervalHistory(weekday, minute)

    def key_of(bucket: int) -> tuple[int, int]:
        local = EPOCH + timedelta(seconds=bucket * length)
        return local.weekday(), local.hour * 60 + local.minute

    instants, segments = _offsets(start, end, zone, math.gcd(length, 900))
    seen: set[tuple[int, int]] = set()
    for t, offset in instants:  # occurrences: the distinct local intervals in the range, the
        bucket = (int(t.timestamp()) + offset) // length  # repeated hour told apart by offset
        if (bucket, offset) not in seen:
            seen.add((bucket, offset))
            history.intervals[key_of(bucket)].occurrences += 1

    dialect = session.get_bind().dialect.name
    epoch = _epoch_seconds(Call.queue_entered_at, dialect)

    def local_bucket(offset: int):
        # Integers of our own, inlined: the GROUP BY must repeat the select's expression exactly
        # (PostgreSQL treats two bind parameters as different expressions).
        return (epoch + literal_column(str(int(offset)), BigInteger)) \
            // literal_column(str(int(length)), BigInteger)

    if len(segments) == 1:
        bucket = local_bucket(segments[0][1])
    else:
        changes = [literal_column(f"'{at.strftime('%Y-%m-%d %H:%M:%S')}'") if dialect == "sqlite"
                   else literal_column(f"TIMESTAMPTZ '{at.isoformat()}'")
                   for at, _offset in segments[1:]]
        bucket = case(*[(Call.queue_entered_at < changes[i], local_bucket(offset))
                        for i, (_at, offset) in enumerate(segments[:-1])],
                      else_=local_bucket(segments[-1][1]))
    bucket = bucket.label("bucket")
    answered = Call.answered_at.is_not(None)
    abandoned = and_(Call.answered_at.is_(None), Call.ended_at.is_not(None))
    handled = and_(answered, Call.talk_seconds.is_not(None))
    wait = _seconds_between(func.coalesce(Call.answered_at, Call.ended_at), Call.queue_entered_at,
                            dialect)
    stmt = (select(bucket, func.count(),
                   func.count(Call.answered_at),
                   func.sum(case((abandoned, 1), else_=0)),
                   func.sum(case((handled, 1), else_=0)),
                   func.sum(case((handled, Call.talk_seconds + func.coalesce(Call.hold_seconds, 0)
                                  + func.coalesce(Call.wrap_up_seconds, 0)), else_=0)),
                   func.sum(cast(case((wait > 0, wait), else_=0), Float)))
            .where(Call.queue_entered_at >= start, Call.queue_entered_at < end)
            .group_by(bucket))
    for row in session.execute(stmt):
        item = history.intervals[key_of(int(row[0]))]
        item.offered += int(row[1])
        item.answered += int(row[2] or 0)
        item.abandoned += int(row[3] or 0)
        item.handled += int(row[4] or 0)
        item.handle_seconds += float(row[5] or 0)
        item.wait_seconds += float(row[6] or 0)
    return history


@dataclass(frozen=True)
class IntervalRecommendation:
    """Recommendation for one weekday × interval: the history's figures, the AHT used
    (None without calls), and the Erlang C and Erlang A staffing."""

    interval: IntervalHistory
    aht: float | None
    erlang_c: Staffing
    erlang_a: Staffing


def recommend_from_history(history: History, *, target: float = 0.8, threshold: float = 20.0,
                           aht: float | None = None,
                           patience: float | None = None) -> list[IntervalRecommendation]:
    """A recommendation per weekday × interval (Monday first), from its mean offered volume.

    AHT: ``aht`` if given, else the interval's own mean handle time, else the history's.
    Patience: ``patience`` if given, else :attr:`History.patience` (infinite without abandons,
    when Erlang A equals Erlang C). An interval with no offered calls gets 0 agents. Raises
    ValueError when calls need an AHT and the history has no handled call to give one.
    """
    mean_patience = history.patience if patience is None else patience
    length = history.interval_minutes * 60
    result = []
    for key in sorted(history.intervals):
        item = history.intervals[key]
        calls = item.mean_offered
        if calls == 0:
            result.append(IntervalRecommendation(item, None, Staffing("erlang_c", 0, 0.0, threshold),
                                                 Staffing("erlang_a", 0, 0.0, threshold)))
            continue
        handle = aht if aht is not None else (item.aht or history.aht)
        if handle is None:
            raise ValueError("the history has no answered call with a talk time; give the AHT")
        result.append(IntervalRecommendation(
            item, handle,
            recommend_erlang_c(calls, length, handle, target=target, threshold=threshold),
            recommend_erlang_a(calls, length, handle, mean_patience, target=target,
                               threshold=threshold)))
    return result
