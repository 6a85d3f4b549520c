"""The call log: one row per inbound call, upserted by CallSid."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from db import Base, UTCDateTime, utcnow

# Where the call is now. 'ended' is final: later callbacks never move a call out of it.
# 'closing' = hearing a final message (closed, referral) before the service hangs up.
# 'callback' = the caller hung up after asking to be called back; the contact is still open.
CALL_STATUSES = ("ivr", "queued", "connecting", "connected", "transferring", "closing",
                 "callback", "ended")
# How it ended; only 'answered' and 'abandoned' calls were offered to agents.
CALL_OUTCOMES = ("answered", "abandoned", "ivr_abandoned", "out_of_hours", "no_agent",
                 "max_wait", "transferred", "referred", "failed", "callback_failed",
                 "called_again")


class CallFeedback(Base):
    """Feedback the caller gave during a call, as the agent recorded it (complaint, suggestion,
    wish, praise, thanks) with a short note; it stays on the supervisors' list until one of them
    marks it reviewed."""

    __tablename__ = "call_feedback"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    category: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reviewed_by: Mapped[str | None] = mapped_column(String(64))


class Call(Base):
    """Timings of one call, all in UTC.

    ``arrived_at`` first webhook; ``ivr_exited_at`` left the menus; ``queue_entered_at`` first
    entry into a queue (the start of the wait; kept when the caller is sent back to the queue);
    ``answered_at`` an agent answered; ``ended_at`` the call ended. ``talk_seconds`` is the
    agent leg's duration. ``last_event_at`` is the time of the latest webhook for the call.
    """

    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    from_number: Mapped[str] = mapped_column(String(64), default="")
    to_number: Mapped[str] = mapped_column(String(64), default="")
    language: Mapped[str | None] = mapped_column(String(8))
    topic: Mapped[str | None] = mapped_column(String(32))
    queue_id: Mapped[int | None] = mapped_column(ForeignKey("queues.id"))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="ivr")
    outcome: Mapped[str | None] = mapped_column(String(16))
    provider_status: Mapped[str | None] = mapped_column(String(16))
    arrived_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ivr_exited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queue_entered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    talk_seconds: Mapped[int | None] = mapped_column(Integer)
    no_input_count: Mapped[int] = mapped_column(Integer, default=0)
    invalid_input_count: Mapped[int] = mapped_column(Integer, default=0)
    # The caller struggled with the menus (went to a person after failed or no input, or asked
    # for one); such callers get raised priority. Reported as the "IVR struggle" figure.
    ivr_struggle: Mapped[bool] = mapped_column(default=False, server_default=false())
    # While waiting: the last position announced (a worse one is never announced), when a
    # callback was last offered, and when the call overflowed to another queue (at most once).
    announced_position: Mapped[int | None] = mapped_column(Integer)
    callback_offered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    overflowed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_event_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_by_sweep: Mapped[bool] = mapped_column(default=False)
    source: Mapped[str] = mapped_column(String(16), default="live")
    # A transfer to a structural unit (``unit_id``): ``transfer_kind`` ivr (menu option or queue
    # overflow), blind / warm (by the agent who answered), queue (escalation to a queue);
    # ``transfer_state`` where it stands (TRANSFER_STATES in ivr/transfers.py);
    # ``transfer_result`` the unit's answer (completed, busy, no-answer, failed, canceled, …);
    # ``transferred_at`` when the caller was handed over (the agent's talk time ends there);
    # ``escalated`` a complaint escalation. A warm transfer keeps the caller's conference room
    # and the call legs of the agent and the unit.
    transfer_kind: Mapped[str | None] = mapped_column(String(16))
    transfer_state: Mapped[str | None] = mapped_column(String(16))
    transfer_result: Mapped[str | None] = mapped_column(String(16))
    transferred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    escalated: Mapped[bool] = mapped_column(default=False, server_default=false())
    conference: Mapped[str | None] = mapped_column(String(64))
    agent_leg_sid: Mapped[str | None] = mapped_column(String(64))
    unit_leg_sid: Mapped[str | None] = mapped_column(String(64))
    # Reporting. ``caller_key`` is who called, for repeat contacts (FCR): the caller's number in
    # E.164 (phonenumbers, region EE) or an imported system's customer id (``anonymous-bank:…``);
    # None when withheld, a provider placeholder or invalid (never linked to anyone).
    # ``import_key`` makes a historical import idempotent (file kind + row id); None for live
    # calls. ``hold_seconds`` and ``wrap_up_seconds`` complete AHT = talk + hold + wrap-up.
    # ``disposition`` is the agent's outcome (DISPOSITIONS in reporting/dispositions.py).
    caller_key: Mapped[str | None] = mapped_column(String(64))
    import_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    hold_seconds: Mapped[int | None] = mapped_column(Integer)
    wrap_up_seconds: Mapped[int | None] = mapped_column(Integer)
    disposition: Mapped[str | None] = mapped_column(String(24))
    disposition_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    disposition_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The queue entry of the same caller's next offered call (None: none yet). Kept when that
    # call is offered, so repeat-contact FCR is a plain count (reporting/aggregate.py).
    next_offer_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_calls_arrived_at", "arrived_at"),
        Index("ix_calls_status_last_event_at", "status", "last_event_at"),
        Index("ix_calls_queue_id_answered_at", "queue_id", "answered_at"),
        Index("ix_calls_queue_entered_at", "queue_entered_at"),
        Index("ix_calls_caller_key_queue_entered_at", "caller_key", "queue_entered_at"),
    )
