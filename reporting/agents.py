"""Agent time, handle time and occupancy from the agents' state history.

Every state change is appended to ``agent_state_changes``; an agent's time in each state over a
range is the sum of the intervals between consecutive changes, clipped to the range. The state
at the start of the range is the last change before it.

Definitions (the usual contact-centre ones, e.g. ICMI's glossary):

* **handled** = conversations (``busy`` intervals) that began in the range.
* **AHT** = (talk + wrap-up seconds) / handled. Talk here is time in ``busy``; the call log's
  AHT adds hold, which this history does not separate.
* **occupancy** = (offered + busy + wrap-up seconds) / (available + offered + busy + wrap-up
  seconds): the share of the time an agent was ready for calls that they spent on calls.
  Not-ready and offline time are outside both.

A wrap-up that ended on its timer leaves no change of its own until the agent's next one, so a
wrap-up interval is counted at most ``wrap_up_seconds`` long (the configured timer) and the
rest as available; with ``wrap_up_seconds`` 0 (only the agent ends it) it is counted in full.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from routing.models import Agent, AgentStateChange

ON_CALL = ("offered", "busy", "wrap_up")
_offer = AgentStateChange.__table__.alias("offer")


@dataclass
class AgentTime:
    """One agent's seconds per state over a range, with derived handle time and occupancy."""

    agent: str
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    handled: int = 0

    @property
    def aht(self) -> float | None:
        """(busy + wrap-up seconds) / handled, or None with nothing handled."""
        if not self.handled:
            return None
        return (self.seconds["busy"] + self.seconds["wrap_up"]) / self.handled

    @property
    def occupancy(self) -> float | None:
        """(offered + busy + wrap-up) / (available + those), or None if never ready."""
        on_call = sum(self.seconds[s] for s in ON_CALL)
        ready = on_call + self.seconds["available"]
        return on_call / ready if ready else None


def agent_times(session: Session, start: datetime, end: datetime, *,
                wrap_up_seconds: float = 0) -> list[AgentTime]:
    """Seconds per state, handled conversations, AHT and occupancy per agent in [start, end).

    ``start`` and ``end`` are aware datetimes. Agents with no state change before ``end`` are
    left out. Raises ValueError if ``start`` > ``end``.
    """
    if start > end:
        raise ValueError("start is after end")
    names = dict(session.execute(select(Agent.id, Agent.name)).all())
    before = (select(AgentStateChange.agent_id, func.max(AgentStateChange.id).label("last"))
              .where(AgentStateChange.at < start).group_by(AgentStateChange.agent_id).subquery())
    opening = {agent_id: (state, at) for agent_id, state, at in session.execute(
        select(AgentStateChange.agent_id, AgentStateChange.state, AgentStateChange.at)
        .join(before, before.c.last == AgentStateChange.id))}
    changes = defaultdict(list)
    for agent_id, state, at in session.execute(
            select(AgentStateChange.agent_id, AgentStateChange.state, AgentStateChange.at)
            .where(AgentStateChange.at >= start, AgentStateChange.at < end)
            .order_by(AgentStateChange.agent_id, AgentStateChange.at, AgentStateChange.id)):
        changes[agent_id].append((state, at, True))
    result = []
    for agent_id in sorted(set(opening) | set(changes), key=lambda a: names.get(a, "")):
        timeline = changes[agent_id]
        if agent_id in opening:
            timeline = [(opening[agent_id][0], start, False)] + timeline
        times = AgentTime(names.get(agent_id, str(agent_id)))
        for index, (state, at, began_here) in enumerate(timeline):
            until = timeline[index + 1][1] if index + 1 < len(timeline) else end
            length = max(0.0, (until - max(at, start)).total_seconds())
            if state == "wrap_up" and wrap_up_seconds > 0 and length > wrap_up_seconds:
                times.seconds["available"] += length - wrap_up_seconds
                length = wrap_up_seconds
            times.seconds[state] += length
            if state == "busy" and began_here:
                times.handled += 1
        result.append(times)
    return result


def offer_delays(session: Session, start: datetime, end: datetime, *,
                 call_ids: list[int] | None = None) -> list[float]:
    """Seconds an agent stayed free while a call could have been offered, once per offer in
    [start, end): ``offered − max(agent free since, the call's queue entry)``.

    "Free since" is the agent's previous state change, which is ``available`` (set by the
    agent, or recorded at the moment a wrap-up timer ran out). Dispatch offers the
    longest-waiting call, so when a caller was waiting as the agent became free this is the
    agent's idle time before the offer; when none was, it is the time from the next caller's
    queue entry to the offer. A work-conserving ACD keeps every value near 0. ``call_ids``
    limits it to offers of those calls.
    """
    from ivr.models import Call

    previous = (select(AgentStateChange.at)
                .where(AgentStateChange.agent_id == _offer.c.agent_id,
                       AgentStateChange.id < _offer.c.id)
                .order_by(AgentStateChange.id.desc()).limit(1).scalar_subquery())
    rows = session.execute(
        select(_offer.c.at, previous, Call.queue_entered_at)
        .join(Call, Call.id == _offer.c.call_id)
        .where(_offer.c.state == "offered", _offer.c.at >= start, _offer.c.at < end)
        .where(_offer.c.call_id.in_(call_ids) if call_ids is not None else true()))
    delays = []
    for offered, free_since, entered in rows:
        if free_since is None or entered is None:
            continue
        delays.append(max(0.0, (offered - max(free_since, entered)).total_seconds()))
    return delays

