"""ACD state: queues per skill, agents with skills and states, waiting calls, structural units."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db import Base, UTCDateTime, utcnow

# offered = the agent's phone is ringing with a call; busy = talking; wrap_up = after-call
# work (ends at wrap_up_until, or when the agent says so); not_ready = logged in but not
# taking calls, with a reason (break, training, a missed offer, …).
AGENT_STATES = ("offline", "available", "offered", "busy", "wrap_up", "not_ready")
ENDPOINT_KINDS = ("number", "sip", "client")


class Queue(Base):
    """A skill queue: callers of one (language, topic) wait here; its name is the skill agents hold."""

    __tablename__ = "queues"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    language: Mapped[str] = mapped_column(String(8))
    topic: Mapped[str] = mapped_column(String(32))

    __table_args__ = (UniqueConstraint("language", "topic", name="uq_queues_language_topic"),)


class Agent(Base):
    """A person who answers calls at ``endpoint`` (E.164 number, SIP URI or client identity)."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    endpoint_kind: Mapped[str] = mapped_column(String(8))
    endpoint: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="offline")
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Longest-idle routing orders available agents by this: when they last became free.
    idle_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    not_ready_reason: Mapped[str | None] = mapped_column(String(32))
    wrap_up_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # At most one call per agent, enforced by the database.
    current_call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL", use_alter=True),
                                                        unique=True)

    skills: Mapped[list["AgentSkill"]] = relationship(back_populates="agent",
                                                      cascade="all, delete-orphan")

    __table_args__ = (Index("ix_agents_state_idle_since", "state", "idle_since"),)


class AgentStateChange(Base):
    """One entry of an agent's state history (append-only): occupancy and handle time come from it."""

    __tablename__ = "agent_state_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_agent_state_changes_agent_id_at", "agent_id", "at"),)


class AgentSkill(Base):
    """An agent may serve the queue whose name is ``skill``."""

    __tablename__ = "agent_skills"

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    skill: Mapped[str] = mapped_column(String(64), index=True)
    proficiency: Mapped[int] = mapped_column(Integer, default=1)

    agent: Mapped[Agent] = relationship(back_populates="skills")

    __table_args__ = (UniqueConstraint("agent_id", "skill", name="uq_agent_skills_agent_id_skill"),)


class QueueEntry(Base):
    """A call waiting for (``waiting``) or being offered to (``offered``) an agent.

    The row exists only while the call is in the ACD, so dispatch reads a small table whatever
    the size of the call log. ``entered_at`` is the original queue entry: a caller sent back to
    the queue keeps it, and with it their place.
    """

    __tablename__ = "queue_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), unique=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id"))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), default="waiting")
    # At most one agent per call, enforced by the database.
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), unique=True)
    offered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A callback waits here like a caller, in its place by ``entered_at``; it is dispatched only
    # from ``not_before`` on (retry delay, agreed time) and, if ``reserved_agent_id`` is set, only
    # to that agent (a callback an agent agreed to make themselves).
    callback_id: Mapped[int | None] = mapped_column(ForeignKey("callbacks.id", ondelete="CASCADE"),
                                                    unique=True)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reserved_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))

    queue: Mapped[Queue] = relationship()

    __table_args__ = (Index("ix_queue_entries_state_priority", "state", "priority", "entered_at"),)


class Unit(Base):
    """A structural unit of the agency that calls can be transferred to."""

    __tablename__ = "units"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    phone_number: Mapped[str] = mapped_column(String(32))


# pending = waiting for its turn (or its agreed time); dialing = an agent is reserved and the
# caller's phone is being rung; connected = the caller answered; done / failed / canceled are final.
CALLBACK_STATES = ("pending", "dialing", "connected", "done", "failed", "canceled")
CALLBACK_KINDS = ("keep_place", "scheduled")


class Callback(Base):
    """A promise to call a caller back: kept in the queue in the caller's place (``keep_place``,
    virtual hold) or at a time agreed with an agent (``scheduled``).

    ``call_id`` is the contact it belongs to: the caller's original call (keep_place), or a call
    row made for the scheduled contact, linked to the caller's earlier call by ``origin_call_id``.
    ``number`` is E.164. Each attempt dials ``number`` once; ``attempts`` counts them.
    """

    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), unique=True)
    origin_call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"))
    number: Mapped[str] = mapped_column(String(32))
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id"))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_result: Mapped[str | None] = mapped_column(String(32))
    outbound_call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    requested_by_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_callbacks_number_state", "number", "state"),)
