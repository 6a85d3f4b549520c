"""Store recording status callbacks: one row per RecordingSid, updated in place."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from recording.models import Recording
from telephony.params import parse_int, parse_timestamp

# Later statuses win over earlier ones; a late 'in-progress' never undoes 'completed'.
_STATUS_RANK = {"in-progress": 0, "paused": 1, "stopped": 2, "processing": 3,
                "completed": 4, "absent": 4, "failed": 4, "deleted": 5}


def store_recording_callback(session: Session, params: dict[str, str], now: datetime) -> Recording | None:
    """Upsert a recording from callback ``params`` (RecordingSid, CallSid, RecordingStatus, …).

    Returns the row, or None when the callback has no RecordingSid. Duration is in seconds.
    """
    sid = params.get("RecordingSid", "").strip()
    if not sid or len(sid) > 64:
        return None
    status = params.get("RecordingStatus", "completed") or "completed"
    recording = session.scalar(select(Recording).where(Recording.recording_sid == sid))
    if recording is None:
        recording = Recording(recording_sid=sid, call_sid=params.get("CallSid", "")[:64], status=status[:16],
                              received_at=now, updated_at=now)
        session.add(recording)
    elif _STATUS_RANK.get(status, 0) < _STATUS_RANK.get(recording.status, 0):
        return recording
    recording.status = status[:16]
    recording.duration_seconds = parse_int(params.get("RecordingDuration")) or recording.duration_seconds
    recording.channels = parse_int(params.get("RecordingChannels")) or recording.channels
    recording.url = (params.get("RecordingUrl") or recording.url or "")[:512]
    recording.source = (params.get("RecordingSource") or recording.source or "")[:32] or None
    recording.started_at = parse_timestamp(params.get("RecordingStartTime")) or recording.started_at
    recording.updated_at = now
    session.flush()
    return recording
