"""Agent state changes requested by people (the agent desktop, a supervisor)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from routing.models import AGENT_STATES, Agent

# States a person may set; 'busy' is set only by routing when a call is offered.
SETTABLE_STATES = ("offline", "available", "wrap_up")


class AgentStateError(ValueError):
    """The requested state change is not allowed (unknown state, or the agent is on a call)."""


def set_state(session: Session, agent: Agent, state: str, now: datetime) -> Agent:
    """Change ``agent``'s state to ``state`` (offline, available, wrap_up) at ``now``.

    Becoming available starts the agent's idle time (longest-idle routing). Raises
    AgentStateError for an unknown state, for 'busy', or while the agent is ringing or talking.
    """
    if state not in AGENT_STATES:
        raise AgentStateError(f"unknown state {state!r}; use one of {', '.join(SETTABLE_STATES)}")
    if state not in SETTABLE_STATES:
        raise AgentStateError(f"state {state!r} is set by routing, not by request")
    if agent.current_call_id is not None:
        raise AgentStateError("the agent is on a call; change the state after it ends")
    if agent.state == state:
        return agent
    if state == "available":
        agent.idle_since = now
    elif state == "offline":
        agent.idle_since = None
    agent.state, agent.state_changed_at = state, now
    session.flush()
    return agent


def find_agent(session: Session, key: str) -> Agent | None:
    """Return the agent whose name is ``key``, else whose id is ``key`` (ASCII digits), or None."""
    agent = session.scalar(select(Agent).where(Agent.name == key))
    if agent is None and key.isascii() and key.isdigit() and len(key) <= 9:
        agent = session.get(Agent, int(key))
    return agent
