"""NPS API: ``GET /api/reports/nps`` (the recommendation index by period, queue, agent,
language, channel) and ``GET /api/surveys/low-scores`` (answers 0–6 with their calls, for the
quality team's spot checks). Roles admin, supervisor, qa, reporting. No caller numbers."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from admin.auth import require_roles
from admin.reports_api import BadRequest, _bad, _date, _number, dimension_filters
from db import get_read_session
from reporting.aggregate import ReportError
from reporting.nps_report import LOW_SCORE_MAX, NPS_DIMENSIONS, low_scores, nps_report

bp = Blueprint("nps_api", __name__, url_prefix="/api")
READ_ROLES = ("admin", "supervisor", "qa", "reporting")
MAX_PAGE = 1_000_000


def _filters() -> tuple[tuple[str, str], ...]:
    """The ``queue``/``agent``/``language``/``channel`` filters (see
    :func:`admin.reports_api.dimension_filters`)."""
    return dimension_filters(NPS_DIMENSIONS)


@bp.get("/reports/nps")
@require_roles(*READ_ROLES)
def get_nps():
    """NPS of the answers received on local days ``from``..``to``: ``interval`` (day, week,
    month, quarter; none: the whole range), ``by`` (comma-separated: queue, agent, language,
    channel), filters ``queue``/``agent``/``language``/``channel``, ``timezone``. 400 names a
    bad parameter. Body: see :meth:`reporting.nps_report.NpsReport.as_dict`."""
    try:
        by = tuple(p.strip() for p in request.args.get("by", "").split(",") if p.strip())
        filters = _filters()
        report = nps_report(get_read_session(), _date("from"), _date("to"),
                            tz_name=request.args.get("timezone") or current_app.config["TIMEZONE"],
                            interval=request.args.get("interval") or None, dimensions=by,
                            filters=filters)
    except (BadRequest, ReportError) as exc:
        return _bad(str(exc))
    return jsonify(report.as_dict())


@bp.get("/surveys/low-scores")
@require_roles(*READ_ROLES)
def get_low_scores():
    """Answers with a score ≤ ``max_score`` (default 6: the detractors) received on local days
    ``from``..``to``, newest first, each with its call; ``page`` (≤ 1,000,000)/``per_page``
    (≤ 500). 400 names a bad parameter (dates 1900–2999, ``from`` not after ``to``)."""
    try:
        start, end = _date("from"), _date("to")
        max_score = _number("max_score", LOW_SCORE_MAX, int, 0, 10)
        page = _number("page", 1, int, 1, MAX_PAGE)
        per_page = _number("per_page", 100, int, 1, 500)
        rows = low_scores(get_read_session(), start, end,
                          tz_name=request.args.get("timezone") or current_app.config["TIMEZONE"],
                          max_score=max_score, limit=per_page, offset=(page - 1) * per_page)
    except (BadRequest, ReportError, KeyError) as exc:
        return _bad(str(exc))
    except Exception as exc:  # an unknown time zone
        if type(exc).__name__ in ("ZoneInfoNotFoundError", "ValueError"):
            return _bad(f"unknown time zone: {exc}")
        raise
    return jsonify(low_scores=rows, page=page, per_page=per_page, max_score=max_score)
