"""The recommendation index (NPS) from the survey answers: per period, queue, agent, language
and channel, counted in SQL (GROUP BY), plus the low scores for the quality team.

Definitions (../shared/design/metrics.md): promoters 9–10, passives 7–8, detractors 0–6;
NPS = % promoters − % detractors (−100…+100), None when n = 0. Survey FCR = answers "resolved:
yes" / answers to the resolved question. An answer belongs to the period of its
``received_at`` in local time (``timezone``), to the queue and the agent of the leg the caller
ended on, and to the caller's language.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.orm import Session

from ivr.models import Call
from reporting.aggregate import ReportError, intervals_between
from reporting.metrics import NPS_DETRACTOR_MAX, NPS_PROMOTER_MIN, net_promoter_score
from routing.models import Agent, Queue
from survey.models import SurveyResponse

NPS_DIMENSIONS = ("queue", "agent", "language", "channel")
NPS_INTERVALS = ("day", "week", "month", "quarter")
LOW_SCORE_MAX = 6


@dataclass(frozen=True)
class NpsRow:
    """One group: ``period`` label (None without an interval), ``dims`` (dimension → value),
    counts, ``nps`` (−100…+100, None when n = 0) and survey FCR (0…1, None when nobody
    answered the resolved question)."""

    period: str | None
    dims: dict[str, str | None]
    n: int
    promoters: int
    passives: int
    detractors: int
    resolved_answers: int
    resolved_yes: int

    @property
    def nps(self) -> float | None:
        return net_promoter_score(self.promoters, self.passives, self.detractors)

    @property
    def survey_fcr(self) -> float | None:
        return self.resolved_yes / self.resolved_answers if self.resolved_answers else None

    def as_dict(self) -> dict:
        """JSON shape: period, the dimensions, n, promoters, passives, detractors, nps
        (rounded to 0.1), resolved_answers, resolved_yes, survey_fcr (0…1, 4 decimals)."""
        return {"period": self.period, **self.dims, "n": self.n, "promoters": self.promoters,
                "passives": self.passives, "detractors": self.detractors,
                "nps": None if self.nps is None else round(self.nps, 1),
                "resolved_answers": self.resolved_answers, "resolved_yes": self.resolved_yes,
                "survey_fcr": None if self.survey_fcr is None else round(self.survey_fcr, 4)}


@dataclass
class NpsReport:
    """Rows (by period and dimensions, in order) and the total over the whole range."""

    start: date
    end: date
    timezone: str
    interval: str | None
    dimensions: tuple[str, ...]
    rows: list[NpsRow] = field(default_factory=list)
    total: NpsRow | None = None

    def as_dict(self) -> dict:
        """JSON shape: from, to, timezone, interval, by, definitions, rows, total."""
        return {"from": self.start.isoformat(), "to": self.end.isoformat(),
                "timezone": self.timezone, "interval": self.interval, "by": list(self.dimensions),
                "definitions": {"promoters": "9-10", "passives": "7-8", "detractors": "0-6",
                                "nps": "% promoters - % detractors",
                                "survey_fcr": "resolved yes / answers to the resolved question"},
                "rows": [r.as_dict() for r in self.rows],
                "total": self.total.as_dict() if self.total else None}


def _dimension_columns(dims: tuple[str, ...]):
    columns = {"queue": Queue.name, "agent": Agent.name, "language": SurveyResponse.language,
               "channel": SurveyResponse.channel}
    return [columns[d].label(d) for d in dims]


def _counts():
    score = SurveyResponse.score
    return [func.count().label("n"),
            func.sum(case((score >= NPS_PROMOTER_MIN, 1), else_=0)).label("promoters"),
            func.sum(case((and_(score > NPS_DETRACTOR_MAX, score < NPS_PROMOTER_MIN), 1),
                          else_=0)).label("passives"),
            func.sum(case((score <= NPS_DETRACTOR_MAX, 1), else_=0)).label("detractors"),
            func.count(SurveyResponse.resolved).label("resolved_answers"),
            func.sum(case((SurveyResponse.resolved.is_(True), 1), else_=0)).label("resolved_yes")]


# The dates a report may ask for: far enough from date.min/date.max that local midnights
# (and the day after ``to``) stay representable in UTC, in every database.
FIRST_DATE, LAST_DATE = date(1900, 1, 1), date(2999, 12, 31)


def _check_dates(start: date, end: date) -> None:
    for name, day in (("from", start), ("to", end)):
        if not FIRST_DATE <= day <= LAST_DATE:
            raise ReportError(f"'{name}' must be between {FIRST_DATE} and {LAST_DATE}, got {day}")
    if end < start:
        raise ReportError("'from' must not be after 'to'")


def _zone(tz_name: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz_name)
    except Exception:
        raise ReportError(f"unknown time zone {tz_name!r}") from None


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(timezone.utc)


def nps_report(session: Session, start: date, end: date, *, tz_name: str = "Europe/Tallinn",
               interval: str | None = None, dimensions: tuple[str, ...] = (),
               filters: tuple[tuple[str, str], ...] = ()) -> NpsReport:
    """NPS of the answers received on local days ``start``..``end`` (inclusive), grouped by
    ``interval`` (day, week, month, quarter; None: the whole range) and ``dimensions``
    (queue, agent, language, channel), with ``filters`` ((dimension, value) pairs). One SQL
    GROUP BY query for the rows and one for the total. Raises ReportError for an unknown
    interval, dimension or time zone, a date outside 1900–2999, or a range over 366 days."""
    tz = _zone(tz_name)
    _check_dates(start, end)
    if interval is not None and interval not in NPS_INTERVALS:
        raise ReportError(f"unknown interval {interval!r}; use one of {', '.join(NPS_INTERVALS)}")
    for dim in list(dimensions) + [name for name, _ in filters]:
        if dim not in NPS_DIMENSIONS:
            raise ReportError(f"unknown dimension {dim!r}; use {', '.join(NPS_DIMENSIONS)}")
    if end < start or (end - start).days > 366:
        raise ReportError("'from' must not be after 'to', and at most 367 days apart")
    lo, hi = _local_midnight(start, tz), _local_midnight(end + timedelta(days=1), tz)
    base = (select().select_from(SurveyResponse)
            .outerjoin(Queue, Queue.id == SurveyResponse.queue_id)
            .outerjoin(Agent, Agent.id == SurveyResponse.agent_id)
            .where(SurveyResponse.received_at >= lo, SurveyResponse.received_at < hi))
    columns = {"queue": Queue.name, "agent": Agent.name, "language": SurveyResponse.language,
               "channel": SurveyResponse.channel}
    for dim, value in filters:
        base = base.where(columns[dim] == value)
    labels: list[str] = []
    group = list(_dimension_columns(dimensions))
    raw = [columns[d] for d in dimensions]  # grouped by expression: a label may be ambiguous
    if interval is not None:
        periods = intervals_between(start, end, interval, tz)
        labels = [p.label for p in periods]
        # Each answer's period by its UTC time against the periods' UTC bounds (DST-correct,
        # the same SQL on PostgreSQL and SQLite).
        period = case(*[(SurveyResponse.received_at < p.utc_end, literal(i))
                        for i, p in enumerate(periods)], else_=literal(len(periods))).label("period")
        group.insert(0, period)
        raw.insert(0, period.element)
    report = NpsReport(start, end, tz_name, interval, tuple(dimensions))
    if group:
        query = base.add_columns(*group, *_counts()).group_by(*raw).order_by(*raw)
        for row in session.execute(query).mappings():
            report.rows.append(_row(row, labels if interval else None, dimensions))
    total = session.execute(base.add_columns(*_counts())).mappings().one()
    report.total = _row(total, None, ())
    return report


def _row(row, labels: list[str] | None, dimensions: tuple[str, ...]) -> NpsRow:
    period = None
    if labels is not None:
        index = row["period"]
        period = labels[index] if index is not None and 0 <= index < len(labels) else None
    return NpsRow(period, {d: row[d] for d in dimensions}, int(row["n"] or 0),
                  int(row["promoters"] or 0), int(row["passives"] or 0),
                  int(row["detractors"] or 0), int(row["resolved_answers"] or 0),
                  int(row["resolved_yes"] or 0))


def low_scores(session: Session, start: date, end: date, *, tz_name: str = "Europe/Tallinn",
               max_score: int = LOW_SCORE_MAX, limit: int = 100, offset: int = 0) -> list[dict]:
    """Answers with a score ≤ ``max_score`` received on local days ``start``..``end``, newest
    first, each with its call (CallSid, queue, agent, language, topic, answer time, talk
    seconds, disposition) for spot checks. No caller numbers. Raises ReportError for an
    unknown time zone, a date outside 1900–2999 or ``start`` after ``end``."""
    tz = _zone(tz_name)
    _check_dates(start, end)
    lo, hi = _local_midnight(start, tz), _local_midnight(end + timedelta(days=1), tz)
    query = (select(SurveyResponse, Call, Queue.name.label("queue"), Agent.name.label("agent"))
             .join(Call, Call.id == SurveyResponse.call_id)
             .outerjoin(Queue, Queue.id == SurveyResponse.queue_id)
             .outerjoin(Agent, Agent.id == SurveyResponse.agent_id)
             .where(SurveyResponse.score <= max_score, SurveyResponse.received_at >= lo,
                    SurveyResponse.received_at < hi)
             .order_by(SurveyResponse.received_at.desc(), SurveyResponse.id.desc())
             .limit(limit).offset(offset))
    out = []
    for answer, call, queue, agent in session.execute(query):
        out.append({
            "id": answer.id, "score": answer.score, "resolved": answer.resolved,
            "channel": answer.channel, "received_at": answer.received_at.isoformat(),
            "queue": queue, "agent": agent, "language": answer.language,
            "call": {"call_sid": call.call_sid, "topic": call.topic,
                     "answered_at": call.answered_at.isoformat() if call.answered_at else None,
                     "talk_seconds": call.talk_seconds, "outcome": call.outcome,
                     "disposition": call.disposition, "transfer_kind": call.transfer_kind,
                     "escalated": call.escalated}})
    return out


def format_nps_table(report: NpsReport) -> str:
    """The report as a plain-text table (one line per row, then the total)."""
    head = (["period"] if report.interval else []) + list(report.dimensions) + [
        "n", "promoters", "passives", "detractors", "NPS", "survey FCR"]
    lines = [f"NPS (recommendation index) {report.start} – {report.end} ({report.timezone}); "
             "promoters 9–10, passives 7–8, detractors 0–6; NPS = % promoters − % detractors",
             "\t".join(head)]

    def cells(row: NpsRow) -> list[str]:
        nps = "no data" if row.nps is None else f"{row.nps:+.1f}"
        fcr = "–" if row.survey_fcr is None else f"{100 * row.survey_fcr:.1f} %"
        return [str(row.n), str(row.promoters), str(row.passives), str(row.detractors), nps, fcr]

    for row in report.rows:
        lines.append("\t".join(([row.period or ""] if report.interval else [])
                               + [str(row.dims[d]) for d in report.dimensions] + cells(row)))
    if report.total is not None:
        pad = (1 if report.interval else 0) + len(report.dimensions)
        lines.append("\t".join((["total"] + [""] * (pad - 1) if pad else []) + cells(report.total)))
    return "\n".join(lines) + "\n"
