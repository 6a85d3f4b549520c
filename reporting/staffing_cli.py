"""``flask staffing``: agents per interval for a service-level target, by Erlang C and Erlang A.

Two modes: from the call log's last weeks (default), or a calculator for one interval
(``--calls``). The logic is in :mod:`reporting.staffing`; this module parses options and prints.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import date, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from flask import current_app
from flask.cli import with_appcontext

from db import get_read_session
from reporting.staffing import (FORMULAS, HISTORY_FORMULAS, WEEKDAYS, IntervalRecommendation,
                                Staffing, erlang_a_staffing, erlang_c_staffing, load_history,
                                recommend_erlang_a, recommend_erlang_c, recommend_from_history)

NO_DATA = "–"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _pct(value: float | None) -> str:
    return NO_DATA if value is None else f"{value * 100:.2f}%"


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return NO_DATA
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _csv_num(value: float | None, digits: int = 6) -> str:
    if value is None:
        return ""
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _json_num(value: float | None):
    return None if value is None or math.isinf(value) else value


def _staffing_dict(s: Staffing) -> dict:
    return {"agents": s.agents, "load_erlangs": _json_num(s.load), "p_wait": s.p_wait,
            "service_level": s.service_level, "asa_seconds": s.asa, "p_abandon": s.p_abandon,
            "occupancy": s.occupancy}


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [headers] + rows) for i in range(len(headers))]
    return ["  ".join(cell.rjust(widths[i]) if i else cell.ljust(widths[i])
                      for i, cell in enumerate(row)).rstrip() for row in [headers] + rows]


def _parameter_lines(params: dict) -> list[str]:
    shown = ", ".join(f"{k} {v}" for k, v in params.items())
    return [f"Staffing: {shown}"]


# --------------------------------------------------------------------------- calculator


def _calculator(calls: float, interval: int, aht: float, patience: float | None, target: float,
                threshold: float, fmt: str) -> str:
    seconds = interval * 60
    best_c = recommend_erlang_c(calls, seconds, aht, target=target, threshold=threshold)
    best_a = None
    if patience is not None:
        best_a = recommend_erlang_a(calls, seconds, aht, patience, target=target,
                                    threshold=threshold)
    # The recommendation with its neighbours, so the step over the target shows.
    around = []
    if calls > 0:
        low = max(math.floor(best_c.load) + 1, best_c.agents - 2)
        for n in range(low, best_c.agents + 3):
            c = erlang_c_staffing(calls, seconds, aht, n, threshold)
            a = erlang_a_staffing(calls, seconds, aht, n, patience, threshold) \
                if patience is not None else None
            around.append((c, a))
    params = {"calls": calls, "interval_minutes": interval, "aht_seconds": aht,
              "patience_seconds": _json_num(patience) if patience is not None else None,
              "target": target, "threshold_seconds": threshold}
    if fmt == "json":
        return json.dumps({
            "parameters": params, "formulas": list(FORMULAS),
            "erlang_c": _staffing_dict(best_c),
            "erlang_a": _staffing_dict(best_a) if best_a else None,
            "agents": [{"agents": c.agents, "erlang_c": _staffing_dict(c),
                        "erlang_a": _staffing_dict(a) if a else None} for c, a in around],
        }, indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["model", "agents", "recommended", "load_erlangs", "p_wait",
                         "service_level", "asa_seconds", "p_abandon", "occupancy", "calls",
                         "interval_minutes", "aht_seconds", "patience_seconds", "target",
                         "threshold_seconds"])
        for c, a in around or [(best_c, best_a)]:
            for s, best in ((c, best_c), (a, best_a)):
                if s is None:
                    continue
                writer.writerow([s.model, s.agents, int(s.agents == best.agents),
                                 _csv_num(s.load), _csv_num(s.p_wait), _csv_num(s.service_level),
                                 _csv_num(s.asa, 3), _csv_num(s.p_abandon),
                                 _csv_num(s.occupancy), calls, interval, aht,
                                 _csv_num(patience, 3), target, threshold])
        return out.getvalue()
    lines = _parameter_lines({"calls per interval": f"{calls:g}", "interval": f"{interval} min",
                              "AHT": f"{aht:g} s",
                              "patience": f"{patience:g} s" if patience is not None else "not given",
                              "target": f"{target * 100:g} % within {threshold:g} s"})
    lines += list(FORMULAS) + [""]
    lines.append(f"Erlang C: {best_c.agents} agents"
                 + (f"; P(wait) {_num(best_c.p_wait, 7)}, SL {_pct(best_c.service_level)}, "
                    f"ASA {_num(best_c.asa, 3)} s, occupancy {_pct(best_c.occupancy)}"
                    if calls > 0 else ""))
    if best_a is not None:
        lines.append(f"Erlang A: {best_a.agents} agents"
                     + (f"; P(wait) {_num(best_a.p_wait, 7)}, SL {_pct(best_a.service_level)}, "
                        f"ASA {_num(best_a.asa, 3)} s, P(abandon) {_pct(best_a.p_abandon)}, "
                        f"occupancy {_pct(best_a.occupancy)}" if calls > 0 else ""))
    if around:
        headers = ["agents", "C: P(wait)", "C: SL", "C: ASA (s)"]
        if patience is not None:
            headers += ["A: P(wait)", "A: SL", "A: ASA (s)", "A: P(abandon)"]
        rows = []
        for c, a in around:
            row = [str(c.agents), _num(c.p_wait, 7), _pct(c.service_level), _num(c.asa, 3)]
            if a is not None:
                row += [_num(a.p_wait, 7), _pct(a.service_level), _num(a.asa, 3),
                        _pct(a.p_abandon)]
            rows.append(row)
        lines += [""] + _table(headers, rows)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- history


HISTORY_HEADERS = ["weekday", "interval", "offered/interval", "AHT (s)", "C agents", "C SL",
                   "C ASA (s)", "A agents", "A SL", "A ASA (s)", "A P(abandon)"]


def _history_output(recommendations: list[IntervalRecommendation], params: dict,
                    fmt: str) -> str:
    if fmt == "json":
        return json.dumps({
            "parameters": params, "formulas": list(FORMULAS) + list(HISTORY_FORMULAS),
            "intervals": [{
                "weekday": WEEKDAYS[r.interval.weekday], "interval_start": r.interval.label,
                "occurrences": r.interval.occurrences, "offered": r.interval.offered,
                "mean_offered": r.interval.mean_offered, "answered": r.interval.answered,
                "abandoned": r.interval.abandoned, "aht_seconds": r.aht,
                "erlang_c": _staffing_dict(r.erlang_c), "erlang_a": _staffing_dict(r.erlang_a),
            } for r in recommendations]}, indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["weekday", "interval_start", "occurrences", "offered", "mean_offered",
                         "answered", "abandoned", "aht_seconds", "erlang_c_agents",
                         "erlang_c_p_wait", "erlang_c_service_level", "erlang_c_asa_seconds",
                         "erlang_a_agents", "erlang_a_p_wait", "erlang_a_service_level",
                         "erlang_a_asa_seconds", "erlang_a_p_abandon", "interval_minutes",
                         "target", "threshold_seconds", "patience_seconds", "timezone"])
        for r in recommendations:
            c, a = r.erlang_c, r.erlang_a
            writer.writerow([WEEKDAYS[r.interval.weekday], r.interval.label,
                             r.interval.occurrences, r.interval.offered,
                             _csv_num(r.interval.mean_offered, 4), r.interval.answered,
                             r.interval.abandoned, _csv_num(r.aht, 3), c.agents,
                             _csv_num(c.p_wait), _csv_num(c.service_level), _csv_num(c.asa, 3),
                             a.agents, _csv_num(a.p_wait), _csv_num(a.service_level),
                             _csv_num(a.asa, 3), _csv_num(a.p_abandon),
                             params["interval_minutes"], params["target"],
                             params["threshold_seconds"],
                             "inf" if params["patience_seconds"] is None
                             else f"{params['patience_seconds']:.3f}", params["timezone"]])
        return out.getvalue()
    patience = params["patience_seconds"]
    lines = _parameter_lines({
        "history": f"{params['from']} – {params['to']} ({params['weeks']} week"
                   f"{'' if params['weeks'] == 1 else 's'}, "
                   f"{params['offered']} offered calls, {params['abandoned']} abandoned)",
        "time zone": params["timezone"], "interval": f"{params['interval_minutes']} min",
        "target": f"{params['target'] * 100:g} % within {params['threshold_seconds']:g} s",
        "AHT": (f"{params['aht_seconds']:g} s (given)" if params["aht_given"]
                else f"per interval (history {_num(params['aht_seconds'])} s)"),
        "patience": ("none (no abandons: Erlang A = Erlang C)" if patience is None
                     else f"{patience:.1f} s" + (" (given)" if params["patience_given"]
                                                 else " (estimated)")),
    })
    lines += list(FORMULAS) + list(HISTORY_FORMULAS) + [""]
    rows = []
    for r in recommendations:
        c, a = r.erlang_c, r.erlang_a
        rows.append([WEEKDAYS[r.interval.weekday], r.interval.label,
                     _num(r.interval.mean_offered, 2), _num(r.aht), str(c.agents),
                     _pct(c.service_level), _num(c.asa), str(a.agents), _pct(a.service_level),
                     _num(a.asa), _pct(a.p_abandon)])
    lines += _table(HISTORY_HEADERS, rows)
    lines.append(f"{NO_DATA} = no calls in that weekday × interval (0 agents)")
    return "\n".join(lines) + "\n"


def _parse_date(ctx, param, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        if not _DATE.fullmatch(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date in the form YYYY-MM-DD") from None


_POSITIVE = click.FloatRange(min=0, min_open=True)


@click.command("staffing")
@click.option("--weeks", type=click.IntRange(1, 52), default=4, show_default=True,
              help="Weeks of history (the local days up to --until).")
@click.option("--until", callback=_parse_date, metavar="YYYY-MM-DD", default=None,
              help="Last local day of the history (default: yesterday).")
@click.option("--interval", type=click.IntRange(1, 1440), default=30, show_default=True,
              help="Interval length in minutes (history: must divide a day, e.g. 15, 30, 60).")
@click.option("--timezone", "tz_name", default=None,
              help="Time zone of the weekdays and intervals (default: TIMEZONE, Europe/Tallinn).")
@click.option("--target", type=click.FloatRange(0, 100, min_open=True, max_open=True),
              default=80.0, show_default=True, help="Service-level target in percent.")
@click.option("--threshold", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Service-level threshold t (default: SERVICE_LEVEL_SECONDS, 20).")
@click.option("--aht", type=_POSITIVE, default=None, metavar="SECONDS",
              help="Mean handle time (talk + hold + wrap-up); overrides the history's.")
@click.option("--patience", type=_POSITIVE, default=None, metavar="SECONDS",
              help="Callers' mean patience for Erlang A ('inf': nobody abandons); overrides "
                   "the history's estimate. Without history, Erlang A is shown only with it.")
@click.option("--calls", type=click.FloatRange(min=0), default=None,
              help="Calculator: offered calls per interval (no history is read; needs --aht).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@with_appcontext
def staffing_command(weeks: int, until: date | None, interval: int, tz_name: str | None,
                     target: float, threshold: float | None, aht: float | None,
                     patience: float | None, calls: float | None, fmt: str) -> None:
    """Agents needed per interval for the service-level target, by Erlang C and Erlang A.

    From the last --weeks of the call log: per local weekday × interval, the mean offered
    volume and handle time, and the agents recommended. With --calls: one interval's figures
    (e.g. --calls 100 --interval 30 --aht 180 → 14 agents for 80 % in 20 s).
    """
    threshold = float(current_app.config["SERVICE_LEVEL_SECONDS"] if threshold is None
                      else threshold)
    fraction = target / 100
    if calls is not None:
        if aht is None:
            raise click.UsageError("--calls needs --aht (the mean handle time in seconds)")
        try:
            click.echo(_calculator(calls, interval, aht, patience, fraction, threshold, fmt),
                       nl=False)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        return
    if 1440 % interval:
        raise click.BadParameter("with history the interval must divide a day (e.g. 15, 30, 60)",
                                 param_hint="'--interval'")
    tz_name = current_app.config["TIMEZONE"] if tz_name is None else tz_name
    try:
        zone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"unknown time zone {tz_name!r}", param_hint="'--timezone'") from None
    if until is None:
        until = current_app.config["CLOCK"]().astimezone(zone).date() - timedelta(days=1)
    if until.year < 1900 or until.year > 2999:
        raise click.BadParameter("a day between 1900 and 2999", param_hint="'--until'")
    history = load_history(get_read_session(), until, weeks, tz_name, interval)
    try:
        recommendations = recommend_from_history(history, target=fraction, threshold=threshold,
                                                 aht=aht, patience=patience)
    except ValueError as exc:
        raise click.ClickException(f"{exc} (--aht SECONDS)") from None
    used_patience = history.patience if patience is None else patience
    params = {"from": history.first_day.isoformat(), "to": history.last_day.isoformat(),
              "weeks": weeks, "timezone": tz_name, "interval_minutes": interval,
              "target": fraction, "threshold_seconds": threshold,
              "aht_seconds": aht if aht is not None else history.aht, "aht_given": aht is not None,
              "patience_seconds": _json_num(used_patience), "patience_given": patience is not None,
              "offered": history.offered, "abandoned": history.abandoned}
    click.echo(_history_output(recommendations, params, fmt), nl=False)
