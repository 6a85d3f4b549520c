"""Serves prompt audio rendered by the service (languages without a provider voice)."""
from __future__ import annotations

import string

from flask import Blueprint, abort, current_app, request, send_file

from db import get_session
from ivr.audio import NORMAL_SPEED, SLOW_SPEED, TtsUnavailable, render
from line_config import current_line_config

bp = Blueprint("audio", __name__, url_prefix="/audio")

_MAX_PARAM = 999


@bp.get("/<language>/<key>.wav")
def prompt(language: str, key: str):
    """Return prompt ``key`` in ``language`` as WAV; integer query parameters fill placeholders.

    404 for an unknown prompt or language, 400 unless exactly the prompt's placeholders are
    given, each as an integer 0–999 (so at most a thousand files per prompt and language),
    plus ``slow=1`` for the slower rendition,
    503 when no text-to-speech program is installed. Prompts hold no personal data, so this
    route needs no signature: the provider fetches it like any static file.
    """
    config = current_line_config(get_session())
    if config is None or key not in config.prompts or language not in config.prompts[key]:
        abort(404)
    template = config.prompts[key][language].text
    wanted = {field for _, field, _, _ in string.Formatter().parse(template) if field}
    args = request.args.to_dict()
    slow = args.pop("slow", None)
    if slow not in (None, "1"):
        abort(400)
    params: dict[str, int] = {}
    for name, value in args.items():
        if name not in wanted or not (value.isascii() and value.isdigit()) or len(value) > 3:
            abort(400)
        params[name] = int(value)
    if set(params) != wanted:
        abort(400)
    text = template.format(**params)
    try:
        path = render(text, language, current_app.config["AUDIO_DIR"],
                      current_app.config["TTS_COMMAND"], speed=SLOW_SPEED if slow else NORMAL_SPEED)
    except TtsUnavailable as exc:
        current_app.logger.error("cannot render prompt %s/%s: %s", language, key, exc)
        abort(503)
    response = send_file(path, mimetype="audio/wav", max_age=86400)
    return response
