"""Recording status callbacks from the provider, stored as metadata."""
from __future__ import annotations

from flask import current_app, request

from db import get_session
from recording.callbacks import store_recording_callback
from telephony.signature import provider_blueprint
from telephony.twiml import VoiceResponse, twiml_response


def _empty():
    return twiml_response(VoiceResponse())


bp = provider_blueprint("recording", __name__, url_prefix="/twilio", on_error=_empty)


@bp.post("/recording")
def callback():
    """Upsert the recording named by RecordingSid; duplicates and late callbacks are harmless."""
    session = get_session()
    store_recording_callback(session, request.form.to_dict(), current_app.config["CLOCK"]())
    session.commit()
    return _empty()
