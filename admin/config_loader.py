"""Apply a validated line configuration to the database: queues, agents, skills, units, revision."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from line_config import ConfigRevision, LineConfig, document_sha256
from routing.models import Agent, AgentSkill, Queue, Unit


def apply_line_config(session: Session, config: LineConfig, document: dict, now: datetime, *,
                      source_name: str = "") -> dict[str, int]:
    """Upsert queues, units and agents (with skills) from ``config`` and store the revision.

    Agents keep their current state; their endpoint and skills follow the file; agents missing
    from the file lose their skills and go offline (unless on a call). Returns counts of what
    the file holds (queues, units, agents) and how many agents were retired.
    """
    queues = {q.name: q for q in session.scalars(select(Queue))}
    for name in config.queue_names():
        language, topic = name.split(".", 1)
        if name not in queues:
            session.add(Queue(name=name, language=language, topic=topic))
    units = {u.code: u for u in session.scalars(select(Unit))}
    for unit_cfg in config.units:
        unit = units.get(unit_cfg.code) or Unit(code=unit_cfg.code)
        unit.name, unit.phone_number = unit_cfg.name, unit_cfg.phone_number
        session.add(unit)
    agents = {a.name: a for a in session.scalars(select(Agent))}
    for agent_cfg in config.agents:
        agent = agents.get(agent_cfg.name)
        if agent is None:
            agent = Agent(name=agent_cfg.name, state="offline", state_changed_at=now)
            session.add(agent)
        agent.endpoint_kind = agent_cfg.endpoint_kind
        agent.endpoint = agent_cfg.endpoint_address
        wanted = set(agent_cfg.skills)
        agent.skills = [s for s in agent.skills if s.skill in wanted] + [
            AgentSkill(skill=skill) for skill in sorted(wanted - {s.skill for s in agent.skills})]
    # Agents no longer in the file keep their history but can no longer be offered calls.
    retired = 0
    for name, agent in agents.items():
        if name not in {a.name for a in config.agents} and agent.skills:
            agent.skills = []
            retired += 1
            if agent.current_call_id is None and agent.state != "offline":
                agent.state, agent.idle_since, agent.state_changed_at = "offline", None, now
    session.add(ConfigRevision(loaded_at=now, source_name=source_name[:255],
                               sha256=document_sha256(document), document=document))
    session.flush()
    return {"queues": len(config.queue_names()), "units": len(config.units),
            "agents": len(config.agents), "retired": retired}
