"""Queue entry, dispatch (longest-idle qualified agent), and the offer lifecycle.

Every function takes the session first and ``now`` (aware UTC) where time matters; none commits.
Assignment is atomic across workers: candidate rows are claimed with
``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite serialises writers instead), every
change is a compare-and-set UPDATE, and unique indexes on ``agents.current_call_id`` and
``queue_entries.agent_id`` make a second assignment impossible even if a bug slipped through.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, false, func, or_, select, text, true, update
from sqlalchemy.orm import Session

from routing.agents import record_state, record_wrap_up_end
from routing.models import Agent, AgentSkill, Queue, QueueEntry


# Key of the PostgreSQL advisory lock that serialises dispatch (any constant 64-bit integer).
DISPATCH_LOCK = 0x5CA_D15_9A7C4


@dataclass(frozen=True)
class Assignment:
    """An agent offered a waiting call: ids of the call, the agent and the queue."""

    call_id: int
    agent_id: int
    queue_id: int
    callback_id: int | None = None


def enqueue(session: Session, *, call_id: int, queue: Queue, priority: int,
            entered_at: datetime) -> QueueEntry:
    """Put the call in ``queue``, or back into it keeping its original entry time (its place).

    Returns the waiting entry. A call already waiting or offered is left as it is.
    """
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
    if entry is None:
        entry = QueueEntry(call_id=call_id, queue_id=queue.id, priority=priority,
                           entered_at=entered_at, state="waiting")
        session.add(entry)
        session.flush()
    return entry


def _lock(stmt, session: Session, of=None):
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=True, of=of)
    return stmt


def _free(now: datetime):
    """SQL condition: the agent can be offered a call now (available, or wrap-up time is over)."""
    return and_(Agent.current_call_id.is_(None),
                or_(Agent.state == "available",
                    and_(Agent.state == "wrap_up", Agent.wrap_up_until.is_not(None),
                         Agent.wrap_up_until <= now)))


def _due(now: datetime, callbacks_open: bool):
    """SQL condition: the entry may be offered now (a callback only from its ``not_before`` on,
    and only while callbacks may be dialled)."""
    return and_(or_(QueueEntry.not_before.is_(None), QueueEntry.not_before <= now),
                or_(QueueEntry.callback_id.is_(None), true() if callbacks_open else false()))


def dispatch(session: Session, now: datetime, *, limit: int = 50,
             callbacks_open: bool = True) -> list[Assignment]:
    """Offer waiting calls to free agents; return the new assignments (agents go to ``offered``).

    Order: highest priority first, then earliest queue entry; for each call the qualified
    free agent idle longest (ties: higher proficiency, then lower id). An agent whose wrap-up
    time has run out counts as free, idle since the end of the wrap-up. Calls nobody free can
    serve are skipped, so one blocked queue does not hold up the others. At most ``limit``
    calls are considered per invocation.

    Callbacks wait in the same order; one is offered only from its ``not_before`` time, only
    when ``callbacks_open`` (within business hours), and, when reserved for an agent, only to
    that agent. Its assignment carries ``callback_id``: the edge dials the caller.
    """
    if session.get_bind().dialect.name == "postgresql":
        # One dispatch at a time (until this transaction ends): with several running at once,
        # each would skip the rows the others locked and serve later callers before earlier
        # ones. Dispatch takes milliseconds; SQLite serialises writers anyway.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DISPATCH_LOCK})
    skilled_free = exists().where(and_(
        AgentSkill.skill == Queue.name, Queue.id == QueueEntry.queue_id,
        Agent.id == AgentSkill.agent_id, _free(now)))
    reserved_free = exists().where(and_(Agent.id == QueueEntry.reserved_agent_id, _free(now)))
    rows = session.execute(_lock(
        select(QueueEntry.id, QueueEntry.call_id, QueueEntry.queue_id, Queue.name,
               QueueEntry.callback_id, QueueEntry.reserved_agent_id)
        .join(Queue, Queue.id == QueueEntry.queue_id)
        .where(QueueEntry.state == "waiting", _due(now, callbacks_open))
        .where(or_(and_(QueueEntry.reserved_agent_id.is_(None), skilled_free),
                   and_(QueueEntry.reserved_agent_id.is_not(None), reserved_free)))
        .order_by(QueueEntry.priority.desc(), QueueEntry.entered_at, QueueEntry.id)
        .limit(limit), session, of=QueueEntry)).all()
    assignments: list[Assignment] = []
    taken: set[int] = set()
    free_agents = session.scalar(select(func.count()).select_from(Agent).where(_free(now))) or 0
    exhausted: set[object] = set()  # queues (by name) and reserved agents with no one free left
    for entry_id, call_id, queue_id, queue_name, callback_id, reserved in rows:
        if len(taken) >= free_agents:
            break  # every agent free at the start has been offered a call
        key = ("agent", reserved) if reserved is not None else queue_name
        if key in exhausted:
            continue
        if reserved is not None:
            stmt = select(Agent.id).where(Agent.id == reserved, _free(now))
        else:
            stmt = (select(Agent.id)
                    .join(AgentSkill, AgentSkill.agent_id == Agent.id)
                    .where(AgentSkill.skill == queue_name, _free(now))
                    .order_by(Agent.idle_since.asc().nulls_first(),
                              AgentSkill.proficiency.desc(), Agent.id)
                    .limit(1))
        if taken:
            stmt = stmt.where(Agent.id.not_in(taken))
        agent_id = session.scalars(_lock(stmt, session, of=Agent)).first()
        if agent_id is None:
            exhausted.add(key)
            continue
        if _claim(session, entry_id, call_id, agent_id, now):
            taken.add(agent_id)
            assignments.append(Assignment(call_id, agent_id, queue_id, callback_id))
    return assignments


class AcceptRefused(RuntimeError):
    """An agent cannot take the call; ``reason`` says why in a few words."""

    reason = "refused"


class AlreadyTaken(AcceptRefused):
    """Another agent took the call, or is taking it at this moment."""

    reason = "already taken"


class NotWaiting(AcceptRefused):
    """The call is not in a queue: still in the menus, or it ended."""

    reason = "not waiting"


class NotSkilled(AcceptRefused):
    """The call waits in a queue whose skill the agent does not have."""

    reason = "not skilled"


class AgentNotFree(AcceptRefused):
    """The agent cannot take a call now (not available, or already on one)."""

    reason = "agent not free"


def accept(session: Session, agent_id: int, call_id: int, now: datetime) -> Assignment:
    """The agent picks the waiting call ``call_id`` (e.g. from a supervisor's queue view).

    Atomic like :func:`dispatch`: of several agents accepting the same call at once exactly
    one gets it (the agent goes to ``offered``); the others get AlreadyTaken and stay as they
    were. Raises AgentNotFree if the agent is not free, NotWaiting if the call is in no queue,
    NotSkilled if the agent lacks the queue's skill.
    """
    entry = session.execute(_lock(
        select(QueueEntry.id, QueueEntry.queue_id, Queue.name, QueueEntry.callback_id)
        .join(Queue, Queue.id == QueueEntry.queue_id)
        .where(QueueEntry.call_id == call_id, QueueEntry.state == "waiting"), session,
        of=QueueEntry)).first()
    if entry is None:
        # Locked by a rival's accept or dispatch (skipped), or already offered: taken.
        if session.scalar(select(QueueEntry.id).where(QueueEntry.call_id == call_id)) is not None:
            raise AlreadyTaken(f"call {call_id} was taken by another agent")
        raise NotWaiting(f"call {call_id} is not waiting in a queue")
    skilled = session.scalar(select(AgentSkill.id).where(AgentSkill.agent_id == agent_id,
                                                         AgentSkill.skill == entry.name))
    if skilled is None:
        raise NotSkilled(f"call {call_id} waits in {entry.name}, a queue the agent does not serve")
    if not _claim(session, entry.id, call_id, agent_id, now):
        if session.scalar(select(Agent.id).where(Agent.id == agent_id, _free(now))) is None:
            raise AgentNotFree(f"agent {agent_id} is not free")
        raise AlreadyTaken(f"call {call_id} was taken by another agent")
    return Assignment(call_id, agent_id, entry.queue_id, entry.callback_id)


def _claim(session: Session, entry_id: int, call_id: int, agent_id: int, now: datetime) -> bool:
    before = session.execute(select(Agent.state, Agent.idle_since, Agent.wrap_up_until)
                             .where(Agent.id == agent_id)).one()
    took_agent = session.execute(
        update(Agent)
        .where(Agent.id == agent_id, _free(now))
        .values(state="offered", current_call_id=call_id, state_changed_at=now,
                wrap_up_until=None)
        .execution_options(synchronize_session="fetch")).rowcount
    if took_agent != 1:
        return False
    took_call = session.execute(
        update(QueueEntry)
        .where(QueueEntry.id == entry_id, QueueEntry.state == "waiting",
               QueueEntry.agent_id.is_(None))
        .values(state="offered", agent_id=agent_id, offered_at=now)
        .execution_options(synchronize_session="fetch")).rowcount
    if took_call != 1:
        session.execute(update(Agent).where(Agent.id == agent_id)
                        .values(state=before.state, current_call_id=None,
                                wrap_up_until=before.wrap_up_until)
                        .execution_options(synchronize_session="fetch"))
        return False
    if before.state == "wrap_up":  # its timer ran out (``_free``): the wrap-up ended then
        record_wrap_up_end(session, agent_id, before.wrap_up_until, before.wrap_up_until)
        record_state(session, agent_id, "available", before.wrap_up_until, reason=None)
    record_state(session, agent_id, "offered", now, call_id=call_id)
    return True


def staffed(session: Session, queue_name: str) -> bool:
    """Return True if an agent with the queue's skill is logged in (any state but offline)."""
    return session.scalar(
        select(Agent.id).join(AgentSkill, AgentSkill.agent_id == Agent.id)
        .where(AgentSkill.skill == queue_name, Agent.state != "offline").limit(1)) is not None


def move(session: Session, call_id: int, queue: Queue) -> None:
    """Move a waiting call to ``queue``, keeping its original entry time (its place by time)."""
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
    if entry is not None and entry.state == "waiting":
        entry.queue_id = queue.id
        session.flush()


def offered_agent(session: Session, call_id: int) -> Agent | None:
    """Return the agent the call is offered to (ringing), or None."""
    return session.scalar(select(Agent).join(QueueEntry, QueueEntry.agent_id == Agent.id)
                          .where(QueueEntry.call_id == call_id, QueueEntry.state == "offered"))


def offer_declined(session: Session, call_id: int, now: datetime) -> Agent | None:
    """The offered agent did not answer (busy, no answer, failed): put the call back in its place.

    The agent is set not ready (reason ``missed_offer``) so the next waiting call is not offered
    to an absent person; the call keeps its original entry time. Returns the agent, or None if
    there was no offer.
    """
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
    if entry is None or entry.agent_id is None:
        return None
    agent = session.get(Agent, entry.agent_id)
    entry.state, entry.agent_id, entry.offered_at = "waiting", None, None
    session.flush()
    if agent is not None and agent.current_call_id == call_id:
        agent.state, agent.current_call_id, agent.state_changed_at = "not_ready", None, now
        agent.idle_since, agent.not_ready_reason = None, "missed_offer"
        record_state(session, agent.id, "not_ready", now, reason="missed_offer", call_id=call_id)
    session.flush()
    return agent


def offer_answered(session: Session, call_id: int, now: datetime) -> int | None:
    """The agent answered: the call leaves the queue and the agent is busy. Returns the agent id,
    or None if the call was not offered."""
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
    if entry is None:
        return None
    agent_id = entry.agent_id
    session.delete(entry)
    agent = session.get(Agent, agent_id) if agent_id is not None else None
    if agent is not None and agent.current_call_id == call_id and agent.state == "offered":
        agent.state, agent.state_changed_at = "busy", now
        record_state(session, agent.id, "busy", now, call_id=call_id)
    session.flush()
    return agent_id


def leave_queue(session: Session, call_id: int, now: datetime) -> None:
    """The caller hung up or left the ACD: drop the entry and free an agent it was offered to."""
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
    if entry is not None:
        session.delete(entry)
        session.flush()
    agent = session.scalar(select(Agent).where(Agent.current_call_id == call_id))
    if agent is not None and agent.state == "offered":
        # Rang but never connected: the agent is free again and keeps their idle position.
        agent.state, agent.current_call_id, agent.state_changed_at = "available", None, now
        if agent.idle_since is None:
            agent.idle_since = now
        record_state(session, agent.id, "available", now, reason="caller_left", call_id=call_id)
    elif agent is not None:
        agent.current_call_id = None
    session.flush()


def call_finished(session: Session, agent_id: int, call_id: int, now: datetime, *,
                  wrap_up_seconds: float = 0) -> None:
    """The agent's conversation ended: wrap-up starts and the agent is no longer on the call.

    Wrap-up ends by itself after ``wrap_up_seconds`` (dispatch then treats the agent as free,
    idle since that moment), or earlier when the agent says so; 0 means only the agent ends it.
    """
    agent = session.get(Agent, agent_id)
    if agent is None or agent.current_call_id != call_id:
        return
    agent.state, agent.current_call_id, agent.state_changed_at = "wrap_up", None, now
    if wrap_up_seconds > 0:
        agent.wrap_up_until = now + timedelta(seconds=wrap_up_seconds)
        agent.idle_since = agent.wrap_up_until
    record_state(session, agent.id, "wrap_up", now, call_id=call_id)
    session.flush()


def queue_position(session: Session, call_id: int, now: datetime) -> int | None:
    """Return the caller's 1-based position in their queue, or None if the call is not in one.

    Callers and callbacks ahead by priority and entry time count; callbacks not due before
    ``now`` (a retry delay, an agreed time later) do not.
    """
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
    if entry is None:
        return None
    ahead = session.scalar(
        select(func.count()).select_from(QueueEntry)
        .where(QueueEntry.queue_id == entry.queue_id, QueueEntry.id != entry.id,
               or_(QueueEntry.not_before.is_(None), QueueEntry.not_before <= now))
        .where(or_(QueueEntry.priority > entry.priority,
                   and_(QueueEntry.priority == entry.priority,
                        or_(QueueEntry.entered_at < entry.entered_at,
                            and_(QueueEntry.entered_at == entry.entered_at,
                                 QueueEntry.id < entry.id))))))
    return int(ahead or 0) + 1


def offered_at(session: Session, call_id: int) -> datetime | None:
    """Return when the call was offered to its current agent, or None if it is not offered."""
    return session.scalar(select(QueueEntry.offered_at).where(QueueEntry.call_id == call_id,
                                                               QueueEntry.state == "offered"))


def callers_waiting(session: Session, queue_id: int) -> int:
    """Return how many callers are on the line in the queue (waiting or ringing an agent);
    callbacks, whose callers are not on the line, do not count."""
    return int(session.scalar(select(func.count()).select_from(QueueEntry)
                              .where(QueueEntry.queue_id == queue_id,
                                     QueueEntry.callback_id.is_(None))) or 0)


def next_timer(session: Session, now: datetime) -> datetime | None:
    """The next moment after ``now`` at which dispatch could offer something no event will
    announce: an agent's wrap-up timer running out, or a callback's ``not_before``. None if
    there is none."""
    wrap_up = session.scalar(select(func.min(Agent.wrap_up_until))
                             .where(Agent.state == "wrap_up", Agent.wrap_up_until > now))
    callback = session.scalar(select(func.min(QueueEntry.not_before))
                              .where(QueueEntry.state == "waiting", QueueEntry.not_before > now))
    due = [t for t in (wrap_up, callback) if t is not None]
    return min(due) if due else None
