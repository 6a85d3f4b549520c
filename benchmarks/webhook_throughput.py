"""Throughput and memory of the incoming-call webhook against a bare Flask endpoint.

Budgets checked (from the project's guide):

* the incoming-call webhook (``POST /twilio/voice``) keeps at least half the throughput of a
  bare Flask endpoint returning fixed TwiML, measured side by side in one run on PostgreSQL
  under gunicorn;
* a gunicorn worker stays under 150 MB resident.

What it does: creates a scratch PostgreSQL database (``bench_<random>``) next to the one named
by ``--database-url``, migrates it with Alembic, loads ``config/line.sample.yaml`` with
``flask config load``, then starts two gunicorn servers on loopback with the same worker count:
the real app (``app:create_app()``) and ``benchmarks/bare_app.py``, both configured alike: by
default threaded workers (``--threads 4``, as the Dockerfile runs the service; ``--worker-threads
1`` measures gunicorn's sync worker). ``wrk`` drives both with
the same pre-generated request bodies, each a distinct incoming call (new CallSid) with a valid
``X-Twilio-Signature``, so every request to the real app checks the signature, looks up the
line configuration, inserts a new call row and builds the TwiML. Runs alternate bare/app in
ABBA order (bare, app, app, bare, ...) for the same duration and connections so drift on the
machine hits both alike. Correctness: during the warm-up every response body is checked (2xx
and the language menu, not the spoken error fallback); in timed runs wrk counts statuses > 399
(reading every body would cost the client CPU, more so against the faster server). Any such
answer fails the benchmark, and after every app run the calls table must have grown by exactly
one row per 200 answer plus the requests still in flight when the run's time was up (the
server finishes those; wrk no longer reads their answers).
Afterwards it reads each app worker's resident memory from ``/proc/<pid>/status``, stops the
servers and drops the scratch database.

Where the time goes: for every timed run it also reads the CPU time the server's workers (and,
for the app, the PostgreSQL backends serving its database) spent, from ``/proc``, and prints it
per request; on a machine where both servers are CPU-bound the ratio is roughly the inverse
ratio of those costs. It also prints how much CPU other processes on the machine used during
the timed runs: throughput figures taken while that is high are not comparable with others.

Run on demand (not a test)::

    make bench                       # or:
    .venv/bin/python benchmarks/webhook_throughput.py [--workers 2] [--duration 10] ...

Needs ``wrk`` (Debian/Ubuntu: ``apt-get install wrk``) and a PostgreSQL server whose user may
CREATE DATABASE. Exit status: 0 all budgets met, 1 a correctness failure (non-2xx answers,
fallback answers, wrong row count, wrk errors), 2 set-up error, 3 a budget missed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
LUA_SCRIPT = BENCH_DIR / "signed_calls.lua"
SAMPLE_CONFIG = Path("config") / "line.sample.yaml"
sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
# The origin the provider is told to call; signatures are computed for it (PUBLIC_BASE_URL).
PUBLIC_BASE = "https://hotline.example.ee"
WEBHOOK_PATH = "/twilio/voice"
LINE_NUMBER = "+3726121360"
RATIO_BUDGET = 0.5
RSS_BUDGET_MB = 150.0

# Parameters of a real incoming-call webhook, in the provider's order (shared fixture
# "incoming_call"); CallSid, From/Caller and To/Called are filled in per call.
INCOMING_CALL_PARAMS = {
    "AccountSid": "AC0f1e2d3c4b5a69788796a5b4c3d2e1f0", "ApiVersion": "2010-04-01",
    "CallSid": "", "CallStatus": "ringing", "Direction": "inbound", "From": "", "To": "",
    "Caller": "", "Called": "", "FromCountry": "EE", "FromCity": "", "FromState": "",
    "FromZip": "", "ToCountry": "EE", "ToCity": "", "ToState": "", "ToZip": "",
    "CallerCountry": "EE", "CallerCity": "", "CallerState": "", "CallerZip": "",
    "CalledCountry": "EE", "CalledCity": "", "CalledState": "", "CalledZip": "",
}


class SetupError(RuntimeError):
    """The benchmark could not be set up (no wrk, no PostgreSQL, a server did not start)."""


# --------------------------------------------------------------------------- requests

def write_requests(path: Path, count: int, token: str, rng: random.Random) -> None:
    """Write ``count`` signed incoming-call requests (one distinct call each) to ``path``."""
    from telephony.signature import compute_signature
    url = PUBLIC_BASE + WEBHOOK_PATH
    with path.open("w", encoding="ascii") as out:
        for _ in range(count):
            caller = "+3725" + "".join(rng.choice("0123456789") for _ in range(7))
            params = dict(INCOMING_CALL_PARAMS, CallSid="CA" + secrets.token_hex(16),
                          From=caller, Caller=caller, To=LINE_NUMBER, Called=LINE_NUMBER)
            signature = compute_signature(token, url, params)
            out.write(f"{signature}\t{urlencode(params)}\n")


# --------------------------------------------------------------------------- database

def scratch_database(admin_url: str) -> tuple[str, str]:
    """Create an empty database next to ``admin_url``'s; return (its name, its URL)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from db import normalise_url

    name = "bench_" + secrets.token_hex(4)
    engine = create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise SetupError(f"cannot create a scratch database via {safe_url(admin_url)}: {exc}") from exc
    finally:
        engine.dispose()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    return name, url


def clean_up(admin_url: str, db_name: str | None, tmp: Path, *, keep_logs: bool) -> None:
    """Drop the scratch database (reporting, not raising, a failure, so the benchmark's own
    result stands) and remove the temporary directory unless the logs are kept."""
    if db_name is not None:
        try:
            drop_database(admin_url, db_name)
            print(f"dropped scratch database {db_name}")
        except Exception as exc:
            print(f"could not drop scratch database {db_name}: {exc}", file=sys.stderr)
    if keep_logs:
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def drop_database(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    from db import normalise_url

    engine = create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def migrate_and_load(url: str, token: str, config_path: Path = SAMPLE_CONFIG) -> None:
    """Migrate ``url`` to head with Alembic and load a line configuration (default: the
    sample) with ``flask config load``."""
    from alembic import command
    from alembic.config import Config

    from db import normalise_url

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["url"] = normalise_url(url)
    command.upgrade(cfg, "head")
    env = dict(os.environ, DATABASE_URL=url, TWILIO_AUTH_TOKEN=token, TELEPHONY_CLIENT="fake",
               LOG_LEVEL="WARNING")
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "config", "load",
                             str(config_path)], cwd=ROOT, env=env, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise SetupError(f"flask config load failed:\n{result.stdout}{result.stderr}")
    print(f"  {result.stdout.strip()}")


def count_calls(url: str) -> int:
    from sqlalchemy import create_engine, text

    from db import normalise_url

    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM calls")).scalar_one()
    finally:
        engine.dispose()


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# --------------------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_pids(pid: int) -> list[int]:
    """Return the pids of ``pid``'s direct children (gunicorn workers of a master)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces or parentheses: the ppid follows the last ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident) of ``pid`` in kB, from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


@dataclass
class Server:
    name: str
    app_spec: str
    port: int
    workers: int
    threads: int
    env: dict[str, str]
    extra_args: list[str] = field(default_factory=list)
    log_path: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> None:
        self.log_path = log_dir / f"{self.name}.log"
        cmd = [sys.executable, "-m", "gunicorn", "--workers", str(self.workers),
               "--threads", str(self.threads),
               "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning",
               *self.extra_args, self.app_spec]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SetupError(f"{self.name} server exited at start-up:\n{self.log_tail()}")
            if len(self.worker_pids()) >= self.workers:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                except OSError:
                    pass
            time.sleep(0.2)
        raise SetupError(f"{self.name} server not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        return child_pids(self.proc.pid) if self.proc is not None else []

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # graceful: the master stops its own workers
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` in seconds, from /proc/<pid>/stat."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_backends(db_name: str) -> list[int]:
    """Pids of the PostgreSQL server processes connected to ``db_name`` (on this machine)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith("postgres:") and f" {db_name} " in cmdline:
                pids.append(int(entry.name))
    return pids


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, not idle or waiting for I/O)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- load

@dataclass
class RunResult:
    server: str
    phase: str              # "warm-up" or "round N"
    checked: bool           # every response body inspected (see signed_calls.lua)
    data: dict
    rows: int | None = None  # call rows this run inserted (app only)
    worker_cpu_s: float = 0.0  # CPU time of the server's workers during the run
    pg_cpu_s: float = 0.0      # CPU time of PostgreSQL backends serving the app's database
    other_cpu_s: float = 0.0   # CPU time of everything else on the machine but wrk

    @property
    def cpu_per_request_us(self) -> tuple[float, float]:
        n = max(self.data["requests"], 1)
        return self.worker_cpu_s / n * 1e6, self.pg_cpu_s / n * 1e6

    @property
    def duration_s(self) -> float:
        return self.data["duration_us"] / 1e6

    @property
    def rps(self) -> float:
        return self.data["requests"] / self.duration_s

    @property
    def socket_errors(self) -> int:
        e = self.data["errors"]
        return e["connect"] + e["read"] + e["write"] + e["timeout"]

    @property
    def non2xx(self) -> int:
        """Answers that were not 2xx (checked runs) or had a status > 399 (wrk's own count)."""
        return self.data["non2xx"] if self.checked else self.data["errors"]["status"]

    @property
    def sent(self) -> int:
        return self.data["calls"] - 1  # wrk calls request() once more to validate the script

    @property
    def cut_off(self) -> int:
        """Requests sent but still unanswered when the run's time was up."""
        return self.sent - self.data["requests"]


def run_wrk(server: Server, requests_file: Path, args: argparse.Namespace, duration: float,
            phase: str, check: bool = False) -> RunResult:
    cmd = ["wrk", "--threads", str(args.threads), "--connections", str(args.connections),
           "--duration", f"{duration:g}s", "--timeout", "30s", "--script", str(LUA_SCRIPT),
           server.url, "--", str(requests_file), str(args.threads)]
    if check:
        cmd.append("check")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise SetupError(f"wrk failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return RunResult(server.name, phase, check, json.loads(line[len("BENCH_JSON "):]))


def settled_count(url: str) -> int:
    """Count call rows once the server has finished requests that were in flight at the end."""
    previous = None
    deadline = time.monotonic() + 30
    while True:
        time.sleep(0.3)
        current = count_calls(url)
        if current == previous or time.monotonic() > deadline:
            return current
        previous = current


def describe(run: RunResult) -> str:
    lat = run.data["latency_us"]
    problems = []
    if run.non2xx:
        problems.append(f"non-2xx={run.non2xx}")
    if run.data["unexpected"]:
        problems.append(f"fallback={run.data['unexpected']}")
    if run.socket_errors:
        problems.append(f"socket-errors={run.socket_errors}")
    worker_us, pg_us = run.cpu_per_request_us
    cpu = f"  CPU/request {worker_us:5.0f} us" + (f" + PostgreSQL {pg_us:4.0f} us" if pg_us else "")
    return (f"{run.phase:>8} {run.server:>4}: {run.rps:8.1f} req/s {run.data['requests']:7d} "
            f"requests  p50 {lat['p50'] / 1000:6.1f} ms  p99 {lat['p99'] / 1000:6.1f} ms{cpu}"
            f"  others {run.other_cpu_s / run.duration_s:4.2f} cores"
            + (f"  {' '.join(problems)}" if problems else ""))


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                                 DEFAULT_DATABASE_URL),
                        help="PostgreSQL server to use: a scratch database is created next to "
                             "this one and dropped afterwards (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    parser.add_argument("--worker-threads", type=int, default=4,
                        help="gunicorn --threads per worker for both servers: default 4, as the "
                             "Dockerfile runs the service (gthread workers); 1 = sync workers")
    parser.add_argument("--gunicorn-arg", action="append", default=[], metavar="ARG",
                        help="extra gunicorn argument for both servers, e.g. "
                             "--gunicorn-arg=--keep-alive=5 (repeatable)")
    parser.add_argument("--app-spec", default="app:create_app()",
                        help="gunicorn WSGI spec of the service, to measure a variant (with "
                             "--gunicorn-arg=--pythonpath=DIR); default %(default)s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per server")
    parser.add_argument("--rounds", type=int, default=2,
                        help="measured runs per server, alternating in ABBA order")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the temporary directory with the gunicorn logs")
    args = parser.parse_args(argv)
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: install it (Debian/Ubuntu: apt-get install wrk) and run again.",
              file=sys.stderr)
        return 2
    token = secrets.token_hex(16)
    rng = random.Random()
    tmp = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    servers: list[Server] = []
    db_name = None
    try:
        extra = "".join(f" {arg}" for arg in args.gunicorn_arg)
        kind = "sync" if args.worker_threads == 1 else "gthread"
        print(f"nproc {os.cpu_count()}; gunicorn --workers {args.workers} --threads "
              f"{args.worker_threads} ({kind} workers){extra} (both servers); "
              f"wrk {args.threads} threads, {args.connections} connections, "
              f"{args.rounds} x {args.duration:g} s per server")
        db_name, db_url = scratch_database(args.database_url)
        print(f"scratch database {db_name} on {safe_url(args.database_url)}")
        migrate_and_load(db_url, token)

        base_env = {k: v for k, v in os.environ.items()
                    if k not in ("DATABASE_URL", "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL")}
        app = Server("app", args.app_spec, free_port(), args.workers, args.worker_threads, dict(
            base_env, DATABASE_URL=db_url, TWILIO_AUTH_TOKEN=token, PUBLIC_BASE_URL=PUBLIC_BASE,
            TELEPHONY_CLIENT="fake", LOG_LEVEL="WARNING"), extra_args=list(args.gunicorn_arg))
        bare = Server("bare", "bare_app:create_app()", free_port(), args.workers,
                      args.worker_threads, dict(base_env),
                      extra_args=[*args.gunicorn_arg, "--pythonpath", str(BENCH_DIR)])
        servers = [bare, app]
        for server in servers:
            server.start(tmp)
        for server in servers:
            server.wait_ready()
        print(f"servers: bare {bare.url}  app {app.url}")

        rows = settled_count(db_url)
        runs: list[RunResult] = []

        def measure(server: Server, requests_file: Path, duration: float, phase: str,
                    check: bool = False) -> RunResult:
            nonlocal rows
            workers = server.worker_pids()
            backends = postgres_backends(db_name) if server is app else []
            before = (cpu_seconds(workers), cpu_seconds(backends), machine_busy_seconds(),
                      children_cpu_seconds())
            run = run_wrk(server, requests_file, args, duration, phase, check)
            backends = sorted(set(backends) | set(postgres_backends(db_name))) \
                if server is app else []
            run.worker_cpu_s = cpu_seconds(workers) - before[0]
            run.pg_cpu_s = cpu_seconds(backends) - before[1]
            wrk_cpu = children_cpu_seconds() - before[3]
            run.other_cpu_s = max(0.0, machine_busy_seconds() - before[2] - run.worker_cpu_s
                                  - run.pg_cpu_s - wrk_cpu)
            if server is app:
                now_rows = settled_count(db_url)
                run.rows, rows = now_rows - rows, now_rows
            runs.append(run)
            print(describe(run))
            return run

        # Warm-up, every response checked: bare first, as its rate bounds how many distinct
        # calls the app can use up (the app's pool of calls must never wrap around).
        warm_file = tmp / "warmup.txt"
        write_requests(warm_file, 2000, token, rng)
        warm_bare = measure(bare, warm_file, args.warmup, "warm-up", check=True)
        write_requests(warm_file, int(max(warm_bare.rps, 500) * args.warmup * 2) + 1000, token, rng)
        measure(app, warm_file, args.warmup, "warm-up", check=True)

        for round_no in range(args.rounds):
            fastest = max([r.rps for r in runs if r.server == "app"] + [500.0])
            requests_file = tmp / f"round{round_no + 1}.txt"
            write_requests(requests_file, int(fastest * args.duration * 2) + 1000, token, rng)
            # ABBA: bare, app, app, bare, ... so linear drift on the machine cancels out.
            for server in ((bare, app) if round_no % 2 == 0 else (app, bare)):
                measure(server, requests_file, args.duration, f"round {round_no + 1}")
            requests_file.unlink()

        workers_mem = {pid: memory_kb(pid) for pid in app.worker_pids()}
        bare_mem = {pid: memory_kb(pid) for pid in bare.worker_pids()}
        master_mem = memory_kb(app.proc.pid)
        return report(args, runs, workers_mem, bare_mem, master_mem)
    except SetupError as exc:
        print(f"SET-UP ERROR: {exc}", file=sys.stderr)
        return 2
    finally:
        for server in servers:
            server.stop()
        clean_up(args.database_url, db_name, tmp, keep_logs=args.keep_logs)


def report(args, runs, workers_mem, bare_mem, master_mem) -> int:
    failures: list[str] = []
    measured = [r for r in runs if r.phase != "warm-up"]
    bare_runs = [r for r in measured if r.server == "bare"]
    app_runs = [r for r in measured if r.server == "app"]

    def total_rps(rs):
        return sum(r.data["requests"] for r in rs) / sum(r.duration_s for r in rs)

    bare_rps, app_rps = total_rps(bare_runs), total_rps(app_runs)
    ratio = app_rps / bare_rps
    sizes = {r.server: r.data["response_size"] for r in runs if r.checked}
    print("\n== throughput (measured runs) ==")
    for name, rs, rps in (("bare", bare_runs, bare_rps), ("app", app_runs, app_rps)):
        p50 = " / ".join(f"{r.data['latency_us']['p50'] / 1000:.1f}" for r in rs)
        p99 = " / ".join(f"{r.data['latency_us']['p99'] / 1000:.1f}" for r in rs)
        print(f"{name:>4}: {rps:8.1f} req/s   latency per run: p50 {p50} ms, p99 {p99} ms   "
              f"({sizes.get(name, 0)} B TwiML)")
    for name, rs in (("bare", bare_runs), ("app", app_runs)):
        requests = sum(r.data["requests"] for r in rs)
        worker_us = sum(r.worker_cpu_s for r in rs) / requests * 1e6
        pg_us = sum(r.pg_cpu_s for r in rs) / requests * 1e6
        print(f"{name:>4}: CPU per request: workers {worker_us:.0f} us"
              + (f", PostgreSQL backends {pg_us:.0f} us" if name == "app" else ""))
    other = sum(r.other_cpu_s for r in measured) / sum(r.duration_s for r in measured)
    print(f"other processes on the machine: {other:.2f} cores on average during the timed runs"
          + ("  (busy machine: figures are not comparable with a quiet run)" if other > 0.2
             else ""))
    pair_ratios = [a.rps / b.rps for b, a in zip(bare_runs, app_runs)]
    print(f"ratio app/bare: {ratio:.3f} (per round: "
          f"{', '.join(f'{x:.3f}' for x in pair_ratios)}) -> "
          f"{'MEETS' if ratio >= RATIO_BUDGET else 'MISSES'} the >= {RATIO_BUDGET} budget")

    print("\n== correctness (warm-up included) ==")
    non2xx = sum(r.non2xx for r in runs)
    print(f"non-2xx responses: {non2xx}")
    for r in runs:
        where = f"{r.phase} {r.server}"
        if r.non2xx:
            codes = r.data["non2xx_codes"].strip() or "> 399"
            failures.append(f"{where}: {r.non2xx} non-2xx responses (statuses: {codes})")
        if r.data["unexpected"]:
            failures.append(f"{where}: {r.data['unexpected']} 2xx responses without the "
                            f"language menu, e.g. {r.data['unexpected_sample']!r}")
        if r.socket_errors:
            failures.append(f"{where}: socket errors {r.data['errors']}")
        if r.server == "app" and r.data["wrapped"]:
            failures.append(f"{where}: the pool of distinct calls ran out (repeated CallSids); "
                            "rerun: the pool is sized from the rates seen so far")
    # Every 200 must have inserted its call row. Requests still in flight when a run's time
    # was up are finished by the server (row inserted) but their answers are never read.
    app_all = [r for r in runs if r.server == "app"]
    answered = sum(r.data["requests"] - r.non2xx - r.data["unexpected"] for r in app_all)
    cut_off = sum(r.cut_off for r in app_all)
    inserted = sum(r.rows for r in app_all)
    print(f"app: {answered} answered 200, {cut_off} cut off in flight at the end of runs "
          f"(answer not read), {inserted} call rows inserted")
    for r in app_all:
        ok = r.data["requests"] - r.non2xx - r.data["unexpected"]
        if r.rows != ok + r.cut_off:
            failures.append(f"{r.phase} app: {r.rows} call rows inserted, expected one per 200 "
                            f"answer plus the requests cut off in flight: {ok} + {r.cut_off}")
    if inserted == answered + cut_off:
        print(f"call rows == 200 responses + cut off in flight ({answered} + {cut_off}): OK")

    print("\n== memory (resident, app workers after the load) ==")
    rss = {pid: m["VmRSS"] / 1024 for pid, m in workers_mem.items()}
    for pid, m in workers_mem.items():
        print(f"app worker {pid}: VmRSS {rss[pid]:.1f} MB (peak VmHWM {m['VmHWM'] / 1024:.1f} MB)")
    print(f"app master VmRSS {master_mem['VmRSS'] / 1024:.1f} MB; bare workers VmRSS " + ", ".join(
        f"{m['VmRSS'] / 1024:.1f} MB" for m in bare_mem.values()))
    max_rss = max(rss.values()) if rss else float("inf")
    print(f"max app worker RSS {max_rss:.1f} MB -> "
          f"{'MEETS' if max_rss < RSS_BUDGET_MB else 'MISSES'} the < {RSS_BUDGET_MB:.0f} MB budget")

    if failures:
        print("\nFAILED:", file=sys.stderr)
        for failure in failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    return 0 if ratio >= RATIO_BUDGET and max_rss < RSS_BUDGET_MB else 3


if __name__ == "__main__":
    sys.exit(main())
