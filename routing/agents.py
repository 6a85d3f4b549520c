"""Agent state changes requested by people (the agent desktop, a supervisor)."""
from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.models import Call

from routing.models import AGENT_STATES, Agent, AgentStateChange

# States a person may set; 'offered' and 'busy' are set only by routing.
SETTABLE_STATES = ("offline", "available", "wrap_up", "not_ready")
REASON_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


def record_state(session: Session, agent_id: int, state: str, now: datetime, *,
                 reason: str | None = None, call_id: int | None = None) -> None:
    """Append one entry to the agent's state history (the caller changes the agent row itself)."""
    session.add(AgentStateChange(agent_id=agent_id, state=state, reason=reason, call_id=call_id,
                                 at=now))


def record_wrap_up_end(session: Session, agent_id: int, ended_at: datetime,
                      wrap_up_until: datetime | None) -> int | None:
    """The agent's wrap-up ends at ``ended_at``: add its length to the call's ``wrap_up_seconds``.

    Call it before the agent's next state change is recorded. The wrap-up is the agent's latest
    state change, a ``wrap_up`` with the call's id (written when the conversation ended); a
    wrap-up the agent started without a call is not attached to any. Its length, in whole
    seconds (rounded), is ``min(ended_at, wrap_up_until) − start``: a wrap-up whose timer ran
    out counts only up to the timer, like :func:`reporting.agents.agent_times`
    (``wrap_up_until`` None: only the agent ends it, counted in full). It is added to what the
    call has (a call handled by two agents, e.g. after a transfer to a queue, has both
    wrap-ups, as ``talk_seconds`` has both conversations). Returns the seconds added, or None.
    """
    last = session.execute(
        select(AgentStateChange.state, AgentStateChange.call_id, AgentStateChange.at)
        .where(AgentStateChange.agent_id == agent_id)
        .order_by(AgentStateChange.id.desc()).limit(1)).first()
    if last is None or last.state != "wrap_up" or last.call_id is None:
        return None
    end = ended_at if wrap_up_until is None else min(ended_at, wrap_up_until)
    seconds = max(0, round((end - last.at).total_seconds()))
    call = session.get(Call, last.call_id)
    if call is None:
        return None
    call.wrap_up_seconds = (call.wrap_up_seconds or 0) + seconds
    return seconds


class AgentStateError(ValueError):
    """The requested state change is not allowed (unknown state, or the agent is on a call)."""


def set_state(session: Session, agent: Agent, state: str, now: datetime, *,
              reason: str | None = None) -> Agent:
    """Change ``agent``'s state to ``state`` (offline, available, wrap_up, not_ready) at ``now``.

    ``not_ready`` needs a ``reason`` (lower-case word, e.g. ``break``, ``training``); other states
    take none. Becoming available starts the agent's idle time (longest-idle routing) and ends
    any wrap-up. Every change is written to the state history. Raises AgentStateError for an
    unknown state, for a routing-only state (offered, busy), for a missing or malformed
    reason, or while the agent is ringing or talking.
    """
    if state not in AGENT_STATES:
        raise AgentStateError(f"unknown state {state!r}; use one of {', '.join(SETTABLE_STATES)}")
    if state not in SETTABLE_STATES:
        raise AgentStateError(f"state {state!r} is set by routing, not by request")
    if state == "not_ready":
        if not isinstance(reason, str) or not REASON_RE.fullmatch(reason):
            raise AgentStateError("not_ready needs a reason: a lower-case word such as 'break'")
    elif reason is not None:
        raise AgentStateError(f"only not_ready takes a reason, not {state!r}")
    if agent.current_call_id is not None:
        raise AgentStateError("the agent is on a call; change the state after it ends")
    if agent.state == state and agent.not_ready_reason == reason:
        return agent
    if agent.state == "wrap_up":
        record_wrap_up_end(session, agent.id, now, agent.wrap_up_until)
    if state == "available":
        agent.idle_since = now
    elif state in ("offline", "not_ready"):
        agent.idle_since = None
    agent.wrap_up_until = None if state != "wrap_up" else agent.wrap_up_until
    agent.state, agent.state_changed_at, agent.not_ready_reason = state, now, reason
    record_state(session, agent.id, state, now, reason=reason)
    session.flush()
    return agent


def find_agent(session: Session, key: str) -> Agent | None:
    """Return the agent whose name is ``key``, else whose id is ``key`` (ASCII digits), or None."""
    agent = session.scalar(select(Agent).where(Agent.name == key))
    if agent is None and key.isascii() and key.isdigit() and len(key) <= 9:
        agent = session.get(Agent, int(key))
    return agent


def effective_state(agent: Agent, now: datetime) -> str:
    """The agent's state as routing sees it at ``now``: a wrap-up whose time is over is available."""
    if agent.state == "wrap_up" and agent.wrap_up_until is not None and agent.wrap_up_until <= now:
        return "available"
    return agent.state
