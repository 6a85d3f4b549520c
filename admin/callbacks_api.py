"""JSON API for callbacks: agents schedule a callback at a time agreed with the caller;
supervisors list and cancel callbacks. Every route needs a bearer token."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, current_app, g, jsonify, request
from sqlalchemy import select

from admin.api import _agent_in_scope
from admin.auth import require_roles
from db import get_session
from ivr.calls import find_call
from ivr.hours import is_open
from line_config import current_line_config
from routing import callbacks
from routing.models import Callback, Queue

bp = Blueprint("callbacks_api", __name__, url_prefix="/api")


def _callback_json(callback: Callback, queue_names: dict[int, str]) -> dict:
    return {"id": callback.id, "kind": callback.kind, "number": callback.number,
            "queue": queue_names.get(callback.queue_id), "state": callback.state,
            "due_at": callback.due_at.isoformat(), "attempts": callback.attempts,
            "last_result": callback.last_result,
            "requested_by_agent_id": callback.requested_by_agent_id,
            "created_at": callback.created_at.isoformat(),
            "closed_at": callback.closed_at.isoformat() if callback.closed_at else None}


def _queue_names(session) -> dict[int, str]:
    return dict(session.execute(select(Queue.id, Queue.name)).all())


def _error(status: int, field: str, message: str):
    return jsonify(error=message, field=field), status


@bp.post("/agents/<key>/callbacks")
@require_roles("admin", "supervisor", "agent")
def schedule_callback(key: str):
    """Schedule a callback at a time agreed with the caller.

    Body: ``{"number": "+37251234567" or "5123 4567", "at": ISO 8601 with offset,
    "call_sid": the caller's call (optional: links the contact and gives the queue),
    "queue": queue name (optional if call_sid is given), "to": "agent" (default: the agent
    makes it) or "queue" (whoever is free)}``. ``at`` must be in the future and within opening
    hours. 201 with the callback; 422 naming the bad field; 409 if the number already has an
    open callback; 404 for an unknown agent or call.
    """
    session = get_session()
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # absurdly nested JSON
        body = None
    if not isinstance(body, dict):
        return _error(400, "body", 'send a JSON body like {"number": "+37251234567", '
                                   '"at": "2026-12-02T10:30:00+02:00", "call_sid": "CA…"}')
    agent = _agent_in_scope(session, key)
    config = current_line_config(session)
    now = current_app.config["CLOCK"]()
    raw = body.get("number")
    number = None
    if isinstance(raw, str) and len(raw) <= 32:
        number = callbacks.callable_number("".join(ch for ch in raw if ch.isdigit() or ch == "+")
                                           .replace("+", "00", 1))
    if number is None:
        return _error(422, "number", "not a phone number we can call back (E.164 or national)")
    try:
        at = datetime.fromisoformat(str(body.get("at", "")))
        if at.tzinfo is None:
            raise ValueError("no offset")
        at = at.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return _error(422, "at", "give the agreed time in ISO 8601 with an offset, "
                                 "e.g. 2026-12-02T10:30:00+02:00")
    if at < now:
        return _error(422, "at", "the agreed time is in the past")
    if config is not None and not current_app.config["HOURS_ALWAYS_OPEN"] \
            and not is_open(at, config.hours, config.timezone):
        return _error(422, "at", "the agreed time is outside opening hours")
    origin = None
    if body.get("call_sid") is not None:
        origin = find_call(session, str(body["call_sid"])[:64])
        if origin is None:
            return _error(404, "call_sid", f"no call {str(body['call_sid'])[:64]!r}")
    queue = None
    if body.get("queue") is not None:
        queue = session.scalar(select(Queue).where(Queue.name == str(body["queue"])[:64]))
        if queue is None:
            return _error(422, "queue", f"no queue {str(body['queue'])[:64]!r}")
    elif origin is not None and origin.queue_id is not None:
        queue = session.get(Queue, origin.queue_id)
    if queue is None:
        return _error(422, "queue", "give the queue, or the call_sid of a call that was queued")
    to = body.get("to", "agent")
    if to not in ("agent", "queue"):
        return _error(422, "to", "'agent' (the agent calls back) or 'queue' (whoever is free)")
    try:
        callback = callbacks.schedule(session, number=number, queue=queue, due_at=at, now=now,
                                      agent_id=agent.id if to == "agent" else None,
                                      requested_by=agent.id, origin=origin,
                                      language=origin.language if origin else None)
    except callbacks.CallbackRefused as exc:
        session.rollback()
        return _error(409, "number" if "open callback" in str(exc) else "at", str(exc))
    session.commit()
    return jsonify(callback=_callback_json(callback, _queue_names(session))), 201


@bp.get("/callbacks")
@require_roles("admin", "supervisor", "agent")
def list_callbacks():
    """Callbacks, newest first (at most 500): ``?state=pending|dialing|…`` filters. An agent
    token sees the callbacks its agent scheduled."""
    session = get_session()
    stmt = select(Callback).order_by(Callback.id.desc()).limit(500)
    state = request.args.get("state")
    if state:
        stmt = stmt.where(Callback.state == state[:16])
    if g.principal.role == "agent":
        stmt = stmt.where(Callback.requested_by_agent_id == g.principal.agent_id)
    names = _queue_names(session)
    return jsonify(callbacks=[_callback_json(c, names) for c in session.scalars(stmt)])


@bp.delete("/callbacks/<int:callback_id>")
@require_roles("admin", "supervisor", "agent")
def cancel_callback(callback_id: int):
    """Cancel a pending callback (e.g. the caller's matter was settled otherwise). 409 if it is
    already being dialled or closed; an agent may cancel only callbacks they scheduled."""
    session = get_session()
    callback = session.get(Callback, callback_id) if 0 < callback_id < 2**31 else None
    if callback is None:
        return jsonify(error=f"no callback {callback_id}"), 404
    if g.principal.role == "agent" and callback.requested_by_agent_id != g.principal.agent_id:
        return jsonify(error="an agent may cancel only callbacks they scheduled"), 403
    if not callbacks.cancel(session, callback, current_app.config["CLOCK"]()):
        session.rollback()
        return jsonify(error=f"callback {callback_id} is {callback.state}"), 409
    session.commit()
    return jsonify(callback=_callback_json(callback, _queue_names(session)))
