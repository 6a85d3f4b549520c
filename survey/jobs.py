"""The survey job run by ``flask worker`` and ``flask surveys send``: queue SMS for callers who
hung up before the IVR survey, then send what is due from the outbox."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy.orm import Session

from line_config import current_line_config
from survey.outbox import SendReport, send_due
from survey.policy import PlanReport, plan_sms


@dataclass
class RoundReport:
    """One round: the SMS decisions (:class:`PlanReport`) and the sends (:class:`SendReport`)."""

    plan: PlanReport
    send: SendReport


def survey_round(session: Session, *, limit: int = 100) -> RoundReport:
    """Plan and send survey SMS with the app's settings, clock and telephony client; commits.

    Needs an application context with a request context for the status-callback URL
    (PUBLIC_BASE_URL). ``limit`` bounds both the calls examined and the messages sent.
    """
    from ivr.webhooks import external_url

    settings = current_app.config
    clock = settings["CLOCK"]
    config = current_line_config(session)
    plan = PlanReport()
    if config is not None:
        plan = plan_sms(session, config, clock(), delay_seconds=settings["SURVEY_SMS_DELAY_SECONDS"],
                        lookback_hours=settings["SURVEY_SMS_LOOKBACK_HOURS"], limit=limit)
    session.commit()
    sent = send_due(session, current_app.extensions["telephony"], clock,
                    status_callback=lambda key: external_url("sms.sms_status", key=key),
                    lease_seconds=settings["SURVEY_SMS_LEASE_SECONDS"],
                    max_attempts=settings["SURVEY_SMS_MAX_ATTEMPTS"], limit=limit)
    return RoundReport(plan, sent)
