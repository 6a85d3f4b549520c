"""Render prompt text to WAV files with a local text-to-speech program (espeak-ng by default)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


class TtsUnavailable(RuntimeError):
    """The text-to-speech program is not installed or failed."""


NORMAL_SPEED = 150
SLOW_SPEED = 115


def rendered_path(audio_dir: str | Path, language: str, text: str,
                  speed: int = NORMAL_SPEED) -> Path:
    """Return where the audio of ``text`` in ``language`` at ``speed`` (words per minute) is
    cached: ``<dir>/<lang>/<sha1>.wav``."""
    digest = hashlib.sha1(f"{speed}:{text}".encode("utf-8")).hexdigest()
    return Path(audio_dir) / language / f"{digest}.wav"


def render(text: str, language: str, audio_dir: str | Path, command: str = "espeak-ng", *,
           speed: int = NORMAL_SPEED) -> Path:
    """Return a WAV file of ``text`` spoken in ``language`` (ISO 639-1) at ``speed`` words per
    minute, rendering it once.

    The file is written under a temporary name and renamed, so concurrent workers never serve
    a half-written file. Raises TtsUnavailable when ``command`` is missing or fails.
    """
    target = rendered_path(audio_dir, language, text, speed)
    if target.exists():
        return target
    program = shutil.which(command)
    if program is None:
        raise TtsUnavailable(f"{command} is not installed (run 'make setup')")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run([program, "-v", language, "-s", str(speed), "-w", tmp, text],
                                capture_output=True, timeout=30)
        if result.returncode != 0:
            raise TtsUnavailable(result.stderr.decode("utf-8", "replace").strip() or "TTS failed")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
