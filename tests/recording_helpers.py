"""Helpers for the recording tests: an app with a recording store and keys, WAV media, and
signed recording callbacks."""
from __future__ import annotations

import io
import wave

from tests.conftest import AUTH_TOKEN, PUBLIC_BASE, Caller

KEY_A = "ka:" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="   # 32 bytes of 'A'
KEY_B = "kb:" + "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI="   # 32 bytes of 'B'
SECRET = b"Isikukood 38001010000, diagnoos F32.1 "           # what must not be readable at rest


def wav(seconds: int, rate: int = 8000) -> bytes:
    """A mono 16-bit WAV of ``seconds`` whose frames repeat SECRET (so plaintext is findable)."""
    frames = (SECRET * (seconds * rate * 2 // len(SECRET) + 1))[:seconds * rate * 2]
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(frames)
    return out.getvalue()


def make_app(db_url, clock, store_dir, telephony, **settings):
    """A service app whose recordings go to ``store_dir`` encrypted with KEY_A."""
    from app import create_app

    config = {"DATABASE_URL": db_url, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TELEPHONY": telephony,
              "PUBLIC_BASE_URL": PUBLIC_BASE, "CLOCK": clock, "RECORDINGS_KEYS": KEY_A,
              "RECORDINGS_DIR": str(store_dir)}
    config.update(settings)
    application = create_app(config)
    application.testing = True
    return application


def post_recording(app, call_sid: str, recording_sid: str, status: str = "completed",
                   duration: int | None = 12, start: str | None = "Tue, 01 Dec 2026 09:58:00 +0000"):
    """Send a signed recording status callback like the provider's; returns the response."""
    caller = Caller(app.test_client(), call_sid)
    return caller.post("/twilio/recording", RecordingSid=recording_sid, RecordingStatus=status,
                       RecordingDuration=None if duration is None else str(duration),
                       RecordingChannels="2", RecordingSource="DialVerb",
                       RecordingUrl=f"https://api.twilio.com/2010-04-01/Accounts/AC0/Recordings/{recording_sid}",
                       RecordingStartTime=start)


class Killed(BaseException):
    """A SIGKILL: nothing after it runs."""


def deletion_entries(app):
    """The deletion log's entries, in order."""
    from recording.models import RecordingDeletion
    from sqlalchemy import select
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalars(select(RecordingDeletion).order_by(RecordingDeletion.seq)).all()


def api_token(app, clock, role="qa"):
    """A fresh API token with ``role``."""
    from admin.auth import issue_token
    with app.extensions["db_sessionmaker"]() as s:
        token = issue_token(s, role, clock())
        s.commit()
    return token
