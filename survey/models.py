"""Survey tables: invitations (one decision per call and channel), answers, the SMS outbox and
opt-outs. All times are aware UTC (:class:`db.UTCDateTime`)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from db import Base, UTCDateTime, utcnow

CHANNELS = ("ivr", "sms")
# survey_invitations.state:
#   skipped    the call was examined and not surveyed (``reason`` says why); one row per call
#   offered    IVR: the question is being asked
#   answered   a score was stored (survey_responses)
#   no_answer  IVR: no valid key after the repeat; the caller was thanked and the call ended
#   abandoned  IVR: the caller hung up before giving a score (an SMS may follow)
#   queued     SMS: in the outbox;  sent  SMS: accepted by the provider;  failed  SMS: not sent
#   unknown    SMS: a worker died twice between claiming and marking it (may or may not be sent)
INVITATION_STATES = ("skipped", "offered", "answered", "no_answer", "abandoned", "queued",
                     "sent", "failed", "unknown")
# survey_sms_outbox.state: pending (due at next_attempt_at), sending (claimed; lease_until),
# sent, failed (attempts used up or the provider refused for good), unknown (see above),
# canceled (the number opted out before it was sent).
OUTBOX_STATES = ("pending", "sending", "sent", "failed", "unknown", "canceled")


class SurveyInvitation(Base):
    """One survey decision for a call on one channel: who (``caller_key``, E.164), in which
    language, for which queue and agent (the leg the caller ended on), and where it stands."""

    __tablename__ = "survey_invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    caller_key: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(8))
    queue_id: Mapped[int | None] = mapped_column(ForeignKey("queues.id", ondelete="SET NULL"))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    clarified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("call_id", "channel", name="uq_survey_invitations_call_id_channel"),
        Index("ix_survey_invitations_caller_key_created_at", "caller_key", "created_at"),
        Index("ix_survey_invitations_state", "state"),
    )


class SurveyResponse(Base):
    """A caller's answer, counted once per call: ``score`` 0–10, ``resolved`` yes/no/None (not
    asked or not answered), the channel, and the agent and queue it belongs to."""

    __tablename__ = "survey_responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), unique=True)
    invitation_id: Mapped[int | None] = mapped_column(
        ForeignKey("survey_invitations.id", ondelete="SET NULL"))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"),
                                                 index=True)
    queue_id: Mapped[int | None] = mapped_column(ForeignKey("queues.id", ondelete="SET NULL"))
    language: Mapped[str | None] = mapped_column(String(8))
    channel: Mapped[str] = mapped_column(String(8))
    score: Mapped[int] = mapped_column(Integer)
    resolved: Mapped[bool | None] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    message_sid: Mapped[str | None] = mapped_column(String(64), unique=True)

    __table_args__ = (
        CheckConstraint("score >= 0 AND score <= 10", name="score_range"),
    )


class SmsOutbox(Base):
    """A survey SMS to send. Written in the same transaction as its invitation; the worker
    claims it by compare-and-set (state + lease), sends it, and marks it sent with the
    provider's MessageSid. ``claim_token`` fences a worker whose lease was taken over."""

    __tablename__ = "survey_sms_outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    invitation_id: Mapped[int] = mapped_column(
        ForeignKey("survey_invitations.id", ondelete="CASCADE"), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    to_number: Mapped[str] = mapped_column(String(32))
    from_number: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(String(640))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Claims whose outcome was never recorded (the worker died): after the second the message
    # is not sent again but reported (state unknown).
    lost_claims: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    provider_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_survey_sms_outbox_state_next_attempt_at", "state", "next_attempt_at"),
    )


class SurveyOptOut(Base):
    """A number (E.164) that asked not to be surveyed (STOP). Never removed by the service."""

    __tablename__ = "survey_opt_outs"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    opted_out_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(16), default="sms")
    message_sid: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(String(160), default="")
