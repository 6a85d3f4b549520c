"""Prompts from the catalog in the line configuration: spoken by the provider or played as audio."""
from __future__ import annotations

from typing import Callable

from line_config import LineConfig
from telephony.twiml import Voice, say_or_play

AudioUrl = Callable[[str, str, dict[str, int], bool], str]


class Prompts:
    """Adds catalog prompts to TwiML in a language.

    A prompt with an ``audio_url`` is played from it. A language with a provider voice is
    spoken with ``<Say>``; a language without one (Estonian) is played from the service's own
    rendered audio, whose URL ``audio_url(language, key, params, slow)`` returns. ``slow`` asks
    for a slower rendition: SSML prosody where spoken, a slower audio file where played.
    """

    def __init__(self, config: LineConfig, audio_url: AudioUrl, *, slow: bool = False):
        self.config = config
        self.audio_url = audio_url
        self.slow = slow

    def text(self, key: str, language: str, **params: int) -> str:
        """Return the prompt's text with ``{name}`` placeholders filled. KeyError if unknown."""
        return self.config.prompts[key][language].text.format(**params)

    def add(self, parent, key: str, language: str, **params: int) -> None:
        """Append prompt ``key`` in ``language`` to ``parent`` (Response or Gather)."""
        entry = self.config.prompts[key][language]
        lang = self.config.language(language)
        audio = entry.audio_url if (entry.audio_url and not params) else None
        voice = Voice(lang.voice.language, lang.voice.name) if lang.voice else None
        if audio is None and voice is None:
            audio = self.audio_url(language, key, params, self.slow)
        say_or_play(parent, text=entry.text.format(**params), voice=voice, audio_url=audio,
                    rate="85%" if self.slow and audio is None else None)
