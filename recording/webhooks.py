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
    """Upsert the recording named by RecordingSid; duplicates and late callbacks are harmless.
    A completed recording gets its deletion date (RECORDINGS_RETENTION_MONTHS) and a pending
    download; absent and failed ones are only marked."""
    session = get_session()
    config = current_app.config
    store_recording_callback(session, request.form.to_dict(), config["CLOCK"](),
                             retention_months=config["RECORDINGS_RETENTION_MONTHS"],
                             tz_name=config["TIMEZONE"])
    session.commit()
    return _empty()
