"""Monthly report by day and queue over 10 million generated calls: the product's SQL
aggregation (:func:`reporting.aggregate.run_report`) timed against pandas computing the same
figures from an export, in the same run, with the peak memory of each.

Set-up (timed separately, not part of the comparison): a PostgreSQL database (default
``bench_report`` on the server of ``BENCH_DATABASE_URL``, or ``--db-url``), created fresh and
migrated with Alembic; 15 queues (``et|ru|en`` × 5 topics) and 60 agents; ``--calls`` calls
(default 10,000,000) over one month in Europe/Tallinn (default 2026-10, which has the autumn
DST day of 25 hours), loaded with ``COPY … FROM STDIN (FREEZE)`` from a generator (numpy,
chunk by chunk). The indexes and foreign keys of ``calls`` that the migration created are
dropped before the COPY and re-created, exactly as they were, after it; then ``ANALYZE``.

The mix: ~4 % never offered (no queue entry: IVR hang-ups, out of hours, transferred or
referred from the menu); of the offered ~88 % answered (55 % of them within seconds, the others
after an exponential wait of mean 45 s, in milliseconds, a few answer times 0–2 s before the queue entry, which count as 0), the rest
abandoned (time to abandon exponential, mean 45 s); talk log-normal (median ~3.5 min), hold on
~15 % of the answered, wrap-up on ~95 %, a talk time missing on ~0.3 %; the agent's
disposition on ~60 % of the answered; ``caller_key`` drawn from a skewed pool of numbers
(as many numbers as calls, skewed: some call often) so that repeat contacts exist, ~5 % withheld (NULL). Arrivals follow an
office-hours profile (weekdays 08–18 busy, evenings and weekends light) in local time.

Measured (``--runs`` runs each, default 2: the first is cold, the last — warm — is quoted), in
a child process per variant so that each has its own peak RSS (``VmHWM``):

* the product: ``run_report(session, ReportSpec(start, end, interval="day",
  dimensions=("queue",), fcr_windows=…), now=month end)`` + ``report_as_dict``, with FCR at
  1 and 7 days and without FCR (``fcr_windows=()``);
* pandas, as a pandas user would do it: ``COPY (SELECT … calls ⟕ queues …) TO STDOUT CSV``
  into a file (the export), ``pandas.read_csv`` (the load), then the figures per local day
  (of queue entry) and queue, FCR at 1 and 7 days with ``groupby().shift(-1)`` over callers,
  and the not-offered calls per day of arrival (the compute).

The pandas figures are compared with the product's, count by count (offered, answered,
abandoned, answered/abandoned within T, short abandons, handled, disposed, resolved,
unidentified, FCR base and repeats), and the seconds (ASA, AHT, mean talk) to 1e-6 s; any
mismatch is printed and the exit status is 1. ``--explain`` prints EXPLAIN (ANALYZE, BUFFERS)
of the product's offered-calls query. The database is dropped at the end unless ``--keep``;
``--reuse`` skips the generation when a kept database has data.

    .venv/bin/python benchmarks/report_10m.py [--calls 10000000] [--keep] [--reuse]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TZ_NAME = "Europe/Tallinn"
TZ = ZoneInfo(TZ_NAME)
LANGUAGES = ("et", "ru", "en")
LANGUAGE_WEIGHTS = (0.62, 0.30, 0.08)
TOPICS = ("pension", "family", "disability", "child_protection", "other")
TOPIC_WEIGHTS = (0.34, 0.28, 0.18, 0.08, 0.12)
AGENTS = 60
NOT_OFFERED = (("ivr_abandoned", 0.50), ("out_of_hours", 0.25), ("transferred", 0.10),
               ("referred", 0.15))
DISPOSITIONS = (("resolved", 0.70), ("callback_promised", 0.10), ("transferred", 0.08),
                ("referred", 0.07), ("escalated", 0.05))
THRESHOLD = 20.0
SHORT_ABANDON = 5.0
FCR_WINDOWS = (1, 7)
COUNT_FIELDS = ("offered", "answered", "abandoned", "in_progress", "answered_within",
                "abandoned_within", "short_abandoned", "handled", "disposed", "resolved",
                "unidentified_callers")
SECOND_FIELDS = ("asa_seconds", "aht_seconds", "mean_talk_seconds")
RATE_FIELDS = ("sl_offered", "sl_excl_early_abandons", "sl_answered", "sl_excl_short_abandons",
               "sl_abandons_met", "answer_rate", "abandonment_rate",
               "abandonment_rate_excl_short", "fcr_disposition")
COPY_COLUMNS = ("id", "call_sid", "from_number", "to_number", "language", "topic", "queue_id",
                "agent_id", "priority", "status", "outcome", "arrived_at", "ivr_exited_at",
                "queue_entered_at", "answered_at", "ended_at", "talk_seconds", "no_input_count",
                "invalid_input_count", "last_event_at", "closed_by_sweep", "source",
                "caller_key", "hold_seconds", "wrap_up_seconds", "disposition",
                "disposition_agent_id", "disposition_at")


# ---------------------------------------------------------------------------------------------
# Small helpers

def month_range(month: str) -> tuple[date, date, datetime, datetime]:
    """First and last local day of ``YYYY-MM`` and their UTC bounds [lo, hi)."""
    year, mon = (int(x) for x in month.split("-"))
    first = date(year, mon, 1)
    nxt = date(year + mon // 12, mon % 12 + 1, 1)
    lo = datetime.combine(first, datetime.min.time(), tzinfo=TZ).astimezone(timezone.utc)
    hi = datetime.combine(nxt, datetime.min.time(), tzinfo=TZ).astimezone(timezone.utc)
    return first, nxt - timedelta(days=1), lo, hi


def status_kb(field: str) -> int:
    """A ``/proc/self/status`` figure in kB (VmHWM = peak RSS, VmRSS = current)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def mib(kb: int) -> str:
    return f"{kb / 1024:,.0f} MiB"


def server_and_name(db_url: str) -> tuple[str, str]:
    from db import normalise_url
    url = normalise_url(db_url)
    base, name = url.rsplit("/", 1)
    return base + "/postgres", name.split("?")[0]


def psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


# ---------------------------------------------------------------------------------------------
# Set-up: database, migration, queues and agents, calls by COPY

def create_database(db_url: str, reuse: bool) -> bool:
    """Create the database (dropping an old one unless ``reuse``); True if it already had calls."""
    from sqlalchemy import create_engine, text
    admin_url, name = server_and_name(db_url)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            if exists and reuse:
                probe = create_engine(db_url)
                try:
                    with probe.connect() as c:
                        n = c.scalar(text("SELECT count(*) FROM calls"))
                    if n:
                        return True
                except Exception:  # noqa: BLE001 (not migrated: start over)
                    pass
                finally:
                    probe.dispose()
            if exists:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return False


def drop_database(db_url: str) -> None:
    from sqlalchemy import create_engine, text
    admin_url, name = server_and_name(db_url)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def migrate(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["url"] = db_url
    command.upgrade(cfg, "head")


def hour_weights(lo: datetime, hi: datetime):
    """UTC hour starts of the month and the share of calls each gets (office-hours profile in
    local time: the repeated hour of the autumn DST day is an hour of its own)."""
    import numpy as np
    profile = {7: 0.25, 8: 0.8, 9: 1.0, 10: 1.0, 11: 0.95, 12: 0.8, 13: 0.9, 14: 0.95, 15: 0.85,
               16: 0.65, 17: 0.4, 18: 0.15, 19: 0.08, 20: 0.05, 21: 0.03}
    starts, weights = [], []
    at = lo
    while at < hi:
        local = at.astimezone(TZ)
        w = profile.get(local.hour, 0.01)
        if local.weekday() >= 5:
            w *= 0.18
        starts.append(int(at.timestamp() * 1000))
        weights.append(w)
        at += timedelta(hours=1)
    weights = np.array(weights)
    return np.array(starts, dtype=np.int64), weights / weights.sum()


def iso_ms(ms, mask=None) -> list:
    """Epoch milliseconds (numpy int64) → ISO 8601 strings in UTC, None where ``mask`` is False."""
    import numpy as np
    text = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms", timezone="UTC")
    if mask is None:
        return text.tolist()
    return np.where(mask, text, None).tolist()


def as_list(values, mask=None) -> list:
    import numpy as np
    if mask is None:
        return values.tolist()
    return np.where(mask, values.astype(object), None).tolist()


def generate_chunks(n: int, lo: datetime, hi: datetime, queue_ids: list[int],
                    agents_by_queue: dict[int, list[int]], seed: int, chunk: int = 250_000):
    """Yield lists of rows (tuples in COPY_COLUMNS order), ``chunk`` calls at a time."""
    import numpy as np
    rng = np.random.default_rng(seed)
    hour_starts, hour_p = hour_weights(lo, hi)
    weights = np.array([lw * tw for lw in LANGUAGE_WEIGHTS for tw in TOPIC_WEIGHTS])
    queue_p = weights / weights.sum()
    queue_arr = np.array(queue_ids)
    queue_lang = np.array([lang for lang in LANGUAGES for _ in TOPICS], dtype=object)
    queue_topic = np.array([t for _ in LANGUAGES for t in TOPICS], dtype=object)
    agent_table = np.array([agents_by_queue[q] for q in queue_ids])  # queues × agents per queue
    pool = max(10, n)
    no_kinds = np.array([k for k, _ in NOT_OFFERED], dtype=object)
    no_p = np.array([p for _, p in NOT_OFFERED])
    disp_kinds = np.array([k for k, _ in DISPOSITIONS], dtype=object)
    disp_p = np.array([p for _, p in DISPOSITIONS])
    next_id = 1
    done = 0
    while done < n:
        m = min(chunk, n - done)
        ids = np.arange(next_id, next_id + m, dtype=np.int64)
        next_id += m
        done += m
        arrived = hour_starts[rng.choice(len(hour_starts), m, p=hour_p)] + rng.integers(0, 3_600_000, m)
        ivr = rng.integers(8_000, 95_000, m)
        offered = rng.random(m) >= 0.04
        qidx = rng.choice(len(queue_ids), m, p=queue_p)
        q_at = arrived + ivr
        answered = offered & (rng.random(m) < 0.88)
        abandoned = offered & ~answered
        quick = rng.random(m) < 0.55  # an agent was free: answered within seconds
        wait = np.where(answered, np.where(quick, rng.exponential(3_000, m), rng.exponential(45_000, m)),
                        rng.exponential(45_000, m)).astype(np.int64)
        early = answered & (rng.random(m) < 0.0002)  # answer time derived from the agent leg
        wait = np.where(early, -rng.integers(1, 2_000, m), wait)
        a_at = q_at + wait
        talk = np.maximum(5, rng.lognormal(math.log(210), 0.7, m)).astype(np.int64)
        has_talk = answered & (rng.random(m) >= 0.003)
        ended = np.where(answered, a_at + talk * 1000 + rng.integers(0, 1000, m),
                         np.where(abandoned, q_at + wait, arrived + ivr))
        hold = rng.integers(10, 121, m)
        has_hold = has_talk & (rng.random(m) < 0.15)
        wrap = rng.integers(0, 61, m)
        has_wrap = answered & (rng.random(m) < 0.95)
        agent = agent_table[qidx, rng.integers(0, agent_table.shape[1], m)]
        has_disp = answered & (rng.random(m) < 0.60)
        disp = disp_kinds[rng.choice(len(disp_kinds), m, p=disp_p)]
        caller_idx = (pool * rng.random(m) ** 1.6).astype(np.int64)
        withheld = rng.random(m) < 0.05
        caller = np.char.add("+3725", np.char.zfill(caller_idx.astype(str), 7)).astype(object)
        caller = np.where(withheld, None, caller)
        from_number = np.where(withheld, "anonymous", caller)
        outcome = np.where(answered, "answered", np.where(abandoned, "abandoned",
                                                          no_kinds[rng.choice(len(no_kinds), m, p=no_p)]))
        sids = [f"CA{i:032x}" for i in ids.tolist()]
        ended_s = iso_ms(ended)
        cols = [
            ids.tolist(), sids, from_number.tolist(), ["+3726408100"] * m,
            as_list(queue_lang[qidx], offered), as_list(queue_topic[qidx], offered),
            as_list(queue_arr[qidx], offered), as_list(agent, answered), [0] * m, ["ended"] * m,
            outcome.tolist(), iso_ms(arrived), iso_ms(arrived + ivr, offered),
            iso_ms(q_at, offered), iso_ms(a_at, answered), ended_s,
            as_list(talk, has_talk), [0] * m, [0] * m, ended_s, [False] * m, ["live"] * m,
            caller.tolist(), as_list(hold, has_hold), as_list(wrap, has_wrap),
            as_list(disp, has_disp), as_list(agent, has_disp),
            iso_ms(ended + 30_000, has_disp),
        ]
        yield list(zip(*cols))


def load(db_url: str, calls: int, month: str, seed: int) -> dict[str, float]:
    """Queues, agents and ``calls`` calls by COPY; returns the phase timings (s)."""
    import psycopg
    _, _, lo, hi = month_range(month)
    timings: dict[str, float] = {}
    with psycopg.connect(psycopg_url(db_url)) as conn:
        cur = conn.cursor()
        # The migration's indexes and foreign keys on calls, to re-create them verbatim.
        index_defs = [r[0] for r in cur.execute(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'calls'::regclass "
            "AND NOT i.indisprimary AND NOT EXISTS (SELECT 1 FROM pg_constraint k "
            "WHERE k.conindid = i.indexrelid)")]
        constraints = cur.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'calls'::regclass AND contype IN ('u', 'f') "
            "ORDER BY contype DESC").fetchall()  # unique first, then foreign keys
        index_names = [r[0] for r in cur.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'calls'::regclass AND NOT i.indisprimary AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)")]
        for name, _ in reversed(constraints):
            cur.execute(f'ALTER TABLE calls DROP CONSTRAINT "{name}"')
        for name in index_names:
            cur.execute(f'DROP INDEX "{name}"')
        # TRUNCATE in this transaction lets COPY write frozen, all-visible pages (no later
        # VACUUM to set hint bits). CASCADE: agents.current_call_id refers to calls.
        cur.execute("TRUNCATE calls, queues, agents, agent_skills CASCADE")
        queue_ids, agents_by_queue = [], {}
        for lang in LANGUAGES:
            for topic in TOPICS:
                qid = cur.execute("INSERT INTO queues (name, language, topic) VALUES (%s, %s, %s) "
                                  "RETURNING id", (f"{lang}.{topic}", lang, topic)).fetchone()[0]
                queue_ids.append(qid)
        per_queue = AGENTS // len(queue_ids)
        for k, qid in enumerate(queue_ids):
            agents_by_queue[qid] = []
            for j in range(per_queue):
                n = k * per_queue + j + 1
                aid = cur.execute(
                    "INSERT INTO agents (name, endpoint_kind, endpoint, state, state_changed_at) "
                    "VALUES (%s, 'client', %s, 'offline', now()) RETURNING id",
                    (f"agent{n:02d}", f"agent{n:02d}")).fetchone()[0]
                agents_by_queue[qid].append(aid)
        started = time.perf_counter()
        gen_seconds = 0.0
        with cur.copy(f"COPY calls ({', '.join(COPY_COLUMNS)}) FROM STDIN (FREEZE)") as copy:
            chunks = generate_chunks(calls, lo, hi, queue_ids, agents_by_queue, seed)
            while True:
                g = time.perf_counter()
                rows = next(chunks, None)
                gen_seconds += time.perf_counter() - g
                if rows is None:
                    break
                for row in rows:
                    copy.write_row(row)
        conn.commit()
        timings["generate + COPY"] = time.perf_counter() - started
        timings["of which generating rows (numpy)"] = gen_seconds
        # Each call's next offer from the same caller, as `flask calls import` fills it.
        from ivr.calls import FILL_NEXT_OFFER_POSTGRESQL
        started = time.perf_counter()
        cur.execute("SET work_mem = '256MB'")
        cur.execute(FILL_NEXT_OFFER_POSTGRESQL)
        conn.commit()
        timings["next offers (as the import fills them)"] = time.perf_counter() - started
        # The UPDATE left a dead version of most rows; rewrite the table so the report scans
        # what a freshly imported month would have (before the indexes exist: faster).
        started = time.perf_counter()
        conn.autocommit = True
        cur.execute("VACUUM FULL calls")
        conn.autocommit = False
        timings["VACUUM FULL after it"] = time.perf_counter() - started
        started = time.perf_counter()
        cur.execute("SET maintenance_work_mem = '1GB'")
        for definition in index_defs:
            cur.execute(definition)
        for name, definition in constraints:
            cur.execute(f'ALTER TABLE calls ADD CONSTRAINT "{name}" {definition}')
        conn.commit()
        timings["indexes + constraints"] = time.perf_counter() - started
        started = time.perf_counter()
        cur.execute("SELECT setval('calls_id_seq', (SELECT max(id) FROM calls))")
        conn.commit()
        conn.autocommit = True
        cur.execute("ANALYZE")
        timings["ANALYZE"] = time.perf_counter() - started
        timings["table size (GiB)"] = cur.execute(
            "SELECT pg_total_relation_size('calls') / 1024.0^3").fetchone()[0]
    return timings


# ---------------------------------------------------------------------------------------------
# The product's report (child process)

def product_worker(args) -> dict:
    from db import make_engine, make_sessionmaker
    from reporting.aggregate import ReportSpec, report_as_dict, run_report
    first, last, _, hi = month_range(args.month)
    baseline = status_kb("VmRSS")
    spec = ReportSpec(first, last, timezone=TZ_NAME, interval="day", dimensions=("queue",),
                      threshold=THRESHOLD, short_abandon=SHORT_ABANDON,
                      fcr_windows=tuple(args.fcr))
    engine = make_engine(args.db_url)
    sessions = make_sessionmaker(engine)
    times, result = [], None
    for _ in range(args.runs):
        with sessions() as session:
            started = time.perf_counter()
            result = report_as_dict(run_report(session, spec, now=hi))
            times.append(time.perf_counter() - started)
    engine.dispose()
    return {"times": times, "report": result, "baseline_kb": baseline, "hwm_kb": status_kb("VmHWM")}


def explain(db_url: str, month: str, windows: tuple[int, ...]) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the product's offered-calls query as run_report builds it."""
    from db import make_engine, make_sessionmaker
    from reporting import aggregate as agg
    first, last, _, hi = month_range(month)
    spec = agg.ReportSpec(first, last, interval="day", dimensions=("queue",), fcr_windows=windows)
    intervals = agg.intervals_between(first, last, "day", TZ)
    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as s:
        if not windows:
            ends = {}
        elif hasattr(agg, "coverage_spans"):  # the FCR data-end rule of the current engine
            ends = agg.coverage_spans(s, intervals[0].utc_start, hi + timedelta(days=max(windows)), hi)
        else:
            ends = agg._data_ends(s, hi)
        stmt = agg._offered_query(spec, intervals[0].utc_start, intervals[-1].utc_end,
                                  agg._bucket_seconds(intervals), ends)
        sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True})).replace("%%", "%")
    engine.dispose()
    import psycopg
    with psycopg.connect(psycopg_url(db_url)) as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql))
    return plan


# ---------------------------------------------------------------------------------------------
# pandas (child process): export, read_csv, the same figures

EXPORT_SQL = """
COPY (
  SELECT c.id, c.arrived_at, c.queue_entered_at, c.answered_at, c.ended_at, c.talk_seconds,
         c.hold_seconds, c.wrap_up_seconds, c.disposition, c.caller_key, c.source, c.status,
         c.outcome, q.name AS queue
  FROM calls c LEFT JOIN queues q ON q.id = c.queue_id
  WHERE (c.queue_entered_at >= '{lo}' AND c.queue_entered_at < '{fcr_hi}')
     OR (c.queue_entered_at IS NULL AND c.arrived_at >= '{lo}' AND c.arrived_at < '{hi}')
) TO STDOUT WITH (FORMAT csv, HEADER)
"""


def pandas_worker(args) -> dict:
    import numpy as np
    import pandas as pd
    import psycopg
    _, _, lo, hi = month_range(args.month)
    windows = sorted(set(args.fcr))
    fcr_hi = hi + timedelta(days=max(windows, default=0))
    baseline = status_kb("VmRSS")
    out: dict = {"baseline_kb": baseline}
    with tempfile.TemporaryDirectory(prefix="report-bench-") as tmp:
        path = Path(tmp) / "calls.csv"
        started = time.perf_counter()
        with psycopg.connect(psycopg_url(args.db_url)) as conn, open(path, "wb") as fh:
            conn.execute("SET TimeZone = 'UTC'")
            with conn.cursor().copy(EXPORT_SQL.format(lo=lo.isoformat(), hi=hi.isoformat(),
                                                      fcr_hi=fcr_hi.isoformat())) as copy:
                for block in copy:
                    fh.write(block)
        out["export_s"] = time.perf_counter() - started
        out["csv_bytes"] = path.stat().st_size

        started = time.perf_counter()
        stamps = ["arrived_at", "queue_entered_at", "answered_at", "ended_at"]
        df = pd.read_csv(path, dtype={"id": "int64", "talk_seconds": "float64",
                                      "hold_seconds": "float64", "wrap_up_seconds": "float64",
                                      "disposition": "category", "caller_key": "category",
                                      "source": "category", "status": "category",
                                      "outcome": "category", "queue": "category"})
        for col in stamps:
            df[col] = pd.to_datetime(df[col], format="ISO8601", utc=True)
        out["read_s"] = time.perf_counter() - started
        out["rows"] = len(df)
    started = time.perf_counter()
    out["figures"] = pandas_figures(df, lo, hi, windows, np, pd)
    out["compute_s"] = time.perf_counter() - started
    out["hwm_kb"] = status_kb("VmHWM")
    return out


def pandas_figures(df, lo, hi, windows, np, pd) -> dict:
    """The report's counts and sums per (local day, queue), per day, and not-offered per day."""
    lo_ts, hi_ts = pd.Timestamp(lo), pd.Timestamp(hi)
    q = df["queue_entered_at"]
    offered_all = df[q.notna()]
    # Repeat contacts: the same caller's next offered call (entered up to hi + window); a
    # callback is nobody's repeat contact.
    callers = offered_all[offered_all["source"] != "callback"]
    callers = callers[callers["caller_key"].notna()].sort_values(["caller_key", "queue_entered_at", "id"])
    next_q = callers.groupby("caller_key", observed=True)["queue_entered_at"].shift(-1)
    off = offered_all[(offered_all["queue_entered_at"] >= lo_ts) & (offered_all["queue_entered_at"] < hi_ts)].copy()
    off["next_q"] = next_q.reindex(off.index)

    answered = off["answered_at"].notna()
    abandoned = off["answered_at"].isna() & off["ended_at"].notna()
    wait = (off["answered_at"].where(answered, off["ended_at"]) - off["queue_entered_at"])
    wait = wait.clip(lower=pd.Timedelta(0))
    t = pd.Timedelta(seconds=THRESHOLD)
    short = pd.Timedelta(seconds=SHORT_ABANDON)
    handled = answered & off["talk_seconds"].notna()
    identified = answered & off["caller_key"].notna() & (off["source"] != "callback")
    data_end = pd.Timestamp(hi)
    cols = pd.DataFrame({
        "day": off["queue_entered_at"].dt.tz_convert(TZ_NAME).dt.tz_localize(None).dt.floor("D"),
        "queue": off["queue"].cat.add_categories(["(no queue)"]).fillna("(no queue)"),
        "offered": 1,
        "answered": answered,
        "abandoned": abandoned,
        "answered_within": answered & (wait <= t),
        "abandoned_within": abandoned & (wait <= t),
        "short_abandoned": abandoned & (wait <= short),
        "answered_wait_total": wait.dt.total_seconds().where(answered, 0.0),
        "talk_total": off["talk_seconds"].where(handled, 0),
        "handled": handled,
        "hold_total": off["hold_seconds"].fillna(0).where(handled, 0),
        "wrap_up_total": off["wrap_up_seconds"].fillna(0).where(handled, 0),
        "disposed": answered & off["disposition"].notna(),
        "resolved": answered & (off["disposition"] == "resolved"),
        "unidentified_callers": answered & ~identified,
    })
    for w in windows:
        span = pd.Timedelta(days=w)
        in_base = identified & (off["queue_entered_at"] + span <= data_end)
        cols[f"fcr_repeat_{w}d_base"] = in_base
        cols[f"fcr_repeat_{w}d_repeated"] = in_base & ((off["next_q"] - off["queue_entered_at"]) <= span)
    by = cols.groupby(["day", "queue"], observed=True).sum()
    per_day = by.groupby(level="day").sum()

    def derive(frame) -> dict:
        frame = frame.copy()
        frame["in_progress"] = frame["offered"] - frame["answered"] - frame["abandoned"]
        frame["asa_seconds"] = frame["answered_wait_total"] / frame["answered"].replace(0, np.nan)
        h = frame["handled"].replace(0, np.nan)
        frame["aht_seconds"] = (frame["talk_total"] + frame["hold_total"] + frame["wrap_up_total"]) / h
        frame["mean_talk_seconds"] = frame["talk_total"] / h
        out = {}
        for key, row in zip(frame.index, frame.to_dict("records")):
            day, *rest = key if isinstance(key, tuple) else (key,)
            out["|".join([day.strftime("%Y-%m-%d"), *rest])] = {
                k: (None if v is None or v != v else float(v)) for k, v in row.items()}
        return out

    # Calls never offered: per local day of arrival, by outcome (status if none).
    no = df[q.isna() & (df["arrived_at"] >= lo_ts) & (df["arrived_at"] < hi_ts)]
    kind = no["outcome"].astype(object).fillna(no["status"].astype(object).replace({"ivr": "in_ivr"}))
    no_day = no["arrived_at"].dt.tz_convert(TZ_NAME).dt.tz_localize(None).dt.floor("D")
    not_offered = kind.groupby([no_day, kind]).size()
    no_out: dict = {}
    for (day, k), n in not_offered.items():
        no_out.setdefault(day.strftime("%Y-%m-%d"), {})[k] = int(n)
    return {"rows": derive(by), "days": derive(per_day), "not_offered": no_out}


# ---------------------------------------------------------------------------------------------
# Comparison and the parent's orchestration

def compare(product: dict, figures: dict, windows: list[int]) -> list[str]:
    """Every mismatch between the product's report and the pandas figures, as text."""
    problems: list[str] = []
    counts = COUNT_FIELDS + tuple(f"fcr_repeat_{w}d_{k}" for w in windows for k in ("base", "repeated"))

    def check(where: str, mine: dict, theirs: dict | None) -> None:
        if theirs is None:
            if mine["offered"]:
                problems.append(f"{where}: in the product's report, not in pandas's")
            return
        for k in counts:
            if int(mine[k]) != int(theirs[k]):
                problems.append(f"{where} {k}: product {mine[k]} pandas {theirs[k]}")
        for k in SECOND_FIELDS:
            a, b = mine[k], theirs[k]
            if (a is None) != (b is None) or (a is not None and abs(a - b) > 1e-6):
                problems.append(f"{where} {k}: product {a} pandas {b}")

    seen = set()
    for interval in product["intervals"]:
        day = interval["label"]
        check(day, interval["total"], figures["days"].get(day))
        for row in interval["rows"]:
            key = f"{day}|{row['queue']}"
            seen.add(key)
            check(key, row, figures["rows"].get(key))
        mine_no = interval["total"].get("not_offered", {})
        theirs_no = figures["not_offered"].get(day, {})
        if mine_no != theirs_no:
            problems.append(f"{day} not offered: product {mine_no} pandas {theirs_no}")
    for key in figures["rows"]:
        if key not in seen:
            problems.append(f"{key}: in pandas's figures, not in the product's report")
    return problems


def run_child(args, mode: str, fcr: tuple[int, ...]) -> dict:
    """Run this script as a worker ``mode`` in a child process; return its JSON result."""
    with tempfile.NamedTemporaryFile(prefix="report-bench-", suffix=".json", delete=False) as fh:
        result_path = fh.name
    cmd = [sys.executable, __file__, "--worker", mode, "--result", result_path,
           "--db-url", args.db_url, "--month", args.month, "--runs", str(args.runs),
           "--fcr", *[str(w) for w in fcr]]
    try:
        subprocess.run(cmd, check=True)
        with open(result_path) as fh:
            return json.load(fh)
    finally:
        os.unlink(result_path)


def fmt_rate(x) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def fmt_s(x) -> str:
    return "–" if x is None else f"{x:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    server = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--db-url", default=server.rsplit("/", 1)[0] + "/bench_report",
                        help="the database to create (dropped first if it exists)")
    parser.add_argument("--month", default="2026-10", help="YYYY-MM, local time Europe/Tallinn")
    parser.add_argument("--runs", type=int, default=2, help="report runs per variant (last quoted)")
    parser.add_argument("--seed", type=int, default=20261025)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--reuse", action="store_true",
                        help="use the calls of a kept database instead of generating them")
    parser.add_argument("--explain", action="store_true",
                        help="print EXPLAIN (ANALYZE, BUFFERS) of the product's query")
    parser.add_argument("--worker", choices=("product", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--fcr", type=int, nargs="*", default=list(FCR_WINDOWS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from db import normalise_url
    args.db_url = normalise_url(args.db_url)

    if args.worker:
        result = product_worker(args) if args.worker == "product" else pandas_worker(args)
        with open(args.result, "w") as fh:
            json.dump(result, fh)
        return 0

    try:
        import pandas  # noqa: F401
    except ImportError:
        print("pandas is missing: .venv/bin/pip install -e '.[bench]'", file=sys.stderr)
        return 2
    first, last, lo, hi = month_range(args.month)
    try:
        reused = create_database(args.db_url, args.reuse)
        if not reused:
            migrate(args.db_url)
    except Exception as exc:  # noqa: BLE001 (report any set-up failure)
        print(f"cannot create {args.db_url}: {exc}", file=sys.stderr)
        return 2
    status = 0
    try:
        if reused:
            print(f"set-up: reusing the calls in {args.db_url}")
            load_times = {}
        else:
            print(f"set-up: generating {args.calls:,} calls {first}..{last} ({TZ_NAME}) into "
                  f"{args.db_url.rsplit('/', 1)[1]} …", flush=True)
            load_times = load(args.db_url, args.calls, args.month, args.seed)
            for k, v in load_times.items():
                print(f"  {k}: {v:,.2f}" + ("" if "GiB" in k else " s"))
        import psycopg
        with psycopg.connect(psycopg_url(args.db_url)) as conn:
            n_calls = conn.execute("SELECT count(*) FROM calls").fetchone()[0]

        if args.explain:
            for windows in (tuple(FCR_WINDOWS), ()):
                print(f"\nEXPLAIN ANALYZE, offered-calls query, fcr_windows={windows}:")
                print(explain(args.db_url, args.month, windows))

        print("\nproduct: run_report by day × queue …", flush=True)
        with_fcr = run_child(args, "product", FCR_WINDOWS)
        without_fcr = run_child(args, "product", ())
        for label, r in (("with FCR 1 d + 7 d", with_fcr), ("without FCR", without_fcr)):
            print(f"  {label}: runs " + ", ".join(f"{t:.2f} s" for t in r["times"])
                  + f"; peak RSS {mib(r['hwm_kb'])} (after imports {mib(r['baseline_kb'])})")

        print("pandas: COPY … TO CSV, read_csv, the same figures …", flush=True)
        pd_result = run_child(args, "pandas", FCR_WINDOWS)
        print(f"  export {pd_result['export_s']:.2f} s ({pd_result['csv_bytes'] / 1024**2:,.0f} MiB "
              f"CSV, {pd_result['rows']:,} rows), read_csv {pd_result['read_s']:.2f} s, "
              f"compute {pd_result['compute_s']:.2f} s; peak RSS {mib(pd_result['hwm_kb'])}")

        problems = compare(with_fcr["report"], pd_result["figures"], list(FCR_WINDOWS))
        # The report without FCR must give the same counts as the one with it.
        problems += [f"without FCR: {p}" for p in compare(without_fcr["report"],
                                                          pd_result["figures"], [])]
        for p in problems[:50]:
            print("MISMATCH " + p)
        if len(problems) > 50:
            print(f"… and {len(problems) - 50} more mismatches")
        status = 1 if problems else 0

        total = with_fcr["report"]["total"]
        warm_fcr, warm_plain = with_fcr["times"][-1], without_fcr["times"][-1]
        pandas_all = pd_result["export_s"] + pd_result["read_s"] + pd_result["compute_s"]
        rows = sum(len(i["rows"]) for i in with_fcr["report"]["intervals"])
        print("\n=== summary ===")
        print(f"calls in the database        {n_calls:,} ({first}..{last}, {TZ_NAME}; "
              f"{len(with_fcr['report']['intervals'])} days, {rows} day × queue rows)")
        if load_times:
            print(f"generate + COPY load         {load_times['generate + COPY']:.1f} s "
                  f"(+ indexes {load_times['indexes + constraints']:.1f} s, ANALYZE "
                  f"{load_times['ANALYZE']:.1f} s; table + indexes "
                  f"{load_times['table size (GiB)']:.2f} GiB)")
        print(f"product report, warm         with FCR 1+7 d {warm_fcr:.2f} s; "
              f"without FCR {warm_plain:.2f} s  (cold: {with_fcr['times'][0]:.2f} s / "
              f"{without_fcr['times'][0]:.2f} s)")
        print(f"pandas                       compute only {pd_result['compute_s']:.2f} s; "
              f"export {pd_result['export_s']:.2f} s + read_csv {pd_result['read_s']:.2f} s "
              f"+ compute = {pandas_all:.2f} s")
        print(f"ratio pandas / product       compute only {pd_result['compute_s'] / warm_fcr:.2f}×; "
              f"export + read + compute {pandas_all / warm_fcr:.2f}×  (vs the product with FCR)")
        print(f"peak RSS                     product {mib(with_fcr['hwm_kb'])} (with FCR), "
              f"{mib(without_fcr['hwm_kb'])} (without) — PostgreSQL's own memory not included; "
              f"pandas {mib(pd_result['hwm_kb'])}")
        print(f"figures                      {'MATCH' if not problems else f'{len(problems)} MISMATCHES'} "
              f"(every count per day × queue and per day, ASA/AHT/talk to 1e-6 s, "
              f"not-offered per day)")
        print(f"month total                  offered {total['offered']:,}, answered "
              f"{total['answered']:,}, abandoned {total['abandoned']:,} (short "
              f"{total['short_abandoned']:,}); " + ", ".join(
                  f"{k} {fmt_rate(total[k])}" for k in RATE_FIELDS[:5]))
        print(f"                             answer rate {fmt_rate(total['answer_rate'])}, "
              f"abandonment {fmt_rate(total['abandonment_rate'])}, ASA {fmt_s(total['asa_seconds'])}, "
              f"AHT {fmt_s(total['aht_seconds'])}, talk {fmt_s(total['mean_talk_seconds'])}, "
              + ", ".join(f"FCR {w} d {fmt_rate(total[f'fcr_repeat_{w}d'])} "
                          f"(base {total[f'fcr_repeat_{w}d_base']:,})" for w in FCR_WINDOWS)
              + f", disposition FCR {fmt_rate(total['fcr_disposition'])}")
    finally:
        if not args.keep:
            drop_database(args.db_url)
    return status


if __name__ == "__main__":
    sys.exit(main())
