"""Recording metadata (one row per RecordingSid), the hash-chained deletion log, the access
audit log and pause/resume events."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from db import Base, UTCDateTime, utcnow

# fetch_state values: what the download job still has to do for a recording.
FETCH_NONE = "none"          # not (yet) completed at the provider: nothing to fetch
FETCH_PENDING = "pending"    # completed: download, verify, store, then delete at the provider
FETCH_STORED = "stored"      # our encrypted copy is stored and verified; provider copy still to delete
FETCH_DONE = "done"          # one copy, ours; the provider's is deleted
FETCH_ABSENT = "absent"      # the provider has no media (absent/failed): nothing to fetch or delete
FETCH_GAVE_UP = "gave_up"    # RECORDINGS_FETCH_MAX_ATTEMPTS failed downloads: needs a person


class Recording(Base):
    """What the provider told us about one recording, where our copy is, and when it goes.

    Linked to the call by ``call_sid`` (the parent leg), not by a foreign key: the recording
    callback may arrive before the call's own webhooks. ``recorded_at`` is when it was made
    (the provider's RecordingStartTime, else the callback's arrival); ``delete_after`` is
    ``recorded_at`` plus the retention period in calendar months, local time (None: nothing to
    delete, e.g. absent media). ``deleted_at`` is set once every copy is gone; the row stays.
    ``storage_key`` names the encrypted object in the store, ``key_id`` the encryption key,
    ``size_bytes``/``sha256`` the plaintext media, ``media_seconds`` its measured duration.
    """

    __tablename__ = "recordings"
    __table_args__ = (Index("ix_recordings_fetch_state_next_fetch_at", "fetch_state", "next_fetch_at"),
                      Index("ix_recordings_delete_after", "delete_after"))

    id: Mapped[int] = mapped_column(primary_key=True)
    recording_sid: Mapped[str] = mapped_column(String(64), unique=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    channels: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(512), default="")
    source: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delete_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fetch_state: Mapped[str] = mapped_column(String(16), default=FETCH_NONE, server_default=FETCH_NONE)
    fetch_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_fetch_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fetch_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(255))
    storage_key: Mapped[str | None] = mapped_column(String(255))
    key_id: Mapped[str | None] = mapped_column(String(32))
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    media_seconds: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    stored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provider_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deletion_reason: Mapped[str | None] = mapped_column(String(32))


class RecordingDeletion(Base):
    """One entry of the append-only deletion log (the database refuses UPDATE and DELETE).

    ``entry_hash`` is the SHA-256 (hex) of ``prev_hash`` and the entry's fields in canonical
    JSON (see :func:`recording.deletion_log.entry_digest`); ``prev_hash`` is the previous
    entry's ``entry_hash`` (64 zeros for the first), so altering, removing or reordering any
    entry breaks the chain. ``locations`` says where copies were deleted (``store:…``,
    ``provider``), ``reason`` why (``retention``, ``erasure``).
    """

    __tablename__ = "recording_deletions"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    recording_sid: Mapped[str] = mapped_column(String(64), index=True)
    call_sid: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    locations: Mapped[str] = mapped_column(String(512))
    actor: Mapped[str] = mapped_column(String(128))
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)


class RecordingAccess(Base):
    """One access to recordings through the API: who (token id and role), when, which
    (``recording_sid``, or None for a listing of ``call_sid``), what (``list``/``stream``),
    the stated ``reason``, the byte range asked for and the ``outcome``: the HTTP status
    answered (``200``, ``206``, ``416``; ``404``/``409``/``410`` refused; ``503``); None for rows
    written before migration 0008."""

    __tablename__ = "recording_accesses"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))
    call_sid: Mapped[str | None] = mapped_column(String(64))
    recording_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(Text)
    byte_range: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str | None] = mapped_column(String(16))
    accessed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RecordingPause(Base):
    """A stretch of a call during which recording was paused through the API: ``paused_at`` to
    ``resumed_at`` (None while still paused); ``token_id`` who asked. At most one open pause
    per call (a partial unique index, migration 0008)."""

    __tablename__ = "recording_pauses"
    __table_args__ = (Index("uq_recording_pauses_open_call_sid", "call_sid", unique=True,
                            postgresql_where=text("resumed_at IS NULL"),
                            sqlite_where=text("resumed_at IS NULL")),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    paused_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    token_id: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(255), default="")
