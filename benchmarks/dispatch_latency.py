"""Dispatch latency: from the event that makes an offer possible to the offer, on PostgreSQL.

Setting: 200 callers waiting in skill queues and 50 agents, through the product's real path.
The service runs under gunicorn (``--workers 2 --threads 4`` by default, as the throughput
benchmark and the Dockerfile run it) on a scratch PostgreSQL database, with the telephony
client of production (``TELEPHONY_CLIENT=twilio``) pointed at a fake provider REST API that this
script serves on loopback. The script plays the provider and the people:

* The agents log in (not ready) and become available; then ``--entry-callers`` (50) callers
  arrive one by one while agents are free, then the queues are filled to ``--callers``.
* Callers arrive through the signed webhooks exactly as the provider sends them:
  ``/twilio/voice`` → language menu (``/twilio/ivr/language``, key 1/2/3 weighted 60/30/10 %)
  → topic menu (``/twilio/ivr/topic``, keys 1-5 at random), so they enter the 15 topic queues
  ``<language>.<topic>``. While waiting they run the hold loop (``/twilio/queue/wait`` every
  ``--hold-seconds``, dispatch runs there too). New callers keep arriving so that
  ``--callers`` (200) are waiting or in the menus at all times.
* 50 agents (all speak Estonian, 40 % also Russian, 20 % also English; every topic of their
  languages) become available through the agent API (``POST /api/agents/<name>/state``
  ``{"state": "available"}`` with a supervisor token from ``flask tokens create``), after a
  random pause (exponential, mean ``--pause-seconds``). When one is offered a caller, the
  caller is redirected (REST ``Calls/<sid>.json`` to ``/twilio/queue/connect``, or a
  ``<Redirect>`` in their own hold-loop answer), dials the agent (``<Dial>``), the agent
  answers (``/twilio/agent/answer``), the call ends (``/twilio/dial/after`` completed, then
  the status callback) and the agent, in wrap-up (``WRAP_UP_SECONDS=0``: until they say
  so), pauses and becomes available again.

What is measured, per offer, in wall-clock time (``time.perf_counter`` of this process):

* the event that made the offer possible: the later of the agent's request to become
  available (taken just before the request is sent) and the caller's queue entry (just before
  the topic-menu request is sent). The first kind, "agent becomes free while callers wait", is
  the steady state with about 200 callers waiting; the second, "caller enters a queue while an
  agent is free", happens mostly while the queues fill up;
* the offer, as the caller's side first learns of it: the fake provider receiving the REST
  redirect for the call (the service sends it right after committing the offer), or the
  answer to the caller's own request (topic menu answered with ``<Dial>``, hold loop answered
  with a ``<Redirect>`` to connect), whichever comes first. Either is after the commit.

It prints p50, p95, p99, max and n of each kind (the first only for events with at least 90 %
of ``--callers`` waiting; events while the queues fill up are shown apart), the agent API
request's own duration, and where the steady-state latency goes, from the service's own
timestamps in ``agent_state_changes`` (its clock is the real UTC clock here, the same wall
clock as this script's): request sent → ``available`` stamped → dispatch starts (the
``offered`` stamp is the clock reading dispatch took) → offer seen. Correctness: every request
must be answered 200 without the spoken technical-error fallback, every agent who becomes
available while callers wait must be offered a call within a minute, and no call may be
offered twice (agents here always answer).
Randomness is seeded (``--seed``), so the same arrivals, choices and pauses are replayed;
timing-dependent interleaving is not.

Run on demand (not a test)::

    make bench          # both benchmarks; or:
    .venv/bin/python benchmarks/dispatch_latency.py [--offers 400] [--workers 2] ...

Needs a PostgreSQL server whose user may CREATE DATABASE (``BENCH_DATABASE_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``); a scratch database is created and dropped.
Exit status: 0 measured, 1 a correctness failure, 2 set-up error. No latency budget is
checked: the figures are printed for the reader (and depend on the machine's other load,
which the last line shows).
"""
from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import yaml

from webhook_throughput import (DEFAULT_DATABASE_URL, PUBLIC_BASE, ROOT, SAMPLE_CONFIG,
                                Server, SetupError, clean_up, cpu_seconds, free_port,
                                machine_busy_seconds, migrate_and_load, postgres_backends,
                                safe_url, scratch_database)

LINE_NUMBER = "+3726121360"
ACCOUNT_SID = "AC" + "0" * 32
LANGUAGES = (("1", "et", 0.6), ("2", "ru", 0.3), ("3", "en", 0.1))  # menu key, code, share
TOPIC_KEYS = ("1", "2", "3", "4", "5")
STEADY_SHARE = 0.9  # "callers waiting": at least this share of --callers waiting at the event
AGENT_TIMEOUT = 60.0  # an agent not offered a call this long while callers wait: a failure


# --------------------------------------------------------------------------- set-up

def bench_config(path: Path, agents: int, rng: random.Random) -> dict[str, str]:
    """Write the sample line configuration with ``agents`` agents and no queue limits to
    ``path``; return agent endpoint -> name."""
    config = yaml.safe_load((ROOT / SAMPLE_CONFIG).read_text(encoding="utf-8"))
    topics = [t["code"] for t in config["topics"]] + [config.get("general_topic", "general")]
    config["queue_policy"] = {"max_wait_seconds": None, "max_length": None,
                              "overflow": {"callback": True}}
    config["queues"] = {}
    config["agents"] = []
    endpoints = {}
    for n in range(1, agents + 1):
        languages = ["et"] + (["ru"] if rng.random() < 0.4 else []) \
            + (["en"] if rng.random() < 0.2 else [])
        endpoint = f"+372555{n:05d}"
        name = f"Agent{n:02d}"
        config["agents"].append({"name": name, "endpoint": endpoint,
                                 "skills": [f"{lang}.{t}" for lang in languages for t in topics]})
        endpoints[endpoint] = name
    for lang in ("ru", "en"):  # every queue needs someone
        if not any(f"{lang}.general" in a["skills"] for a in config["agents"]):
            config["agents"][0]["skills"] += [f"{lang}.{t}" for t in topics]
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False),
                    encoding="utf-8")
    return endpoints


def create_token(db_url: str, token: str) -> str:
    env = dict(os.environ, DATABASE_URL=db_url, TWILIO_AUTH_TOKEN=token, LOG_LEVEL="WARNING")
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "tokens", "create",
                             "--role", "supervisor", "--label", "dispatch benchmark"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SetupError(f"flask tokens create failed:\n{result.stdout}{result.stderr}")
    return result.stdout.strip().splitlines()[-1]


# --------------------------------------------------------------------------- fake provider

class Provider:
    """The provider's side: signs webhook requests, serves its REST API on loopback."""

    def __init__(self, app_port: int, token: str):
        from telephony.signature import compute_signature

        self.app_port = app_port
        self.sign = functools.partial(compute_signature, token)
        self.lock = threading.Lock()
        self.redirects: dict[str, tuple[float, str]] = {}  # CallSid -> (time, url)
        self.redirected: dict[str, threading.Event] = {}
        self.requests = 0
        self.errors: list[str] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # else the body waits for the client's delayed ACK

            def do_POST(self):  # noqa: N802 (http.server's name)
                at = time.perf_counter()
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                call_sid = self.path.rsplit("/", 1)[-1].removesuffix(".json")
                url = form.get("Url", [""])[0]
                if url:
                    with provider.lock:
                        provider.redirects.setdefault(call_sid, (at, url))
                        event = provider.redirected.setdefault(call_sid, threading.Event())
                    event.set()
                body = json.dumps({"sid": call_sid, "account_sid": ACCOUNT_SID,
                                   "status": "in-progress"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.rest = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.rest.daemon_threads = True
        threading.Thread(target=self.rest.serve_forever, daemon=True).start()

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest.server_address[1]}"

    def redirect_event(self, call_sid: str) -> threading.Event:
        with self.lock:
            return self.redirected.setdefault(call_sid, threading.Event())

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.app_port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        with self.lock:
            self.requests += 1
        return response.status, data

    def webhook(self, url: str, params: dict[str, str]) -> ET.Element:
        """POST a signed webhook to the public ``url``; return the TwiML answer."""
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        signature = self.sign(url, params)
        status, data = self.request("POST", path, urlencode(params).encode(), {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature})
        if status != 200:
            raise RuntimeError(f"{parts.path}: HTTP {status} {data[:200]!r}")
        root = ET.fromstring(data)
        if any(say.text and "technical problem" in say.text for say in root.iter("Say")):
            raise RuntimeError(f"{parts.path}: technical-error answer")
        return root


# --------------------------------------------------------------------------- the people

@dataclass
class Offer:
    call_sid: str
    agent: str
    kind: str          # "agent_free" or "caller_entry"
    latency: float     # seconds
    event: float       # time.perf_counter() of the event
    how: str           # "rest", "hold-loop" or "queue-entry"
    waiting: int       # callers waiting when the event happened


@dataclass
class Shared:
    args: argparse.Namespace
    provider: Provider
    endpoints: dict[str, str]  # agent endpoint -> name
    api_token: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    available_at: dict[str, float] = field(default_factory=dict)  # agent -> last event time
    waiting_at_event: dict[str, int] = field(default_factory=dict)
    call_done: dict[str, threading.Event] = field(default_factory=dict)  # agent -> call ended
    offers: list[Offer] = field(default_factory=list)
    api_durations: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    logged_in: int = 0     # agents who became available for the first time
    waiting: int = 0       # callers in a queue, not yet offered
    present: int = 0       # callers in the menus or waiting
    arrived: int = 0

    def fail(self, message: str) -> None:
        with self.lock:
            self.failures.append(message)
        self.stop.set()


def base_params(call_sid: str, caller: str) -> dict[str, str]:
    return {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": call_sid,
            "CallStatus": "in-progress", "Direction": "inbound", "From": caller,
            "To": LINE_NUMBER, "Caller": caller, "Called": LINE_NUMBER}


def caller(shared: Shared, rng: random.Random) -> None:
    """One caller: menus, queue, hold loop, connection to the agent, end of the call."""
    provider, args = shared.provider, shared.args
    call_sid = "CA" + "".join(rng.choice("0123456789abcdef") for _ in range(32))
    number = "+3725" + "".join(rng.choice("0123456789") for _ in range(7))
    params = base_params(call_sid, number)
    lang_key = rng.choices([k for k, _, _ in LANGUAGES], [w for _, _, w in LANGUAGES])[0]
    topic_key = rng.choice(TOPIC_KEYS)
    entered = False
    try:
        menu = provider.webhook(PUBLIC_BASE + "/twilio/voice", dict(params, CallStatus="ringing"))
        menu = provider.webhook(menu.find("Gather").get("action"), dict(params, Digits=lang_key))
        topic_url = menu.find("Gather").get("action")
        with shared.lock:
            shared.waiting += 1
            waiting_now = shared.waiting
        entered = True
        entry = time.perf_counter()
        answer = provider.webhook(topic_url, dict(params, Digits=topic_key))
        answered_at = time.perf_counter()
        dial, how, offered_at = answer.find("Dial"), "queue-entry", answered_at
        if dial is None:
            enqueue = answer.find("Enqueue")
            if enqueue is None:
                raise RuntimeError(f"topic menu answered without Enqueue or Dial: "
                                   f"{ET.tostring(answer)[:200]!r}")
            dial, how, offered_at = hold(shared, call_sid, params, enqueue)
            if dial is None:
                return  # stopped while waiting
        with shared.lock:
            shared.waiting -= 1
        entered = False
        record_offer(shared, call_sid, dial, entry, offered_at, how, waiting_now)
        talk(shared, call_sid, params, dial)
    except Exception as exc:  # noqa: BLE001 (any failure of a caller fails the benchmark)
        shared.fail(f"caller {call_sid}: {exc}")
    finally:
        with shared.lock:
            shared.present -= 1
            if entered:
                shared.waiting -= 1


def hold(shared: Shared, call_sid: str, params: dict[str, str], enqueue: ET.Element):
    """Wait in the provider's queue until an offer arrives; return (Dial, how, offered_at)."""
    provider = shared.provider
    redirected = provider.redirect_event(call_sid)
    wait_url, after_url = enqueue.get("waitUrl"), enqueue.get("action")
    delay = 0.0  # the provider requests the wait URL at once, then after each hold period
    while not shared.stop.is_set():
        if redirected.wait(delay):
            offered_at, url = provider.redirects[call_sid]
            how = "rest"
        else:
            answer = provider.webhook(wait_url, dict(params, QueuePosition="1",
                                                     QueueTime="0"))
            now = time.perf_counter()
            redirect = answer.find("Redirect")
            if redirect is None:
                delay = shared.args.hold_seconds
                continue
            url, offered_at, how = redirect.text.strip(), now, "hold-loop"
            if redirected.is_set() and provider.redirects[call_sid][0] < offered_at:
                offered_at, how = provider.redirects[call_sid][0], "rest"
        provider.webhook(after_url, dict(params, QueueResult="redirected", QueueTime="0"))
        answer = provider.webhook(url, params)
        dial = answer.find("Dial")
        if dial is None:
            raise RuntimeError(f"redirect to {url} answered without Dial")
        return dial, how, offered_at
    return None, "", 0.0


def record_offer(shared: Shared, call_sid: str, dial: ET.Element, entry: float,
                 offered_at: float, how: str, waiting_at_entry: int) -> None:
    endpoint = next(iter(dial)).text.strip()
    agent = shared.endpoints.get(endpoint)
    if agent is None:
        raise RuntimeError(f"dialled an unknown endpoint {endpoint!r}")
    with shared.lock:
        available = shared.available_at[agent]
        if available > entry:
            kind, event, waiting = "agent_free", available, shared.waiting_at_event[agent]
        else:
            kind, event, waiting = "caller_entry", entry, waiting_at_entry
        shared.offers.append(Offer(call_sid, agent, kind, offered_at - event, event, how,
                                   waiting))


def talk(shared: Shared, call_sid: str, params: dict[str, str], dial: ET.Element) -> None:
    """The agent answers, the conversation ends at once, the caller hangs up."""
    provider = shared.provider
    leg = next(iter(dial))
    agent = shared.endpoints[leg.text.strip()]
    agent_sid = "CA" + secrets.token_hex(16)
    provider.webhook(leg.get("url"), dict(base_params(agent_sid, LINE_NUMBER),
                                          ParentCallSid=call_sid, Direction="outbound-dial"))
    provider.webhook(dial.get("action"), dict(params, DialCallStatus="completed",
                                              DialCallDuration="1", DialCallSid=agent_sid))
    provider.webhook(PUBLIC_BASE + "/twilio/status", dict(params, CallStatus="completed",
                                                          CallDuration="2"))
    shared.call_done[agent].set()


def log_in(provider: Provider, api_token: str, names: list[str]) -> None:
    """Agents log in not ready (a queue with nobody logged in sends callers away)."""
    body = json.dumps({"state": "not_ready", "reason": "login"}).encode()
    headers = {"Authorization": f"Bearer {api_token}", "Content-Type": "application/json"}
    for name in names:
        status, data = provider.request("POST", f"/api/agents/{name}/state", body, headers)
        if status != 200:
            raise SetupError(f"agent {name} cannot log in: HTTP {status} {data[:200]!r}")


def agent(shared: Shared, name: str, rng: random.Random) -> None:
    """Becomes available after a pause, waits for a call to end, and again."""
    args, provider = shared.args, shared.provider
    body = json.dumps({"state": "available"}).encode()
    headers = {"Authorization": f"Bearer {shared.api_token}",
               "Content-Type": "application/json"}
    done = shared.call_done[name]
    first = True
    while not shared.stop.is_set():
        pause = 0.0 if first else rng.expovariate(1 / args.pause_seconds)
        if shared.stop.wait(pause):
            return
        done.clear()
        with shared.lock:
            shared.waiting_at_event[name] = shared.waiting
            shared.available_at[name] = start = time.perf_counter()
        status, data = provider.request("POST", f"/api/agents/{name}/state", body, headers)
        if status != 200:
            shared.fail(f"agent {name}: HTTP {status} {data[:200]!r}")
            return
        with shared.lock:
            shared.api_durations.append(time.perf_counter() - start)
            if first:
                shared.logged_in += 1
        first = False
        deadline = time.monotonic() + AGENT_TIMEOUT
        while not done.wait(0.5):
            if shared.stop.is_set():
                return
            if time.monotonic() > deadline:
                with shared.lock:
                    waiting = shared.waiting
                if waiting:
                    shared.fail(f"agent {name} was not offered a call in {AGENT_TIMEOUT:.0f} s "
                                f"while {waiting} callers waited")
                    return
                deadline = time.monotonic() + AGENT_TIMEOUT


def start_caller(shared: Shared, rng: random.Random) -> None:
    with shared.lock:
        shared.present += 1
        shared.arrived += 1
    threading.Thread(target=caller, args=(shared, random.Random(rng.getrandbits(64))),
                     daemon=True).start()


def arrivals(shared: Shared, rng: random.Random) -> None:
    """First ``--entry-callers`` callers one by one while the agents are free, then keep
    ``--callers`` callers in the menus or waiting."""
    args = shared.args
    while shared.logged_in < len(shared.call_done):  # every agent available once
        if shared.stop.wait(0.05):
            return
    for _ in range(args.entry_callers):
        start_caller(shared, rng)
        if shared.stop.wait(rng.expovariate(args.entry_rate)):
            return
    while not shared.stop.is_set():
        with shared.lock:
            missing = args.callers - shared.present
        for _ in range(max(missing, 0)):
            start_caller(shared, rng)
            time.sleep(1 / args.arrival_rate)
        shared.stop.wait(0.05)


# --------------------------------------------------------------------------- results

def is_steady(offer: Offer, args: argparse.Namespace) -> bool:
    """An offer to an agent who became free while about ``--callers`` callers waited."""
    return offer.kind == "agent_free" and offer.waiting >= STEADY_SHARE * args.callers


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def summary(values: list[float]) -> str:
    if not values:
        return "n 0"
    ms = [v * 1000 for v in values]
    return (f"p50 {percentile(ms, 50):7.1f} ms  p95 {percentile(ms, 95):7.1f} ms  "
            f"p99 {percentile(ms, 99):7.1f} ms  max {max(ms):7.1f} ms  n {len(ms)}")


# time.time() - time.perf_counter(): turns this script's timestamps into the wall clock that
# the service (CLOCK = the real UTC clock here) stamps the database with.
WALL_OFFSET = time.time() - time.perf_counter()


def server_times(db_url: str, call_sids: list[str]) -> dict[str, tuple[float, float]]:
    """From the database: for the offers of ``call_sids``, the times (Unix seconds) of the
    agent's 'available' state change and of the 'offered' one that followed it."""
    from sqlalchemy import create_engine, text

    from db import normalise_url

    engine = create_engine(normalise_url(db_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("""
                SELECT c.call_sid, EXTRACT(EPOCH FROM a.at), EXTRACT(EPOCH FROM o.at)
                FROM agent_state_changes o
                JOIN calls c ON c.id = o.call_id AND c.call_sid = ANY(:sids)
                JOIN LATERAL (SELECT state, at FROM agent_state_changes p
                              WHERE p.agent_id = o.agent_id AND p.id < o.id
                              ORDER BY p.id DESC LIMIT 1) a ON a.state = 'available'
                WHERE o.state = 'offered'"""), {"sids": call_sids}).all()
    finally:
        engine.dispose()
    return {sid: (float(available), float(offered)) for sid, available, offered in rows}


def offered_twice(db_url: str) -> list[str]:
    """Calls with more than one offer: every agent answers here, so none may have two."""
    from sqlalchemy import create_engine, text

    from db import normalise_url

    engine = create_engine(normalise_url(db_url))
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("""
                SELECT c.call_sid FROM agent_state_changes s JOIN calls c ON c.id = s.call_id
                WHERE s.state = 'offered' GROUP BY c.call_sid HAVING count(*) > 1""")).scalars())
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                                 DEFAULT_DATABASE_URL),
                        help="PostgreSQL server: a scratch database is created next to this "
                             "one and dropped afterwards (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--worker-threads", type=int, default=4,
                        help="gunicorn --threads per worker (default 4, as the Dockerfile)")
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--callers", type=int, default=200,
                        help="callers kept in the menus or waiting (default %(default)s)")
    parser.add_argument("--offers", type=int, default=400,
                        help="stop after this many offers of the steady state (an agent "
                             "becoming free while callers wait)")
    parser.add_argument("--pause-seconds", type=float, default=10.0,
                        help="mean pause of an agent between calls (exponential); with 50 "
                             "agents about 5 availability events a second")
    parser.add_argument("--hold-seconds", type=float, default=20.0,
                        help="hold-loop period of a waiting caller (HOLD_SECONDS)")
    parser.add_argument("--entry-callers", type=int, default=50,
                        help="callers arriving one by one (Poisson, --entry-rate a second) "
                             "while every agent is free, before the queues fill up")
    parser.add_argument("--entry-rate", type=float, default=5.0)
    parser.add_argument("--arrival-rate", type=float, default=50.0,
                        help="most new callers started per second when below --callers")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="give up after this long (set-up excluded)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-logs", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    token = secrets.token_hex(16)
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    server = None
    db_name = None
    try:
        db_name, db_url = scratch_database(args.database_url)
        print(f"scratch database {db_name} on {safe_url(args.database_url)}")
        config_path = tmp / "line.yaml"
        endpoints = bench_config(config_path, args.agents, rng)
        migrate_and_load(db_url, token, config_path)
        api_token = create_token(db_url, token)

        port = free_port()
        provider = Provider(port, token)
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
        env.update(DATABASE_URL=db_url, TWILIO_AUTH_TOKEN=token, PUBLIC_BASE_URL=PUBLIC_BASE,
                   TELEPHONY_CLIENT="twilio", TWILIO_API_BASE_URL=provider.rest_url,
                   TWILIO_ACCOUNT_SID=ACCOUNT_SID, HOURS_ALWAYS_OPEN="true",
                   WRAP_UP_SECONDS="0", HOLD_SECONDS=str(int(args.hold_seconds)),
                   LOG_LEVEL="WARNING")
        server = Server("app", "app:create_app()", port, args.workers, args.worker_threads, env)
        server.start(tmp)
        server.wait_ready()
        kind = "sync" if args.worker_threads == 1 else "gthread"
        print(f"nproc {os.cpu_count()}; gunicorn --workers {args.workers} --threads "
              f"{args.worker_threads} ({kind}); {args.agents} agents, {args.callers} callers "
              f"kept in the menus or waiting in 15 of 18 queues; agent pause mean "
              f"{args.pause_seconds:g} s; hold loop every {args.hold_seconds:g} s")

        shared = Shared(args, provider, endpoints, api_token)
        names = sorted(endpoints.values())
        log_in(provider, api_token, names)
        for name in names:
            shared.call_done[name] = threading.Event()
            shared.available_at[name] = float("inf")
        workers = server.worker_pids()
        cpu_before = (cpu_seconds(workers), cpu_seconds(postgres_backends(db_name)),
                      machine_busy_seconds())
        started = time.monotonic()
        threads = [threading.Thread(target=arrivals, args=(shared, random.Random(rng.random())),
                                    daemon=True)]
        threads += [threading.Thread(target=agent, args=(shared, name,
                                                         random.Random(rng.random())),
                                     daemon=True) for name in names]
        for thread in threads:
            thread.start()
        last_report = started
        while not shared.stop.is_set():
            time.sleep(0.5)
            with shared.lock:
                steady = sum(is_steady(o, args) for o in shared.offers)
                total, waiting = len(shared.offers), shared.waiting
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                print(f"  {last_report - started:5.0f} s: {total} offers ({steady} to agents "
                      f"becoming free with callers waiting), {waiting} callers waiting now")
            if steady >= args.offers:
                break
            if time.monotonic() - started > args.max_seconds:
                shared.fail(f"only {steady} of {args.offers} offers in {args.max_seconds:g} s")
        elapsed = time.monotonic() - started
        usage = (cpu_seconds(workers) - cpu_before[0],
                 cpu_seconds(postgres_backends(db_name)) - cpu_before[1],
                 machine_busy_seconds() - cpu_before[2])
        shared.stop.set()
        for thread in threads:
            thread.join(timeout=10)
        return report(shared, db_url, elapsed, usage)
    except SetupError as exc:
        print(f"SET-UP ERROR: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            if args.keep_logs or server.proc.poll() is not None:
                print(server.log_tail())
            server.stop()
        clean_up(args.database_url, db_name, tmp, keep_logs=args.keep_logs)


def report(shared: Shared, db_url: str, elapsed: float,
           usage: tuple[float, float, float]) -> int:
    with shared.lock:
        offers = list(shared.offers)
        api = list(shared.api_durations)
        failures = list(shared.failures)
        requests = shared.provider.requests
    free = [o for o in offers if is_steady(o, shared.args)]
    ramp = [o for o in offers if o.kind == "agent_free" and not is_steady(o, shared.args)]
    entry = [o for o in offers if o.kind == "caller_entry"]
    print(f"\n== dispatch latency: event -> offer seen by the caller's side "
          f"({elapsed:.0f} s, {requests} requests to the service, "
          f"{requests / elapsed:.0f} req/s) ==")
    print(f"agent becomes available, >= {STEADY_SHARE * shared.args.callers:.0f} callers "
          f"waiting: {summary([o.latency for o in free])}")
    if free:
        waits = sorted(o.waiting for o in free)
        hows = {h: sum(o.how == h for o in free) for h in ("rest", "hold-loop")}
        print(f"    callers waiting at the event: min {waits[0]}, median "
              f"{statistics.median(waits):.0f}, max {waits[-1]}; offer seen via REST redirect "
              f"{hows['rest']}, via the caller's hold loop {hows['hold-loop']}")
    print(f"agent becomes available while the queues fill up: "
          f"{summary([o.latency for o in ramp])}")
    print(f"caller enters a queue, an agent free:      {summary([o.latency for o in entry])}")
    print(f"agent API request (available -> answer):   {summary(api)}")
    times = server_times(db_url, [o.call_sid for o in free])
    parts = [(o.event + WALL_OFFSET, *times[o.call_sid], o.event + o.latency + WALL_OFFSET)
             for o in free if o.call_sid in times]
    print(f"  where it goes, with the service's timestamps in the database (same clock; the "
          f"'offered' stamp is the time dispatch started), n {len(parts)}:")
    print(f"    request sent -> state 'available' stamped:  "
          f"{summary([a - sent for sent, a, _, _ in parts])}")
    print(f"    'available' -> dispatch starts:              "
          f"{summary([o - a for _, a, o, _ in parts])}")
    print(f"    dispatch starts -> offer seen (its queries, commit, REST redirect): "
          f"{summary([seen - o for _, _, o, seen in parts])}")
    workers, backends, machine = (u / elapsed for u in usage)
    print(f"CPU during the run: app workers {workers:.2f} cores, PostgreSQL backends "
          f"{backends:.2f}, the whole machine {machine:.2f} of {os.cpu_count()} (this script, "
          f"the fake provider and other processes included)")
    twice = offered_twice(db_url)
    if twice:
        failures.append(f"{len(twice)} calls were offered more than once (no offer was "
                        f"declined): {twice[:5]}")
    if failures:
        print("\nFAILED:", file=sys.stderr)
        for failure in failures[:20]:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
