"""Outbound REST to the provider, behind :class:`TelephonyClient`.

The Twilio implementation uses the official client with every request sent to the configured
``TWILIO_API_BASE_URL``, so any Twilio-compatible API (SignalWire's LaML, a local test double)
works. :class:`FakeTelephonyClient` records what would have been sent; the simulator listens to it.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Protocol

from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

log = logging.getLogger(__name__)

TWILIO_DEFAULT_BASE = "https://api.twilio.com"


class TelephonyError(RuntimeError):
    """An outbound request to the provider failed (network error or an error status)."""


@dataclass(frozen=True)
class ProviderRecording:
    """One recording as the provider lists it: its SID, the call it belongs to, its status
    (``completed``, ``absent``, ``in-progress`` …), duration in seconds, start time (aware UTC),
    channels and source (None when the provider gave none)."""

    recording_sid: str
    call_sid: str
    status: str
    duration_seconds: int | None = None
    start_time: datetime | None = None
    channels: int | None = None
    source: str | None = None


class TelephonyClient(Protocol):
    """What the service asks of the provider's REST API."""

    def redirect_call(self, call_sid: str, url: str) -> None:
        """Make the live call ``call_sid`` continue with the TwiML at ``url`` (POST). Raises TelephonyError."""

    def hangup_call(self, call_sid: str) -> None:
        """End the live call ``call_sid``. Raises TelephonyError."""

    def add_conference_participant(self, conference: str, *, from_: str, to: str, label: str,
                                   status_callback: str, timeout: int,
                                   start_conference_on_enter: bool = True,
                                   end_conference_on_exit: bool = False,
                                   early_media: bool = False) -> str:
        """Dial ``to`` (E.164, ``sip:…`` or ``client:…``) from ``from_`` into the conference
        named ``conference`` (created if it does not exist yet); ``label`` names the participant.
        The new leg's ``answered`` and ``completed`` events are posted to ``status_callback``;
        it rings at most ``timeout`` seconds. Returns the new leg's CallSid. Raises TelephonyError."""

    def create_call(self, *, to: str, from_: str, url: str, status_callback: str,
                    timeout: int) -> str:
        """Dial ``to`` (E.164) from ``from_``; when answered the call runs the TwiML at ``url``
        (POST); its final status is posted to ``status_callback``; it rings at most ``timeout``
        seconds. Returns the new CallSid. Raises TelephonyError."""

    def download_recording(self, recording_sid: str) -> bytes:
        """Return the media of ``recording_sid`` (WAV bytes), fetched with the provider
        credentials. Raises RecordingNotFound when the provider has no such recording,
        TelephonyError for any other failure."""

    def delete_recording(self, recording_sid: str) -> bool:
        """Delete ``recording_sid`` at the provider. Returns True if it was deleted now, False
        if the provider no longer had it (404: already deleted). Raises TelephonyError."""

    def set_recording_paused(self, call_sid: str, paused: bool) -> None:
        """Pause (``paused=True``) or resume the recording running on the live call
        ``call_sid``. Raises TelephonyError."""

    def list_recordings(self, since: datetime) -> list[ProviderRecording]:
        """The account's recordings created at or after ``since`` (aware UTC; the provider may
        round it down to the day), every page. Raises TelephonyError."""

    def send_sms(self, to: str, from_: str, body: str, status_callback: str | None) -> str:
        """Send the text ``body`` to ``to`` (E.164) from ``from_`` (E.164); delivery statuses
        are posted to ``status_callback`` (None: none). Returns the provider's MessageSid
        (``SM…``). Raises TelephonyError (nothing is known to have been sent)."""


class RecordingNotFound(TelephonyError):
    """The provider has no such recording (HTTP 404)."""


class _BaseUrlHttpClient(TwilioHttpClient):
    """Sends the official client's requests to another host with the same paths."""

    def __init__(self, base_url: str, timeout: float = 5.0):
        super().__init__(timeout=timeout)
        self._base_url = base_url.rstrip("/")

    def request(self, method, url, *args, **kwargs):
        if url.startswith(TWILIO_DEFAULT_BASE):
            url = self._base_url + url[len(TWILIO_DEFAULT_BASE):]
        return super().request(method, url, *args, **kwargs)


class TwilioRestClient:
    """:class:`TelephonyClient` over the official ``twilio`` REST client."""

    def __init__(self, account_sid: str, auth_token: str, base_url: str = TWILIO_DEFAULT_BASE):
        http_client = None
        if base_url.rstrip("/") != TWILIO_DEFAULT_BASE:
            http_client = _BaseUrlHttpClient(base_url)
        self._client = Client(account_sid, auth_token, http_client=http_client)

    def redirect_call(self, call_sid: str, url: str) -> None:
        try:
            self._client.calls(call_sid).update(url=url, method="POST")
        except (TwilioException, OSError) as exc:
            raise TelephonyError(f"redirect of {call_sid} failed: {exc}") from exc

    def hangup_call(self, call_sid: str) -> None:
        try:
            self._client.calls(call_sid).update(status="completed")
        except (TwilioException, OSError) as exc:
            raise TelephonyError(f"hang-up of {call_sid} failed: {exc}") from exc

    def add_conference_participant(self, conference: str, *, from_: str, to: str, label: str,
                                   status_callback: str, timeout: int,
                                   start_conference_on_enter: bool = True,
                                   end_conference_on_exit: bool = False,
                                   early_media: bool = False) -> str:
        try:
            participant = self._client.conferences(conference).participants.create(
                from_=from_, to=to, label=label, timeout=timeout, beep="false",
                start_conference_on_enter=start_conference_on_enter,
                end_conference_on_exit=end_conference_on_exit, early_media=early_media,
                status_callback=status_callback, status_callback_method="POST",
                status_callback_event=["answered", "completed"])
        except (TwilioException, OSError) as exc:
            raise TelephonyError(f"adding {label} to conference {conference} failed: {exc}") from exc
        return participant.call_sid

    def create_call(self, *, to: str, from_: str, url: str, status_callback: str,
                    timeout: int) -> str:
        try:
            call = self._client.calls.create(
                to=to, from_=from_, url=url, method="POST", status_callback=status_callback,
                status_callback_method="POST", status_callback_event=["completed"],
                timeout=timeout)
        except (TwilioException, OSError) as exc:
            raise TelephonyError(f"call to {to} failed: {exc}") from exc
        return call.sid

    def download_recording(self, recording_sid: str) -> bytes:
        import requests

        base = getattr(self._client.http_client, "_base_url", TWILIO_DEFAULT_BASE)
        url = (f"{base}/2010-04-01/Accounts/{self._client.account_sid}/Recordings/"
               f"{recording_sid}.wav")
        try:
            response = requests.get(url, auth=(self._client.username, self._client.password),
                                    timeout=60)
        except requests.RequestException as exc:
            raise TelephonyError(f"download of {recording_sid} failed: {exc}") from exc
        if response.status_code == 404:
            raise RecordingNotFound(f"the provider has no recording {recording_sid}")
        if response.status_code != 200:
            raise TelephonyError(f"download of {recording_sid} failed: HTTP {response.status_code}")
        return response.content

    def delete_recording(self, recording_sid: str) -> bool:
        from twilio.base.exceptions import TwilioRestException

        try:
            return bool(self._client.recordings(recording_sid).delete())
        except TwilioRestException as exc:
            if exc.status == 404:
                return False
            raise TelephonyError(f"deletion of {recording_sid} failed: {exc}") from exc
        except (TwilioException, OSError) as exc:
            raise TelephonyError(f"deletion of {recording_sid} failed: {exc}") from exc

    def set_recording_paused(self, call_sid: str, paused: bool) -> None:
        try:
            self._client.calls(call_sid).recordings("Twilio.CURRENT").update(
                status="paused" if paused else "in-progress")
        except (TwilioException, OSError) as exc:
            raise TelephonyError(f"{'pause' if paused else 'resume'} of recording on {call_sid} "
                                 f"failed: {exc}") from exc

    def send_sms(self, to: str, from_: str, body: str, status_callback: str | None) -> str:
        kwargs = {"status_callback": status_callback} if status_callback else {}
        try:
            message = self._client.messages.create(to=to, from_=from_, body=body, **kwargs)
        except (TwilioException, OSError) as exc:
            raise TelephonyError(f"SMS to {to} failed: {exc}") from exc
        return message.sid

    def list_recordings(self, since: datetime) -> list[ProviderRecording]:
        try:
            listed = self._client.recordings.list(date_created_after=since, page_size=1000)
        except (TwilioException, OSError) as exc:
            raise TelephonyError(f"listing recordings failed: {exc}") from exc
        result = []
        for item in listed:
            try:
                duration = int(item.duration) if item.duration not in (None, "") else None
            except ValueError:
                duration = None
            result.append(ProviderRecording(item.sid or "", item.call_sid or "", str(item.status or ""),
                                            duration, item.start_time, item.channels,
                                            str(item.source) if item.source else None))
        return result


@dataclass
class FakeTelephonyClient:
    """Records outbound requests instead of sending them; ``listener`` sees each one as it happens."""

    sent: list[tuple[str, str, str | None]] = field(default_factory=list)
    listener: Callable[[str, str, str | None], None] | None = None
    participants: list[dict] = field(default_factory=list)  # transfers: conference participants
    dialled: list[dict] = field(default_factory=list)
    fail_calls: bool = False
    messages: list[dict] = field(default_factory=list)  # survey SMS sent (send_sms)
    fail_sms: int = 0  # the next that many send_sms calls raise TelephonyError

    def redirect_call(self, call_sid: str, url: str) -> None:
        self._record("redirect", call_sid, url)

    def hangup_call(self, call_sid: str) -> None:
        self._record("hangup", call_sid, None)

    def add_conference_participant(self, conference: str, *, from_: str, to: str, label: str,
                                   status_callback: str, timeout: int,
                                   start_conference_on_enter: bool = True,
                                   end_conference_on_exit: bool = False,
                                   early_media: bool = False) -> str:
        """Record the participant in ``participants`` and return a made-up CallSid for its leg."""
        call_sid = "CA" + secrets.token_hex(16)
        self.participants.append({
            "conference": conference, "from": from_, "to": to, "label": label,
            "status_callback": status_callback, "timeout": timeout,
            "start_conference_on_enter": start_conference_on_enter,
            "end_conference_on_exit": end_conference_on_exit, "early_media": early_media,
            "call_sid": call_sid})
        self._record("participant", call_sid, conference)
        return call_sid

    def create_call(self, *, to: str, from_: str, url: str, status_callback: str,
                    timeout: int) -> str:
        """Record the call and return a made-up CallSid; raises TelephonyError if ``fail_calls``."""
        if self.fail_calls:
            raise TelephonyError(f"call to {to} failed (fake)")
        call_sid = "CA" + secrets.token_hex(16)
        self.dialled.append({"to": to, "from": from_, "url": url,
                             "status_callback": status_callback, "timeout": timeout,
                             "call_sid": call_sid})
        self._record("call", call_sid, url)
        return call_sid

    def _record(self, action: str, call_sid: str, url: str | None) -> None:
        self.sent.append((action, call_sid, url))
        if self.listener is not None:
            self.listener(action, call_sid, url)

    def _recording_state(self) -> dict:
        """The fake provider's recordings: ``media`` (sid → bytes), ``fail_downloads`` (the
        next that many downloads raise TelephonyError), ``downloads``/``deleted`` (sids, in
        order), ``paused`` ((call_sid, paused) in order)."""
        return self.__dict__.setdefault("_recordings", {
            "media": {}, "fail_downloads": 0, "downloads": [], "deleted": [], "paused": []})

    def add_recording(self, recording_sid: str, media: bytes) -> None:
        """Make the fake provider hold ``media`` as ``recording_sid`` (tests, the simulator)."""
        self._recording_state()["media"][recording_sid] = media

    def fail_next_downloads(self, count: int) -> None:
        """Make the next ``count`` downloads fail with TelephonyError."""
        self._recording_state()["fail_downloads"] = count

    def download_recording(self, recording_sid: str) -> bytes:
        state = self._recording_state()
        state["downloads"].append(recording_sid)
        if state["fail_downloads"] > 0:
            state["fail_downloads"] -= 1
            raise TelephonyError(f"download of {recording_sid} failed (fake)")
        if recording_sid not in state["media"]:
            raise RecordingNotFound(f"the provider has no recording {recording_sid}")
        return state["media"][recording_sid]

    def delete_recording(self, recording_sid: str) -> bool:
        state = self._recording_state()
        state["deleted"].append(recording_sid)
        return state["media"].pop(recording_sid, None) is not None

    def add_listed_recording(self, recording: ProviderRecording, media: bytes | None = None) -> None:
        """Make the fake provider list ``recording`` (and hold ``media`` for it, if given)."""
        state = self._recording_state()
        state.setdefault("listed", {})[recording.recording_sid] = recording
        if media is not None:
            state["media"][recording.recording_sid] = media

    def list_recordings(self, since: datetime) -> list[ProviderRecording]:
        """The recordings given to :meth:`add_listed_recording` that started at or after
        ``since`` (or have no start time) and were not deleted since; raises TelephonyError if
        ``fail_calls``."""
        if self.fail_calls:
            raise TelephonyError("listing recordings failed (fake)")
        state = self._recording_state()
        return [r for sid, r in state.get("listed", {}).items()
                if sid not in state["deleted"] and (r.start_time is None or r.start_time >= since)]

    def send_sms(self, to: str, from_: str, body: str, status_callback: str | None) -> str:
        """Record the message in ``messages`` and return a made-up MessageSid; raises
        TelephonyError while ``fail_sms`` > 0 (counting it down) or if ``fail_calls``."""
        if self.fail_calls or self.fail_sms > 0:
            self.fail_sms = max(0, self.fail_sms - 1)
            raise TelephonyError(f"SMS to {to} failed (fake)")
        sid = "SM" + secrets.token_hex(16)
        self.messages.append({"to": to, "from": from_, "body": body,
                              "status_callback": status_callback, "sid": sid})
        self._record("sms", sid, status_callback)
        return sid

    def set_recording_paused(self, call_sid: str, paused: bool) -> None:
        if self.fail_calls:
            raise TelephonyError(f"recording on {call_sid} not reachable (fake)")
        self._recording_state()["paused"].append((call_sid, paused))
        self._record("pause_recording" if paused else "resume_recording", call_sid, None)


def make_client(kind: str, account_sid: str, auth_token: str, base_url: str) -> TelephonyClient:
    """Return the configured client: ``kind`` is ``twilio`` or ``fake``. Raises ValueError otherwise."""
    if kind == "twilio":
        return TwilioRestClient(account_sid, auth_token, base_url)
    if kind == "fake":
        return FakeTelephonyClient()
    raise ValueError(f"TELEPHONY_CLIENT must be 'twilio' or 'fake', not {kind!r}")
