"""JSON API: agents and their states, queues. Every route needs a bearer token."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, abort, current_app, g, jsonify, request
from sqlalchemy import func, select
from werkzeug.exceptions import HTTPException

from admin.auth import require_roles
from db import get_session
from ivr.calls import find_call
from ivr.webhooks import connect_accepted, dispatch_and_connect
from line_config import current_line_config
from routing import dispatch as acd
from routing.agents import AgentStateError, effective_state, find_agent, set_state
from routing.roster import on_duty
from routing.models import Agent, AgentStateChange, Queue, QueueEntry

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.app_errorhandler(HTTPException)
def _json_errors(exc: HTTPException):
    """Errors under /api are JSON (``{"error": …}``); elsewhere Flask's default pages stay."""
    if not request.path.startswith("/api/"):
        return exc
    return jsonify(error=exc.description or exc.name), exc.code


def _agent_json(agent: Agent, skills=None) -> dict:
    now = current_app.config["CLOCK"]()
    return {"id": agent.id, "name": agent.name, "state": effective_state(agent, now),
            "not_ready_reason": agent.not_ready_reason,
            "wrap_up_until": agent.wrap_up_until.isoformat() if agent.wrap_up_until else None,
            "endpoint_kind": agent.endpoint_kind, "endpoint": agent.endpoint,
            "state_changed_at": agent.state_changed_at.isoformat(),
            "skills": sorted(s.skill for s in (agent.skills if skills is None else skills))}


def _json_object(field: str, example: str) -> dict:
    """The request's JSON object with a string ``field``; aborts with 400 and an example otherwise."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get(field), str):
        abort(400, f"send a JSON body like {example}")
    return body


def _agent_in_scope(session, key: str) -> Agent:
    """The agent named by ``key``; 404 if unknown, 403 if an agent token names another agent."""
    agent = find_agent(session, key)
    if agent is None:
        abort(404, f"no agent {key!r}")
    if g.principal.role == "agent" and g.principal.agent_id != agent.id:
        abort(403, "an agent token may act only for its own agent")
    return agent


@bp.get("/agents")
@require_roles("admin", "supervisor", "reporting")
def list_agents():
    """List agents with state, skills and whether their roster has them on duty now
    (``rostered``: null when the configuration gives the agent no shifts)."""
    session = get_session()
    config = current_line_config(session)
    shifts = {a.name: a.shifts for a in (config.agents if config else [])}
    now = current_app.config["CLOCK"]()
    result = []
    for agent in session.scalars(select(Agent).order_by(Agent.name)):
        item = _agent_json(agent)
        roster = shifts.get(agent.name)
        item["rostered"] = on_duty(roster, now, config.timezone) if roster else None
        result.append(item)
    return jsonify(agents=result)


@bp.route("/agents/<key>/state", methods=["PUT", "POST"])
@require_roles("admin", "supervisor", "agent")
def change_agent_state(key: str):
    """Set an agent's state: body ``{"state": "available" | "offline" | "wrap_up"}`` or
    ``{"state": "not_ready", "reason": "break"}``.

    An agent token may change only its own agent. 400 for a bad body, 404 for an unknown agent,
    409 when the change is not allowed now (e.g. the agent is on a call). An agent becoming
    available is offered the longest-waiting call they can take at once.
    """
    session = get_session()
    body = _json_object("state", '{"state": "available"}')
    agent = _agent_in_scope(session, key)
    try:
        set_state(session, agent, body["state"], current_app.config["CLOCK"](),
                  reason=body.get("reason"))
    except AgentStateError as exc:
        session.rollback()
        return jsonify(error=str(exc)), 409
    skills = agent.skills  # loaded inside this transaction, not lazily after the commit
    dispatch_and_connect(session)
    return jsonify(agent=_agent_json(agent, skills))


@bp.post("/agents/<key>/accept")
@require_roles("admin", "supervisor", "agent")
def accept_call(key: str):
    """The agent takes a waiting call: body ``{"call_sid": "CA…"}``.

    200 with the agent when the call is theirs (their phone rings next); 409 ``already taken``
    when another agent got it (or is getting it) first, and the agent stays as they were;
    409 ``not waiting`` when the call is not in a queue (still in the menus, or ended), ``not
    skilled`` when the agent lacks the queue's skill, ``agent not free``; 404 for an unknown
    agent or call. An agent token may
    accept only for its own agent.
    """
    session = get_session()
    body = _json_object("call_sid", '{"call_sid": "CA…"}')
    agent = _agent_in_scope(session, key)
    call = find_call(session, body["call_sid"][:64])
    if call is None:
        return jsonify(error=f"no call {body['call_sid'][:64]!r}"), 404
    try:
        assignment = acd.accept(session, agent.id, call.id, current_app.config["CLOCK"]())
    except acd.AcceptRefused as exc:
        session.rollback()
        return jsonify(error=exc.reason, detail=str(exc)), 409
    skills = agent.skills
    connect_accepted(session, assignment)
    return jsonify(agent=_agent_json(agent, skills), call_sid=call.call_sid)


@bp.get("/agents/<key>/history")
@require_roles("admin", "supervisor", "reporting", "agent")
def agent_history(key: str):
    """An agent's state changes, oldest first: ``{"changes": [{"state", "reason", "at", "call_id"}]}``.

    ``?since=ISO-8601`` limits the list; at most 1000 entries. An agent token sees only its own.
    """
    session = get_session()
    agent = _agent_in_scope(session, key)
    stmt = select(AgentStateChange).where(AgentStateChange.agent_id == agent.id)
    since = request.args.get("since")
    if since:
        try:
            moment = datetime.fromisoformat(since).astimezone(timezone.utc)
            if datetime.fromisoformat(since).tzinfo is None:
                raise ValueError("no offset")
        except (ValueError, OverflowError):
            return jsonify(error="since must be an ISO 8601 time with an offset"), 400
        stmt = stmt.where(AgentStateChange.at >= moment)
    changes = session.scalars(stmt.order_by(AgentStateChange.at, AgentStateChange.id).limit(1000))
    return jsonify(agent=agent.name, changes=[
        {"state": c.state, "reason": c.reason, "at": c.at.isoformat(), "call_id": c.call_id}
        for c in changes])


@bp.get("/referrals")
@require_roles("admin", "supervisor", "qa", "reporting", "agent")
def list_referrals():
    """Other authorities for out-of-remit questions; ``?q=word`` filters by name or remit."""
    config = current_line_config(get_session())
    query = request.args.get("q", "").strip().casefold()
    referrals = [r for r in (config.referrals if config else [])
                 if not query or query in r.name.casefold() or query in r.remit.casefold()]
    return jsonify(referrals=[{"code": r.code, "name": r.name, "remit": r.remit, "phone": r.phone,
                               "source": r.source, "verified_on": r.verified_on}
                              for r in referrals])


@bp.get("/queues")
@require_roles("admin", "supervisor", "reporting")
def list_queues():
    """List queues with the number of calls waiting or ringing an agent in each."""
    session = get_session()
    counts = dict(session.execute(select(QueueEntry.queue_id, func.count())
                                  .group_by(QueueEntry.queue_id)).all())
    queues = session.scalars(select(Queue).order_by(Queue.name))
    return jsonify(queues=[{"id": q.id, "name": q.name, "language": q.language, "topic": q.topic,
                            "in_queue": counts.get(q.id, 0)} for q in queues])


from ivr import transfers  # noqa: E402


def _transfer_answer(action, session, *args, **kwargs):
    """Run a transfer action; its refusal becomes a JSON error with the refusal's status."""
    try:
        call = action(session, *args, **kwargs)
    except transfers.TransferRefused as exc:
        session.rollback()
        return jsonify(error=exc.error, detail=exc.detail), exc.status
    return jsonify(transfers.describe(session, call))


def _optional_json() -> dict:
    """The request's JSON object, or an empty one when there is no body; 400 for anything else."""
    if not request.get_data():
        return {}
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        body = None
    if not isinstance(body, dict):
        abort(400, "send a JSON object, or no body")
    return body


@bp.post("/agents/<key>/transfer")
@require_roles("admin", "supervisor", "agent")
def transfer_call(key: str):
    """Transfer the agent's current call: body ``{"unit": "<code>", "mode": "blind" | "warm"}``
    (mode defaults to blind).

    Blind: the caller is put through to the unit at once and the agent goes to wrap-up. Warm:
    the caller holds while the agent (whose phone rings again) consults the unit; then
    ``…/transfer/complete`` or ``…/transfer/cancel``. 200 with ``{"call_sid", "transfer"}``;
    404 unknown agent, 409 ``agent not on a call`` / ``call not connected``, 422 ``unknown
    unit`` / ``unknown mode``, 502 ``provider request failed``. An agent token acts only for
    its own agent.
    """
    session = get_session()
    body = _json_object("unit", '{"unit": "rehabilitation", "mode": "blind"}')
    agent = _agent_in_scope(session, key)
    return _transfer_answer(transfers.transfer, session, agent, body["unit"],
                            body.get("mode", "blind"))


@bp.post("/agents/<key>/escalate")
@require_roles("admin", "supervisor", "agent")
def escalate_call(key: str):
    """Escalate the agent's current call (a complaint) along the configured ``escalation``
    route; optional body ``{"mode": "blind" | "warm"}`` overrides the route's mode. The call is
    logged as escalated. Errors as for ``…/transfer``; 409 ``no escalation route`` or
    ``escalation queue unstaffed``."""
    session = get_session()
    body = _optional_json()
    agent = _agent_in_scope(session, key)
    config = current_line_config(session)
    if config is None:
        return jsonify(error="no escalation route", detail="no configuration loaded"), 409
    return _transfer_answer(transfers.escalate, session, agent, config, body.get("mode"))


@bp.post("/agents/<key>/transfer/complete")
@require_roles("admin", "supervisor", "agent")
def complete_transfer(key: str):
    """Warm transfer: hand the caller to the unit (which must have answered); the agent leaves
    and goes to wrap-up. 409 ``no warm transfer in progress`` / ``unit has not answered``."""
    session = get_session()
    return _transfer_answer(transfers.complete, session, _agent_in_scope(session, key))


@bp.post("/agents/<key>/transfer/cancel")
@require_roles("admin", "supervisor", "agent")
def cancel_transfer(key: str):
    """Warm transfer: back to the caller; the unit's leg is ended. 409 ``no warm transfer in
    progress``."""
    session = get_session()
    return _transfer_answer(transfers.cancel, session, _agent_in_scope(session, key))
