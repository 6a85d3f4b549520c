"""TwiML documents built with the official ``twilio`` library.

Views and domain code never write XML: they call these helpers and hand the result to
:func:`twiml_response`.
"""
from __future__ import annotations

from dataclasses import dataclass

from flask import Response
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

__all__ = ["VoiceResponse", "MessagingResponse", "twiml_response", "Voice", "say_or_play",
           "dial_endpoint"]


@dataclass(frozen=True)
class Voice:
    """A provider text-to-speech voice for one language: ``language`` like ``ru-RU``, ``voice`` like ``Polly.Tatyana``."""

    language: str
    voice: str | None = None


def twiml_response(document: VoiceResponse | MessagingResponse, status: int = 200) -> Response:
    """Wrap a TwiML document in an HTTP response: UTF-8 XML, ``text/xml; charset=utf-8``."""
    body = document.to_xml(xml_declaration=True).encode("utf-8")
    return Response(body, status=status, content_type="text/xml; charset=utf-8")


def say_or_play(parent, *, text: str, voice: Voice | None, audio_url: str | None,
                rate: str | None = None) -> None:
    """Append one prompt to ``parent`` (a Response or Gather).

    Plays ``audio_url`` when given; otherwise speaks ``text`` with ``voice``. A language without a
    provider voice must come with an audio URL: this function never emits ``<Say>`` without
    a listed voice (ValueError), so Estonian is never sent to the provider's TTS.
    """
    if audio_url:
        parent.play(audio_url)
        return
    if voice is None:
        raise ValueError("a prompt without a provider voice needs an audio URL")
    kwargs = {"language": voice.language}
    if voice.voice:
        kwargs["voice"] = voice.voice
    if rate:
        say = parent.say(**kwargs)
        say.prosody(text, rate=rate)
    else:
        parent.say(text, **kwargs)


def dial_endpoint(dial, kind: str, address: str, *, answer_url: str | None = None) -> None:
    """Add the agent's endpoint to a ``<Dial>``: ``kind`` is ``number``, ``sip`` or ``client``.

    ``answer_url`` is requested on the agent's leg when the agent answers (whisper).
    Raises ValueError for another kind.
    """
    kwargs = {"url": answer_url} if answer_url else {}
    if kind == "number":
        dial.number(address, **kwargs)
    elif kind == "sip":
        dial.sip(address, **kwargs)
    elif kind == "client":
        dial.client(address, **kwargs)
    else:
        raise ValueError(f"unknown endpoint kind {kind!r}")
