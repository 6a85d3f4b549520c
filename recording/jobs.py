"""The recording jobs: download (fetch), purge, erasure and the retention check.

**Fetch** (``flask recordings fetch``): for each completed recording, download the media with
the provider credentials (TelephonyClient.download_recording), verify it (non-empty WAV whose
duration is within 2 s of the provider's RecordingDuration; size and SHA-256 recorded),
encrypt it, write it under its one deterministic key, read it back and check it, commit
``fetch_state='stored'``, and only then delete it at the provider and commit ``done``. Each
recording is claimed with a lease (FETCH_LEASE_SECONDS) so concurrent workers never work on
the same one. A process killed at any point leaves either the provider's copy (state
``pending``: the next run downloads again and overwrites the same key) or our verified copy
plus the provider's (``stored``: the next run only deletes at the provider) — after the
lease runs out, never a lost recording nor a second stored copy. A failed download is
retried after RECORDINGS_FETCH_RETRY_SECONDS, doubled each time (at most 6 h); after
RECORDINGS_FETCH_MAX_ATTEMPTS failures the recording is ``gave_up`` and reported.

**Reconcile** (``flask recordings reconcile``, or ``fetch --reconcile DAYS``): a recording
whose ``completed`` callback was lost would never be fetched (nor ever deleted at the
provider). :func:`reconcile` lists the provider's recordings of the last days and, for those
of our calls (a CallSid in the call log or a callback we dialled, or a RecordingSid we know),
applies the provider's final status as if its callback had come: an unknown recording is
created (``completed``: queued for download, its deletion date counted from its start time),
a known one still without a final status (``in-progress``, ``deleted`` …) gets it, and one
marked ``absent``/``failed`` that the provider lists as ``completed`` is queued. Recordings
already decided otherwise (queued, stored, done, given up, purged) are left alone, so running
it again changes nothing.

**Purge** (``flask recordings purge``): recordings past ``delete_after`` are deleted from
the store and at the provider (404 counts as deleted), in batches written ahead (the intent is
committed before any copy is deleted, so a purge killed mid-batch never makes the next run log
its deletions as "already absent"), each committed with its deletion-log entries; the row stays with ``deleted_at`` and one deletion-log entry per recording. Erasure is the same
for one caller's recordings, whatever their date.
"""
from __future__ import annotations

import base64
import binascii

import hashlib
import io
import wave
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, Iterable, Mapping

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from recording.callbacks import DECIDED, store_recording_callback
from recording.crypto import KeyConfigError, Keyring
from recording.deletion_log import DeletionLog
from recording.models import (FETCH_ABSENT, FETCH_DONE, FETCH_GAVE_UP, FETCH_PENDING, FETCH_STORED,
                              Recording, RecordingDeletion)
from recording.retention import DEFAULT_TIMEZONE
from recording.storage import RecordingStore, StorageError, object_key
from telephony.client import ProviderRecording, RecordingNotFound, TelephonyClient, TelephonyError

FETCH_LEASE_SECONDS = 300
MAX_RETRY_SECONDS = 6 * 3600
DURATION_TOLERANCE_SECONDS = 2


@dataclass
class Services:
    """What the jobs need: the provider, the store, the keys and the job settings."""

    telephony: TelephonyClient
    store: RecordingStore
    keyring: Keyring | None
    max_attempts: int = 8
    retry_seconds: float = 60.0
    clock: Any = None  # () -> aware UTC now; leases are counted from each claim's own time
    log_key: bytes | None = None  # HMAC key of the deletion log's chain (RECORDINGS_LOG_KEY)
    retention_months: int = 6  # RECORDINGS_RETENTION_MONTHS, for recordings found by reconcile
    tz_name: str = DEFAULT_TIMEZONE
    keys_error: str | None = None  # why RECORDINGS_KEYS is unusable (keyring None meanwhile)

    @classmethod
    def from_app(cls, app) -> "Services":
        """Build from a Flask app's settings; the store is built once per app. The keyring is
        None when RECORDINGS_KEYS is empty or malformed (``keys_error`` then says why): only
        fetch and streaming need it, so a typo in the keys never stops purge, erasure or
        verify-log. Raises ValueError for a malformed RECORDINGS_LOG_KEY (purge needs it)."""
        from recording.storage import make_store

        config = app.config
        store = app.extensions.get("recordings_store")
        if store is None:
            store = app.extensions["recordings_store"] = make_store(config)
        keyring, keys_error = None, None
        if config["RECORDINGS_KEYS"]:
            try:
                keyring = Keyring.parse(config["RECORDINGS_KEYS"], config["RECORDINGS_KEY_ID"])
            except KeyConfigError as exc:
                keys_error = str(exc)
        return cls(app.extensions["telephony"], store, keyring,
                   config["RECORDINGS_FETCH_MAX_ATTEMPTS"], config["RECORDINGS_FETCH_RETRY_SECONDS"],
                   config.get("CLOCK"), log_key(config.get("RECORDINGS_LOG_KEY", "")),
                   config.get("RECORDINGS_RETENTION_MONTHS", 6),
                   config.get("TIMEZONE", DEFAULT_TIMEZONE), keys_error)


def log_key(value: str) -> bytes | None:
    """The deletion log's HMAC key from ``RECORDINGS_LOG_KEY`` (base64 of at least 32 bytes),
    or None when it is empty. Raises ValueError for a malformed or short key."""
    if not value:
        return None
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("RECORDINGS_LOG_KEY must be base64 (e.g. from 'openssl rand -base64 32')") from None
    if len(key) < 32:
        raise ValueError("RECORDINGS_LOG_KEY must hold at least 32 bytes")
    return key


class VerificationError(ValueError):
    """Downloaded media is not what the provider described (empty, not WAV, wrong length)."""


MIN_SECONDS_WITHOUT_DURATION = 1.0


def _data_chunk(media: bytes) -> tuple[int, int]:
    """Return (offset, declared size) of the WAV ``data`` chunk; VerificationError if the RIFF
    structure is broken or the data chunk claims more bytes than the body holds."""
    if len(media) < 12 or media[:4] != b"RIFF" or media[8:12] != b"WAVE":
        raise VerificationError("not WAV audio: no RIFF/WAVE header")
    pos = 12
    while pos + 8 <= len(media):
        chunk_id, size = media[pos:pos + 4], int.from_bytes(media[pos + 4:pos + 8], "little")
        start = pos + 8
        if chunk_id == b"data":
            if start + size > len(media):
                raise VerificationError(f"truncated WAV: the data chunk declares {size} bytes, "
                                        f"{len(media) - start} are present")
            return start, size
        pos = start + size + (size & 1)
    raise VerificationError("not WAV audio: no data chunk")


def wav_seconds(media: bytes) -> float:
    """Return the duration in seconds of WAV ``media``, counted from the audio bytes actually
    present. Raises VerificationError if it is not WAV, truncated (the header promises more
    audio than the body holds), or has no frames."""
    _, data_size = _data_chunk(media)
    try:
        with wave.open(io.BytesIO(media)) as reader:
            rate = reader.getframerate()
            frames = reader.getnframes()
            block = reader.getnchannels() * reader.getsampwidth()
    except (wave.Error, EOFError) as exc:
        raise VerificationError(f"not WAV audio: {exc}") from exc
    if not rate or not block:
        raise VerificationError("not WAV audio: zero sample rate or frame size")
    if frames * block != data_size:
        raise VerificationError(f"truncated WAV: {frames} frames of {block} bytes do not fill the "
                                f"{data_size}-byte data chunk")
    if frames == 0:
        raise VerificationError("WAV without audio (0 frames)")
    return frames / rate


def verify_media(media: bytes, expected_seconds: int | None) -> float:
    """Check downloaded media; return its duration in seconds. Raises VerificationError.

    The WAV must be complete (its data chunk fits in the bytes received, whole frames), hold at
    least one frame, last within DURATION_TOLERANCE_SECONDS of ``expected_seconds`` and, when
    the provider gave no duration, at least MIN_SECONDS_WITHOUT_DURATION."""
    if not media:
        raise VerificationError("empty media")
    seconds = wav_seconds(media)
    if expected_seconds is None and seconds < MIN_SECONDS_WITHOUT_DURATION:
        raise VerificationError(f"media lasts {seconds:.2f} s and the provider gave no duration")
    if expected_seconds is not None and abs(seconds - expected_seconds) > DURATION_TOLERANCE_SECONDS:
        raise VerificationError(f"media lasts {seconds:.1f} s, the provider said {expected_seconds} s")
    return seconds


@dataclass
class FetchReport:
    """What one fetch run did: SIDs stored, deleted at the provider, failed (sid, error,
    next attempt or None when given up)."""

    stored: list[str] = field(default_factory=list)
    provider_deleted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, datetime | None]] = field(default_factory=list)


def retry_delay(retry_seconds: float, attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failures: ``retry_seconds`` doubled
    after each failure, at most MAX_RETRY_SECONDS (the exponent is capped: 2**1024 overflows)."""
    return min(retry_seconds * 2 ** min(max(attempts - 1, 0), 40), MAX_RETRY_SECONDS)


def _current(services: Services, now: datetime) -> datetime:
    return max(services.clock(), now) if services.clock is not None else now


def _claim(session: Session, recording_id: int, now: datetime) -> datetime | None:
    """Lease the recording to this worker until ``now`` + FETCH_LEASE_SECONDS. Returns the lease
    (this worker's fencing token: every later write is conditional on it) or None when another
    worker holds it or there is nothing to do."""
    lease = now + timedelta(seconds=FETCH_LEASE_SECONDS)
    result = session.execute(
        update(Recording)
        .where(Recording.id == recording_id, Recording.deleted_at.is_(None),
               Recording.fetch_state.in_((FETCH_PENDING, FETCH_STORED)),
               or_(Recording.fetch_lease_until.is_(None), Recording.fetch_lease_until <= now))
        .values(fetch_lease_until=lease))
    session.commit()
    return lease if result.rowcount == 1 else None


def _held(recording_id: int, lease: datetime, state: str) -> tuple:
    """The row is still this worker's: not deleted, in ``state``, and still carrying the lease
    it was claimed (or renewed) with. A worker whose lease ran out and was taken over by another
    (which wrote its own lease, or cleared it when done) matches no row."""
    return (Recording.id == recording_id, Recording.deleted_at.is_(None),
            Recording.fetch_state == state, Recording.fetch_lease_until == lease)


def _renew(session: Session, services: Services, recording_id: int, lease: datetime,
           now: datetime) -> datetime | None:
    """Extend this worker's lease on a pending recording from the current time; returns the
    new lease, or None when the lease was lost (taken over, or the recording deleted)."""
    renewed = max(_current(services, now) + timedelta(seconds=FETCH_LEASE_SECONDS), lease)
    held = session.execute(update(Recording).where(*_held(recording_id, lease, FETCH_PENDING))
                           .values(fetch_lease_until=renewed)).rowcount
    session.commit()
    return renewed if held == 1 else None


def _discard(session: Session, services: Services, recording_id: int, lease: datetime | None,
             key: str, now: datetime) -> datetime | None:
    """Delete the object this worker may have written under ``key`` — but only when no other
    worker's copy can be there: while this worker still holds the lease on the pending row
    (renewed first, so the deletion runs inside it), or when the recording has been deleted
    (purged or erased: no copy may remain). A worker that lost its lease leaves the object
    alone: it may be the copy another worker verified. Returns the renewed lease or None."""
    renewed = _renew(session, services, recording_id, lease, now) if lease is not None else None
    if renewed is None:
        deleted_at = session.scalar(select(Recording.deleted_at).where(Recording.id == recording_id))
        session.commit()
        if deleted_at is None:
            return None
    try:
        services.store.delete(key)
    except StorageError:
        pass  # same key next time (overwritten), and purge deletes it by that key
    return renewed


def fetch_due(session: Session, services: Services, now: datetime, *, limit: int = 100) -> FetchReport:
    """Run the download job once for up to ``limit`` recordings whose next attempt is due.

    ``now`` is aware UTC. Commits after each step. Raises ValueError when no
    encryption key is configured (nothing is downloaded unencrypted) and KeyConfigError when
    RECORDINGS_KEYS is malformed.
    """
    if services.keys_error:
        raise KeyConfigError(services.keys_error)
    if services.keyring is None:
        raise ValueError("RECORDINGS_KEYS is not set: recordings are never stored unencrypted")
    report = FetchReport()
    ids = session.scalars(
        select(Recording.id)
        .where(Recording.fetch_state.in_((FETCH_PENDING, FETCH_STORED)), Recording.deleted_at.is_(None),
               or_(Recording.next_fetch_at.is_(None), Recording.next_fetch_at <= now),
               or_(Recording.fetch_lease_until.is_(None), Recording.fetch_lease_until <= now))
        .order_by(Recording.next_fetch_at, Recording.id).limit(limit)).all()
    session.rollback()
    for recording_id in ids:
        # The lease runs from the claim, not from the round's start: a round whose earlier
        # downloads were slow must not claim with a lease that has already run out.
        lease = _claim(session, recording_id, _current(services, now))
        if lease is None:
            continue
        recording = session.get(Recording, recording_id, populate_existing=True)
        if recording.fetch_state == FETCH_PENDING:
            lease = _download(session, services, recording, now, lease, report)
            if lease is None:
                continue  # failed, or no longer ours
        if recording.fetch_state == FETCH_STORED:
            _delete_at_provider(session, services, recording, now, lease, report)
    return report


def _fail(session: Session, services: Services, recording_id: int, sid: str, attempts: int,
          now: datetime, error: str, report: FetchReport, *, lease: datetime | None, state: str,
          may_give_up: bool) -> None:
    """Count a failed attempt and schedule the next one — only while this worker still holds
    the lease (a worker that lost it changes nothing: another one has the recording now)."""
    if lease is None:
        return
    attempts += 1
    values: dict[str, Any] = {"fetch_attempts": attempts, "last_error": error[:255],
                              "fetch_lease_until": None}
    if may_give_up and attempts >= services.max_attempts:
        values.update(fetch_state=FETCH_GAVE_UP, next_fetch_at=None)
    else:
        values["next_fetch_at"] = now + timedelta(seconds=retry_delay(services.retry_seconds, attempts))
    held = session.execute(update(Recording).where(*_held(recording_id, lease, state))
                           .values(**values)).rowcount
    session.commit()
    if held:
        report.failed.append((sid, error, values["next_fetch_at"]))


def _download(session: Session, services: Services, recording: Recording, now: datetime,
              lease: datetime, report: FetchReport) -> datetime | None:
    """Download, verify, encrypt, write and read back; mark ``stored``. Returns the lease this
    worker still holds on the stored recording, or None (failed, or no longer ours)."""
    sid, recording_id, expected = recording.recording_sid, recording.id, recording.duration_seconds
    attempts = recording.fetch_attempts
    made_at = recording.recorded_at or recording.received_at
    session.commit()  # hold no transaction (on SQLite: no write lock) during the download
    written = False
    try:
        key = object_key(sid, made_at)  # ValueError: odd SID
        media = services.telephony.download_recording(sid)
        seconds = verify_media(media, expected)
        digest = hashlib.sha256(media).hexdigest()
        key_id, blob = services.keyring.encrypt(media, sid)
        # The download may have outlasted the lease. Renew it, conditionally on still holding
        # it, before writing anything: a worker whose lease was taken over (or whose recording
        # was erased meanwhile) writes nothing and deletes nothing.
        lease = _renew(session, services, recording_id, lease, now)
        if lease is None:
            return None
        written = True
        services.store.put(key, blob)
        if hashlib.sha256(services.keyring.decrypt(services.store.get(key), sid)).hexdigest() != digest:
            raise VerificationError("the stored copy does not read back")
    except (TelephonyError, RecordingNotFound, VerificationError, StorageError, ValueError) as exc:
        if written:  # an unverified copy is no copy: leave none behind (if it is ours to delete)
            lease = _discard(session, services, recording_id, lease, key, now)
        _fail(session, services, recording_id, sid, attempts, now, f"download: {exc}", report,
              lease=lease, state=FETCH_PENDING, may_give_up=True)
        return None
    # Conditional on the lease (fencing) and on deleted_at under the row lock: this UPDATE
    # locks the row, waits for a purge or erasure that holds it (purge selects FOR UPDATE) and,
    # once that commits, re-evaluates the condition on the committed row (PostgreSQL READ
    # COMMITTED), so a recording erased meanwhile, or taken over by another worker, is never
    # marked stored by this one.
    stored = session.execute(
        update(Recording).where(*_held(recording_id, lease, FETCH_PENDING))
        .values(fetch_state=FETCH_STORED, storage_key=key, key_id=key_id, size_bytes=len(media),
                media_seconds=round(seconds), sha256=digest, stored_at=now, last_error=None,
                updated_at=now)).rowcount
    session.commit()
    session.refresh(recording)
    if not stored:
        if recording.deleted_at is not None:  # purged or erased while we downloaded: no copy
            try:
                services.store.delete(key)
            except StorageError:
                pass  # purge deletes it by its deterministic key; verify-log reports it meanwhile
        # Otherwise another worker took the recording over: the object is its business.
        return None
    report.stored.append(sid)
    return lease


def _delete_at_provider(session: Session, services: Services, recording: Recording, now: datetime,
                        lease: datetime, report: FetchReport) -> None:
    sid, recording_id, attempts = recording.recording_sid, recording.id, recording.fetch_attempts
    session.commit()  # hold no transaction (on SQLite: no write lock) during the provider call
    try:
        services.telephony.delete_recording(sid)  # False (404): already gone
    except TelephonyError as exc:
        _fail(session, services, recording_id, sid, attempts, now, f"provider deletion: {exc}",
              report, lease=lease, state=FETCH_STORED, may_give_up=False)
        return
    done = session.execute(
        update(Recording).where(*_held(recording_id, lease, FETCH_STORED))
        .values(fetch_state=FETCH_DONE, provider_deleted_at=now, fetch_lease_until=None,
                next_fetch_at=None, updated_at=now)).rowcount
    session.commit()
    if done:
        report.provider_deleted.append(sid)


@dataclass
class ReconcileReport:
    """What one reconciliation did: recordings created (unknown until now) and queued (known
    but stuck), as (sid, status); how many listed recordings were not of our calls."""

    created: list[tuple[str, str]] = field(default_factory=list)
    updated: list[tuple[str, str]] = field(default_factory=list)
    listed: int = 0
    not_ours: int = 0


def _our_call_sids(session: Session, call_sids: set[str]) -> set[str]:
    from ivr.models import Call
    from routing.models import Callback

    found: set[str] = set()
    pending = sorted(s for s in call_sids if s)
    for start in range(0, len(pending), 500):
        chunk = pending[start:start + 500]
        found |= set(session.scalars(select(Call.call_sid).where(Call.call_sid.in_(chunk))))
        found |= set(session.scalars(select(Callback.outbound_call_sid)
                                     .where(Callback.outbound_call_sid.in_(chunk))))
    return found


def reconcile(session: Session, services: Services, now: datetime, *, since_days: float = 2) -> ReconcileReport:
    """Ask the provider for its recordings of the last ``since_days`` days and catch up on
    those whose final callback never arrived (see the module docstring). Idempotent; commits
    each change. Raises TelephonyError when the provider cannot be listed."""
    report = ReconcileReport()
    listed: list[ProviderRecording] = services.telephony.list_recordings(now - timedelta(days=since_days))
    report.listed = len(listed)
    known = {}
    sids = sorted({r.recording_sid for r in listed})
    for start in range(0, len(sids), 500):
        known.update({row.recording_sid: row for row in session.execute(
            select(Recording.recording_sid, Recording.status, Recording.fetch_state, Recording.deleted_at)
            .where(Recording.recording_sid.in_(sids[start:start + 500])))})
    ours = _our_call_sids(session, {r.call_sid for r in listed if r.recording_sid not in known})
    session.rollback()
    for item in listed:
        row = known.get(item.recording_sid)
        if row is None and item.call_sid not in ours:
            report.not_ours += 1  # another application's recording on the same account
            continue
        if item.status not in DECIDED:
            continue  # still recording or processing: its callback is still to come
        if row is not None and (row.deleted_at is not None or (
                row.status in DECIDED and not (item.status == "completed" and row.status != "completed"))):
            continue  # decided already (queued, stored, done, given up, purged)
        params = {"RecordingSid": item.recording_sid, "CallSid": item.call_sid,
                  "RecordingStatus": item.status}
        if item.duration_seconds is not None:
            params["RecordingDuration"] = str(item.duration_seconds)
        if item.channels is not None:
            params["RecordingChannels"] = str(item.channels)
        if item.source:
            params["RecordingSource"] = item.source
        if item.start_time is not None:
            params["RecordingStartTime"] = format_datetime(item.start_time.astimezone(timezone.utc))
        try:
            stored = store_recording_callback(session, params, now, retention_months=services.retention_months,
                                              tz_name=services.tz_name, reopen_absent=True)
            session.commit()
        except IntegrityError:
            session.rollback()  # its callback arrived meanwhile: the next run sees the row
            continue
        if stored is not None and stored.status == item.status:
            (report.created if row is None else report.updated).append((item.recording_sid, item.status))
    return report


@dataclass
class PurgeReport:
    """What a purge or erasure did: batches committed, recordings deleted, copies removed from
    the store and at the provider (``provider_gone``: the provider had already deleted them),
    and failures (sid, error) left for the next run."""

    batches: int = 0
    deleted: int = 0
    store_deleted: int = 0
    provider_deleted: int = 0
    provider_gone: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def purge(session: Session, services: Services, now: datetime, *, reason: str = "retention",
          batch_size: int = 500, max_batches: int | None = None, call_sids: Iterable[str] | None = None,
          actor: str = "flask recordings purge", on_batch=None) -> PurgeReport:
    """Delete recordings everywhere and log each deletion; keep their rows with ``deleted_at``.

    Without ``call_sids``: recordings whose ``delete_after`` is at or before ``now``. With
    them: every not-yet-deleted recording of those calls (erasure), whatever its date.
    Absent recordings (no media) are never touched. Works in batches of ``batch_size``
    recordings; stops after ``max_batches``. Each batch is written ahead: its rows get
    ``deletion_reason`` (the intent) in a first commit, before any copy is deleted; then its
    copies are deleted and the rows (``deleted_at``) and deletion-log entries committed
    together. A purge killed mid-batch thus leaves the intent behind, and the next run logs a
    copy it finds gone as deleted by the interrupted run, never as "already absent".
    Running it again is harmless: deleted rows are not selected again, a missing object or a
    provider 404 counts as deleted. ``on_batch(report)`` is called after each batch.

    The rows of a batch are locked (SELECT … FOR UPDATE) and re-checked from before their
    deletions until the commit, so a download running meanwhile cannot mark one ``stored``: its
    conditional UPDATE waits, then sees ``deleted_at`` and deletes its own copy; and of two
    purges that picked the same rows, the second finds them deleted and skips them. The
    retention purge skips recordings leased to a running download (the next run takes them);
    erasure does not wait for them. When the store copy was deleted but the provider's deletion
    failed, that store deletion is logged at once (the row loses its storage key and stays
    undeleted) and the next run logs the provider's.

    Raises recording.deletion_log.LogKeyMissing, before deleting anything, when
    RECORDINGS_LOG_KEY is not set but the log was written with a key.
    """
    report = PurgeReport()
    log = DeletionLog(session, services.log_key)
    log.check_key()  # LogKeyMissing: a keyed log and no RECORDINGS_LOG_KEY
    last_id = 0
    condition = [Recording.deleted_at.is_(None), Recording.fetch_state != FETCH_ABSENT]
    if call_sids is None:
        condition.append(and_(Recording.delete_after.is_not(None), Recording.delete_after <= now))
        # A recording leased to a running download is left for the next run.
        condition.append(or_(Recording.fetch_lease_until.is_(None), Recording.fetch_lease_until <= now))
    else:
        condition.append(Recording.call_sid.in_(sorted(set(call_sids))))
    columns = (Recording.id, Recording.recording_sid, Recording.call_sid, Recording.storage_key,
               Recording.sha256, Recording.provider_deleted_at, Recording.recorded_at,
               Recording.received_at)
    while max_batches is None or report.batches < max_batches:
        # Write-ahead: pick the batch and commit the intent (``deletion_reason``) before deleting
        # anything. A run killed during its deletions leaves the intent behind, so the next run
        # knows that copies it finds gone were deleted by that run, not "already absent".
        log.begin()  # one purge at a time picks (the log's writer lock)
        picked = session.execute(
            select(Recording.id, Recording.deletion_reason)
            .where(Recording.id > last_id, *condition).order_by(Recording.id).limit(batch_size)
            .with_for_update()).all()
        if not picked:
            session.rollback()
            log.reset()
            break
        last_id = picked[-1].id
        interrupted = {row.id for row in picked if row.deletion_reason is not None}
        session.execute(update(Recording).where(Recording.id.in_([row.id for row in picked]))
                        .values(deletion_reason=reason))
        session.commit()
        log.reset()
        # Delete and log, the rows locked (SELECT … FOR UPDATE) and re-checked under the
        # writer's lock (another purge may have deleted some meanwhile) until the commit: a
        # download cannot mark one stored until then.
        log.begin()
        rows = session.execute(
            select(*columns).where(Recording.id.in_([row.id for row in picked]), *condition)
            .order_by(Recording.id).with_for_update()).all()
        changes, partial = [], []
        for row in rows:
            outcome = _purge_one(services, log, row, now, reason, actor, report,
                                 interrupted=row.id in interrupted)
            if outcome == "deleted":
                changes.append({"id": row.id, "deleted_at": now, "deletion_reason": reason,
                                "provider_deleted_at": row.provider_deleted_at or now,
                                "fetch_lease_until": None, "updated_at": now})
            elif outcome == "partial":
                partial.append({"id": row.id, "storage_key": None, "updated_at": now})
        if partial:
            session.execute(update(Recording), partial)
        if changes:
            session.execute(update(Recording), changes)
        log.flush()
        session.commit()
        log.reset()
        report.batches += 1
        report.deleted += len(changes)
        if on_batch is not None:
            on_batch(report)
    return report


INTERRUPTED = " (gone on retry: deleted by an interrupted purge run)"


def _purge_one(services: Services, log: DeletionLog, row, now: datetime, reason: str, actor: str,
               report: PurgeReport, *, interrupted: bool) -> str | None:
    """Delete one recording's copies (store, provider) and append its log entry. Returns
    ``deleted``, ``partial`` (the store copy deleted, the provider's not) or None (failed,
    nothing deleted). ``interrupted``: an earlier purge run committed its intent to delete
    this recording and died, so a copy found gone was deleted by that run."""
    locations = []
    store_done = False
    try:
        if row.storage_key:
            where = services.store.location(row.storage_key)
            gone = not services.store.delete(row.storage_key)
            locations.append(where + ((INTERRUPTED if interrupted else " (already absent)") if gone else ""))
            report.store_deleted += not gone
            store_done = not gone
        elif row.recording_sid.isascii() and row.recording_sid.isalnum():
            # Not recorded as stored, but a download killed before its commit may
            # have written the object under its one deterministic key.
            key = object_key(row.recording_sid, row.recorded_at or row.received_at)
            if services.store.delete(key):
                locations.append(services.store.location(key) + " (unrecorded copy)")
                report.store_deleted += 1
                store_done = True
        if row.provider_deleted_at is None:
            deleted = services.telephony.delete_recording(row.recording_sid)
            locations.append("provider" + ("" if deleted else
                                           " (404: deleted by an interrupted purge run, or gone before)"
                                           if interrupted else " (404: already deleted)"))
            report.provider_deleted += deleted
            report.provider_gone += not deleted
    except (StorageError, TelephonyError) as exc:
        report.failed.append((row.recording_sid, str(exc)))
        if not store_done:
            return None
        # The store copy is gone but the provider's is not: log that deletion now (the row
        # stays undeleted, without its storage key, and the next run deletes and logs the
        # provider's copy).
        log.append(recording_sid=row.recording_sid, call_sid=row.call_sid, sha256=row.sha256,
                   reason=reason, locations=locations + [f"provider deletion failed, retried: {exc}"],
                   actor=actor, deleted_at=now)
        return "partial"
    log.append(recording_sid=row.recording_sid, call_sid=row.call_sid, sha256=row.sha256,
               reason=reason, locations=locations or ["nothing stored"], actor=actor,
               deleted_at=now)
    return "deleted"


def caller_call_sids(session: Session, number: str) -> list[str]:
    """CallSids of every call with the caller ``number`` (E.164): their own calls and the
    callbacks we dialled to them."""
    from ivr.models import Call
    from routing.models import Callback

    sids = set(session.scalars(select(Call.call_sid).where(Call.from_number == number)))
    sids |= {s for s in session.scalars(select(Callback.outbound_call_sid)
                                        .where(Callback.number == number)) if s}
    sids |= set(session.scalars(select(Call.call_sid).join(Callback, Callback.call_id == Call.id)
                                .where(Callback.number == number)))
    return sorted(sids)


@dataclass
class RetentionReport:
    """Recordings that should be gone and are not: (sid, where it still is)."""

    overdue: list[tuple[str, str]] = field(default_factory=list)
    unlogged: list[str] = field(default_factory=list)
    partial_files: list[str] = field(default_factory=list)


def overdue_recordings(session: Session, services: Services, now: datetime) -> RetentionReport:
    """Every recording past its date that still exists anywhere: not purged (in the store
    and/or at the provider), or purged but its object still in the store; and deleted
    recordings without a deletion-log entry; and partial files a killed download left in a
    local store. Lists the store once."""
    report = RetentionReport()
    for row in session.execute(
            select(Recording.recording_sid, Recording.storage_key, Recording.provider_deleted_at)
            .where(Recording.deleted_at.is_(None), Recording.fetch_state != FETCH_ABSENT,
                   Recording.delete_after.is_not(None), Recording.delete_after <= now)
            .order_by(Recording.delete_after)):
        places = []
        if row.storage_key:
            places.append(services.store.location(row.storage_key))
        if row.provider_deleted_at is None:
            places.append("provider")
        report.overdue.append((row.recording_sid, ", ".join(places) or "metadata only"))
    keys = set(services.store.keys())
    lister = getattr(services.store, "partial_files", None)  # leftovers of killed writes (local)
    if lister is not None:
        report.partial_files = lister()
    for row in session.execute(select(Recording.recording_sid, Recording.storage_key)
                               .where(Recording.deleted_at.is_not(None),
                                      Recording.storage_key.is_not(None))):
        if row.storage_key in keys:
            report.overdue.append((row.recording_sid, services.store.location(row.storage_key)
                                   + " (marked deleted)"))
    # A copy written under the deterministic key of a recording deleted without one (a download
    # that lost the race with an erasure and could not delete its copy).
    for row in session.execute(select(Recording.recording_sid, Recording.recorded_at,
                                      Recording.received_at)
                               .where(Recording.deleted_at.is_not(None),
                                      Recording.storage_key.is_(None))):
        if row.recording_sid.isascii() and row.recording_sid.isalnum():
            key = object_key(row.recording_sid, row.recorded_at or row.received_at)
            if key in keys:
                report.overdue.append((row.recording_sid, services.store.location(key)
                                       + " (unrecorded copy, marked deleted)"))
    logged = select(RecordingDeletion.recording_sid).scalar_subquery()
    report.unlogged = list(session.scalars(
        select(Recording.recording_sid).where(Recording.deleted_at.is_not(None),
                                              Recording.recording_sid.not_in(logged))))
    return report
