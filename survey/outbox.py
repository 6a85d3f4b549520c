"""The survey SMS outbox: claimed by compare-and-set, sent through the telephony adapter,
marked with the provider's MessageSid.

Guarantees (several workers, on PostgreSQL or SQLite):

* **Never two workers at once.** A worker claims a message with one conditional UPDATE
  (``pending`` and due, or ``sending`` with its lease run out) that writes a fresh
  ``claim_token`` and lease, and commits before it talks to the provider. Of two workers only
  one UPDATE matches (PostgreSQL re-checks the condition after the row lock; SQLite serialises
  writers), so the other skips the row. The outcome is written only while the row still
  carries the worker's token (fencing).
* **Never lost.** The message was written with its invitation in one transaction; a worker
  killed anywhere leaves it ``pending`` or ``sending``, and the next round picks it up when
  the lease (``SURVEY_SMS_LEASE_SECONDS``) runs out.
* **Retried once, then reported.** A ``sending`` row whose lease ran out without an outcome
  (the worker died or stalled between claim and mark) is claimed again once
  (``lost_claims`` 1). If that also ends without an outcome it becomes ``unknown`` and is
  reported by ``flask surveys send``, never sent a third time.
* **Residual window.** The provider has no idempotency key for ``Messages.create``: a worker
  that dies after the provider accepted the message but before it committed ``sent`` leaves a
  row that will be sent once more, unless the message's status callback
  (``/twilio/sms/status?key=<idempotency_key>``, which the provider posts within seconds)
  marked it sent first. The lease (default 120 s) is that grace period. At most two copies
  can reach a caller, and only when both the commit and the status callback were lost.
* **Never to an opted-out number.** The claim UPDATEs require that the number is not in
  ``survey_opt_outs`` (a due message to such a number is ``canceled``), and the worker checks
  again after its claim, just before calling the provider; ``opt_out`` cancels ``pending`` and
  ``sending`` rows. Only a STOP committed while the provider call is in flight is too late.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session

from survey.models import SmsOutbox, SurveyInvitation, SurveyOptOut
from telephony.client import TelephonyClient, TelephonyError

log = logging.getLogger(__name__)

# Seconds before the first retry of a refused send; doubled each time, at most 6 h.
RETRY_SECONDS = 60
MAX_RETRY_SECONDS = 6 * 3600


@dataclass
class SendReport:
    """One round of :func:`send_due`: ids sent, retried later, failed for good, reported as
    ``unknown`` (sent or not: a worker died twice), and lost to another worker (fenced)."""

    sent: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)
    fenced: list[int] = field(default_factory=list)


def _due(now: datetime):
    return or_(and_(SmsOutbox.state == "pending", SmsOutbox.next_attempt_at <= now),
               and_(SmsOutbox.state == "sending", SmsOutbox.lease_until <= now))


def _opted_out():
    """The message's number sent STOP (a correlated EXISTS on survey_opt_outs)."""
    return exists().where(SurveyOptOut.number == SmsOutbox.to_number)


def _cancel_opted_out(session: Session, condition) -> int:
    """Cancel the messages matching ``condition`` whose number opted out, and mark their
    invitations ``skipped`` (``opted_out``). Returns how many messages were canceled."""
    ids = list(session.scalars(update(SmsOutbox).where(condition, _opted_out())
                               .values(state="canceled", lease_until=None, claim_token=None,
                                       last_error="opted out")
                               .returning(SmsOutbox.invitation_id)))
    if ids:
        session.execute(update(SurveyInvitation).where(
            SurveyInvitation.id.in_(ids), SurveyInvitation.state == "queued")
            .values(state="skipped", reason="opted_out"))
    return len(ids)


def claim(session: Session, outbox_id: int, now: datetime, lease_seconds: float) -> str | None:
    """Claim message ``outbox_id`` for ``lease_seconds`` from ``now``; return the claim token,
    or None if another worker holds it, it is not due, or it is finished. A message to a number
    that opted out is never claimed: a due one is ``canceled`` (returns None). A second lost
    claim turns the row ``unknown`` (returns None). Flushes; the caller commits at once."""
    if _cancel_opted_out(session, and_(SmsOutbox.id == outbox_id, _due(now))):
        log.info("survey SMS %s canceled: the number opted out", outbox_id)
        return None
    token = secrets.token_hex(8)
    lease = now + timedelta(seconds=lease_seconds)
    values = dict(state="sending", lease_until=lease, claim_token=token,
                  attempts=SmsOutbox.attempts + 1)
    # ~_opted_out() in the claim itself: a STOP committed after the cancel above (or one
    # that raced plan_sms, whose message opt_out could not see yet) still stops the claim.
    fresh = session.execute(update(SmsOutbox).where(
        SmsOutbox.id == outbox_id, SmsOutbox.state == "pending",
        SmsOutbox.next_attempt_at <= now, ~_opted_out()).values(**values)).rowcount
    if fresh == 1:
        return token
    lost = session.execute(update(SmsOutbox).where(
        SmsOutbox.id == outbox_id, SmsOutbox.state == "sending", SmsOutbox.lease_until <= now,
        SmsOutbox.lost_claims < 1, ~_opted_out())
        .values(lost_claims=SmsOutbox.lost_claims + 1, **values)).rowcount
    if lost == 1:
        log.warning("survey SMS %s: the previous claim ended without an outcome; sending once more",
                    outbox_id)
        return token
    twice = session.execute(update(SmsOutbox).where(
        SmsOutbox.id == outbox_id, SmsOutbox.state == "sending", SmsOutbox.lease_until <= now)
        .values(state="unknown", lease_until=None, claim_token=None,
                last_error="two claims ended without an outcome")).rowcount
    if twice == 1:
        _invitation_state(session, outbox_id, "unknown")
        log.error("survey SMS %s: two claims ended without an outcome; not sent again", outbox_id)
    return None


def _invitation_state(session: Session, outbox_id: int, state: str, **values) -> None:
    invitation_id = session.scalar(select(SmsOutbox.invitation_id).where(SmsOutbox.id == outbox_id))
    session.execute(update(SurveyInvitation).where(
        SurveyInvitation.id == invitation_id, SurveyInvitation.state.in_(("queued", "sent")))
        .values(state=state, **values))


def mark_sent(session: Session, outbox_id: int, token: str, provider_sid: str,
              now: datetime) -> bool:
    """Record the provider's acceptance while the claim ``token`` still holds; False if the
    row was taken over meanwhile (nothing written)."""
    done = session.execute(update(SmsOutbox).where(
        SmsOutbox.id == outbox_id, SmsOutbox.claim_token == token, SmsOutbox.state == "sending")
        .values(state="sent", provider_sid=provider_sid, sent_at=now, lease_until=None,
                last_error=None)).rowcount
    if done:
        _invitation_state(session, outbox_id, "sent", sent_at=now)
    return bool(done)


def mark_refused(session: Session, outbox_id: int, token: str, error: str, now: datetime, *,
                 max_attempts: int) -> str | None:
    """The provider refused (or could not be reached): back to ``pending`` after a doubling
    delay, or ``failed`` once ``max_attempts`` sends were made. Returns the new state, or None
    if the claim no longer holds."""
    row = session.scalar(select(SmsOutbox).where(SmsOutbox.id == outbox_id,
                                                 SmsOutbox.claim_token == token,
                                                 SmsOutbox.state == "sending"))
    if row is None:
        return None
    row.last_error = error[:255]
    row.lease_until = row.claim_token = None
    if row.attempts >= max_attempts:
        row.state = "failed"
        _invitation_state(session, outbox_id, "failed")
    else:
        row.state = "pending"
        delay = min(MAX_RETRY_SECONDS, RETRY_SECONDS * 2 ** max(0, row.attempts - 1))
        row.next_attempt_at = now + timedelta(seconds=delay)
    return row.state


def send_due(session: Session, client: TelephonyClient, clock: Callable[[], datetime], *,
             status_callback: Callable[[str], str | None], lease_seconds: float = 120,
             max_attempts: int = 5, limit: int = 100) -> SendReport:
    """Send up to ``limit`` due messages, oldest first; commits after every claim and outcome.

    ``clock()`` is read at each claim (a lease counts from its own claim);
    ``status_callback(idempotency_key)`` is the URL the provider posts delivery statuses to.
    Provider errors (TelephonyError) are retried with a doubling delay up to ``max_attempts``.
    """
    report = SendReport()
    ids = list(session.scalars(select(SmsOutbox.id).where(_due(clock()))
                               .order_by(SmsOutbox.id).limit(limit)))
    session.commit()
    for outbox_id in ids:
        token = claim(session, outbox_id, clock(), lease_seconds)
        session.commit()
        if token is None:
            if session.scalar(select(SmsOutbox.state).where(SmsOutbox.id == outbox_id)) == "unknown":
                report.unknown.append(outbox_id)
            session.commit()
            continue
        # The number may have sent STOP since the claim (opt_out cancels ``sending`` rows
        # too): re-checked just before the provider is called.
        if _cancel_opted_out(session, and_(SmsOutbox.id == outbox_id,
                                           SmsOutbox.claim_token == token,
                                           SmsOutbox.state == "sending")):
            session.commit()
            log.info("survey SMS %s canceled before sending: the number opted out", outbox_id)
            continue
        row = session.get(SmsOutbox, outbox_id)
        session.refresh(row)
        if row.state != "sending" or row.claim_token != token:  # canceled by opt_out meanwhile
            session.commit()
            continue
        to, from_, body, key = row.to_number, row.from_number, row.body, row.idempotency_key
        session.commit()
        try:
            sid = client.send_sms(to, from_, body, status_callback(key))
        except TelephonyError as exc:
            state = mark_refused(session, outbox_id, token, str(exc), clock(),
                                 max_attempts=max_attempts)
            session.commit()
            (report.failed if state == "failed" else report.retry).append(outbox_id)
            log.warning("survey SMS %s to the provider failed: %s", outbox_id, exc)
            continue
        if mark_sent(session, outbox_id, token, sid, clock()):
            report.sent.append(outbox_id)
        else:
            report.fenced.append(outbox_id)
            if session.scalar(select(SmsOutbox.state).where(SmsOutbox.id == outbox_id)) == "canceled":
                log.error("survey SMS %s was sent (%s) as the number opted out (STOP arrived "
                          "during the send)", outbox_id, sid)
            else:
                log.error("survey SMS %s was sent (%s) after another worker took it over",
                          outbox_id, sid)
        session.commit()
    return report


# Provider message statuses that mean it accepted the message.
ACCEPTED_STATUSES = frozenset({"accepted", "queued", "sending", "sent", "delivered", "undelivered",
                               "read", "scheduled"})


def apply_status_callback(session: Session, idempotency_key: str, message_sid: str,
                          status: str, now: datetime) -> bool:
    """A delivery status for the message with ``idempotency_key``: if no worker recorded the
    send (it died after the provider accepted it), record it now, so it is not sent again.
    Returns True if the row changed. Unknown keys and repeats change nothing."""
    if status not in ACCEPTED_STATUSES or not message_sid:
        return False
    row = session.scalar(select(SmsOutbox).where(SmsOutbox.idempotency_key == idempotency_key[:64]))
    if row is None or row.state not in ("sending", "pending", "unknown") or row.provider_sid:
        return False
    row.state, row.provider_sid, row.sent_at = "sent", message_sid[:64], now
    row.lease_until = row.claim_token = None
    session.flush()
    invitation = session.get(SurveyInvitation, row.invitation_id)
    if invitation is not None and invitation.state in ("queued", "unknown"):
        invitation.state, invitation.sent_at = "sent", now
    return True


def unknown_messages(session: Session, limit: int = 100) -> list[SmsOutbox]:
    """Messages a dying worker left in doubt (``unknown``), for a person to check."""
    return list(session.scalars(select(SmsOutbox).where(SmsOutbox.state == "unknown")
                                .order_by(SmsOutbox.id).limit(limit)))
