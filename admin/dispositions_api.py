"""JSON API for dispositions and caller feedback.

Agents (for calls they handled) and supervisors record a call's disposition and the caller's
feedback; supervisors and QA list the feedback with its call attached and mark it reviewed.
Every route needs a bearer token. The rules live in :mod:`reporting.dispositions`; this module
parses requests, checks who may act, and owns the transaction.

Errors are JSON ``{"error": …, "field": …}``: 400 bad input (naming the field), 401 no valid
token, 403 a role or agent that may not do this, 404 unknown call or feedback.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

from flask import Blueprint, current_app, g, jsonify, request

from admin.auth import require_roles
from admin.models import ApiToken
from db import get_session
from ivr.calls import find_call
from ivr.models import Call, CallFeedback
from reporting import dispositions as dsp
from routing.models import Agent

bp = Blueprint("dispositions_api", __name__, url_prefix="/api")

RECORDERS = ("supervisor", "agent")
FEEDBACK_READERS = ("supervisor", "qa")
MAX_PER_PAGE = 200
DEFAULT_PER_PAGE = 50
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
# A '+' of an offset in an unencoded query string arrives as a space.
_SPACED_OFFSET = re.compile(r" (\d\d:?\d\d)$")


class _BadRequest(Exception):
    def __init__(self, status: int, field: str, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


@bp.errorhandler(_BadRequest)
def _bad_request(exc: _BadRequest):
    return jsonify(error=exc.message, field=exc.field), exc.status


@bp.errorhandler(dsp.DispositionError)
def _bad_value(exc: dsp.DispositionError):
    get_session().rollback()
    return jsonify(error=str(exc), field=exc.field), 400


def _now() -> datetime:
    return current_app.config["CLOCK"]()


def _body() -> dict:
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # absurdly nested JSON
        body = None
    if not isinstance(body, dict):
        raise _BadRequest(400, "body", 'send a JSON object, e.g. {"disposition": "resolved", '
                                       '"feedback": {"category": "praise", "note": "…"}}')
    return body


def _call_in_scope(session, call_sid: str) -> Call:
    """The call ``call_sid``; 404 if unknown, 403 for an agent token whose agent did not handle it."""
    call = None
    if len(call_sid) <= 64 and "\x00" not in call_sid:
        call = find_call(session, call_sid)
    if call is None:
        raise _BadRequest(404, "call_sid", f"no call {call_sid[:64]!r}")
    if g.principal.role == "agent" and not dsp.handled_by(session, call, g.principal.agent_id):
        raise _BadRequest(403, "call_sid", "an agent may record the outcome only of a call they handled")
    return call


def _recorder() -> int | None:
    """The agent recording it (None when a supervisor does)."""
    return g.principal.agent_id if g.principal.role == "agent" else None


def _feedback_json(session, feedback: CallFeedback, call: Call) -> dict:
    agent = session.get(Agent, feedback.agent_id) if feedback.agent_id else None
    return {"id": feedback.id, "call_sid": call.call_sid, "category": feedback.category,
            "note": feedback.note, "created_at": feedback.created_at.isoformat(),
            "agent": agent.name if agent else None,
            "reviewed": feedback.reviewed_at is not None,
            "reviewed_at": feedback.reviewed_at.isoformat() if feedback.reviewed_at else None,
            "reviewed_by": feedback.reviewed_by}


def _disposition_json(session, call: Call) -> dict:
    agent = session.get(Agent, call.disposition_agent_id) if call.disposition_agent_id else None
    return {"call_sid": call.call_sid, "disposition": call.disposition,
            "disposition_at": call.disposition_at.isoformat() if call.disposition_at else None,
            "disposition_agent": agent.name if agent else None}


def _feedback_fields(value: object, prefix: str = "") -> tuple[str, str]:
    if not isinstance(value, dict):
        raise _BadRequest(400, prefix.rstrip(".") or "body",
                          'feedback is a JSON object like {"category": "complaint", "note": "…"}')
    try:
        return dsp.check_feedback(value.get("category"), value.get("note"))
    except dsp.DispositionError as exc:
        raise _BadRequest(400, prefix + exc.field, str(exc)) from None


@bp.route("/calls/<call_sid>/disposition", methods=["PUT", "POST"])
@require_roles(*RECORDERS)
def record_disposition(call_sid: str):
    """Record the outcome of a call: body ``{"disposition": "resolved" | "callback_promised" |
    "transferred" | "referred" | "escalated"}``, optionally with ``"feedback": {"category":
    "complaint" | "suggestion" | "wish" | "praise" | "thanks", "note": "≤ 500 characters"}``.

    Recording again overwrites the disposition (its time and agent become the latest). An agent
    token may record it only for a call its agent handled; a supervisor for any call. 200 with
    ``{"call": {call_sid, disposition, disposition_at, disposition_agent}, "feedback": item or
    null}``; 400 naming the bad field (nothing is stored then); 403; 404 unknown call.
    """
    session = get_session()
    call = _call_in_scope(session, call_sid)
    body = _body()
    try:
        disposition = dsp.check_disposition(body.get("disposition"))
    except dsp.DispositionError as exc:
        raise _BadRequest(400, exc.field, str(exc)) from None
    feedback_fields = None
    if body.get("feedback") is not None:
        feedback_fields = _feedback_fields(body["feedback"], "feedback.")
    now = _now()
    dsp.record_disposition(session, call, disposition, now, agent_id=_recorder())
    feedback = None
    if feedback_fields is not None:
        feedback, _created = dsp.add_feedback(session, call, *feedback_fields, now,
                                              agent_id=_recorder())
    session.commit()
    return jsonify(call=_disposition_json(session, call),
                   feedback=_feedback_json(session, feedback, call) if feedback else None)


@bp.post("/calls/<call_sid>/feedback")
@require_roles(*RECORDERS)
def record_feedback(call_sid: str):
    """Record the caller's feedback on a call: body ``{"category": "complaint" | "suggestion" |
    "wish" | "praise" | "thanks", "note": "≤ 500 characters (optional)"}``.

    201 with ``{"feedback": item}``; 200 with the existing item when the same category and note
    were already recorded for the call (a retried request). 400 naming the bad field; 403 for an
    agent who did not handle the call; 404 unknown call.
    """
    session = get_session()
    call = _call_in_scope(session, call_sid)
    category, note = _feedback_fields(_body())
    feedback, created = dsp.add_feedback(session, call, category, note, _now(),
                                         agent_id=_recorder())
    session.commit()
    return jsonify(feedback=_feedback_json(session, feedback, call)), 201 if created else 200


def _time_arg(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    value = _SPACED_OFFSET.sub(r"+\1", raw.strip())
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("no offset")
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise _BadRequest(400, name, f"{name} must be an ISO 8601 time with an offset, "
                                     "e.g. 2026-12-01T00:00:00+02:00 or 2026-11-30T22:00:00Z") from None


def _int_arg(name: str, default: int, top: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 7 and 1 <= int(raw) <= top):
        raise _BadRequest(400, name, f"{name} must be a whole number from 1 to {top}")
    return int(raw)


@bp.get("/feedback")
@require_roles(*FEEDBACK_READERS)
def list_feedback():
    """The supervisors' list of caller feedback, newest first, each with its call attached.

    Filters: ``category`` (one of complaint, suggestion, wish, praise, thanks), ``reviewed``
    (true / false; default both), ``from`` and ``to`` (ISO 8601 with offset; the time the
    feedback was recorded, ``from`` included, ``to`` excluded). Pages: ``page`` (from 1) and
    ``per_page`` (1–200, default 50). 200 ``{"feedback": [...], "total", "page", "per_page",
    "pages"}``; 400 naming a bad parameter. Roles supervisor and qa.
    """
    session = get_session()
    category = request.args.get("category") or None
    if category is not None and category not in dsp.FEEDBACK_CATEGORIES:
        raise _BadRequest(400, "category", "category must be one of "
                                           + ", ".join(dsp.FEEDBACK_CATEGORIES))
    reviewed_raw = (request.args.get("reviewed") or "").strip().lower()
    reviewed = None
    if reviewed_raw in _TRUE:
        reviewed = True
    elif reviewed_raw in _FALSE:
        reviewed = False
    elif reviewed_raw:
        raise _BadRequest(400, "reviewed", "reviewed must be true or false")
    since, until = _time_arg("from"), _time_arg("to")
    if since is not None and until is not None and since > until:
        raise _BadRequest(400, "from", "from is after to")
    page = _int_arg("page", 1, 1_000_000)
    per_page = _int_arg("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)
    total, items = dsp.feedback_page(
        session, dsp.FeedbackFilter(category=category, reviewed=reviewed, since=since, until=until),
        page=page, per_page=per_page)
    return jsonify(feedback=items, total=total, page=page, per_page=per_page,
                   pages=(total + per_page - 1) // per_page)


@bp.post("/feedback/<int:feedback_id>/review")
@require_roles(*FEEDBACK_READERS)
def review_feedback(feedback_id: int):
    """Mark feedback reviewed by the caller of this request (role, token id and label) now.

    200 with ``{"feedback": item}``; feedback already reviewed keeps its first reviewer and time
    (the request is idempotent). 404 unknown feedback. Roles supervisor and qa.
    """
    session = get_session()
    if not 0 < feedback_id < 2**31:
        raise _BadRequest(404, "id", f"no feedback {feedback_id}")
    token = session.get(ApiToken, g.principal.token_id)
    reviewer = f"{g.principal.role} token {g.principal.token_id}"
    if token is not None and token.label:
        reviewer = f"{token.label[:40]} ({reviewer})"
    feedback = dsp.mark_reviewed(session, feedback_id, _now(), reviewer)
    if feedback is None:
        session.rollback()
        raise _BadRequest(404, "id", f"no feedback {feedback_id}")
    session.commit()
    call = session.get(Call, feedback.call_id)
    return jsonify(feedback=_feedback_json(session, feedback, call))
