"""JSON API for call recordings: list a call's recordings and stream one (QA and supervisor
roles only; every access audited), and pause/resume the recording of a live call.

Every access to recordings states a reason: ``?reason=…`` (a browser player can only set the
URL) or the ``X-Access-Reason`` header, 3–500 characters. The audit row (token, role, time,
recording or call, action, reason, byte range, outcome) is committed before any data is sent;
refusals (404, 409, 410, 503) are audited too, with their status as the outcome.
"""
from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, g, jsonify, request
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.http import parse_range_header

from admin.auth import require_roles
from db import get_session
from ivr.calls import find_call
from recording.crypto import DecryptionError, KeyConfigError, Keyring
from recording.jobs import Services
from recording.storage import StorageError
from recording.models import FETCH_DONE, FETCH_STORED, Recording, RecordingAccess, RecordingPause
from telephony.client import TelephonyError

bp = Blueprint("recordings_api", __name__, url_prefix="/api")

LISTENERS = ("qa", "supervisor")


def _now():
    return current_app.config["CLOCK"]()


def _no_nul(value: str, what: str) -> str:
    """``value``, or 400 when it holds a NUL character (PostgreSQL text cannot store one)."""
    if "\x00" in value:
        abort(400, f"{what} must not contain NUL characters")
    return value


def _reason() -> str:
    reason = (request.args.get("reason") or request.headers.get("X-Access-Reason") or "").strip()
    _no_nul(reason, "the access reason")
    if not 3 <= len(reason) <= 500:
        abort(400, "state why you access the recording: ?reason=… or the X-Access-Reason "
                   "header (3-500 characters)")
    return reason


def _audit(session, *, action: str, reason: str, outcome: int, call_sid: str | None = None,
           recording_sid: str | None = None, byte_range: str | None = None) -> None:
    session.add(RecordingAccess(token_id=g.principal.token_id, role=g.principal.role, action=action,
                                call_sid=call_sid, recording_sid=recording_sid, reason=reason,
                                byte_range=(byte_range or None) and byte_range[:64],
                                outcome=str(outcome), accessed_at=_now()))
    session.commit()


def _iso(value):
    return value.isoformat() if value else None


def _recording_json(recording: Recording) -> dict:
    return {"recording_sid": recording.recording_sid, "call_sid": recording.call_sid,
            "status": recording.status, "duration_seconds": recording.duration_seconds,
            "channels": recording.channels, "recorded_at": _iso(recording.recorded_at),
            "delete_after": _iso(recording.delete_after), "deleted_at": _iso(recording.deleted_at),
            "deletion_reason": recording.deletion_reason, "stored": recording.fetch_state,
            "size_bytes": recording.size_bytes, "sha256": recording.sha256,
            "available": recording.deleted_at is None
            and recording.fetch_state in (FETCH_STORED, FETCH_DONE),
            "audio_url": f"/api/recordings/{recording.recording_sid}/audio"}


def _pauses(session, call_sid: str) -> list[dict]:
    return [{"paused_at": _iso(p.paused_at), "resumed_at": _iso(p.resumed_at), "reason": p.reason}
            for p in session.scalars(select(RecordingPause).where(RecordingPause.call_sid == call_sid)
                                     .order_by(RecordingPause.id))]


@bp.get("/calls/<call_sid>/recordings")
@require_roles(*LISTENERS)
def list_call_recordings(call_sid: str):
    """The recordings of one call (deleted ones too, with ``deleted_at``) and the stretches
    during which recording was paused: ``{"call_sid", "recordings": […], "pauses": […]}``.
    Audited as ``list``. 400 without a reason."""
    call_sid = _no_nul(call_sid, "the CallSid")[:64]
    reason = _reason()
    session = get_session()
    recordings = session.scalars(select(Recording).where(Recording.call_sid == call_sid)
                                 .order_by(Recording.id)).all()
    result = {"call_sid": call_sid, "recordings": [_recording_json(r) for r in recordings],
              "pauses": _pauses(session, call_sid)}
    _audit(session, action="list", reason=reason, outcome=200, call_sid=call_sid)
    return jsonify(result)


@bp.get("/recordings/<recording_sid>/audio")
@require_roles(*LISTENERS)
def stream_recording(recording_sid: str):
    """The recording's audio (WAV), decrypted, with HTTP Range support (206 with
    Content-Range; 416 for a range past the end or ``bytes=-0``; a suffix range longer than the
    audio gets all of it, several ranges the whole file with 200) so a player can seek. Every
    request, refused or not, is audited as ``stream`` with its Range header and the status it
    is answered with (committed before any data is sent). 404 unknown recording, 410 deleted,
    409 not stored yet; 503 when the recording's key is not configured (or RECORDINGS_KEYS is
    malformed) or the store cannot deliver the object, 409 when the stored copy does not
    decrypt (altered or truncated) — never a 500."""
    _no_nul(recording_sid, "the RecordingSid")
    reason = _reason()
    session = get_session()
    recording_sid = recording_sid[:64]
    byte_range = request.headers.get("Range")
    recording = session.scalar(select(Recording).where(Recording.recording_sid == recording_sid))
    call_sid = recording.call_sid if recording is not None else None

    def refuse(status: int, message: str):
        session.rollback()
        _audit(session, action="stream", reason=reason, outcome=status, call_sid=call_sid,
               recording_sid=recording_sid, byte_range=byte_range)
        abort(status, message)

    if recording is None:
        refuse(404, f"no recording {recording_sid!r}")
    if recording.deleted_at is not None:
        refuse(410, f"recording deleted on {recording.deleted_at.isoformat()} ({recording.deletion_reason})")
    if recording.fetch_state not in (FETCH_STORED, FETCH_DONE) or not recording.storage_key:
        refuse(409, "the recording has not been downloaded from the provider yet")
    storage_key = recording.storage_key
    session.rollback()  # hold no transaction while the store is read
    try:
        services = Services.from_app(current_app)
    except (KeyConfigError, ValueError) as exc:
        current_app.logger.error("recordings configuration: %s", exc)
        refuse(503, f"the recordings configuration is unusable: {exc}")
    if services.keys_error:
        current_app.logger.error("recordings configuration: %s", services.keys_error)
        refuse(503, f"the recordings configuration is unusable: {services.keys_error}")
    keyring: Keyring | None = services.keyring
    if keyring is None:
        refuse(503, "RECORDINGS_KEYS is not configured")
    try:
        media = keyring.decrypt(services.store.get(storage_key), recording_sid)
    except KeyConfigError as exc:
        current_app.logger.error("recording %s: %s", recording_sid, exc)
        refuse(503, f"the recording cannot be decrypted: {exc} (add its key to RECORDINGS_KEYS)")
    except StorageError as exc:
        current_app.logger.error("recording %s: %s", recording_sid, exc)
        refuse(503, "the recording's stored copy cannot be read from storage")
    except DecryptionError as exc:
        current_app.logger.error("recording %s: %s", recording_sid, exc)
        refuse(409, "the recording's stored copy does not decrypt: it was altered, truncated or "
                    "replaced")
    response = Response(media, mimetype="audio/wav")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Disposition"] = f'inline; filename="{recording_sid}.wav"'
    try:
        response = response.make_conditional(_range_environ(len(media)), accept_ranges=True,
                                             complete_length=len(media))
    except RequestedRangeNotSatisfiable:
        _audit(session, action="stream", reason=reason, outcome=416, call_sid=call_sid,
               recording_sid=recording_sid, byte_range=byte_range)
        raise
    # Nothing is sent before the audit row (with the status about to be answered) is committed.
    _audit(session, action="stream", reason=reason, outcome=response.status_code, call_sid=call_sid,
           recording_sid=recording_sid, byte_range=byte_range)
    return response


def _range_environ(length: int) -> dict:
    """The request's WSGI environ with its Range header adjusted to RFC 9110 §14.1.3 where
    Werkzeug answers 416: a suffix range longer than the audio (``bytes=-N``, N > length)
    selects all of it (206, ``bytes 0-(length-1)/length``); a request for several ranges is
    served whole (200: a server may ignore Range, and players ask for one range). ``bytes=-0``
    and a range starting past the end stay 416."""
    environ = request.environ
    parsed = parse_range_header(environ.get("HTTP_RANGE"))
    if parsed is None or parsed.units != "bytes":
        return environ
    if len(parsed.ranges) > 1:
        return {key: value for key, value in environ.items() if key != "HTTP_RANGE"}
    start, end = parsed.ranges[0]
    if end is None and start < 0 and -start > length:
        return {**environ, "HTTP_RANGE": "bytes=0-"}
    return environ


def _call_in_scope(session, call_sid: str):
    _no_nul(call_sid, "the CallSid")
    call = find_call(session, call_sid[:64])
    if call is None:
        abort(404, f"no call {call_sid[:64]!r}")
    if g.principal.role == "agent" and call.agent_id != g.principal.agent_id:
        abort(403, "an agent may pause only the recording of their own call")
    if call.ended_at is not None:
        abort(409, "the call has ended")
    return call


@bp.post("/calls/<call_sid>/recording/pause")
@require_roles("admin", "supervisor", "agent")
def pause_recording(call_sid: str):
    """Pause the call's recording (e.g. while a card number is read out): body optional
    ``{"reason": "…"}``. 200 ``{"call_sid", "paused": true, "pauses": […]}``; 409 if already
    paused or the call ended; 502 if the provider refused. An agent only on their own call."""
    session = get_session()
    call = _call_in_scope(session, call_sid)
    body = request.get_json(silent=True) or {}
    reason = str(body.get("reason", ""))[:255] if isinstance(body, dict) else ""
    _no_nul(reason, "the pause reason")
    open_pause = session.scalar(select(RecordingPause).where(RecordingPause.call_sid == call.call_sid,
                                                             RecordingPause.resumed_at.is_(None)))
    if open_pause is not None:
        abort(409, "the recording is already paused")
    # Commit the pause first: once the provider has paused, there is always a row to resume.
    # (No ORM attribute is read after the commit until the provider answers, so no transaction
    # — on SQLite a write lock — is held during the provider call.)
    call_sid = call.call_sid
    pause = RecordingPause(call_sid=call_sid, paused_at=_now(), token_id=g.principal.token_id,
                           reason=reason)
    session.add(pause)
    try:
        session.flush()  # the partial unique index admits one open pause per call
    except IntegrityError:
        session.rollback()  # a simultaneous request paused it first (PostgreSQL)
        abort(409, "the recording is already paused")
    pause_id = pause.id
    session.commit()
    try:
        current_app.extensions["telephony"].set_recording_paused(call_sid, True)
    except TelephonyError as exc:
        # The provider did not pause: withdraw the intent.
        session.execute(delete(RecordingPause).where(RecordingPause.id == pause_id))
        session.commit()
        abort(502, str(exc))
    return jsonify(call_sid=call_sid, paused=True, pauses=_pauses(session, call_sid))


@bp.post("/calls/<call_sid>/recording/resume")
@require_roles("admin", "supervisor", "agent")
def resume_recording(call_sid: str):
    """Resume the call's paused recording. 200 ``{"call_sid", "paused": false, "pauses": […]}``;
    409 if it is not paused or the call ended; 502 if the provider refused."""
    session = get_session()
    call = _call_in_scope(session, call_sid)
    open_pause = session.scalar(select(RecordingPause).where(RecordingPause.call_sid == call.call_sid,
                                                             RecordingPause.resumed_at.is_(None)))
    if open_pause is None:
        abort(409, "the recording is not paused")
    try:
        current_app.extensions["telephony"].set_recording_paused(call.call_sid, False)
    except TelephonyError as exc:
        abort(502, str(exc))
    open_pause.resumed_at = _now()
    session.commit()
    return jsonify(call_sid=call.call_sid, paused=False, pauses=_pauses(session, call.call_sid))
