"""Incoming SMS: acknowledged with an empty answer until SMS surveys parse replies."""
from __future__ import annotations

from telephony.signature import provider_blueprint
from telephony.twiml import MessagingResponse, twiml_response


def _empty():
    return twiml_response(MessagingResponse())


bp = provider_blueprint("sms", __name__, url_prefix="/twilio", on_error=_empty)


@bp.post("/sms")
def incoming_sms():
    """Accept an incoming message and answer with an empty ``<Response/>`` (no reply is sent)."""
    return _empty()
