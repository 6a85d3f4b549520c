"""Schema of the line's configuration file (YAML): languages, prompts, menus, hours, queues, agents, units.

:func:`parse_line_config` validates a loaded document and raises :class:`LineConfigError`
whose message names every bad field by its path (e.g. ``agents.2.endpoint``).
"""
from __future__ import annotations

import hashlib
import json
import re
import string
from collections import Counter
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

import phonenumbers
from sqlalchemy import JSON, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column
from typing import Annotated, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      ValidationError, field_validator, model_validator)

from db import Base, UTCDateTime, utcnow

KEY_RE = re.compile(r"^[0-9*#]$")
SIP_RE = re.compile(r"^sips?:([^@\s:;]+@)?[A-Za-z0-9.-]+(:\d{1,5})?(;\S*)?$")
TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
# Placeholders a prompt may use, by prompt key; every other prompt is plain text.
PROMPT_PLACEHOLDERS = {"queue_position": {"position"}, "queue_estimated_wait": {"minutes"}}
SKILL_RE = re.compile(r"^[a-z]{2}\.[a-z_]+$")


class LineConfigError(ValueError):
    """The configuration is invalid; the message lists each bad field with its path."""


def _hh_mm(value):
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or not TIME_RE.match(value):
        raise ValueError('write local times as quoted "HH:MM" strings, e.g. "09:00"')
    return value


def _weekdays(value: list[int]) -> list[int]:
    if any(not 0 <= day <= 6 for day in value) or len(set(value)) != len(value):
        raise ValueError("days are distinct numbers 0 (Monday) to 6 (Sunday)")
    return value


# A local wall time written "HH:MM" (YAML would read an unquoted 9:00 as 540 seconds).
LocalTime = Annotated[time, BeforeValidator(_hh_mm)]
Weekdays = Annotated[list[int], AfterValidator(_weekdays)]


def e164(value: str, region: str = "EE") -> str:
    """Return ``value`` as an E.164 number (``+3726121360``); ValueError if it is not a valid number."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number ({exc})") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_number(number: str, region: str = "EE") -> str | None:
    """Return ``number`` in E.164 if it is a valid phone number, else None (withheld, anonymous,
    a placeholder or garbage are never linked to anyone)."""
    if not number or not any(ch.isdigit() for ch in number):
        return None
    try:
        return e164(number, region)
    except ValueError:
        return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VoiceConfig(_Strict):
    """A provider TTS voice: ``language`` like ``ru-RU``, optional ``name`` like ``Polly.Tatyana``."""

    language: str = Field(pattern=r"^[a-z]{2}-[A-Z]{2}$")
    name: str | None = None


class LanguageConfig(_Strict):
    """A language callers can choose: ISO 639-1 ``code``, recognition locale, optional voice."""

    code: str = Field(pattern=r"^[a-z]{2}$")
    name: str
    speech: str = Field(pattern=r"^[a-z]{2}-[A-Z]{2}$", description="Gather speech-recognition language")
    voice: VoiceConfig | None = Field(None, description="Provider TTS voice; none means audio only")

    @field_validator("voice")
    @classmethod
    def _no_estonian_tts(cls, value: VoiceConfig | None):
        if value is not None and value.language.startswith("et"):
            raise ValueError("the provider has no Estonian voice; leave 'voice' out and use audio")
        return value


class PromptText(_Strict):
    """One prompt in one language: its ``text`` (``{name}`` placeholders allowed) and an optional recording."""

    text: str = Field(min_length=1)
    audio_url: str | None = None


class HoursConfig(_Strict):
    """Opening hours in local time: weekdays (0 = Monday), open/close, last-Friday and pre-holiday closing."""

    open: LocalTime = time(9)
    close: LocalTime = time(17)
    weekdays: Weekdays = Field(default=[0, 1, 2, 3, 4], min_length=1, description="0 = Monday")
    last_friday_close: LocalTime | None = time(13)
    shortened_day_hours: int = Field(3, ge=0, le=12)
    holidays_country: str = "EE"

    @field_validator("holidays_country")
    @classmethod
    def _country(cls, value: str) -> str:
        if value not in holidays.list_supported_countries():
            raise ValueError(f"the holidays package has no country {value!r}")
        return value

    @model_validator(mode="after")
    def _open_before_close(self):
        if self.open >= self.close:
            raise ValueError("open must be earlier than close")
        return self


class TopicConfig(_Strict):
    """A menu topic; with each language it names a queue ``<language>.<topic>``."""

    code: str = Field(pattern=r"^[a-z_]+$")
    name: str


class MenuOption(_Strict):
    """What a key of the topic menu does: queue for a ``topic``, ``transfer`` to a unit code, or
    ``refer`` the caller to another authority (read out its number)."""

    topic: str | None = None
    transfer: str | None = None
    refer: str | None = None
    keywords: dict[str, list[str]] = Field({}, description="spoken words per language code")

    @model_validator(mode="after")
    def _one_action(self):
        if sum(x is not None for x in (self.topic, self.transfer, self.refer)) != 1:
            raise ValueError("an option needs exactly one of 'topic', 'transfer' or 'refer'")
        return self


class ReferralConfig(_Strict):
    """Another authority callers are referred to: its remit, the number read out to callers,
    and the prompt (by key) that says so in every language."""

    code: str = Field(pattern=r"^[a-z_]+$")
    name: str = Field(min_length=1)
    remit: str = Field(min_length=1)
    phone: str = Field(pattern=r"^\+?[0-9][0-9 ]{2,20}$", description="as read out, e.g. 15501")
    prompt: str
    source: str | None = None
    verified_on: str | None = None


class ShiftConfig(_Strict):
    """A rostered shift: it starts on each of ``days`` (0 = Monday) at ``start`` local time and
    ends at ``end``, the next day when ``end`` is not after ``start`` (e.g. 22:00–06:00)."""

    days: Weekdays = Field(min_length=1)
    start: LocalTime
    end: LocalTime

    @model_validator(mode="after")
    def _not_empty(self):
        if self.start == self.end:
            raise ValueError("a shift needs different start and end times")
        return self


class AgentConfig(_Strict):
    """An agent: name, endpoint (E.164 number, ``sip:`` URI or ``client:`` identity) and skills (queue names)."""

    name: str = Field(min_length=1, max_length=64)
    endpoint: str
    skills: list[str] = Field(min_length=1)
    shifts: list[ShiftConfig] = []

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value.startswith(("sip:", "sips:")):
            if not SIP_RE.match(value):
                raise ValueError("not a SIP URI like sip:name@pbx.example.ee")
            return value
        if value.startswith("client:"):
            if not re.match(r"^client:[A-Za-z0-9_.-]{1,100}$", value):
                raise ValueError("a client identity is letters, digits, '_', '.' or '-'")
            return value
        try:
            return e164(value)
        except ValueError as exc:
            raise ValueError(f"{exc}; expected a phone number, sip: URI or client: identity") from None

    @property
    def endpoint_kind(self) -> str:
        """``number``, ``sip`` or ``client``."""
        if self.endpoint.startswith("sip:"):
            return "sip"
        if self.endpoint.startswith("client:"):
            return "client"
        return "number"

    @property
    def endpoint_address(self) -> str:
        """The address to dial: the number, the SIP URI, or the bare client identity."""
        return self.endpoint.split(":", 1)[1] if self.endpoint_kind == "client" else self.endpoint


class UnitConfig(_Strict):
    """A structural unit calls can be transferred to; ``phone_number`` is normalised to E.164."""

    code: str = Field(pattern=r"^[a-z_]+$")
    name: str
    phone_number: str

    @field_validator("phone_number")
    @classmethod
    def _e164(cls, value: str) -> str:
        return e164(value)


class OverflowTarget(_Strict):
    """Where a caller goes when their queue's wait or length limit is reached, or nobody can
    serve it: another ``queue`` (by name, keeping the caller's place by time), a ``unit`` (by
    code, transferred), or a ``callback`` offer (the default)."""

    queue: str | None = None
    unit: str | None = None
    callback: bool = False

    @model_validator(mode="after")
    def _one_target(self):
        if sum((self.queue is not None, self.unit is not None, self.callback)) != 1:
            raise ValueError("an overflow target needs exactly one of 'queue', 'unit' or "
                             "'callback: true'")
        return self


class QueuePolicy(_Strict):
    """Limits of a queue: ``max_wait_seconds`` a caller waits at most (none = no limit),
    ``max_length`` callers waiting at most (none = no limit), and the ``overflow`` target."""

    max_wait_seconds: int | None = Field(None, ge=10, le=4 * 3600)
    max_length: int | None = Field(None, ge=1, le=10_000)
    overflow: OverflowTarget = OverflowTarget(callback=True)


class CallbackConfig(_Strict):
    """Outbound callbacks: the number shown to callers (E.164), how many times and how often a
    caller is tried, how long their phone rings, and what hold key asks for a callback."""

    caller_id: str = "+3726121360"
    attempts: int = Field(3, ge=1, le=10)
    retry_seconds: int = Field(300, ge=30, le=24 * 3600)
    ring_seconds: int = Field(30, ge=10, le=120)
    key: str = "1"

    @field_validator("caller_id")
    @classmethod
    def _e164(cls, value: str) -> str:
        return e164(value)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not KEY_RE.match(value):
            raise ValueError(f"{value!r} is not a single keypad key")
        return value


class EscalationConfig(_Strict):
    """Complaint escalation (``POST /api/agents/<agent>/escalate``): to a ``unit`` (by code, e.g.
    the head of the call-centre unit), handed over at once (``blind``) or after the agent briefs
    the unit while the caller holds (``warm``); or to a ``queue`` (by name, e.g. the head's queue)."""

    unit: str | None = None
    queue: str | None = None
    mode: Literal["blind", "warm"] = "blind"

    @model_validator(mode="after")
    def _one_route(self):
        if (self.unit is None) == (self.queue is None):
            raise ValueError("escalation needs exactly one of 'unit' or 'queue'")
        if self.queue is not None and self.mode == "warm":
            raise ValueError("a warm escalation consults a unit: give 'unit', not 'queue'")
        return self


SURVEY_PROMPTS = ("survey_question", "survey_resolved", "survey_thanks")
SURVEY_SMS_TEXTS = ("question", "clarify", "thanks", "stopped")
# survey_sms_outbox.body is VARCHAR(640) (at most 10 concatenated GSM-7 segments).
SURVEY_SMS_MAX_CHARS = 640


class SurveyConfig(_Strict):
    """The post-call survey (survey/): which answered calls are asked, on which channel, how
    often a caller may be asked, and the SMS texts per language (``sms_texts.<kind>.<lang>``,
    kinds question, clarify, thanks, stopped). The IVR prompts are ``prompts.survey_question``,
    ``survey_resolved`` and ``survey_thanks`` (required in every language when enabled)."""

    enabled: bool = False
    queues: list[str] | None = Field(None, description="queues surveyed (none: every queue)")
    sms_queues: list[str] = Field([], description="queues surveyed by SMS instead of the IVR")
    share: float = Field(1.0, ge=0, le=1, description="share of eligible answered calls surveyed")
    include_transferred: bool = Field(False, description="survey calls handed to a unit")
    include_escalated: bool = Field(False, description="survey escalated (complaint) calls")
    ask_resolved: bool = Field(True, description="ask 'was your question resolved?' (1 yes, 2 no)")
    sms_fallback: bool = Field(True, description="callers who hung up before giving a score "
                                                 "in the IVR get the SMS")
    min_days_between: int = Field(30, ge=0, le=3650,
                                  description="at most one survey per caller in this many days")
    reply_window_hours: float = Field(48, gt=0, le=24 * 60,
                                      description="SMS replies later than this after sending are "
                                                  "not counted")
    sms_from: str = Field("+3726121360", description="sender number of survey SMS (E.164)")
    stop_confirmation: Literal["provider", "service"] = Field(
        "provider", description="who confirms a STOP: the provider's built-in opt-out handling "
        "(Twilio replies itself; the service answers with empty TwiML) or the service "
        "(sms_texts.stopped)")
    sms_texts: dict[str, dict[str, str]] = {}

    @field_validator("sms_from")
    @classmethod
    def _e164(cls, value: str) -> str:
        return e164(value)

    @field_validator("sms_texts")
    @classmethod
    def _sms_length(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for code, text in (value.get("question") or {}).items():
            if len(text) > SURVEY_SMS_MAX_CHARS:
                raise ValueError(f"question.{code} is {len(text)} characters; a survey SMS is "
                                 f"at most {SURVEY_SMS_MAX_CHARS}")
        return value


REQUIRED_PROMPTS = (
    "welcome", "language_menu", "topic_menu", "no_input", "invalid_input", "to_person",
    "out_of_hours", "no_agent", "queue_wait", "queue_position", "transfer",
    "agent_whisper", "technical_error", "queue_options", "queue_estimated_wait", "callback_offer",
    "callback_offer_no_number", "callback_enter_number", "callback_number_invalid",
    "callback_confirmed", "callback_declined", "callback_intro", "callback_agent_missed",
    "closing_callback_offer", "max_wait_reached",
    "transfer_unanswered", "transfer_hold",  # transfers (ivr/transfers.py)
)


class LineConfig(_Strict):
    """The whole line. Queues are every language × (topics + the general topic)."""

    name: str
    timezone: str = "Europe/Tallinn"
    default_language: str = "et"
    general_topic: str = "general"
    languages: list[LanguageConfig] = Field(min_length=1)
    topics: list[TopicConfig] = Field(min_length=1)
    topic_menu: dict[str, MenuOption]
    person_key: str = "0"
    repeat_key: str = "*"
    unstaffed: Literal["overflow", "wait"] = Field(
        "overflow", description="a queue with no agent logged in: overflow to the language's "
        "general queue, and failing that tell the caller no one can answer (overflow); or let "
        "callers wait (wait, for replaying history)")
    person_keywords: dict[str, list[str]] = Field(
        {"et": ["inimene", "inimesega", "operaator", "operaatoriga", "teenindaja", "teenindajaga"],
         "ru": ["оператор", "оператором", "оператора", "человек", "человеком"],
         "en": ["operator", "agent", "person", "human"]},
        description="spoken words (any language) that ask for a person")
    hours: HoursConfig = HoursConfig()
    queue_policy: QueuePolicy = Field(QueuePolicy(), description="limits of every queue")
    queues: dict[str, QueuePolicy] = Field({}, description="per-queue limits, by queue name; "
                                           "fields left out come from queue_policy")
    callbacks: CallbackConfig = CallbackConfig()
    units: list[UnitConfig] = []
    escalation: EscalationConfig | None = Field(
        None, description="complaint escalation route (transfers); none: agents cannot escalate")
    referrals: list[ReferralConfig] = []
    agents: list[AgentConfig] = []
    prompts: dict[str, dict[str, PromptText]]
    surveys: SurveyConfig = Field(SurveyConfig(), description="post-call NPS survey (survey/)")

    @field_validator("topic_menu")
    @classmethod
    def _menu_keys(cls, value: dict[str, MenuOption]):
        for key in value:
            if not KEY_RE.match(key):
                raise ValueError(f"menu key {key!r} is not a single keypad key")
        return value

    @field_validator("person_key", "repeat_key")
    @classmethod
    def _single_key(cls, value: str) -> str:
        if not KEY_RE.match(value):
            raise ValueError(f"{value!r} is not a single keypad key")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Tallinn)") from None
        return value

    @model_validator(mode="after")
    def _cross_references(self):
        for field, values in (("languages", [lang.code for lang in self.languages]),
                              ("topics", [t.code for t in self.topics]),
                              ("units", [u.code for u in self.units]),
                              ("referrals", [r.code for r in self.referrals]),
                              ("agents", [a.name for a in self.agents])):
            twice = sorted(v for v, n in Counter(values).items() if n > 1)
            if twice:
                raise ValueError(f"{field}: {', '.join(map(repr, twice))} appear more than once")
        if self.person_key == self.repeat_key:
            raise ValueError("person_key and repeat_key must differ")
        codes = [lang.code for lang in self.languages]
        if self.default_language not in codes:
            raise ValueError(f"default_language {self.default_language!r} is not among languages")
        topics = {t.code for t in self.topics}
        if self.general_topic in topics:
            raise ValueError("general_topic must not be a menu topic")
        units = {u.code for u in self.units}
        for key, option in self.topic_menu.items():
            if option.topic is not None and option.topic not in topics:
                raise ValueError(f"topic_menu.{key}: unknown topic {option.topic!r}")
            if option.refer is not None and option.refer not in {r.code for r in self.referrals}:
                raise ValueError(f"topic_menu.{key}: unknown referral {option.refer!r}")
            if option.transfer is not None and option.transfer not in units:
                raise ValueError(f"topic_menu.{key}: unknown unit {option.transfer!r}")
            if key in (self.person_key, self.repeat_key):
                raise ValueError(f"topic_menu.{key}: key is reserved")
        skills = set(self.queue_names())
        if self.escalation is not None:  # transfers (ivr/transfers.py)
            if self.escalation.unit is not None and self.escalation.unit not in units:
                raise ValueError(f"escalation.unit: unknown unit {self.escalation.unit!r}")
            if self.escalation.queue is not None and self.escalation.queue not in skills:
                raise ValueError(f"escalation.queue: unknown queue {self.escalation.queue!r}")
        for name, policy in [("queue_policy", self.queue_policy)] + [
                (f"queues.{q}", p) for q, p in self.queues.items()]:
            if name.startswith("queues.") and name[7:] not in skills:
                raise ValueError(f"{name}: unknown queue {name[7:]!r}")
            target = policy.overflow
            if target.queue is not None and target.queue not in skills:
                raise ValueError(f"{name}.overflow.queue: unknown queue {target.queue!r}")
            if target.queue is not None and target.queue == name[7:]:
                raise ValueError(f"{name}.overflow.queue: a queue cannot overflow to itself")
            if target.unit is not None and target.unit not in units:
                raise ValueError(f"{name}.overflow.unit: unknown unit {target.unit!r}")
        for index, agent in enumerate(self.agents):
            for skill in agent.skills:
                if skill not in skills:
                    raise ValueError(f"agents.{index}.skills: unknown skill {skill!r}")
        for key in REQUIRED_PROMPTS:
            if key not in self.prompts:
                raise ValueError(f"prompts.{key}: missing")
            for code in codes:
                if code not in self.prompts[key]:
                    raise ValueError(f"prompts.{key}.{code}: missing")
        if self.surveys.enabled:
            for name in list(self.surveys.queues or []) + list(self.surveys.sms_queues):
                if name not in skills:
                    raise ValueError(f"surveys: unknown queue {name!r}")
            for key in SURVEY_PROMPTS:
                for code in codes:
                    if code not in self.prompts.get(key, {}):
                        raise ValueError(f"prompts.{key}.{code}: missing (surveys are enabled)")
            for kind in SURVEY_SMS_TEXTS:
                for code in codes:
                    if not self.surveys.sms_texts.get(kind, {}).get(code, "").strip():
                        raise ValueError(f"surveys.sms_texts.{kind}.{code}: missing")
        for key, option in self.topic_menu.items():
            for code in option.keywords:
                if code not in codes:
                    raise ValueError(f"topic_menu.{key}.keywords.{code}: not a configured language")
        for index, referral in enumerate(self.referrals):
            if referral.prompt not in self.prompts:
                raise ValueError(f"referrals.{index}.prompt: no prompt {referral.prompt!r}")
            for code in codes:
                if code not in self.prompts[referral.prompt]:
                    raise ValueError(f"prompts.{referral.prompt}.{code}: missing")
        for key, by_language in self.prompts.items():
            allowed = PROMPT_PLACEHOLDERS.get(key, set())
            for code, prompt in by_language.items():
                if code not in codes:
                    raise ValueError(f"prompts.{key}.{code}: not a configured language")
                try:
                    fields = {f for _, f, _, _ in string.Formatter().parse(prompt.text) if f is not None}
                except ValueError as exc:
                    raise ValueError(f"prompts.{key}.{code}: {exc} (write {{{{ for a brace)") from None
                if fields - allowed:
                    raise ValueError(f"prompts.{key}.{code}: unknown placeholder(s) "
                                     f"{', '.join(sorted(fields - allowed))}; allowed: "
                                     f"{', '.join(sorted(allowed)) or 'none'}")
        return self

    def queue_names(self) -> list[str]:
        """Every queue (skill) name, ``<language>.<topic>``, including each language's general queue."""
        topics = [t.code for t in self.topics] + [self.general_topic]
        return [f"{lang.code}.{topic}" for lang in self.languages for topic in topics]

    def policy(self, queue_name: str) -> QueuePolicy:
        """The limits of ``queue_name``: its entry under ``queues`` over ``queue_policy``."""
        own = self.queues.get(queue_name)
        if own is None:
            return self.queue_policy
        merged = {field: getattr(own if field in own.model_fields_set else self.queue_policy, field)
                  for field in QueuePolicy.model_fields}
        return QueuePolicy(**merged)

    def language(self, code: str) -> LanguageConfig:
        """Return the language ``code``; KeyError if it is not configured."""
        for lang in self.languages:
            if lang.code == code:
                return lang
        raise KeyError(code)

    def language_keys(self) -> dict[str, str]:
        """Map keypad key → language code: languages are numbered 1, 2, 3… in file order."""
        return {str(i + 1): lang.code for i, lang in enumerate(self.languages)}


def parse_line_config(document: object) -> LineConfig:
    """Validate a loaded YAML/JSON document; raises LineConfigError naming each bad field."""
    if not isinstance(document, dict):
        raise LineConfigError("the configuration must be a mapping at the top level")
    try:
        return LineConfig.model_validate(document)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            path = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"{path}: {err['msg']}")
        raise LineConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


class ConfigRevision(Base):
    """One validated configuration document as loaded; the newest one is in force."""

    __tablename__ = "config_revisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source_name: Mapped[str] = mapped_column(String(255), default="")
    sha256: Mapped[str] = mapped_column(String(64))
    document: Mapped[dict] = mapped_column(JSON)


def document_sha256(document: dict) -> str:
    """Return the SHA-256 (hex) of a document's canonical JSON form."""
    canonical = json.dumps(document, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_cache: dict[tuple[int, str], LineConfig] = {}


def current_line_config(session: Session) -> LineConfig | None:
    """Return the configuration in force (the newest revision), or None if none was loaded.

    Parsed documents are cached per (revision id, checksum), so a request costs one indexed
    lookup and a database that was reset never serves another database's configuration.
    """
    row = session.execute(select(ConfigRevision.id, ConfigRevision.sha256)
                          .order_by(ConfigRevision.id.desc()).limit(1)).first()
    if row is None:
        return None
    key = (row.id, row.sha256)
    config = _cache.get(key)
    if config is None:
        document = session.scalar(select(ConfigRevision.document).where(ConfigRevision.id == row.id))
        config = parse_line_config(document)
        _cache.clear()
        _cache[key] = config
    return config


def find_referral(config: LineConfig, code: str) -> ReferralConfig:
    """Return the referral ``code``; KeyError if the configuration has none by that code."""
    for referral in config.referrals:
        if referral.code == code:
            return referral
    raise KeyError(code)
