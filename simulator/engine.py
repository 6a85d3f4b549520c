"""Discrete-event call simulator: a provider, callers and agents on a virtual clock.

The simulator plays the telephony provider against the real service, in-process through
Flask's test client: it places one inbound call per input row, walks the TwiML it gets back
(parsed here with ``xml.etree``, independently of the service's TwiML helpers), signs every
request like the provider does, keeps the provider's queues, rings the simulated agents named
in ``<Dial>``, and sends the status and recording callbacks. Agents log in and out through the
real JSON API with their own bearer tokens. Outbound REST requests of the service (redirecting
a waiting caller to an agent) arrive through the fake telephony client's listener.

Time is virtual: events sit in a heap ordered by (time, sequence) and the service's clock is
set to each event's time before it runs, so a day of calls takes seconds.
"""
from __future__ import annotations

import functools
import hashlib
import heapq
import json
import random
import time as wallclock
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlencode, urljoin
from zoneinfo import ZoneInfo

import yaml
from sqlalchemy import select, update

from simulator.data import REPO_ROOT, CallRecord, DayFigures
from telephony.signature import compute_signature

CENTRE_TZ = ZoneInfo("Europe/Tallinn")
LINE_NUMBER = "+3726121360"
API_VERSION = "2010-04-01"
SAMPLE_CONFIG = REPO_ROOT / "config" / "line.sample.yaml"
DEFAULT_PUBLIC_BASE = "https://sim.hotline.invalid"

SAY_CHARS_PER_SECOND = 14
PLAY_SECONDS = 4
MAX_QUEUE_SIZE = 1000

# Caller choices. Keys follow the sample line: languages et/ru/en are 1/2/3 and topics 1–5.
LANGUAGE_KEYS = (("1", 75), ("2", 25))
ENGLISH_KEY = "3"
TOPIC_KEYS = (("1", 40), ("2", 25), ("3", 20), ("4", 5), ("5", 10))
DEFAULT_TALK_SECONDS = 120
# Survey scores 0…10 the simulated callers give (weights: most answers are 8–10).
SCORE_WEIGHTS = tuple((str(score), weight) for score, weight in
                      enumerate((3, 1, 1, 2, 2, 4, 5, 10, 18, 22, 32)))


def fraction(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts`` (same input, same number, any platform)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def weighted_key(choices: tuple[tuple[str, int], ...], *parts: object) -> str:
    """Pick a key from (key, weight) pairs by the deterministic hash of ``parts``."""
    point = fraction(*parts) * sum(weight for _, weight in choices)
    for key, weight in choices:
        if point < weight:
            return key
        point -= weight
    return choices[-1][0]


def local_to_utc(moment: datetime) -> datetime:
    """Read a naive centre time as Europe/Tallinn local time; return aware UTC."""
    return moment.replace(tzinfo=CENTRE_TZ).astimezone(timezone.utc)


def caller_number(record: CallRecord) -> str:
    """An Estonian mobile number (+3725…) for the caller: one per identified customer, else per call."""
    customer = record.customer_id
    if customer.isdigit() and int(customer) != 0:
        seed = ("customer", customer)
    else:
        seed = ("call", record.vru_line, record.call_id)
    return "+3725" + f"{int(fraction(*seed) * 10 ** 7):07d}"


def new_sid(prefix: str) -> str:
    """A provider id: two letters and 32 hex digits."""
    return prefix + uuid.uuid4().hex


class VirtualClock:
    """The service clock during a simulation: call it for the current (virtual) aware UTC time."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Options:
    """Simulation settings; seconds unless named otherwise."""

    seed: int = 1
    wrap_up: float = 0.0
    answer_delay: float = 2.0
    press_after: float = 2.0
    max_wait: float = 3600.0
    break_gap: float = 600.0
    whisper_in_talk: bool = False  # the talk time includes the agent's whisper (see agent_answers)
    # Wrap-up ends on the service's own timer (WRAP_UP_SECONDS = wrap_up) and `flask worker`
    # offers the agent the next caller, instead of the agent saying they are available.
    server_wrap_up: bool = False
    public_base: str = DEFAULT_PUBLIC_BASE
    config_path: Path = SAMPLE_CONFIG
    # Post-call survey (--surveys): the line's surveys are enabled; a caller still on the line
    # answers the IVR question with this probability (else stays silent); callers who hung up
    # first get the SMS, and reply to it with this probability.
    surveys: bool = False
    survey_ivr_answer: float = 0.7
    survey_sms_reply: float = 0.4


@dataclass
class Shift:
    name: str
    start: datetime  # aware UTC
    end: datetime


def agent_shifts(records: list[CallRecord], break_gap: float = 600.0) -> list[Shift]:
    """The agents on duty, reconstructed from the ``server`` field: a list of shift segments.

    An agent is on duty from a minute before a service to its end; two services less than
    ``break_gap`` seconds apart belong to one segment, a longer gap is taken as a break (the
    records show no service, so the agent was not taking calls). ``break_gap=inf`` gives one
    segment per agent from the first service to the last.
    """
    services: dict[str, list[tuple[datetime, datetime]]] = {}
    for record in records:
        if record.phantom or not record.has_server or record.ser_start is None:
            continue
        services.setdefault(record.server, []).append((record.ser_start, record.ser_exit))
    shifts: list[Shift] = []
    for name in sorted(services):
        spans = sorted(services[name])
        start, end = spans[0][0] - timedelta(minutes=1), spans[0][1]
        for ser_start, ser_exit in spans[1:]:
            if (ser_start - end).total_seconds() >= break_gap:
                shifts.append(Shift(name, local_to_utc(start), local_to_utc(end)))
                start = ser_start - timedelta(minutes=1)
            end = max(end, ser_exit)
        shifts.append(Shift(name, local_to_utc(start), local_to_utc(end)))
    return shifts


def client_identity(name: str, taken: set[str]) -> str:
    """A ``client:`` identity for an agent name: lower case letters, digits and ``_``; unique."""
    base = "".join(c if c.isalnum() and c.isascii() else "_" for c in name.lower()) or "agent"
    identity, n = base, 2
    while identity in taken:
        identity, n = f"{base}_{n}", n + 1
    taken.add(identity)
    return identity


# --------------------------------------------------------------------------- participants


@dataclass(eq=False)
class SimCall:
    """One inbound call (the caller's leg) as the provider sees it, plus the caller's script."""

    record: CallRecord
    sid: str
    from_number: str
    arrival: float
    keys: list[str]
    patience: float | None  # seconds from queue entry; None = waits as long as needed
    talk: int
    ivr_abandon: bool
    hangs_up_first: bool = False  # ends the conversation (else the agent does)
    state: str = "new"  # ivr, queued, dialing, talking, ended
    epoch: int = 0
    verbs: list[ET.Element] = field(default_factory=list)
    doc_url: str = ""
    queue: "ProviderQueue | None" = None
    enqueue_verb: ET.Element | None = None
    enqueued_at: float = 0.0
    wait_verbs: list[ET.Element] = field(default_factory=list)
    wait_url: str = ""
    queue_started: float | None = None
    queue_started_at: datetime | None = None  # the first Enqueue or agent Dial (patience runs from it)
    answered: bool = False
    agent: "SimAgent | None" = None
    dial: "DialLeg | None" = None
    gathers: int = 0
    status_seq: int = 0
    end_reason: str = ""


@dataclass(eq=False)
class DialLeg:
    verb: ET.Element
    noun: ET.Element | None
    child_sid: str
    started: float
    answered_at: float | None = None
    talk_end: float | None = None


@dataclass(eq=False)
class ProviderQueue:
    name: str
    sid: str
    members: list[SimCall] = field(default_factory=list)


@dataclass(eq=False)
class SimAgent:
    name: str
    identity: str
    token: str
    shifts: list[Shift]
    agent_id: int
    on_duty: bool = False
    past_end: bool = False
    call: SimCall | None = None
    wrapping: bool = False
    wrap_ends: float = 0.0  # virtual second the current wrap-up ends
    recheck_pending: bool = False
    calls_answered: int = 0


@dataclass
class Result:
    """What a run did, for the report and the tests."""

    day: date
    rows: int
    calls: list[SimCall]
    agents: list[SimAgent]
    webhook_requests: int = 0
    api_requests: int = 0
    errors: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    gave_up_max_wait: int = 0
    rest_redirects: int = 0
    file_rows: int = 0
    stale_redirects: int = 0
    first_event: datetime | None = None  # first and last request to the service (virtual time)
    last_event: datetime | None = None
    wall_seconds: float = 0.0
    events: int = 0
    figures: DayFigures | None = None
    # Seconds a free agent waited for an offer, one per offer (reporting.agents.offer_delays).
    offer_delays: list[float] = field(default_factory=list)
    worker_rounds: int = 0
    survey_rounds: int = 0
    sms_replies: int = 0
    surveys: "SurveyFigures | None" = None

    @property
    def call_sids(self) -> list[str]:
        return [c.sid for c in self.calls]


class SimulationError(RuntimeError):
    """The simulation could not be set up (bad configuration, no calls)."""


# --------------------------------------------------------------------------- the simulator


class Simulation:
    """Replay ``records`` (one day, PHANTOM rows included; they are skipped) against the service.

    ``talk_pool`` holds the day's service times of served calls, used for calls the data shows
    unserved but that reach an agent here. ``settings`` are the service settings to run with
    (the invoking app's), overridden with the simulator's clock, telephony client and base URL.
    """

    def __init__(self, records: list[CallRecord], *, day: date, talk_pool: list[int],
                 shifts: list[Shift], settings: dict[str, Any], options: Options | None = None):
        self.options = options or Options()
        self.day = day
        self.records = records
        self.shifts = shifts
        self.talk_pool = sorted(talk_pool) or [DEFAULT_TALK_SECONDS]
        self.base = self.options.public_base.rstrip("/")
        self.settings = dict(settings)
        self.auth_token = self.settings["TWILIO_AUTH_TOKEN"]
        self.account_sid = self.settings.get("TWILIO_ACCOUNT_SID") or "AC" + "0" * 32
        self.sign = functools.partial(compute_signature, self.auth_token)
        self._heap: list[tuple[float, int, Callable, tuple]] = []
        self._seq = 0
        self.now = 0.0
        self.calls = self._make_calls()
        self.calls_by_sid = {c.sid: c for c in self.calls}
        self.queues: dict[str, ProviderQueue] = {}
        self.agents: list[SimAgent] = []
        self.agents_by_endpoint: dict[tuple[str, str], SimAgent] = {}
        self.origin = self._origin()
        self.clock = VirtualClock(self.origin)
        self.result = Result(day=day, rows=len(records), calls=self.calls, agents=self.agents)
        self.app = None
        self.client = None

    # ----------------------------------------------------------------- setup

    def _origin(self) -> datetime:
        """Virtual second 0 (aware UTC): 5 min before the first arrival, 1 min before the first shift."""
        start = min([c.record.vru_entry for c in self.calls]
                    or [datetime.combine(self.day, datetime.min.time())])
        origin = local_to_utc(start).replace(microsecond=0) - timedelta(minutes=5)
        if self.shifts:
            origin = min(origin, min(s.start for s in self.shifts) - timedelta(minutes=1))
        return origin

    def _make_calls(self) -> list[SimCall]:
        rng = random.Random(self.options.seed)
        calls = []
        for record in self.records:
            if record.phantom:
                continue
            key = (record.vru_line, record.call_id)
            if record.type == "PE":
                language = ENGLISH_KEY
            else:
                language = weighted_key(LANGUAGE_KEYS, "language", *key)
            topic = weighted_key(TOPIC_KEYS, "topic", *key)
            # Drawn for every row in file order, so a row's talk time does not depend on the run.
            drawn = rng.choice(self.talk_pool)
            talk = record.ser_time if record.answered else drawn
            ivr_abandon = record.ivr_only
            calls.append(SimCall(
                record=record, sid=new_sid("CA"), from_number=caller_number(record),
                arrival=0.0, keys=[] if ivr_abandon else [language, topic],
                patience=float(max(0, record.q_time)) if record.abandoned else None,
                talk=max(0, talk), ivr_abandon=ivr_abandon,
                hangs_up_first=fraction("hangs up first", *key) < 0.5))
        return calls

    def _settings_for_app(self) -> dict[str, Any]:
        from telephony.client import FakeTelephonyClient

        overrides = dict(self.settings)
        overrides.update({
            "CLOCK": self.clock,
            "TELEPHONY": FakeTelephonyClient(listener=self._on_provider_request),
            "PUBLIC_BASE_URL": self.base,
            "HOURS_ALWAYS_OPEN": True,
            "PROXY_FIX_HOPS": 0,
        })
        if self.options.server_wrap_up:
            overrides["WRAP_UP_SECONDS"] = self.options.wrap_up
        return overrides

    def _agent_skills(self, config) -> list[str]:
        """The skills every simulated agent gets: all queues of the line (a pooled centre)."""
        return config.queue_names()

    def _load_agents(self) -> None:
        """Put the day's agents into the line configuration and issue each an agent token."""
        from admin.auth import issue_token
        from admin.config_loader import apply_line_config
        from db import get_session
        from line_config import LineConfigError, parse_line_config
        from routing.models import Agent

        path = Path(self.options.config_path)
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        try:
            base = parse_line_config(document)
        except LineConfigError as exc:
            raise SimulationError(f"{path}: {exc}") from exc
        skills = self._agent_skills(base)
        taken: set[str] = set()
        names = sorted({s.name for s in self.shifts})
        identities = {name: client_identity(name, taken) for name in names}
        document = dict(document)
        # Callers in the records waited while nobody was logged in (before the first shift):
        # replay that instead of turning them away.
        document["unstaffed"] = "wait"
        # The records' callers waited as long as they chose: no queue limits in a replay.
        document["queue_policy"] = {"max_wait_seconds": None, "max_length": None}
        document["queues"] = {}
        # Surveys only with --surveys (the replay's call timings never depend on them).
        document["surveys"] = dict(document.get("surveys") or {}, enabled=self.options.surveys)
        document["agents"] = [{"name": name, "endpoint": f"client:{identities[name]}",
                               "skills": list(skills)} for name in names]
        try:
            config = parse_line_config(document)
        except LineConfigError as exc:
            raise SimulationError(f"agents from the data do not validate: {exc}") from exc
        with self.app.app_context():
            session = get_session()
            apply_line_config(session, config, document, self.clock(),
                              source_name=f"simulator: {path.name} + agents of {self.day}")
            session.flush()
            by_name = {a.name: a for a in session.scalars(
                select(Agent).where(Agent.name.in_(names)))}
            for name in names:
                agent = by_name[name]
                token = issue_token(session, "agent", self.clock(), agent_id=agent.id,
                                    label=f"simulator {self.day}")
                sim_agent = SimAgent(name=name, identity=identities[name], token=token,
                                     shifts=[s for s in self.shifts if s.name == name],
                                     agent_id=agent.id)
                self.agents.append(sim_agent)
                self.agents_by_endpoint[("client", identities[name])] = sim_agent
            others = [a.name for a in session.scalars(
                select(Agent).where(Agent.state != "offline",
                                    Agent.name.not_in(names)))]
            session.commit()
        if others:
            self.result.anomalies.append(
                "agents outside the simulation are not offline and may be offered calls: "
                + ", ".join(others))

    def _revoke_tokens(self) -> None:
        from admin.auth import hash_token
        from admin.models import ApiToken
        from db import get_session

        with self.app.app_context():
            session = get_session()
            session.execute(update(ApiToken)
                            .where(ApiToken.token_hash.in_([hash_token(a.token) for a in self.agents]))
                            .values(revoked_at=self.clock()))
            session.commit()

    # ----------------------------------------------------------------- event loop

    def _schedule(self) -> float:
        """Schedule every arrival and shift; return the virtual second of the last arrival."""
        for call in self.calls:
            call.arrival = (local_to_utc(call.record.vru_entry) - self.origin).total_seconds()
            self.at(call.arrival, self.call_arrives, call)
        for agent in self.agents:
            for shift in agent.shifts:
                self.at((shift.start - self.origin).total_seconds(), self.shift_starts, agent)
                self.at((shift.end - self.origin).total_seconds(), self.shift_ends, agent)
        last = max([c.arrival for c in self.calls] + [0.0])
        if self.options.surveys:
            self.survey_rounds_until = last + 3 * 3600
            self.at(60.0, self.survey_round)
        return last

    def at(self, when: float, action: Callable, *args) -> None:
        """Schedule ``action(*args)`` at virtual second ``when`` (never in the past)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, action, args))

    def later(self, delay: float, action: Callable, *args) -> None:
        self.at(self.now + delay, action, *args)

    def moment(self, seconds: float | None = None) -> datetime:
        return self.origin + timedelta(seconds=self.now if seconds is None else seconds)

    def run(self) -> Result:
        """Set up, replay every call and agent shift to the end, tear down; return the result."""
        from app import create_app

        started = wallclock.perf_counter()
        self.app = create_app(self._settings_for_app())
        self.client = self.app.test_client()
        try:
            self._load_agents()
            limit = self._schedule() + 2 * 86400
            while self._heap:
                when, _, action, args = heapq.heappop(self._heap)
                if when > limit:
                    self.result.errors.append(f"events still pending two days after the last arrival "
                                              f"({len(self._heap) + 1}); stopped")
                    break
                self.now = when
                self.clock.now = self.moment()
                self.result.events += 1
                action(*args)
            self._revoke_tokens()
            from db import get_session

            with self.app.app_context():
                self.result.figures = simulated_figures(
                    get_session(), self.result.call_sids,
                    threshold=self.settings.get("SERVICE_LEVEL_SECONDS", 20))
                if self.result.first_event is not None:
                    from reporting.agents import offer_delays
                    from ivr.models import Call
                    ids = list(get_session().scalars(select(Call.id).where(
                        Call.call_sid.in_(self.result.call_sids))))
                    self.result.offer_delays = offer_delays(
                        get_session(), self.result.first_event,
                        self.result.last_event + timedelta(seconds=1), call_ids=ids)
                    if self.options.surveys:
                        self.result.surveys = survey_figures(get_session(), ids)
        finally:
            self.app.extensions["db_engine"].dispose()
            self.result.wall_seconds = wallclock.perf_counter() - started
        return self.result

    # ----------------------------------------------------------------- HTTP like the provider

    def _base_params(self, call: SimCall, status: str = "in-progress") -> dict[str, str]:
        return {"AccountSid": self.account_sid, "CallSid": call.sid, "From": call.from_number,
                "To": LINE_NUMBER, "CallStatus": status, "Direction": "inbound",
                "ApiVersion": API_VERSION}

    def _path(self, url: str) -> str | None:
        if not url.startswith(self.base + "/"):
            return None
        return url[len(self.base):]

    def post(self, url: str, params: dict[str, str], method: str = "POST",
             what: str = "") -> bytes | None:
        """Send a signed provider request; return the body of a 200 XML answer, else record an error."""
        path = self._path(url)
        self._count_request()
        self.result.webhook_requests += 1
        if path is None:
            self._error(f"{what or 'request'}: URL {url!r} is not under {self.base}")
            return None
        if method.upper() == "GET":
            separator = "&" if "?" in url else "?"
            full = url + separator + urlencode(params)
            signature = self.sign(full, {})
            response = self.client.get(full[len(self.base):], headers={"X-Twilio-Signature": signature})
        else:
            signature = self.sign(url, params)
            response = self.client.post(path, data=params, headers={"X-Twilio-Signature": signature})
        if response.status_code != 200:
            self._error(f"{what or path}: HTTP {response.status_code} {response.data[:200]!r}")
            return None
        if response.mimetype not in ("text/xml", "application/xml"):
            self._error(f"{what or path}: Content-Type {response.content_type!r} is not XML")
            return None
        return response.data

    def fetch_twiml(self, url: str, params: dict[str, str], method: str = "POST",
                    what: str = "") -> ET.Element | None:
        """Request TwiML; return the parsed ``<Response>`` or None (counted as an error)."""
        body = self.post(url, params, method, what)
        if body is None:
            return None
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            self._error(f"{what or url}: unparsable TwiML ({exc}): {body[:200]!r}")
            return None
        if root.tag != "Response":
            self._error(f"{what or url}: root element <{root.tag}>, not <Response>")
            return None
        return root

    def api_state(self, agent: SimAgent, state: str) -> int:
        """``PUT /api/agents/<name>/state`` with the agent's token; return the HTTP status."""
        self._count_request()
        self.result.api_requests += 1
        response = self.client.put(f"/api/agents/{quote(agent.name, safe='')}/state",
                                   data=json.dumps({"state": state}),
                                   headers={"Authorization": f"Bearer {agent.token}",
                                            "Content-Type": "application/json"})
        if response.status_code == 409 and state == "available":
            self._anomaly(f"agent {agent.name} could not become available: {response.data[:200]!r}")
        elif response.status_code not in (200, 409):
            self._error(f"agent {agent.name} → {state}: HTTP {response.status_code} "
                        f"{response.data[:200]!r}")
        return response.status_code

    def _count_request(self) -> None:
        if self.result.first_event is None:
            self.result.first_event = self.clock.now
        self.result.last_event = self.clock.now

    def _error(self, message: str) -> None:
        self.result.errors.append(f"{self.clock.now.isoformat()} {message}")

    def _anomaly(self, message: str) -> None:
        self.result.anomalies.append(f"{self.clock.now.isoformat()} {message}")

    def _resolve(self, call: SimCall, url: str | None) -> str:
        return urljoin(call.doc_url or self.base + "/", (url or "").strip()) if url else call.doc_url

    def _on_provider_request(self, action: str, call_sid: str, url: str | None) -> None:
        """Outbound REST from the service (called inside a request): act on it right after."""
        if action == "redirect":
            self.result.rest_redirects += 1
            self.later(0, self.rest_redirect, call_sid, url)
        elif action == "hangup":
            self.later(0, self.rest_hangup, call_sid)
        elif action == "sms":
            message = self.app.extensions["telephony"].messages[-1]
            self.later(1, self.sms_status, message)
            if fraction("sms reply", message["to"], call_sid) < self.options.survey_sms_reply:
                delay = 30 + fraction("sms delay", call_sid) * 3 * 3600
                self.later(delay, self.sms_reply, message)
        else:
            self._anomaly(f"unknown provider request {action!r} for {call_sid}")

    # ----------------------------------------------------------------- the caller's TwiML walk

    @staticmethod
    def duration(verb: ET.Element) -> float:
        """Seconds a Say/Play/Pause takes (Play audio is not fetched: a fixed length)."""
        if verb.tag == "Say":
            text = "".join(verb.itertext()).strip()
            seconds = max(1, round(len(text) / SAY_CHARS_PER_SECOND))
        elif verb.tag == "Play":
            seconds = PLAY_SECONDS
        elif verb.tag == "Pause":
            seconds = int(verb.get("length", "1"))
        else:
            return 0
        loop = int(verb.get("loop", "1") or 1) if verb.tag != "Pause" else 1
        return seconds * max(1, min(loop, 10))

    def call_arrives(self, call: SimCall) -> None:
        call.state = "ivr"
        if call.ivr_abandon:
            self.at(call.arrival + max(1, call.record.vru_time), self.caller_hangs_up, call, "ivr")
        self.load_document(call, self.base + "/twilio/voice",
                           self._base_params(call, "ringing"), what="incoming call")

    def load_document(self, call: SimCall, url: str, params: dict[str, str],
                      method: str = "POST", what: str = "") -> None:
        root = self.fetch_twiml(url, params, method, what)
        if root is None:
            self.fail(call)
            return
        call.doc_url = url
        call.verbs = list(root)
        self.step(call)

    def _continue(self, call: SimCall, epoch: int, action: Callable, *args) -> None:
        if call.epoch == epoch and call.state != "ended":
            action(call, *args)

    def wait_then(self, call: SimCall, seconds: float, action: Callable, *args) -> None:
        """Resume the call's walk after ``seconds`` unless something interrupted it meanwhile."""
        self.later(seconds, self._continue, call, call.epoch, action, *args)

    def step(self, call: SimCall) -> None:
        """Run the current document's verbs until one takes time or leaves the document."""
        while call.verbs:
            verb = call.verbs.pop(0)
            tag = verb.tag
            if tag in ("Say", "Play", "Pause"):
                self.wait_then(call, self.duration(verb), self.step)
                return
            if tag == "Gather":
                self.gather(call, verb)
                return
            if tag == "Redirect":
                self.load_document(call, self._resolve(call, verb.text), self._base_params(call),
                                   verb.get("method", "POST"), what="redirect")
                return
            if tag == "Hangup":
                self.finish(call, "hangup verb")
                return
            if tag == "Enqueue":
                self.enqueue(call, verb)
                return
            if tag == "Dial":
                self.dial(call, verb)
                return
            self._error(f"{call.sid}: unsupported verb <{tag}> in {call.doc_url}")
            self.fail(call)
            return
        self.finish(call, "end of document")

    def gather(self, call: SimCall, verb: ET.Element) -> None:
        prompts = sum(self.duration(child) for child in verb)
        timeout = float(verb.get("timeout", "5"))
        action = verb.get("action") or ""
        if "/twilio/survey/" in action:
            key = self.survey_key(call, action)
        else:
            key = call.keys.pop(0) if call.keys else None
        call.gathers += 1
        if key is None:
            self.wait_then(call, prompts + timeout, self.gather_timed_out)
            return
        num_digits = int(verb.get("numDigits", "0") or 0)
        delay = min(self.options.press_after, prompts + timeout)
        if num_digits and len(key) < num_digits and not verb.get("finishOnKey", "#"):
            delay += timeout  # fewer keys than numDigits and no finish key: input ends by timeout
        self.wait_then(call, delay, self.gather_input, verb, key)

    def gather_input(self, call: SimCall, verb: ET.Element, digits: str) -> None:
        params = self._base_params(call)
        params["Digits"] = digits
        self.load_document(call, self._resolve(call, verb.get("action")), params,
                           verb.get("method", "POST"), what="gather action")

    def gather_timed_out(self, call: SimCall) -> None:
        if call.ivr_abandon:
            # An IVR abandon hangs up at the latest when the first menu times out.
            self.caller_hangs_up(call, "ivr")
            return
        self.step(call)

    # ----------------------------------------------------------------- surveys

    def survey_key(self, call: SimCall, action: str) -> str | None:
        """The caller's keys for a survey question: a score (skewed to the top, like real
        NPS answers) or, for "resolved?", 1 or 2; None (silence) for callers who do not answer."""
        if fraction("survey answers", call.sid) >= self.options.survey_ivr_answer:
            return None
        if "/resolved" in action:
            return "1" if fraction("resolved", call.sid) < 0.75 else "2"
        score = int(weighted_key(SCORE_WEIGHTS, "score", call.sid))
        return f"{score}#" if score < 10 and fraction("hash", call.sid) < 0.5 else str(score)

    def survey_round(self) -> None:
        """The survey part of `flask worker`, every virtual minute: plan and send SMS."""
        from db import get_session
        from survey.jobs import survey_round

        self.result.survey_rounds += 1
        with self.app.test_request_context("/"):
            survey_round(get_session())
        if self.now + 60 <= self.survey_rounds_until:
            self.later(60, self.survey_round)

    def sms_status(self, message: dict) -> None:
        """The provider reports the survey SMS as sent (its status callback)."""
        if message.get("status_callback"):
            self.post(message["status_callback"], {
                "AccountSid": self.account_sid, "MessageSid": message["sid"],
                "MessageStatus": "sent", "To": message["to"], "From": message["from"],
                "ApiVersion": API_VERSION}, what="SMS status callback")

    def sms_reply(self, message: dict) -> None:
        """The caller replies to the survey SMS: sometimes words first (one clarifying reply
        comes back), then a score with some punctuation."""
        self.result.sms_replies += 1
        score = int(weighted_key(SCORE_WEIGHTS, "sms score", message["sid"]))
        bodies = [f" {score}!" if fraction("punct", message["sid"]) < 0.3 else str(score)]
        if fraction("words first", message["sid"]) < 0.1:
            bodies.insert(0, "väga hea")
        for body in bodies:
            sid = new_sid("SM")
            self.post(self.base + "/twilio/sms", {
                "AccountSid": self.account_sid, "MessageSid": sid, "SmsSid": sid,
                "SmsMessageSid": sid, "From": message["to"], "To": message["from"], "Body": body,
                "NumMedia": "0", "NumSegments": "1", "SmsStatus": "received",
                "ApiVersion": API_VERSION}, what="SMS reply")

    # ----------------------------------------------------------------- queues

    def queue_params(self, call: SimCall) -> dict[str, str]:
        queue = call.queue
        waits = [self.now - m.enqueued_at for m in queue.members]
        params = self._base_params(call)
        params.update({
            "QueueSid": queue.sid,
            "QueuePosition": str(queue.members.index(call) + 1),
            "QueueTime": str(int(self.now - call.enqueued_at)),
            "AvgQueueTime": str(int(sum(waits) / len(waits)) if waits else 0),
            "CurrentQueueSize": str(len(queue.members)),
            "MaxQueueSize": str(MAX_QUEUE_SIZE),
        })
        return params

    def enqueue(self, call: SimCall, verb: ET.Element) -> None:
        name = (verb.text or "").strip()
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = ProviderQueue(name, "QU" + hashlib.md5(name.encode()).hexdigest())
        call.enqueue_verb = verb
        if len(queue.members) >= MAX_QUEUE_SIZE:
            self.after_enqueue(call, "queue-full", follow=True)
            return
        self.start_patience(call)
        queue.members.append(call)
        call.queue = queue
        call.state = "queued"
        call.enqueued_at = self.now
        wait_url = verb.get("waitUrl")
        call.wait_url = self._resolve(call, wait_url) if wait_url else ""
        if call.wait_url:
            self.hold_loop(call)

    def hold_loop(self, call: SimCall) -> None:
        """Request the waitUrl and play its document; requested again when it runs out."""
        verb = call.enqueue_verb
        root = self.fetch_twiml(call.wait_url, self.queue_params(call),
                                verb.get("waitUrlMethod", "POST"), what="queue wait")
        if root is None:
            self.fail(call)
            return
        call.wait_verbs = list(root)
        self.wait_step(call)

    def wait_step(self, call: SimCall) -> None:
        while call.wait_verbs:
            verb = call.wait_verbs.pop(0)
            tag = verb.tag
            if tag in ("Say", "Play", "Pause"):
                self.wait_then(call, self.duration(verb), self.wait_step)
                return
            if tag == "Gather":
                # Callers on hold press no key: the Gather's prompts play, its timeout runs out
                # and the document goes on with its next verb (the provider's no-input rule).
                seconds = sum(self.duration(child) for child in verb) + float(verb.get("timeout", "5"))
                self.wait_then(call, seconds, self.wait_step)
                return
            if tag == "Redirect":
                url = self._resolve(call, verb.text)
                self.after_enqueue(call, "redirected", follow=False)
                self.load_document(call, url, self._base_params(call), verb.get("method", "POST"),
                                   what="redirect from the queue")
                return
            if tag == "Leave":
                self.after_enqueue(call, "leave", follow=True)
                return
            if tag == "Hangup":
                self.leave_provider_queue(call)
                self.finish(call, "hangup verb in the queue")
                return
            self._error(f"{call.sid}: verb <{tag}> not allowed in a waitUrl document")
            self.fail(call)
            return
        self.hold_loop(call)

    def leave_provider_queue(self, call: SimCall) -> float:
        """Take the call out of its provider queue; return the seconds it spent there."""
        waited = 0.0
        if call.queue is not None:
            if call in call.queue.members:
                call.queue.members.remove(call)
            waited = self.now - call.enqueued_at
        call.queue = None
        call.wait_verbs = []
        return waited

    def after_enqueue(self, call: SimCall, result: str, *, follow: bool,
                      status: str = "in-progress") -> None:
        """The call left its queue: post the Enqueue action; follow its TwiML if ``follow``."""
        verb = call.enqueue_verb
        enqueued = call.queue is not None
        waited = self.leave_provider_queue(call)
        call.epoch += 1
        if status != "completed":
            call.state = "ivr"
        params = self._base_params(call, status)
        params["QueueResult"] = result
        if enqueued:
            queue = self.queues[(verb.text or "").strip()]
            params.update({"QueueSid": queue.sid, "QueueTime": str(int(waited))})
        action = verb.get("action") if verb is not None else None
        if not action:
            if follow:
                self.step(call)
            return
        url = self._resolve(call, action)
        if follow:
            self.load_document(call, url, params, verb.get("method", "POST"), what="enqueue action")
        elif self.fetch_twiml(url, params, verb.get("method", "POST"), what="enqueue action") is None:
            self.fail(call)

    def start_patience(self, call: SimCall) -> None:
        """The wait starts at the first Enqueue or agent Dial; a HANG caller's patience runs from then."""
        if call.queue_started is not None:
            return
        call.queue_started = self.now
        call.queue_started_at = self.clock.now
        if call.patience is not None:
            self.later(call.patience, self.patience_runs_out, call)
        elif self.options.max_wait > 0:
            self.later(self.options.max_wait, self.max_wait_reached, call)

    def patience_runs_out(self, call: SimCall) -> None:
        if not call.answered and call.state != "ended":
            self.caller_hangs_up(call, "patience")

    def max_wait_reached(self, call: SimCall) -> None:
        if not call.answered and call.state != "ended":
            self.result.gave_up_max_wait += 1
            self.caller_hangs_up(call, "max wait")

    # ----------------------------------------------------------------- agents and Dial

    def dial(self, call: SimCall, verb: ET.Element) -> None:
        timeout = float(verb.get("timeout", "30"))
        nouns = [c for c in verb if c.tag in ("Number", "Sip", "Client")]
        noun = nouns[0] if nouns else None
        if len(nouns) > 1:
            self._anomaly(f"{call.sid}: <Dial> with {len(nouns)} nouns; only the first is rung")
        address = ((noun.text if noun is not None else verb.text) or "").strip()
        kind = {"Number": "number", "Sip": "sip", "Client": "client"}.get(
            noun.tag if noun is not None else "", "number")
        agent = self.agents_by_endpoint.get((kind, address))
        if agent is not None:
            self.start_patience(call)
        call.state = "dialing"
        call.dial = DialLeg(verb=verb, noun=noun, child_sid=new_sid("CA"), started=self.now)
        if agent is not None and agent.wrapping and self.options.server_wrap_up \
                and self.now >= agent.wrap_ends:
            # The service's wrap-up timer ran out at this very second and another request
            # dispatched before the worker round: the agent is free, as the service says.
            agent.wrapping = False
        if agent is not None and agent.on_duty and agent.call is None and not agent.wrapping:
            agent.call = call
            call.agent = agent
            if self.options.answer_delay < timeout:
                self.wait_then(call, self.options.answer_delay, self.agent_answers, agent)
                return
        elif agent is not None:
            why = ("is off duty" if not agent.on_duty else
                   f"is on call {agent.call.sid}" if agent.call is not None else "is wrapping up")
            self._anomaly(f"{call.sid} offered to {agent.name}, who {why}")
        self.wait_then(call, timeout, self.dial_ends, "no-answer")

    def agent_answers(self, call: SimCall, agent: SimAgent) -> None:
        leg = call.dial
        call.answered = True
        call.state = "talking"
        leg.answered_at = self.now
        agent.calls_answered += 1
        whisper = 0.0
        url = leg.noun.get("url") if leg.noun is not None else None
        if url:
            params = self._base_params(call)
            params.update({"CallSid": leg.child_sid, "ParentCallSid": call.sid,
                           "Direction": "outbound-dial",
                           "To": (f"client:{agent.identity}" if leg.noun.tag == "Client"
                                  else (leg.noun.text or "").strip())})
            root = self.fetch_twiml(self._resolve(call, url), params, leg.noun.get("method", "POST"),
                                    what="agent answer (whisper)")
            if root is None:
                self.fail(call)
                return
            for verb in root:
                if verb.tag in ("Say", "Play", "Pause"):
                    whisper += self.duration(verb)
                else:
                    self._error(f"{call.sid}: verb <{verb.tag}> in the whisper is not simulated")
                    self.fail(call)
                    return
        # The agent leg lasts the whisper plus the talk time, or (whisper_in_talk) exactly the talk
        # time, the whisper being its first seconds: an exact exponential holding time.
        leg_seconds = call.talk if self.options.whisper_in_talk else whisper + call.talk
        leg.talk_end = self.now + leg_seconds
        self.wait_then(call, leg_seconds, self.dial_ends, "completed")

    def dial_ends(self, call: SimCall, status: str) -> None:
        """The agent leg is over: talk finished, or nobody answered within the timeout."""
        leg = call.dial
        verb = leg.verb
        agent = call.agent
        params = self._base_params(call)
        params.update({"DialCallStatus": status, "DialCallSid": leg.child_sid,
                       "DialBridged": "true" if status == "completed" else "false"})
        recording = None
        if status == "completed":
            duration = int(round(self.now - leg.answered_at))
            params["DialCallDuration"] = str(duration)
            if verb.get("record", "do-not-record") not in ("do-not-record", "false"):
                recording = new_sid("RE")
                params["RecordingUrl"] = (f"https://api.twilio.com/{API_VERSION}/Accounts/"
                                          f"{self.account_sid}/Recordings/{recording}")
        else:
            params["DialCallDuration"] = "0"
        call.dial = None
        call.agent = None
        if agent is not None:
            agent.call = None
            if status == "completed":
                agent.wrapping = True
                agent.wrap_ends = self.now + self.options.wrap_up
                self.later(self.options.wrap_up, self.wrap_up_ends, agent)
            else:
                self.later(0, self.relogin, agent)
        if recording is not None:
            self.later(0, self.recording_ready, call, verb, recording, int(round(call.talk)),
                       leg.answered_at)
        call.state = "ivr"
        call.epoch += 1
        action = verb.get("action")
        if status == "completed" and call.hangs_up_first:
            # The caller put the phone down: the action's TwiML is requested but has nobody to run on.
            params["CallStatus"] = "completed"
            if action and self.fetch_twiml(self._resolve(call, action), params,
                                           verb.get("method", "POST"), what="dial action") is None:
                self.fail(call)
                return
            self.finish(call, "caller hung up after the conversation")
        elif action:
            self.load_document(call, self._resolve(call, action), params, verb.get("method", "POST"),
                               what="dial action")
        else:
            self.step(call)

    def recording_ready(self, call: SimCall, verb: ET.Element, recording_sid: str,
                        seconds: int, started: float) -> None:
        url = verb.get("recordingStatusCallback")
        if not url:
            return
        events = (verb.get("recordingStatusCallbackEvent") or "completed").split()
        if "completed" not in events:
            return
        params = self._base_params(call, "completed" if call.state == "ended" else "in-progress")
        params.update({
            "RecordingSid": recording_sid,
            "RecordingUrl": (f"https://api.twilio.com/{API_VERSION}/Accounts/{self.account_sid}"
                             f"/Recordings/{recording_sid}"),
            "RecordingStatus": "completed", "RecordingDuration": str(seconds),
            "RecordingChannels": "2" if verb.get("record", "").endswith("dual") else "1",
            "RecordingSource": "DialVerb", "RecordingTrack": "both",
            "RecordingStartTime": format_datetime(self.moment(started)),
        })
        self.post(self._resolve(call, url), params, verb.get("recordingStatusCallbackMethod", "POST"),
                  what="recording callback")

    # ----------------------------------------------------------------- call end

    def caller_hangs_up(self, call: SimCall, reason: str) -> None:
        """The caller puts the phone down, wherever they are."""
        if call.state == "ended":
            return
        if call.state == "talking":
            self._anomaly(f"{call.sid}: hang-up ({reason}) while talking ignored")
            return
        if call.state == "queued":
            self.after_enqueue(call, "hangup", follow=False, status="completed")
        elif call.state == "dialing":
            self._release_ringing_agent(call)
        self.finish(call, reason)

    def _release_ringing_agent(self, call: SimCall) -> None:
        agent = call.agent
        if agent is not None and agent.call is call:
            agent.call = None
            # The service frees an agent whose caller hung up while ringing (no wrap-up).
            if agent.past_end:
                self.later(0, self.recheck_log_off, agent)
        call.agent = None
        call.dial = None

    def fail(self, call: SimCall) -> None:
        """An error ended the call: leave any queue, drop the agent leg, send the final status."""
        if call.state == "ended":
            return
        self.leave_provider_queue(call)
        if call.state in ("dialing", "talking"):
            agent = call.agent
            self._release_ringing_agent(call)
            if agent is not None and call.answered:
                self.later(self.options.wrap_up, self.wrap_up_ends, agent)
                agent.wrapping = True
        self.finish(call, "error")

    def finish(self, call: SimCall, reason: str) -> None:
        """The caller's leg is over: send the number's status callback (completed)."""
        if call.state == "ended":
            return
        call.state = "ended"
        call.epoch += 1
        call.end_reason = reason
        if call.queue is not None:
            self.leave_provider_queue(call)
        params = self._base_params(call, "completed")
        seconds = int(round(self.now - call.arrival))
        params.update({"CallDuration": str(seconds), "Duration": str(max(1, -(-seconds // 60))),
                       "Timestamp": format_datetime(self.clock.now),
                       "CallbackSource": "call-progress-events",
                       "SequenceNumber": str(call.status_seq)})
        call.status_seq += 1
        self.post(self.base + "/twilio/status", params, what="status callback")

    def rest_redirect(self, call_sid: str, url: str | None) -> None:
        """The service asked (REST) to move a live call to ``url``."""
        call = self.calls_by_sid.get(call_sid)
        if call is None or call.state == "ended" or not url:
            self.result.stale_redirects += 1
            return
        if call.state == "queued":
            self.after_enqueue(call, "redirected", follow=False)
        elif call.state in ("dialing", "talking"):
            self._anomaly(f"{call_sid}: redirected while {call.state}")
            self._release_ringing_agent(call)
        call.epoch += 1
        call.state = "ivr"
        self.load_document(call, url, self._base_params(call), what="REST redirect")

    def rest_hangup(self, call_sid: str) -> None:
        call = self.calls_by_sid.get(call_sid)
        if call is not None and call.state != "ended":
            self.caller_hangs_up(call, "hung up by the service")

    # ----------------------------------------------------------------- agent shifts

    def shift_starts(self, agent: SimAgent) -> None:
        agent.past_end = False
        if agent.on_duty:
            return  # still finishing the previous segment's call: stays on
        if self.api_state(agent, "available") == 200:
            agent.on_duty = True

    def shift_ends(self, agent: SimAgent) -> None:
        agent.past_end = True
        self.recheck_log_off(agent)

    def _may_leave(self, agent: SimAgent) -> bool:
        """After the shift: leave, unless the last one on duty while callers are waiting."""
        if any(a is not agent and a.on_duty and not a.past_end for a in self.agents):
            return True
        return not any(q.members for q in self.queues.values())

    def _log_off(self, agent: SimAgent) -> None:
        if self.api_state(agent, "offline") == 200:
            agent.on_duty = False
        # 409: the service offered the agent a call at this very moment; leave after it.

    def recheck_log_off(self, agent: SimAgent) -> None:
        agent.recheck_pending = False
        if not agent.on_duty or agent.call is not None or agent.wrapping:
            return
        if self._may_leave(agent):
            self._log_off(agent)
        elif not agent.recheck_pending:
            agent.recheck_pending = True
            self.later(60, self.recheck_log_off, agent)

    def wrap_up_ends(self, agent: SimAgent) -> None:
        agent.wrapping = False
        if not agent.on_duty:
            return
        if agent.past_end and self._may_leave(agent):
            self._log_off(agent)
            return
        if self.options.server_wrap_up:
            # The service's timer ran out this very moment; `flask worker` wakes for it
            # (it sleeps until the next wrap-up timer) and offers the agent a waiting caller.
            self.worker_round()
        else:
            self.api_state(agent, "available")
        if agent.past_end and not agent.recheck_pending:
            agent.recheck_pending = True
            self.later(60, self.recheck_log_off, agent)

    def worker_round(self) -> None:
        """One round of `flask worker`: dispatch, then redirect the callers offered."""
        from db import get_session
        from ivr.webhooks import dispatch_and_connect

        self.result.worker_rounds += 1
        with self.app.test_request_context("/"):
            dispatch_and_connect(get_session())

    def relogin(self, agent: SimAgent) -> None:
        """The service logged the agent out after an unanswered offer; an on-duty agent comes back."""
        if agent.on_duty and agent.call is None and not agent.wrapping:
            self.api_state(agent, "available")


# --------------------------------------------------------------------------- figures


def simulated_figures(session, call_sids: list[str], threshold: int = 20) -> DayFigures:
    """Offered, answered, abandoned, IVR-only, service level and ASA of the simulated calls.

    Read from the call log the service wrote and computed with the product's own metrics
    (:mod:`reporting.metrics`): offered = entered a queue; wait = queue entry to answer.
    """
    from ivr.models import Call
    from reporting.metrics import MetricsAccumulator, classify_offered

    wanted = set(call_sids)
    acc = MetricsAccumulator(threshold)
    ivr_only = rows = 0
    chunk = 500
    for start in range(0, len(call_sids), chunk):
        for call in session.scalars(select(Call).where(Call.call_sid.in_(call_sids[start:start + chunk]))):
            if call.call_sid not in wanted:
                continue
            rows += 1
            if call.queue_entered_at is not None:
                acc.add(classify_offered(call.queue_entered_at, call.answered_at, call.ended_at,
                                         call.talk_seconds))
            elif call.outcome == "ivr_abandoned":
                ivr_only += 1
    return DayFigures(rows=rows, phantom=0, offered=acc.offered, answered=acc.answered,
                      abandoned=acc.abandoned, ivr_only=ivr_only,
                      answered_within=acc.answered_within, threshold=threshold,
                      service_level=acc.sl_offered, asa=acc.asa)


@dataclass
class SurveyFigures:
    """The simulated day's survey: IVR surveys offered (asked), SMS queued and sent, answers by
    channel, and the NPS of all answers (None without any)."""

    ivr_offered: int
    sms_queued: int
    sms_sent: int
    answered_ivr: int
    answered_sms: int
    promoters: int
    passives: int
    detractors: int
    nps: float | None

    @property
    def offered(self) -> int:
        return self.ivr_offered + self.sms_queued


def survey_figures(session, call_ids: list[int]) -> SurveyFigures:
    """Survey figures of the calls ``call_ids``, read from the survey tables the service wrote."""
    from reporting.metrics import net_promoter_score, nps_class
    from survey.models import SmsOutbox, SurveyInvitation, SurveyResponse

    ivr_offered = sms_queued = sms_sent = 0
    answers = {"ivr": 0, "sms": 0}
    classes = {"promoter": 0, "passive": 0, "detractor": 0}
    for start in range(0, len(call_ids), 500):
        chunk = call_ids[start:start + 500]
        for invitation in session.scalars(select(SurveyInvitation).where(
                SurveyInvitation.call_id.in_(chunk), SurveyInvitation.state != "skipped")):
            if invitation.channel == "ivr":
                ivr_offered += 1
            else:
                sms_queued += 1
        sms_sent += len(list(session.scalars(
            select(SmsOutbox.id).join(SurveyInvitation, SurveyInvitation.id == SmsOutbox.invitation_id)
            .where(SurveyInvitation.call_id.in_(chunk), SmsOutbox.state == "sent"))))
        for answer in session.scalars(select(SurveyResponse).where(SurveyResponse.call_id.in_(chunk))):
            answers[answer.channel] += 1
            classes[nps_class(answer.score)] += 1
    return SurveyFigures(ivr_offered, sms_queued, sms_sent, answers["ivr"], answers["sms"],
                         classes["promoter"], classes["passive"], classes["detractor"],
                         net_promoter_score(classes["promoter"], classes["passive"],
                                            classes["detractor"]))
