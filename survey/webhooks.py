"""Incoming SMS (survey replies, STOP) and the delivery statuses of survey SMS.

``/twilio/sms`` answers with TwiML: a ``<Message>`` (the thanks, the one clarifying reply, a
STOP confirmation when the service gives it) or an empty ``<Response/>``. Never a 500: an
unexpected error is logged and answered with an empty response.
"""
from __future__ import annotations

import logging

from flask import current_app, request

from db import get_session
from line_config import current_line_config
from survey.answers import handle_sms
from survey.outbox import apply_status_callback
from telephony.signature import provider_blueprint
from telephony.twiml import MessagingResponse, twiml_response

log = logging.getLogger(__name__)


def _empty():
    return twiml_response(MessagingResponse())


bp = provider_blueprint("sms", __name__, url_prefix="/twilio", on_error=_empty)


@bp.post("/sms")
def incoming_sms():
    """A message to the line's number: a survey reply, STOP, or anything else (see
    :func:`survey.answers.handle_sms`). Answers with the reply text, or an empty response."""
    session = get_session()
    config = current_line_config(session)
    if config is None:
        return _empty()
    form = request.form
    reply = handle_sms(session, config, form.get("From", ""), form.get("Body", ""),
                       form.get("MessageSid", "") or form.get("SmsSid", ""),
                       current_app.config["CLOCK"]())
    session.commit()
    response = MessagingResponse()
    if reply.text:
        response.message(reply.text)
    return twiml_response(response)


@bp.post("/sms/status")
def sms_status():
    """Delivery status of a survey SMS (``?key=`` its idempotency key): records a send a dying
    worker did not record, so the message is not sent again."""
    session = get_session()
    apply_status_callback(session, request.args.get("key", ""), request.form.get("MessageSid", ""),
                          request.form.get("MessageStatus", "") or request.form.get("SmsStatus", ""),
                          current_app.config["CLOCK"]())
    session.commit()
    return _empty()
