"""``flask report``: service level, answer and abandonment rates, ASA and talk time per day and queue."""
from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from flask import current_app
from flask.cli import with_appcontext

from db import get_read_session
from reporting.agents import AgentTime, agent_times
from reporting.metrics import MetricsAccumulator
from reporting.report import IN_IVR, Report, build_report

NO_DATA = "–"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Not-offered outcomes always shown in CSV, in this order; any other label is added after them.
NOT_OFFERED_KINDS = ("ivr_abandoned", "out_of_hours", "transferred", IN_IVR)


def _percent(value: float | None) -> str:
    """0.81132 → '81.1%'; None → '–'. Halves round up (6.25 % → 6.3 %)."""
    if value is None:
        return NO_DATA
    return f"{Decimal(repr(value * 100)).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"


def _seconds(value: float | None) -> str:
    if value is None:
        return NO_DATA
    return str(Decimal(repr(value)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def formula_lines(report: Report) -> list[str]:
    """The definitions a reader needs to interpret the numbers (metrics.md: every report states them)."""
    t = f"{report.threshold:g}"
    return [
        f"Call report {report.start} – {report.end}, time zone {report.timezone}",
        f"service level = answered within {t} s / offered (sl_offered); within = wait ≤ {t} s",
        "answer rate = answered / offered; abandonment rate = abandoned / offered",
        "ASA = total wait of answered calls / answered (s); wait = queue entry → answer, "
        "IVR time excluded",
        "mean talk = talk seconds of answered calls / answered calls with a talk time (s)",
        "offered = calls that entered a queue, counted on the local day of queue entry; "
        "not offered = never reached a queue, counted on the local day of arrival",
        f"{NO_DATA} = no data (no offered or no answered calls)",
    ]


HEADERS = ("date", "queue", "offered", "answered", "abandoned", "in progress", "SL",
           "answer rate", "aband. rate", "ASA (s)", "mean talk (s)")


def _row(label_date: str, label: str, acc: MetricsAccumulator) -> list[str]:
    return [label_date, label, str(acc.offered), str(acc.answered), str(acc.abandoned),
            str(acc.in_progress), _percent(acc.sl_offered), _percent(acc.answer_rate),
            _percent(acc.abandonment_rate), _seconds(acc.asa), _seconds(acc.mean_talk)]


def _not_offered_text(total: int, counts) -> str:
    detail = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()) if n)
    return f"not offered: {total}" + (f" ({detail})" if detail else "")


def render_table(report: Report) -> str:
    """The report as a fixed-width text table, formulas first."""
    rows: list[list[str] | str] = []
    for day in report.days:
        iso = day.day.isoformat()
        for name, acc in day.queues.items():
            rows.append(_row(iso, name, acc))
        hours = "" if round(day.hours) == 24 else f" ({day.hours:g} h day)"
        rows.append(_row(iso, f"day total{hours}", day.total))
        rows.append(f"{iso}  {_not_offered_text(day.not_offered_total, day.not_offered)}; "
                    f"IVR struggle: {day.ivr_struggle}")
    rows.append(_row("range", "total", report.total))
    rows.append(f"range  {_not_offered_text(report.not_offered_total, report.not_offered)}")

    table = [list(HEADERS)] + [r for r in rows if isinstance(r, list)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]

    def fmt(cells: list[str]) -> str:
        left = [cells[i].ljust(widths[i]) for i in (0, 1)]
        right = [cells[i].rjust(widths[i]) for i in range(2, len(cells))]
        return "  ".join(left + right).rstrip()

    lines = formula_lines(report) + ["", fmt(list(HEADERS))]
    for r in rows:
        lines.append(fmt(r) if isinstance(r, list) else r)
    return "\n".join(lines) + "\n"


def _ratio_csv(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _seconds_csv(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def render_csv(report: Report) -> str:
    """The report as CSV: one row per (day, queue), per day and for the range.

    ``level`` is queue, day or range; rates are fractions (0–1) and empty when there is no
    data; the threshold and time zone are on every row. Not-offered counts are on day and
    range rows.
    """
    kinds = list(NOT_OFFERED_KINDS) + sorted(set(report.not_offered) - set(NOT_OFFERED_KINDS))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["level", "date", "queue", "offered", "answered", "abandoned", "in_progress",
                     "answered_within_threshold", "sl_offered", "answer_rate", "abandonment_rate",
                     "asa_seconds", "mean_talk_seconds", "threshold_seconds", "timezone",
                     "not_offered"] + [f"not_offered_{k}" for k in kinds])

    def write(level: str, day: str, queue: str, acc: MetricsAccumulator, not_offered=None) -> None:
        extra = [""] * (1 + len(kinds))
        if not_offered is not None:
            extra = [str(sum(not_offered.values()))] + [str(not_offered.get(k, 0)) for k in kinds]
        writer.writerow([level, day, queue, acc.offered, acc.answered, acc.abandoned,
                         acc.in_progress, acc.answered_within, _ratio_csv(acc.sl_offered),
                         _ratio_csv(acc.answer_rate), _ratio_csv(acc.abandonment_rate),
                         _seconds_csv(acc.asa), _seconds_csv(acc.mean_talk),
                         f"{report.threshold:g}", report.timezone] + extra)

    for day in report.days:
        for name, acc in day.queues.items():
            write("queue", day.day.isoformat(), name, acc)
        write("day", day.day.isoformat(), "", day.total, day.not_offered)
    write("range", f"{report.start}/{report.end}", "", report.total, report.not_offered)
    return out.getvalue()


MAX_REPORT_DAYS = 3660


def _parse_date(ctx, param, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        if not _DATE.fullmatch(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date in the form YYYY-MM-DD") from None


@click.command("report")
@click.option("--from", "start", required=True, callback=_parse_date, metavar="YYYY-MM-DD",
              help="First local day of the report (included).")
@click.option("--to", "end", required=True, callback=_parse_date, metavar="YYYY-MM-DD",
              help="Last local day of the report (included).")
@click.option("--threshold", type=click.IntRange(min=0), default=None, metavar="SECONDS",
              help="Service-level threshold T in seconds (default: SERVICE_LEVEL_SECONDS).")
@click.option("--timezone", "tz_name", default=None,
              help="Time zone of the report's days (default: TIMEZONE, e.g. Europe/Tallinn).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default="table",
              show_default=True)
@click.option("--agents", is_flag=True,
              help="Also print each agent's time per state, handled calls, AHT and occupancy "
                   "(from the agents' state history).")
@with_appcontext
def report_command(start: date, end: date, threshold: int | None, tz_name: str | None,
                   fmt: str, agents: bool) -> None:
    """Service level, answer and abandonment rates, ASA and talk time per local day and queue."""
    if start > end:
        raise click.UsageError(f"--from {start} is after --to {end}")
    if (end - start).days >= MAX_REPORT_DAYS or start.year < 1900 or end.year > 2999:
        raise click.UsageError(f"report at most {MAX_REPORT_DAYS} days between 1900 and 2999 at once")
    threshold = current_app.config["SERVICE_LEVEL_SECONDS"] if threshold is None else threshold
    tz_name = current_app.config["TIMEZONE"] if tz_name is None else tz_name
    try:
        ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"unknown time zone {tz_name!r}", param_hint="'--timezone'") from None
    report = build_report(get_read_session(), start, end, tz_name, threshold)
    click.echo(render_table(report) if fmt == "table" else render_csv(report), nl=False)
    if agents:
        zone = ZoneInfo(tz_name)
        since = datetime.combine(start, time(0), tzinfo=zone)
        until = datetime.combine(end + timedelta(days=1), time(0), tzinfo=zone)
        times = agent_times(get_read_session(), since, until,
                            wrap_up_seconds=current_app.config["WRAP_UP_SECONDS"])
        click.echo(render_agents(times, fmt))


AGENT_HEADERS = ("agent", "available (s)", "offered (s)", "busy (s)", "wrap-up (s)",
                 "not ready (s)", "handled", "AHT (s)", "occupancy")


def render_agents(times: list[AgentTime], fmt: str = "table") -> str:
    """Agent time per state, handled, AHT = (busy + wrap-up) / handled, occupancy =
    (offered + busy + wrap-up) / (available + offered + busy + wrap-up)."""
    rows = [[t.agent] + [_seconds(t.seconds[s]) for s in ("available", "offered", "busy",
                                                             "wrap_up", "not_ready")]
            + [str(t.handled), _seconds(t.aht), _percent(t.occupancy)] for t in times]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["agent", "available_seconds", "offered_seconds", "busy_seconds",
                         "wrap_up_seconds", "not_ready_seconds", "handled", "aht_seconds",
                         "occupancy"])
        for t in times:
            writer.writerow([t.agent] + [f"{t.seconds[s]:.3f}" for s in (
                "available", "offered", "busy", "wrap_up", "not_ready")]
                + [t.handled, _seconds_csv(t.aht), _ratio_csv(t.occupancy)])
        return out.getvalue()
    lines = ["", "Agents: AHT = (busy + wrap-up) / handled; occupancy = (offered + busy + "
             "wrap-up) / (available + offered + busy + wrap-up)"]
    widths = [max(len(str(r[i])) for r in [AGENT_HEADERS] + rows) for i in range(len(AGENT_HEADERS))]
    for row in [AGENT_HEADERS] + rows:
        lines.append("  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                               for i, (v, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)
