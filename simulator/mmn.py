"""A synthetic M/M/N+M workload through the real webhooks, measured against Erlang A / Erlang C.

The workload (all times in seconds, rates per second):

* callers arrive as a Poisson process of rate λ (exponential gaps, mean 1/λ);
* each goes through the IVR the same way (first language, first topic of the line: by default
  ``et.pension``), which takes the same few seconds for everyone, so queue entries are Poisson
  too; the service stamps the queue entry (``queue_entered_at``) when the topic is chosen;
* each caller has an exponential patience τ (mean 1/θ) counted from that queue entry, and hangs
  up when their wait reaches it (``--patience inf``: nobody abandons, the Erlang C case);
* N agents, each with only that queue's skill, are logged in from the start; they answer an
  offer at once (0 s ring: the answer is at the same virtual instant as the offer), talk for an
  exponential time S (mean 1/μ; the agent's recording whisper is the first seconds of S, so the
  agent leg lasts exactly S), have no wrap-up (they say "available" through the agent API as
  soon as a call ends) and stay until the last caller is done.

Everything the service does is real: signed webhooks, its dispatch (longest-waiting caller
first, longest-idle agent), the agent API, REST redirects of waiting callers, status callbacks.
The figures come from the call log the service wrote, through the product's own metric code
(:func:`reporting.metrics.classify_offered` and :class:`~reporting.metrics.MetricsAccumulator`,
which ``flask report`` folds its rows with): offered, service level (answered within 20 s /
offered), abandonment rate (abandoned / offered), ASA.

Output analysis: the first ``warmup`` calls (by arrival) are discarded (the centre starts empty);
the rest is cut into ``batches`` consecutive batches of equal size (a remainder at the end is
dropped) and the 95 % confidence interval is the batch-means interval
mean ± t(0.975, B−1)·s/√B (Law & Kelton, *Simulation Modeling and Analysis*, §9.5.3).

The same draws are also run through :func:`ideal_queue`, a few-line FCFS M/M/N+M recursion with
no service in it: if the ACD serves callers in order of arrival with N agents, every call has
the same outcome and wait there as through the webhooks.
"""
from __future__ import annotations

import heapq
import math
import random
import statistics
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from simulator.engine import (CENTRE_TZ, Options, Result, Shift, SimCall, Simulation,
                              SimulationError, new_sid)

DEFAULT_START = datetime(2030, 1, 7, 8, 0, tzinfo=CENTRE_TZ)  # a Monday morning, local time
DEFAULT_QUEUE = "et.pension"
LOGIN_LEAD = 60.0  # agents log in at virtual second 0, the first caller may come from 60 s on


# --------------------------------------------------------------------------- the workload


@dataclass(frozen=True)
class Workload:
    """An M/M/N+M setting. ``rate`` calls/s; ``mean_talk``, ``mean_patience`` (inf: never
    abandons) and ``threshold`` in seconds; ``calls`` placed, of which the first ``warmup`` are
    not measured; ``batches`` for the confidence interval."""

    rate: float
    agents: int
    mean_talk: float
    mean_patience: float
    calls: int
    seed: int = 1
    warmup: int | None = None  # default: 10 % of the calls
    batches: int = 20
    threshold: float = 20.0
    queue: str = DEFAULT_QUEUE

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError("the arrival rate must be positive")
        if self.agents < 1:
            raise ValueError("at least one agent")
        if not (self.mean_talk > 0 and math.isfinite(self.mean_talk)):
            raise ValueError("the mean talk time must be positive")
        if not self.mean_patience > 0:
            raise ValueError("the mean patience must be positive (inf: never abandons)")
        if math.isinf(self.mean_patience) and self.rate * self.mean_talk >= self.agents:
            raise ValueError("without abandonment the load λ/μ must be below the number of agents")
        if self.batches < 2:
            raise ValueError("at least two batches")
        if self.measured // self.batches < 1:
            raise ValueError("fewer measured calls than batches")

    @property
    def skip(self) -> int:
        return self.warmup if self.warmup is not None else self.calls // 10

    @property
    def measured(self) -> int:
        return self.calls - self.skip

    @property
    def batch_size(self) -> int:
        return self.measured // self.batches

    @property
    def load(self) -> float:
        """Offered load a = λ/μ in Erlangs."""
        return self.rate * self.mean_talk

    def theory(self):
        """Erlang A for this setting (Erlang C when patience is infinite)."""
        from reporting.erlang import erlang_a

        return erlang_a(self.rate, self.mean_talk, self.agents, self.mean_patience, self.threshold)


@dataclass(frozen=True)
class Draw:
    """One caller: arrival (virtual s, before the IVR), talk time and patience (s; None = ∞)."""

    arrival: float
    talk: float
    patience: float | None


def draw_workload(workload: Workload) -> list[Draw]:
    """The callers of ``workload``, from ``random.Random(seed)``: per caller, in order, an
    exponential gap (mean 1/λ), talk time (mean 1/μ) and unit patience scaled by the mean."""
    rng = random.Random(workload.seed)
    draws, now = [], LOGIN_LEAD
    for _ in range(workload.calls):
        now += rng.expovariate(workload.rate)
        talk = rng.expovariate(1.0 / workload.mean_talk)
        unit = rng.expovariate(1.0)
        patience = None if math.isinf(workload.mean_patience) else unit * workload.mean_patience
        draws.append(Draw(now, talk, patience))
    return draws


def ideal_queue(draws: list[Draw], agents: int) -> list[tuple[bool, float]]:
    """(answered, wait) per caller of an FCFS M/M/N+M queue fed with ``draws``; no service involved.

    Callers are taken in arrival order; each is answered when the first of the N agents frees
    (at once if one is free), unless their patience runs out before: then they abandon and
    occupy nobody. FCFS makes this exact: a later caller is never answered before an earlier
    one. The wait of an abandoned caller is their patience.
    """
    free = [0.0] * agents  # when each agent is next free (a heap)
    out: list[tuple[bool, float]] = []
    for draw in draws:
        start = max(draw.arrival, free[0])
        wait = start - draw.arrival
        if draw.patience is not None and wait > draw.patience:
            out.append((False, draw.patience))
            continue
        heapq.heapreplace(free, start + draw.talk)
        out.append((True, wait))
    return out


# --------------------------------------------------------------------------- statistics


def t_quantile(p: float, df: int) -> float:
    """Student t quantile: exact for 1 and 2 degrees of freedom, else the Cornish–Fisher expansion
    (Abramowitz & Stegun 26.7.5), within 0.004 of the exact value from df = 3 on
    (t(0.975, 3) = 3.182, t(0.975, 19) = 2.093)."""
    if df < 1:
        raise ValueError("at least one degree of freedom")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p)))
    z = statistics.NormalDist().inv_cdf(p)
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3 + g4 / df ** 4


@dataclass(frozen=True)
class Interval:
    """A point estimate and its batch-means confidence interval."""

    estimate: float
    low: float
    high: float
    batches: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def batch_means(values: list[float], estimate: float | None = None,
                confidence: float = 0.95) -> Interval:
    """mean ± t((1+c)/2, B−1) · s / √B over the batch values (centred on ``estimate`` if given)."""
    count = len(values)
    centre = statistics.fmean(values) if estimate is None else estimate
    half = t_quantile((1 + confidence) / 2, count - 1) * statistics.stdev(values) / math.sqrt(count)
    return Interval(centre, centre - half, centre + half, count)


# --------------------------------------------------------------------------- the simulation


class MMNSimulation(Simulation):
    """The simulator's provider, callers and agents, with the M/M/N+M workload instead of records."""

    def __init__(self, workload: Workload, *, settings: dict[str, Any],
                 options: Options | None = None, start: datetime = DEFAULT_START):
        self.workload = workload
        self.draws = draw_workload(workload)
        self.start = start.astimezone(timezone.utc)
        self.ended_calls = 0
        # Patience is the workload's (None: waits as long as needed, no --max-wait); agents answer
        # at once, have no wrap-up, and the whisper is part of the talk time.
        options = replace(options or Options(), max_wait=0.0, answer_delay=0.0, wrap_up=0.0,
                          whisper_in_talk=True)
        names = [f"MMN{i + 1:03d}" for i in range(workload.agents)]
        super().__init__([], day=start.astimezone(CENTRE_TZ).date(), talk_pool=[1],
                         shifts=[Shift(name, self.start, self.start) for name in names],
                         settings=settings, options=options)
        self.result.rows = len(self.calls)

    def _origin(self) -> datetime:
        return self.start

    def _make_calls(self) -> list[SimCall]:
        calls = []
        for index, draw in enumerate(self.draws):
            calls.append(SimCall(
                record=None, sid=new_sid("CA"), from_number=f"+3725{index % 10 ** 7:07d}",
                arrival=draw.arrival, keys=[], patience=draw.patience, talk=draw.talk,
                ivr_abandon=False))
        return calls

    def _agent_skills(self, config) -> list[str]:
        """Only the workload's queue; also gives every caller the menu keys that lead to it."""
        if self.workload.queue not in config.queue_names():
            raise SimulationError(f"queue {self.workload.queue!r} is not in the line configuration")
        language, topic = self.workload.queue.split(".", 1)
        language_key = next(k for k, code in config.language_keys().items() if code == language)
        topic_keys = [k for k, option in config.topic_menu.items() if option.topic == topic]
        if topic == config.general_topic:
            topic_keys = [config.person_key]  # "a person": the language's general queue
        if not topic_keys:
            raise SimulationError(f"no topic-menu key leads to {self.workload.queue!r}")
        for call in self.calls:
            call.keys = [language_key, topic_keys[0]]
        return [self.workload.queue]

    def _schedule(self) -> float:
        for agent in self.agents:
            self.at(0.0, self.shift_starts, agent)
        for call in self.calls:
            self.at(call.arrival, self.call_arrives, call)
        return max(c.arrival for c in self.calls)

    def gather_input(self, call: SimCall, verb, digits: str) -> None:
        # The service stamps the queue entry when the topic is chosen: patience runs from then,
        # so the caller's wait and the service's measured wait start at the same instant.
        if urlsplit(self._resolve(call, verb.get("action"))).path.endswith("/ivr/topic"):
            self.start_patience(call)
        super().gather_input(call, verb, digits)

    def finish(self, call: SimCall, reason: str) -> None:
        already = call.state == "ended"
        super().finish(call, reason)
        if not already:
            self.ended_calls += 1
            if self.ended_calls == len(self.calls):  # the last caller is done: agents log off
                for agent in self.agents:
                    self.later(0, self.shift_ends, agent)


# --------------------------------------------------------------------------- measuring


@dataclass
class CallTimes:
    """What the call log says about one simulated call (aware UTC times)."""

    sid: str
    arrived_at: datetime | None
    queue_entered_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    talk_seconds: int | None
    outcome: str | None


@dataclass
class Figures:
    """The product's figures over a set of calls (from :class:`reporting.metrics.MetricsAccumulator`)."""

    offered: int
    answered: int
    abandoned: int
    in_progress: int
    answered_within: int
    service_level: float | None
    abandonment_rate: float | None
    asa: float | None


@dataclass
class MMNRun:
    """A finished run: the setting, the simulation, the figures, the theory and the comparisons."""

    workload: Workload
    result: Result
    calls: list[CallTimes]
    total: Figures  # measured calls (after the warm-up)
    everything: Figures  # all calls, warm-up included
    batches: list[Figures]
    service_level: Interval
    abandonment: Interval
    asa: Interval | None
    theory: Any  # reporting.erlang.ErlangA
    ideal: Figures  # the ideal FCFS queue with the same draws, measured calls
    mismatches: list[str] = field(default_factory=list)
    ivr_seconds: tuple[float, float] = (0.0, 0.0)  # min, max of queue entry − arrival
    days: tuple[date, date] | None = None


def read_call_log(session, sids: list[str]) -> list[CallTimes]:
    """The call-log rows of ``sids``, in the order given."""
    from sqlalchemy import select

    from ivr.models import Call

    rows: dict[str, CallTimes] = {}
    for start in range(0, len(sids), 500):
        stmt = select(Call.call_sid, Call.arrived_at, Call.queue_entered_at, Call.answered_at,
                      Call.ended_at, Call.talk_seconds, Call.outcome).where(
            Call.call_sid.in_(sids[start:start + 500]))
        for row in session.execute(stmt):
            rows[row[0]] = CallTimes(*row)
    return [rows.get(sid) or CallTimes(sid, None, None, None, None, None, None) for sid in sids]


def product_figures(calls: list[CallTimes], threshold: float) -> Figures:
    """Fold the calls with the product's metric code, exactly as ``flask report`` folds its rows."""
    from reporting.metrics import MetricsAccumulator, classify_offered

    acc = MetricsAccumulator(threshold)
    for call in calls:
        if call.queue_entered_at is not None:
            acc.add(classify_offered(call.queue_entered_at, call.answered_at, call.ended_at,
                                     call.talk_seconds))
    return Figures(acc.offered, acc.answered, acc.abandoned, acc.in_progress, acc.answered_within,
                   acc.sl_offered, acc.abandonment_rate, acc.asa)


def ideal_figures(outcomes: list[tuple[bool, float]], threshold: float) -> Figures:
    """The same figures for :func:`ideal_queue` outcomes, with the product's metric code."""
    from reporting.metrics import ABANDONED, ANSWERED, CallRecord, MetricsAccumulator

    acc = MetricsAccumulator(threshold)
    for answered, wait in outcomes:
        acc.add(CallRecord(ANSWERED if answered else ABANDONED, wait))
    return Figures(acc.offered, acc.answered, acc.abandoned, acc.in_progress, acc.answered_within,
                   acc.sl_offered, acc.abandonment_rate, acc.asa)


def compare_with_ideal(calls: list[CallTimes], ideal: list[tuple[bool, float]],
                       tolerance: float = 0.001) -> list[str]:
    """Calls whose outcome, or answered wait (± ``tolerance`` s), differs from the ideal queue."""
    out = []
    for index, (call, (answered, wait)) in enumerate(zip(calls, ideal)):
        if call.queue_entered_at is None:
            out.append(f"call {index} ({call.sid}) never entered a queue (outcome {call.outcome})")
            continue
        if (call.outcome == "answered") != answered or call.outcome not in ("answered", "abandoned"):
            out.append(f"call {index} ({call.sid}): service says {call.outcome}, FCFS queue says "
                       f"{'answered' if answered else 'abandoned'} after {wait:.3f} s")
            continue
        if answered:
            waited = (call.answered_at - call.queue_entered_at).total_seconds()
            if abs(waited - wait) > tolerance:
                out.append(f"call {index} ({call.sid}): answered after {waited:.3f} s, FCFS queue "
                           f"answers after {wait:.3f} s")
    return out


def run_mmn(workload: Workload, settings: dict[str, Any], *, options: Options | None = None,
            start: datetime = DEFAULT_START) -> MMNRun:
    """Run ``workload`` through the service configured by ``settings`` and measure it."""
    from db import get_session

    simulation = MMNSimulation(workload, settings=settings, options=options, start=start)
    result = simulation.run()
    sids = result.call_sids
    with simulation.app.app_context():
        session = get_session()
        try:
            calls = read_call_log(session, sids)
        finally:
            session.close()
    simulation.app.extensions["db_engine"].dispose()
    threshold = workload.threshold
    skip, size = workload.skip, workload.batch_size
    measured = calls[skip:]
    batches = [product_figures(measured[b * size:(b + 1) * size], threshold)
               for b in range(workload.batches)]
    total = product_figures(measured, threshold)
    if total.offered == 0 or any(b.offered == 0 for b in batches):
        raise SimulationError("no offered calls in a batch: see the simulator's errors "
                              + "; ".join(result.errors[:3]))
    asa_values = [b.asa for b in batches]
    ideal = ideal_queue(simulation.draws, workload.agents)
    entries = [(c.queue_entered_at - c.arrived_at).total_seconds() for c in calls
               if c.queue_entered_at is not None and c.arrived_at is not None]
    local = [c.arrived_at.astimezone(CENTRE_TZ).date() for c in calls if c.arrived_at is not None]
    return MMNRun(
        workload=workload, result=result, calls=calls, total=total,
        everything=product_figures(calls, threshold), batches=batches,
        service_level=batch_means([b.service_level for b in batches], total.service_level),
        abandonment=batch_means([b.abandonment_rate for b in batches], total.abandonment_rate),
        asa=(batch_means(asa_values, total.asa)
             if total.asa is not None and None not in asa_values else None),
        theory=workload.theory(), ideal=ideal_figures(ideal[skip:], threshold),
        mismatches=compare_with_ideal(calls, ideal),
        ivr_seconds=(min(entries), max(entries)) if entries else (0.0, 0.0),
        days=(min(local), max(local)) if local else None)


# --------------------------------------------------------------------------- the printout


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def _ci_pct(interval: Interval) -> str:
    return f"[{100 * interval.low:.2f}, {100 * interval.high:.2f}] %"


def _secs(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def format_mmn_report(run: MMNRun) -> str:
    """The plain-text summary printed by ``flask simulate mmn``."""
    w, r, theory = run.workload, run.result, run.theory
    erlang_c = math.isinf(w.mean_patience)
    name = "Erlang C" if erlang_c else "Erlang A"
    patience = "∞ (nobody abandons)" if erlang_c else f"{w.mean_patience:g} s"
    lines = [
        f"M/M/N+M through the webhooks: λ = {w.rate:g} calls/s (one per {1 / w.rate:.3g} s), "
        f"N = {w.agents} agents, mean talk 1/μ = {w.mean_talk:g} s, mean patience 1/θ = {patience}",
        f"  offered load a = λ/μ   {w.load:.3f} Erlangs ({w.load / w.agents:.3f} per agent)",
        f"  calls                  {w.calls} placed, seed {w.seed}; first {w.skip} discarded as "
        f"warm-up; {w.batches} batches of {w.batch_size} measured"
        + (f" ({w.measured - w.batches * w.batch_size} left over)" if w.measured % w.batches else ""),
        f"  queue                  {w.queue}; IVR {run.ivr_seconds[0]:.1f}–{run.ivr_seconds[1]:.1f} s "
        "before the queue entry " + ("(the same for every caller)"
                                     if run.ivr_seconds[1] - run.ivr_seconds[0] < 0.001 else
                                     "(NOT the same for every caller: queue entries are not Poisson)"),
        "  agents                 answer at once (0 s ring), no wrap-up; the recording whisper "
        "is part of the talk time",
        "  queue limits           none (the simulator lifts the configuration's max wait and length)",
        f"  webhook requests       {r.webhook_requests} (+ {r.api_requests} agent API requests), "
        f"REST redirects {r.rest_redirects}",
        f"  errors / anomalies     {len(r.errors)} / {len(r.anomalies)} (expected 0 / 0)",
        f"  wall clock             {r.wall_seconds:.1f} s",
        "",
        f"  {'measured calls':24}{'product':>10}{name:>11}   {'95 % CI (batch means)':<24}"
        f"{'inside':>7}",
    ]

    def row(label: str, value: str, expected: str, interval: str, inside: bool | None) -> str:
        mark = "" if inside is None else ("yes" if inside else "NO")
        return f"  {label:24}{value:>10}{expected:>11}   {interval:<24}{mark:>7}"

    t = f"{w.threshold:g}"
    lines += [
        row("offered", str(run.total.offered), "", "", None),
        row(f"service level ({t} s)", _pct(run.total.service_level), _pct(theory.service_level),
            _ci_pct(run.service_level), run.service_level.contains(theory.service_level)),
        row("abandonment rate", _pct(run.total.abandonment_rate), _pct(theory.p_abandon),
            _ci_pct(run.abandonment), run.abandonment.contains(theory.p_abandon)),
    ]
    if run.asa is not None and theory.asa is not None:
        lines.append(row("ASA", _secs(run.total.asa), _secs(theory.asa),
                         f"[{run.asa.low:.2f}, {run.asa.high:.2f}] s", run.asa.contains(theory.asa)))
    lines += [
        "",
        f"  {name}: P(wait > 0) {_pct(theory.p_wait)}, mean queue {theory.mean_queue:.3f}, "
        f"occupancy {_pct(theory.occupancy)}",
        f"  The same draws through an ideal FCFS M/M/N+M queue (no service involved): SL "
        f"{_pct(run.ideal.service_level)}, abandonment {_pct(run.ideal.abandonment_rate)}, "
        f"ASA {_secs(run.ideal.asa)};",
        f"  calls whose outcome or wait differs from it: {len(run.mismatches)} of {len(run.calls)}"
        + (" (expected 0)" if run.mismatches else ""),
    ]
    for line in run.mismatches[:5]:
        lines.append(f"    ! {line}")
    for error in r.errors[:5]:
        lines.append(f"  ! {error}")
    for anomaly in r.anomalies[:3]:
        lines.append(f"  ? {anomaly}")
    lines += [
        "",
        "Notes:",
        "  - Product figures: the call log the service wrote, folded with reporting.metrics (what",
        f"    flask report prints): SL = answered within {t} s / offered, abandonment = abandoned /",
        "    offered, ASA = mean wait of answered calls; wait = queue entry → agent answer.",
        "  - CI: mean ± t(0.975, B−1)·s/√B over the batches' figures. The figures are random: about",
        "    one run in 20 misses a true value by chance alone, more near full load with little",
        "    abandonment (waits stay correlated longer than a batch: 90 % coverage measured at",
        "    0.9 Erlang per agent without abandonment, 20 batches of 900 calls). The ideal queue",
        "    disagreeing with the service points at the ACD; a miss it shares does not.",
    ]
    if run.days:
        lines.append(f"  - All {w.calls} calls, warm-up included (same DATABASE_URL): flask --app app "
                     f"report --from {run.days[0]} --to {run.days[1]}")
    return "\n".join(lines)
