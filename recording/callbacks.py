"""Store recording status callbacks: one row per RecordingSid, updated in place.

The first final status decides what happens to the media: ``completed`` schedules the download
job (fetch_state ``pending``) and the deletion date; ``absent`` (the provider made no media) and
``failed`` mark the row (fetch_state ``absent``) with neither a download nor a deletion date.
A callback that arrives before the call's own webhooks is linked by CallSid all the same (the
row carries the CallSid; there is no foreign key to wait for). Repeats of a final status and
anything after it change nothing.

The precise rule: only ``completed``, ``absent`` and ``failed`` are final (the provider's
verdict on the media). Until one of them has arrived, any other status — ``in-progress``,
``paused``, ``stopped``, ``processing``, an unknown one, and ``deleted`` too, which can only be
news about a recording that completed and arrives out of order — is recorded (a later-ranked
one replaces an earlier-ranked one) but never blocks the final status: a ``completed`` after a
``deleted`` is downloaded and stored (a provider that really deleted it answers 404, retried
and reported). Once a final status has arrived, or the recording was purged or erased
(``deleted_at``), no callback changes it. Reconciliation (``recordings.jobs.reconcile``) asks
the provider what it actually holds and may reopen an ``absent``/``failed`` recording the
provider lists as completed.

The first final status (and the end of the call, :func:`close_open_pauses` from
``ivr.calls.end_call``) closes a recording pause still open: the paused span ends with the
recording (RecordingStartTime + RecordingDuration, else the callback's arrival).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from recording.models import FETCH_ABSENT, FETCH_PENDING, Recording, RecordingPause
from recording.retention import DEFAULT_TIMEZONE, due_date
from telephony.params import parse_int, parse_timestamp

# Later statuses win over earlier ones; a late 'in-progress' never undoes 'completed'.
_STATUS_RANK = {"in-progress": 0, "paused": 1, "stopped": 2, "processing": 3,
                "completed": 4, "absent": 4, "failed": 4, "deleted": 5}
FINAL = 4
DECIDED = ("completed", "absent", "failed")  # final: the provider's verdict on the media
# A RecordingStartTime outside this range is ignored (retention counts from the callback's arrival).
EARLIEST_START = datetime(2000, 1, 1, tzinfo=timezone.utc)
MAX_START_AHEAD = timedelta(days=1)


def store_recording_callback(session: Session, params: dict[str, str], now: datetime, *,
                             retention_months: int = 6,
                             tz_name: str = DEFAULT_TIMEZONE,
                             reopen_absent: bool = False) -> Recording | None:
    """Upsert a recording from callback ``params`` (RecordingSid, CallSid, RecordingStatus, …).

    ``now`` (aware UTC) is the arrival time; ``retention_months`` the retention period in
    calendar months, counted in ``tz_name`` from when the recording was made
    (RecordingStartTime, else ``now``). Returns the row, or None when the callback has no
    RecordingSid. Duration is in seconds. ``reopen_absent`` (reconciliation only: the
    provider lists the recording as completed) lets ``completed`` replace ``absent``/``failed``.
    Flushes, does not commit.
    """
    sid = params.get("RecordingSid", "").strip()
    if not sid or len(sid) > 64:
        return None
    status = (params.get("RecordingStatus", "completed") or "completed")[:16]
    recording = session.scalar(select(Recording).where(Recording.recording_sid == sid))
    if recording is None:
        recording = Recording(recording_sid=sid, call_sid=params.get("CallSid", "")[:64], status=status,
                              received_at=now, updated_at=now, fetch_state="none", fetch_attempts=0)
        session.add(recording)
    elif recording.deleted_at is not None \
            or (recording.status in DECIDED
                and not (reopen_absent and status == "completed" and recording.status != "completed"
                         and recording.fetch_state == FETCH_ABSENT)) \
            or (status not in DECIDED
                and _STATUS_RANK.get(status, 0) < _STATUS_RANK.get(recording.status, 0)):
        return recording  # a duplicate, or late news: the first final status stands
    if not recording.call_sid:
        recording.call_sid = params.get("CallSid", "")[:64]
    recording.status = status
    duration = parse_int(params.get("RecordingDuration"))  # 0 is a real duration, not "unknown"
    if duration is not None:
        recording.duration_seconds = duration
    channels = parse_int(params.get("RecordingChannels"))
    if channels is not None:
        recording.channels = channels
    recording.url = (params.get("RecordingUrl") or recording.url or "")[:512]
    recording.source = (params.get("RecordingSource") or recording.source or "")[:32] or None
    started = parse_timestamp(params.get("RecordingStartTime"))
    if started is not None and not EARLIEST_START <= started <= now + MAX_START_AHEAD:
        started = None  # implausible (year 9999, year 1): count retention from arrival instead
    recording.started_at = started or recording.started_at
    recording.recorded_at = recording.started_at or recording.received_at or now
    recording.updated_at = now
    if status == "completed":
        recording.fetch_state = FETCH_PENDING
        recording.next_fetch_at = now
        recording.delete_after = due_date(recording.recorded_at, retention_months, tz_name)
    elif status in ("absent", "failed"):
        recording.fetch_state = FETCH_ABSENT
        recording.delete_after = None
    if status in DECIDED and recording.call_sid:
        # The recording is over: so is any pause on it that was never resumed.
        ended = now
        if recording.started_at is not None and recording.duration_seconds is not None:
            ended = min(now, recording.started_at + timedelta(seconds=recording.duration_seconds))
        close_open_pauses(session, recording.call_sid, ended, begun_by=ended)
    session.flush()
    return recording


def close_open_pauses(session: Session, call_sid: str, ended_at: datetime, *,
                      begun_by: datetime | None = None) -> int:
    """Close every pause of ``call_sid`` still open (never resumed) at ``ended_at``, the end of
    the call or of its recording (never before the pause began); with ``begun_by``, only
    pauses begun by then (a later recording of the same call keeps its own). Returns how many.
    Flushes, does not commit."""
    query = select(RecordingPause).where(RecordingPause.call_sid == call_sid,
                                         RecordingPause.resumed_at.is_(None))
    if begun_by is not None:
        query = query.where(RecordingPause.paused_at <= begun_by)
    pauses = session.scalars(query).all()
    for pause in pauses:
        pause.resumed_at = max(pause.paused_at, ended_at)
    if pauses:
        session.flush()
    return len(pauses)
