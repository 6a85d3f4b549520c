"""Settings: documented defaults, overridden by environment variables, then by explicit overrides.

Every setting below can be set as an environment variable of the same name. A setting whose
default is ``REQUIRED`` must be given; :func:`load_settings` raises :class:`ConfigError` at
start-up if it is missing, so a misconfigured service never answers a call.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

REQUIRED = object()


class ConfigError(RuntimeError):
    """A required setting is missing or a value cannot be parsed."""


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[str], Any]
    doc: str


SETTINGS: tuple[Setting, ...] = (
    Setting("DATABASE_URL", "sqlite:///instance/hotline.db", str,
            "SQLAlchemy URL. SQLite for one machine, postgresql+psycopg://… at scale."),
    Setting("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000000", str,
            "Account SID used for outbound REST calls."),
    Setting("TWILIO_AUTH_TOKEN", REQUIRED, str,
            "Auth token: checks X-Twilio-Signature on every provider request and signs REST calls."),
    Setting("TWILIO_API_BASE_URL", "https://api.twilio.com", str,
            "Base URL of the Twilio-compatible REST API (SignalWire, a local test double, …)."),
    Setting("PUBLIC_BASE_URL", "", str,
            "Public https URL the provider calls (e.g. https://hotline.example.ee). When set, "
            "signatures are checked against it instead of the URL the app sees."),
    Setting("PROXY_FIX_HOPS", 0, int,
            "Number of trusted reverse proxies in front of the app (X-Forwarded-Proto/Host/For)."),
    Setting("MAX_CONTENT_LENGTH", 64 * 1024, int,
            "Largest accepted request body in bytes; larger bodies get 413."),
    Setting("TELEPHONY_CLIENT", "twilio", str,
            "Outbound REST adapter: 'twilio' (real API at TWILIO_API_BASE_URL) or 'fake' (records calls)."),
    Setting("TIMEZONE", "Europe/Tallinn", str, "The centre's local time zone for hours and reports."),
    Setting("SERVICE_LEVEL_SECONDS", 20, int, "Service-level threshold T in seconds."),
    Setting("MAX_MENU_ATTEMPTS", 3, int,
            "Menu plays per menu before routing to a person (1 play + 2 re-prompts)."),
    Setting("GATHER_TIMEOUT_SECONDS", 5, int, "Seconds a menu waits for a key."),
    Setting("AGENT_RING_SECONDS", 20, int, "Seconds an agent's phone rings before the offer is withdrawn."),
    Setting("WRAP_UP_SECONDS", 60.0, float,
            "After-call work time; then the agent takes calls again unless they ended it earlier "
            "(0: only the agent ends it)."),
    Setting("HOLD_SECONDS", 20, int, "Seconds of hold music between queue announcements."),
    Setting("HOLD_MUSIC_URL", "", str, "Audio URL played while waiting; empty means silence."),
    Setting("CONFIG_REFRESH_SECONDS", 5.0, float,
            "How often a worker re-checks for a newly loaded line configuration."),
    Setting("STALE_CALL_HOURS", 4, int,
            "A call with no event for this long and no final status is closed by 'flask calls close-stale'."),
    Setting("AUDIO_DIR", "instance/audio", str, "Directory for rendered prompt audio files."),
    Setting("TTS_COMMAND", "espeak-ng", str, "Text-to-speech program used to render prompts."),
    Setting("HOURS_ALWAYS_OPEN", False, _bool,
            "Ignore business hours (used when replaying another centre's history)."),
    # Recordings (recording/): retention, encryption at rest, storage, the download job.
    Setting("RECORDINGS_RETENTION_MONTHS", 6, int,
            "Recordings are deleted this many calendar months after they were made (TIMEZONE)."),
    Setting("RECORDINGS_KEYS", "", str,
            "Encryption keys for stored recordings: 'id:base64-of-32-bytes[,id2:…]' (AES-256-GCM)."),
    Setting("RECORDINGS_LOG_KEY", "", str,
            "HMAC key of the deletion log's hash chain, base64 of 32+ bytes (without it the chain "
            "is plain SHA-256 and a rewrite with fresh hashes goes unnoticed)."),
    Setting("RECORDINGS_KEY_ID", "", str,
            "Id of the key in RECORDINGS_KEYS that encrypts new recordings (default: the last one)."),
    Setting("RECORDINGS_STORAGE", "local", str, "Where recordings are stored: 'local' or 's3'."),
    Setting("RECORDINGS_DIR", "instance/recordings", str, "Directory of the local recording store."),
    Setting("RECORDINGS_S3_BUCKET", "", str, "S3 bucket of the recording store (RECORDINGS_STORAGE=s3)."),
    Setting("RECORDINGS_S3_PREFIX", "recordings/", str, "Key prefix of recordings in the bucket."),
    Setting("RECORDINGS_S3_ENDPOINT_URL", "", str,
            "S3-compatible endpoint (MinIO, Ceph, …); empty: AWS. Credentials: the usual AWS_* variables."),
    Setting("RECORDINGS_S3_REGION", "eu-north-1", str, "Region of the bucket."),
    Setting("RECORDINGS_S3_SSE", "", str,
            "Server-side encryption requested on upload: '' (none), 'AES256' or 'aws:kms'."),
    Setting("RECORDINGS_S3_KMS_KEY_ID", "", str, "KMS key for RECORDINGS_S3_SSE=aws:kms (empty: the bucket's default)."),
    Setting("RECORDINGS_FETCH_MAX_ATTEMPTS", 8, int,
            "Failed downloads of one recording before the job gives up and reports it."),
    Setting("RECORDINGS_FETCH_RETRY_SECONDS", 60.0, float,
            "Delay after the first failed download; doubled after each further failure (at most 6 h)."),
    Setting("REPORT_SHORT_ABANDON_SECONDS", 5.0, float,
            "Short-abandon cut-off in seconds: abandoned with wait ≤ this is a short abandon."),
    Setting("REPORT_FCR_WINDOWS", "1,7", str,
            "Repeat-contact FCR windows in days, comma-separated (each is reported)."),
    # Surveys (survey/): the SMS outbox job. Who is asked is the line configuration's `surveys`.
    Setting("SURVEY_SMS_DELAY_SECONDS", 60.0, float,
            "Seconds after a call ended before its survey SMS is queued (the IVR survey's chance first)."),
    Setting("SURVEY_SMS_LOOKBACK_HOURS", 24.0, float,
            "Calls that arrived longer ago than this are not considered for a survey SMS any more."),
    Setting("SURVEY_SMS_LEASE_SECONDS", 120.0, float,
            "A worker's claim on a survey SMS; a claim that ends without an outcome is retried once after it."),
    Setting("SURVEY_SMS_MAX_ATTEMPTS", 5, int,
            "Sends of one survey SMS the provider refused before it is marked failed."),
    Setting("REPORT_PSEUDONYM_KEY", "", str,
            "Secret key of the keyed hash (HMAC-SHA256) that pseudonymises caller numbers in call-log "
            "exports; exports for roles without number access are refused while it is empty."),
)


def load_settings(environ: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the settings as a dict: defaults, then ``environ`` (default ``os.environ``), then overrides.

    Raises ConfigError naming the setting when a required one is missing or a value does not parse.
    """
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    result: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in overrides:
            result[setting.name] = overrides.pop(setting.name)
            continue
        raw = environ.get(setting.name)
        if raw is not None and raw != "":
            try:
                result[setting.name] = setting.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{setting.name}: {exc}") from exc
        elif setting.default is REQUIRED:
            raise ConfigError(f"{setting.name} is required: set it in the environment")
        else:
            result[setting.name] = setting.default
    result.update(overrides)
    _validate(result)
    return result


def _validate(settings: Mapping[str, Any]) -> None:
    """Refuse settings that parse but cannot work. Raises ConfigError."""
    months = settings.get("RECORDINGS_RETENTION_MONTHS")
    if months is not None and (isinstance(months, bool) or not isinstance(months, int)
                               or not 1 <= months <= 1200):
        raise ConfigError(f"RECORDINGS_RETENTION_MONTHS: must be a whole number of months from 1 "
                          f"to 1200, not {months!r}")
    # A key id listed twice: which key decrypts that id's recordings? (Other key errors are
    # reported where a key is used, so a typo does not stop the purge.)
    seen: set[str] = set()
    for item in str(settings.get("RECORDINGS_KEYS") or "").split(","):
        key_id = item.partition(":")[0].strip()
        if key_id and key_id in seen:
            raise ConfigError(f"RECORDINGS_KEYS: key id {key_id!r} is listed twice")
        seen.add(key_id)
    windows = str(settings.get("REPORT_FCR_WINDOWS") or "")
    try:
        days = [int(part) for part in windows.split(",") if part.strip()]
    except ValueError:
        days = [0]
    if any(not 1 <= d <= 366 for d in days):
        raise ConfigError(f"REPORT_FCR_WINDOWS: days from 1 to 366, comma-separated, not {windows!r}")
