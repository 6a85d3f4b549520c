"""Reporting API: the aggregated report and the call log, for reporting jobs.

``GET /api/reports`` the report of :mod:`reporting.aggregate` as JSON, its intervals paged;
``GET /api/calls`` the call log as JSON pages (keyset cursor); ``GET /api/calls/export.csv``
the call log as a streamed CSV. Roles admin, supervisor, qa and reporting; callers' numbers
only for admin and supervisor, pseudonyms (keyed hash) for the others.
"""
from __future__ import annotations

import csv
import io
import math
from datetime import date

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context
from sqlalchemy.orm import Session

from admin.auth import require_roles
from db import get_read_session
from reporting import call_log
from reporting.aggregate import (DIMENSIONS, ReportError, ReportSpec, parse_fcr_windows,
                                 report_as_dict, run_report)

bp = Blueprint("reports_api", __name__, url_prefix="/api")
READ_ROLES = ("admin", "supervisor", "qa", "reporting")
MAX_PER_PAGE = 1000


class BadRequest(ValueError):
    """A query parameter is missing or malformed; the message says which."""


def _date(name: str) -> date:
    value = request.args.get(name, "")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"'{name}' must be a date YYYY-MM-DD, got {value!r}") from None


def _number(name: str, default, kind=float, low=0, high=None):
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except (ValueError, OverflowError):
        raise BadRequest(f"'{name}' must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise BadRequest(f"'{name}' must be a finite number, got {raw!r}")
    if value < low or (high is not None and value > high):
        raise BadRequest(f"'{name}' must be between {low} and {high}" if high is not None
                         else f"'{name}' must be at least {low}")
    return value


MAX_FILTER_LENGTH = 64


def dimension_filters(dimensions) -> tuple[tuple[str, str], ...]:
    """The query parameters named by ``dimensions`` that are set, as (name, value) pairs.
    BadRequest for a value over 64 characters or with a control character (PostgreSQL
    refuses NUL in text)."""
    filters = []
    for dim in dimensions:
        value = request.args.get(dim)
        if not value:
            continue
        if len(value) > MAX_FILTER_LENGTH or any(ord(ch) < 32 or 127 <= ord(ch) < 160
                                                 for ch in value):
            raise BadRequest(f"'{dim}' must be at most {MAX_FILTER_LENGTH} characters without "
                             "control characters")
        filters.append((dim, value))
    return tuple(filters)


def _filters() -> tuple[tuple[str, str], ...]:
    return dimension_filters(DIMENSIONS)


def _windows() -> tuple[int, ...]:
    raw = request.args.get("fcr_window") or current_app.config["REPORT_FCR_WINDOWS"]
    try:
        return parse_fcr_windows(raw)
    except ReportError as exc:
        raise BadRequest(f"'fcr_window': {exc}") from None


def _source() -> str | None:
    source = request.args.get("source") or None
    if source not in (None, "live", "imported", "callback"):
        raise BadRequest("'source' is live, imported or callback")
    return source


def _bad(message: str):
    return jsonify(error=message), 400


@bp.get("/reports")
@require_roles(*READ_ROLES)
def get_report():
    """The report for ``from``..``to`` (local days, inclusive). Query parameters: interval
    (15min … quarter, default day), by (comma-separated dimensions), queue/agent/language/topic
    (filters), threshold, short_abandon (seconds), fcr_window (days, e.g. 1,7), source,
    timezone, page and per_page (over intervals; default 1 and 100)."""
    try:
        by = tuple(p.strip() for p in request.args.get("by", "").split(",") if p.strip())
        spec = ReportSpec(
            _date("from"), _date("to"),
            timezone=request.args.get("timezone") or current_app.config["TIMEZONE"],
            interval=request.args.get("interval") or "day", dimensions=by,
            threshold=_number("threshold", float(current_app.config["SERVICE_LEVEL_SECONDS"])),
            short_abandon=_number("short_abandon",
                                  float(current_app.config["REPORT_SHORT_ABANDON_SECONDS"])),
            fcr_windows=_windows(), source=_source(), filters=_filters())
        page = _number("page", 1, int, 1)
        per_page = _number("per_page", 100, int, 1, MAX_PER_PAGE)
        result = run_report(get_read_session(), spec, now=current_app.config["CLOCK"]())
    except (BadRequest, ReportError) as exc:
        return _bad(str(exc))
    body = report_as_dict(result)
    intervals = body["intervals"]
    body["interval_count"] = len(intervals)
    body["page"], body["per_page"] = page, per_page
    body["pages"] = max(1, -(-len(intervals) // per_page))
    body["intervals"] = intervals[(page - 1) * per_page: page * per_page]
    return jsonify(body)


def _call_log_query() -> call_log.CallLogQuery:
    return call_log.CallLogQuery(
        _date("from"), _date("to"),
        timezone=request.args.get("timezone") or current_app.config["TIMEZONE"],
        filters=_filters(), source=_source())


def _pseudonym_key() -> bytes | None:
    key = current_app.config["REPORT_PSEUDONYM_KEY"]
    return key.encode() if key else None


@bp.get("/calls")
@require_roles(*READ_ROLES)
def list_calls():
    """One page of the call log: from, to (local days), filters as for /api/reports, after
    (the cursor from the previous page) and limit (1–1000, default 500)."""
    reveal = g.principal.role in call_log.NUMBER_ROLES
    try:
        query = _call_log_query()
        rows, cursor = call_log.page(get_read_session(), query,
                                     after_id=_number("after", 0, int, 0, call_log.MAX_ID),
                                     limit=_number("limit", 500, int, 1, MAX_PER_PAGE),
                                     reveal=reveal, key=_pseudonym_key())
    except (BadRequest, ReportError) as exc:
        return _bad(str(exc))
    except call_log.PseudonymKeyMissing:
        return jsonify(error="callers must be pseudonymised for this role and "
                             "REPORT_PSEUDONYM_KEY is not set"), 503
    return jsonify(calls=rows, next_after=cursor, callers="numbers" if reveal else "pseudonyms")


@bp.get("/calls/export.csv")
@require_roles(*READ_ROLES)
def export_calls():
    """The call log as CSV (columns :data:`reporting.call_log.COLUMNS`), streamed; same
    parameters as /api/calls without paging."""
    reveal = g.principal.role in call_log.NUMBER_ROLES
    key = _pseudonym_key()
    try:
        query = _call_log_query()
        query.utc_bounds()
    except (BadRequest, ReportError) as exc:
        return _bad(str(exc))
    if not reveal and key is None:
        return jsonify(error="callers must be pseudonymised for this role and "
                             "REPORT_PSEUDONYM_KEY is not set"), 503
    engine = current_app.extensions["db_engine"].execution_options(read_only=True)

    def generate():
        # The stream owns its session: it lives exactly as long as the download.
        session = Session(bind=engine)
        try:
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=call_log.COLUMNS, lineterminator="\n")
            writer.writeheader()
            for n, row in enumerate(call_log.iterate(session, query, reveal=reveal, key=key), 1):
                writer.writerow(row)
                if n % 500 == 0:
                    yield out.getvalue()
                    out.seek(0)
                    out.truncate()
            yield out.getvalue()
        finally:
            session.close()

    filename = f"calls-{query.start}-{query.end}.csv"
    return Response(stream_with_context(generate()), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename={filename}"})
