"""``flask report``: service level, answer and abandonment rates, ASA and talk time per day and queue."""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from flask import current_app
from flask.cli import with_appcontext

from db import get_read_session
from reporting.agents import AgentTime, agent_times
from reporting.aggregate import (DIMENSIONS, INTERVALS, AggregateReport, Group, ReportError,
                                 ReportSpec, group_values, parse_fcr_windows, parse_filters,
                                 report_as_dict, run_report)
from reporting.aggregate import formula_lines as aggregate_formula_lines
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
        "dequeued = offered calls the service moved on before an answer (to a unit, at the "
        "maximum wait, no agent left, queue full): neither answered nor abandoned",
        "ASA = total wait of answered calls / answered (s); wait = queue entry → answer, "
        "IVR time excluded",
        "mean talk = talk seconds of answered calls / answered calls with a talk time (s)",
        "offered = calls that entered a queue, counted on the local day of queue entry; "
        "not offered = never reached a queue, counted on the local day of arrival",
        f"{NO_DATA} = no data (no offered or no answered calls)",
    ]


HEADERS = ("date", "queue", "offered", "answered", "abandoned", "dequeued", "in progress", "SL",
           "answer rate", "aband. rate", "ASA (s)", "mean talk (s)")


def _row(label_date: str, label: str, acc: MetricsAccumulator) -> list[str]:
    return [label_date, label, str(acc.offered), str(acc.answered), str(acc.abandoned),
            str(acc.dequeued), str(acc.in_progress), _percent(acc.sl_offered), _percent(acc.answer_rate),
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
    writer.writerow(["level", "date", "queue", "offered", "answered", "abandoned", "dequeued",
                     "in_progress",
                     "answered_within_threshold", "sl_offered", "answer_rate", "abandonment_rate",
                     "asa_seconds", "mean_talk_seconds", "threshold_seconds", "timezone",
                     "not_offered"] + [f"not_offered_{k}" for k in kinds])

    def write(level: str, day: str, queue: str, acc: MetricsAccumulator, not_offered=None) -> None:
        extra = [""] * (1 + len(kinds))
        if not_offered is not None:
            extra = [str(sum(not_offered.values()))] + [str(not_offered.get(k, 0)) for k in kinds]
        writer.writerow([level, day, queue, acc.offered, acc.answered, acc.abandoned,
                         acc.dequeued, acc.in_progress, acc.answered_within, _ratio_csv(acc.sl_offered),
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


def _fcr_windows(text: str) -> tuple[int, ...]:
    """'1,7' → (1, 7). Raises click.BadParameter for anything else."""
    try:
        return parse_fcr_windows(text)
    except ReportError as exc:
        raise click.BadParameter(str(exc), param_hint="'--fcr-window'") from None


def _dimension_list(ctx, param, value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    dims = tuple(part.strip() for part in value.split(",") if part.strip())
    for dim in dims:
        if dim not in DIMENSIONS:
            raise click.BadParameter(f"unknown dimension {dim!r}; use {', '.join(DIMENSIONS)}")
    return dims


def _filters(ctx, param, values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    try:
        return parse_filters(values)
    except ReportError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("report")
@click.option("--from", "start", required=True, callback=_parse_date, metavar="YYYY-MM-DD",
              help="First local day of the report (included).")
@click.option("--to", "end", required=True, callback=_parse_date, metavar="YYYY-MM-DD",
              help="Last local day of the report (included).")
@click.option("--threshold", type=click.IntRange(min=0), default=None, metavar="SECONDS",
              help="Service-level threshold T in seconds (default: SERVICE_LEVEL_SECONDS).")
@click.option("--timezone", "tz_name", default=None,
              help="Time zone of the report's days (default: TIMEZONE, e.g. Europe/Tallinn).")
@click.option("--interval", type=click.Choice(INTERVALS), default=None,
              help="Full report cut into these intervals (local time).")
@click.option("--by", "dimensions", default=None, callback=_dimension_list, metavar="DIMS",
              help="Full report grouped by these, comma-separated: queue,agent,language,topic.")
@click.option("--filter", "filters", multiple=True, callback=_filters, metavar="DIM=VALUE",
              help="Only calls with this queue, agent, language or topic (repeatable).")
@click.option("--short-abandon", type=click.FloatRange(min=0, max=86400), default=None, metavar="SECONDS",
              help="Short-abandon cut-off (default: REPORT_SHORT_ABANDON_SECONDS).")
@click.option("--fcr-window", "fcr_windows", default=None, metavar="DAYS",
              help="Repeat-contact FCR windows in days, e.g. 1,7 (default: REPORT_FCR_WINDOWS).")
@click.option("--source", type=click.Choice(["live", "imported", "callback"]), default=None,
              help="Only live, imported or callback calls (default: all).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--nps", is_flag=True,
              help="The recommendation index (NPS) from the survey answers instead, by --interval "
                   "(day/week/month/quarter) and --by (queue,agent,language,channel).")
@click.option("--agents", is_flag=True,
              help="Also print each agent's time per state, handled calls, AHT and occupancy "
                   "(from the agents' state history).")
@with_appcontext
def report_command(start: date, end: date, threshold: int | None, tz_name: str | None,
                   interval: str | None, dimensions: tuple[str, ...],
                   filters: tuple[tuple[str, str], ...], short_abandon: float | None,
                   fcr_windows: str | None, source: str | None, fmt: str, nps: bool,
                   agents: bool) -> None:
    """Service level (every variant), answer and abandonment rates, ASA, AHT, talk time and FCR.

    Without --interval, --by, --filter, --source or --format json it prints the daily summary
    per queue; with any of them, the full report with every metric of metrics.md.
    """
    if start > end:
        raise click.UsageError(f"--from {start} is after --to {end}")
    if (end - start).days >= MAX_REPORT_DAYS or start.year < 1900 or end.year > 2999:
        raise click.UsageError(f"report at most {MAX_REPORT_DAYS} days between 1900 and 2999 at once")
    config = current_app.config
    if nps:
        _nps(start, end, tz_name or config["TIMEZONE"], interval, dimensions, filters, fmt)
        return
    threshold = config["SERVICE_LEVEL_SECONDS"] if threshold is None else threshold
    tz_name = config["TIMEZONE"] if tz_name is None else tz_name
    try:
        ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"unknown time zone {tz_name!r}", param_hint="'--timezone'") from None
    full = bool(interval or dimensions or filters or source or fcr_windows or short_abandon is not None
                or fmt == "json")
    if full:
        spec = ReportSpec(start, end, timezone=tz_name, interval=interval or "day",
                          dimensions=dimensions, threshold=float(threshold),
                          short_abandon=float(config["REPORT_SHORT_ABANDON_SECONDS"]
                                              if short_abandon is None else short_abandon),
                          fcr_windows=_fcr_windows(fcr_windows or config["REPORT_FCR_WINDOWS"]),
                          source=source, filters=filters)
        try:
            result = run_report(get_read_session(), spec, now=config["CLOCK"]())
        except ReportError as exc:
            raise click.UsageError(str(exc)) from None
        if fmt == "json":
            click.echo(json.dumps(report_as_dict(result), ensure_ascii=False, indent=1))
        elif fmt == "csv":
            click.echo(render_full_csv(result), nl=False)
        else:
            click.echo(render_full_table(result), nl=False)
    else:
        try:
            report = build_report(get_read_session(), start, end, tz_name, threshold)
        except ReportError as exc:
            raise click.UsageError(str(exc)) from None
        click.echo(render_table(report) if fmt == "table" else render_csv(report), nl=False)
    if agents:
        zone = ZoneInfo(tz_name)
        since = datetime.combine(start, time(0), tzinfo=zone)
        until = datetime.combine(end + timedelta(days=1), time(0), tzinfo=zone)
        times = agent_times(get_read_session(), since, until,
                            wrap_up_seconds=config["WRAP_UP_SECONDS"])
        click.echo(render_agents(times, fmt if fmt != "json" else "csv"))


# Columns of the full table: (header, key in reporting.aggregate.group_values, kind).
FULL_COLUMNS = (("offered", "offered", "n"), ("answ", "answered", "n"),
                ("aband", "abandoned", "n"), ("short", "short_abandoned", "n"),
                ("SL#3 off", "sl_offered", "%"), ("SL#4 ex.ab", "sl_excl_early_abandons", "%"),
                ("SL#2 ans", "sl_answered", "%"), ("SL ex.short", "sl_excl_short_abandons", "%"),
                ("SL#1 ab.met", "sl_abandons_met", "%"), ("answer", "answer_rate", "%"),
                ("aband.", "abandonment_rate", "%"), ("ab.ex.sh", "abandonment_rate_excl_short", "%"),
                ("ASA", "asa_seconds", "s"), ("AHT", "aht_seconds", "s"),
                ("talk", "mean_talk_seconds", "s"), ("FCR disp", "fcr_disposition", "%"))


def _full_rows(result: AggregateReport) -> list[tuple[str, tuple[str, ...], Group]]:
    dims = result.spec.dimensions
    rows: list[tuple[str, tuple[str, ...], Group]] = []
    for item in result.intervals:
        hours = "" if result.spec.interval != "day" or round(item.interval.hours) == 24 \
            else f" ({item.interval.hours:g} h)"
        for group in item.groups:
            rows.append((item.interval.label, group.dims, group))
        rows.append((item.interval.label + hours, ("total",) + ("",) * (len(dims) - 1)
                     if dims else (), item.total))
    for group in result.groups:
        rows.append(("range", group.dims, group))
    rows.append(("range", ("total",) + ("",) * (len(dims) - 1) if dims else (), result.total))
    return rows


def render_full_table(result: AggregateReport) -> str:
    """The full report as a text table: formulas first, then one row per interval × group,
    each interval's total, and the range rows."""
    spec = result.spec
    windows = sorted(set(spec.fcr_windows))
    headers = ["interval"] + list(spec.dimensions) + [h for h, _, _ in FULL_COLUMNS] \
        + [f"FCR {w}d" for w in windows] + ["not offered"]
    table: list[list[str]] = []
    for label, dims, group in _full_rows(result):
        values = group_values(group, windows)
        cells = [label] + list(dims)
        for _, key, kind in FULL_COLUMNS:
            value = values[key]
            cells.append(str(value) if kind == "n" else _percent(value) if kind == "%" else _seconds(value))
        cells += [_percent(values[f"fcr_repeat_{w}d"]) for w in windows]
        cells.append(str(sum(group.not_offered.values())) if not dims or dims[0] == "total" else "")
        table.append(cells)
    widths = [max(len(r[i]) for r in [headers] + table) for i in range(len(headers))]
    left = 1 + len(spec.dimensions)

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(widths[i]) if i < left else c.rjust(widths[i])
                         for i, c in enumerate(cells)).rstrip()

    lines = [f"Call report {spec.start} – {spec.end}"] + aggregate_formula_lines(spec) + [
        f"{NO_DATA} = no data", "", fmt(headers)]
    lines += [fmt(r) for r in table]
    return "\n".join(lines) + "\n"


def render_full_csv(result: AggregateReport) -> str:
    """The full report as CSV: one row per interval × group (level ``group``), per interval
    (level ``interval``) and for the range (levels ``range_group`` and ``range``). Rates are
    fractions 0–1, empty when there is no data; every row carries the time zone, threshold,
    short-abandon cut-off and FCR windows it was computed with."""
    spec = result.spec
    windows = sorted(set(spec.fcr_windows))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    value_keys = list(group_values(result.total, windows))
    writer.writerow(["level", "interval", "start", "end"] + list(spec.dimensions) + value_keys
                    + ["not_offered", "timezone", "threshold_seconds", "short_abandon_seconds",
                       "fcr_windows_days"])

    def cell(value) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.6f}"
        return str(value)

    def write(level: str, label: str, start: str, end: str, group: Group) -> None:
        values = group_values(group, windows)
        writer.writerow([level, label, start, end] + list(group.dims or ("",) * len(spec.dimensions))
                        + [cell(values[k]) for k in value_keys]
                        + [str(sum(group.not_offered.values())) if level in ("interval", "range") else "",
                           spec.timezone, f"{spec.threshold:g}", f"{spec.short_abandon:g}",
                           " ".join(map(str, windows))])

    for item in result.intervals:
        start, end = item.interval.start.isoformat(), item.interval.end.isoformat()
        for group in item.groups:
            write("group", item.interval.label, start, end, group)
        write("interval", item.interval.label, start, end, item.total)
    for group in result.groups:
        write("range_group", "range", str(spec.start), str(spec.end), group)
    write("range", "range", str(spec.start), str(spec.end), result.total)
    return out.getvalue()


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


def _nps(start: date, end: date, tz_name: str, interval: str | None, dimensions: tuple[str, ...],
         filters: tuple[tuple[str, str], ...], fmt: str) -> None:
    """``flask report --nps``: the NPS report (reporting/nps_report.py) as a table or JSON."""
    from reporting.nps_report import format_nps_table, nps_report

    try:
        report = nps_report(get_read_session(), start, end, tz_name=tz_name, interval=interval,
                            dimensions=dimensions, filters=filters)
    except ReportError as exc:
        raise click.UsageError(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=1))
    else:
        click.echo(format_nps_table(report), nl=False)
