"""Who is surveyed, once, on which channel: the rules of the line's ``surveys`` section.

Every answered call gets at most one decision per channel (a ``survey_invitations`` row, unique
per call and channel): ``offered`` (IVR), ``queued`` (SMS), or ``skipped`` with the reason.
Functions take the session first and ``now`` (aware UTC); none commits.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import phonenumbers
from sqlalchemy import exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ivr.models import Call
from line_config import LineConfig, SurveyConfig
from routing.models import Queue
from survey.models import SmsOutbox, SurveyInvitation, SurveyOptOut

log = logging.getLogger(__name__)


def sampled(call_sid: str, share: float) -> bool:
    """Whether the call falls in the surveyed ``share`` (0…1) of calls: a hash of its CallSid,
    so the IVR and the SMS job decide the same way for the same call, on any machine."""
    if share >= 1:
        return True
    if share <= 0:
        return False
    digest = hashlib.sha256(("survey|" + call_sid).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < share


def is_opted_out(session: Session, number: str | None) -> bool:
    """True if ``number`` (E.164) sent STOP at any time."""
    return number is not None and session.scalar(
        select(SurveyOptOut.id).where(SurveyOptOut.number == number)) is not None


def is_mobile(number: str | None) -> bool:
    """True if ``number`` (E.164) can take an SMS (mobile, or fixed-line-or-mobile)."""
    if not number:
        return False
    try:
        kind = phonenumbers.number_type(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return False
    return kind in (phonenumbers.PhoneNumberType.MOBILE,
                    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def _queue_name(session: Session, call: Call) -> str | None:
    if call.queue_id is None:
        return None
    return session.scalar(select(Queue.name).where(Queue.id == call.queue_id))


def ineligible_reason(session: Session, survey: SurveyConfig, call: Call, now: datetime) -> str | None:
    """Why ``call`` must not be surveyed, or None if it may be (on any channel).

    Reasons: ``disabled``, ``not_answered`` (no agent answered), ``queue`` (not a surveyed
    queue), ``transferred`` / ``escalated`` (unless included), ``not_sampled`` (outside
    ``share``), ``opted_out`` (the number sent STOP), ``recent_survey`` (the caller was asked
    within ``min_days_between`` days, on another call).
    """
    if not survey.enabled:
        return "disabled"
    if call.answered_at is None:
        return "not_answered"
    queue = _queue_name(session, call)
    surveyed = survey.queues
    if surveyed is not None and queue not in surveyed and queue not in survey.sms_queues:
        return "queue"
    if call.escalated and not survey.include_escalated:
        return "escalated"
    if call.transfer_kind in ("blind", "warm", "ivr") and call.outcome == "transferred" \
            and not survey.include_transferred:
        return "transferred"
    if not sampled(call.call_sid, survey.share):
        return "not_sampled"
    if is_opted_out(session, call.caller_key):
        return "opted_out"
    if call.caller_key is not None and survey.min_days_between > 0:
        since = now - timedelta(days=survey.min_days_between)
        recent = session.scalar(select(SurveyInvitation.id).where(
            SurveyInvitation.caller_key == call.caller_key, SurveyInvitation.created_at > since,
            SurveyInvitation.state != "skipped", SurveyInvitation.call_id != call.id).limit(1))
        if recent is not None:
            return "recent_survey"
    return None


def _insert(session: Session, invitation: SurveyInvitation) -> SurveyInvitation | None:
    """Add ``invitation`` unless the call already has one on that channel (a repeated or
    concurrent request): returns it, or None when another decision was there first."""
    try:
        with session.begin_nested():
            session.add(invitation)
            session.flush()
    except IntegrityError:
        return None
    return invitation


def _new_invitation(call: Call, config: LineConfig, channel: str, state: str, now: datetime,
                    reason: str | None = None) -> SurveyInvitation:
    return SurveyInvitation(call_id=call.id, channel=channel, state=state, reason=reason,
                            caller_key=call.caller_key,
                            language=call.language or config.default_language,
                            queue_id=call.queue_id, agent_id=call.agent_id, attempts=0,
                            created_at=now)


def queue_sms(session: Session, config: LineConfig, call: Call, now: datetime, *,
              delay_seconds: float = 0) -> SurveyInvitation | None:
    """Create the call's SMS invitation and its outbox message (due ``delay_seconds`` from
    ``now``), or a ``skipped`` SMS decision when the number cannot take one (``no_number``,
    ``not_mobile``, ``opted_out``). Returns the queued invitation or None."""
    number = call.caller_key
    reason = ("no_number" if number is None else "opted_out" if is_opted_out(session, number)
              else None if is_mobile(number) else "not_mobile")
    if reason is not None:
        _insert(session, _new_invitation(call, config, "sms", "skipped", now, reason))
        return None
    invitation = _insert(session, _new_invitation(call, config, "sms", "queued", now))
    if invitation is None:
        return None
    texts = config.surveys.sms_texts["question"]
    session.add(SmsOutbox(invitation_id=invitation.id, idempotency_key=secrets.token_hex(16),
                          to_number=number, from_number=config.surveys.sms_from,
                          body=texts.get(invitation.language) or texts[config.default_language],
                          state="pending", attempts=0, lost_claims=0, created_at=now,
                          next_attempt_at=now + timedelta(seconds=delay_seconds)))
    session.flush()
    return invitation


def start_ivr_survey(session: Session, config: LineConfig, call: Call,
                     now: datetime) -> SurveyInvitation | None:
    """The agent hung up and the caller is on the line: decide. Returns the ``offered`` IVR
    invitation to ask now, or None (not surveyed, or surveyed by SMS instead: a call in one of
    ``sms_queues`` gets its SMS queued here). A repeated request returns the same invitation
    while it is still being asked."""
    existing = session.scalar(select(SurveyInvitation).where(
        SurveyInvitation.call_id == call.id, SurveyInvitation.channel == "ivr"))
    if existing is not None:
        return existing if existing.state == "offered" else None
    survey = config.surveys
    reason = ineligible_reason(session, survey, call, now)
    if reason is not None:
        if reason != "disabled":
            _insert(session, _new_invitation(call, config, "ivr", "skipped", now, reason))
        return None
    if _queue_name(session, call) in survey.sms_queues:
        _insert(session, _new_invitation(call, config, "ivr", "skipped", now, "sms_queue"))
        queue_sms(session, config, call, now)
        return None
    return _insert(session, _new_invitation(call, config, "ivr", "offered", now))


@dataclass
class PlanReport:
    """What :func:`plan_sms` did: SMS queued, calls examined and not surveyed, IVR surveys
    the caller hung up on."""

    queued: int = 0
    skipped: int = 0
    ivr_abandoned: int = 0


def plan_sms(session: Session, config: LineConfig, now: datetime, *, delay_seconds: float = 60,
             lookback_hours: float = 24, limit: int = 500) -> PlanReport:
    """Decide the SMS survey for answered calls that ended at least ``delay_seconds`` ago
    (arrived within ``lookback_hours``) and have no decision yet: callers who hung up before
    the IVR survey, or during it before giving a score (``sms_fallback``), and calls of
    ``sms_queues``. Idempotent (one decision per call and channel); at most ``limit`` calls."""
    report = PlanReport()
    survey = config.surveys
    if not survey.enabled:
        return report
    decided = exists().where(SurveyInvitation.call_id == Call.id,
                             or_(SurveyInvitation.channel == "sms",
                                 SurveyInvitation.state != "offered"))
    calls = list(session.scalars(
        select(Call).where(Call.arrived_at >= now - timedelta(hours=lookback_hours),
                           Call.status == "ended", Call.answered_at.is_not(None),
                           Call.ended_at <= now - timedelta(seconds=delay_seconds),
                           # no webhook since: not still answering the IVR survey
                           Call.last_event_at <= now - timedelta(seconds=delay_seconds), ~decided)
        .order_by(Call.id).limit(limit)))
    for call in calls:
        ivr = session.scalar(select(SurveyInvitation).where(
            SurveyInvitation.call_id == call.id, SurveyInvitation.channel == "ivr"))
        if ivr is not None:  # offered, and the caller hung up before a score
            ivr.state = "abandoned"
            report.ivr_abandoned += 1
            if not survey.sms_fallback:
                continue
            if is_opted_out(session, call.caller_key):
                _insert(session, _new_invitation(call, config, "sms", "skipped", now, "opted_out"))
                report.skipped += 1
                continue
        else:
            reason = ineligible_reason(session, survey, call, now)
            if reason is not None:
                _insert(session, _new_invitation(call, config, "sms", "skipped", now, reason))
                report.skipped += 1
                continue
        invitation = queue_sms(session, config, call, now)
        if invitation is None:
            report.skipped += 1
        else:
            # The agent of the leg the caller ended on, as the IVR decision recorded it.
            if ivr is not None:
                invitation.agent_id = ivr.agent_id
            report.queued += 1
    session.flush()
    return report
