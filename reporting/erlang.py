"""Queueing-theory benchmarks for the ACD: Erlang C (M/M/N) and Erlang A (M/M/N+M, Palm's model).

Pure functions, no Flask, no database. Units throughout: times in **seconds**, rates **per
second** (``arrival_rate`` λ calls/s, service rate μ = 1 / mean talk time, patience rate
θ = 1 / mean patience), offered load a = λ/μ in Erlangs, ``agents`` N an integer.

The figures are those the product reports (:mod:`reporting.metrics`), for a caller arriving in
steady state (PASTA: Poisson arrivals see time averages):

* service level = P(answered with wait ≤ t) = answered within t / offered (``sl_offered``:
  abandoned calls count against it, also those that abandoned within t);
* abandonment rate = P(abandon) = abandoned / offered;
* ASA = E[wait | answered];
* P(wait > 0) = P(an arriving caller finds all N agents busy).

No PyPI library computes Erlang A (pyworkforce, erlanglib and call-center-tools do Erlang B/C
only; pyworkforce would also bring numpy, pandas and ortools), so both models are implemented
here from their definitions.

Sources: N. Gans, G. Koole, A. Mandelbaum, "Telephone call centers: tutorial, review, and
research prospects", MSOM 5(2), 2003 (Erlang C); O. Garnett, A. Mandelbaum, M. Reiman,
"Designing a call center with impatient customers", MSOM 4(3), 2002 (the M/M/N+M birth–death
model); A. Mandelbaum, S. Zeltyn, "The Palm/Erlang-A queue, with applications to call centers",
Technion teaching note (waiting-time and service-level formulas).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# States of the birth–death chain are added until the next stationary probability is below
# this fraction of the total and falling (the tail left out is then far below it).
TAIL_EPSILON = 1e-16
MAX_STATES = 1_000_000


def _check(arrival_rate: float, service_rate: float, agents: int) -> None:
    if not (arrival_rate > 0 and math.isfinite(arrival_rate)):
        raise ValueError(f"arrival rate must be positive and finite, not {arrival_rate!r}")
    if not (service_rate > 0 and math.isfinite(service_rate)):
        raise ValueError(f"service rate must be positive and finite, not {service_rate!r}")
    if not (isinstance(agents, int) and agents >= 1):
        raise ValueError(f"agents must be a positive integer, not {agents!r}")


# --------------------------------------------------------------------------- Erlang B / C


def erlang_b(load: float, agents: int) -> float:
    """Erlang B blocking probability B(N, a) = (a^N/N!) / Σ_{k=0..N} a^k/k!  (a = load, Erlangs).

    Computed with the stable recursion B(0) = 1, B(n) = a·B(n−1) / (n + a·B(n−1)).
    """
    if load < 0 or not (isinstance(agents, int) and agents >= 0):
        raise ValueError("load must be ≥ 0 and agents a non-negative integer")
    b = 1.0
    for n in range(1, agents + 1):
        b = load * b / (n + load * b)
    return b


def erlang_c(load: float, agents: int) -> float:
    """Erlang C: probability that an arriving caller waits, M/M/N with a = λ/μ < N.

    C(N, a) = N·B(N, a) / (N − a·(1 − B(N, a)))
            = [a^N/N! · N/(N−a)] / [Σ_{k<N} a^k/k! + a^N/N! · N/(N−a)]
    (Gans, Koole & Mandelbaum 2003). Raises ValueError when a ≥ N (no steady state).
    """
    if not 0 <= load < agents:
        raise ValueError(f"Erlang C needs 0 ≤ load < agents (load {load}, agents {agents})")
    b = erlang_b(load, agents)
    return agents * b / (agents - load * (1 - b))


@dataclass(frozen=True)
class ErlangC:
    """M/M/N (no abandonment) figures for one arriving caller; times in seconds."""

    load: float           # a = λ/μ, Erlangs
    agents: int           # N
    threshold: float      # t, seconds
    p_wait: float         # C(N, a) = P(wait > 0)
    service_level: float  # P(wait ≤ t) = 1 − C·e^{−(Nμ−λ)t}
    asa: float            # E[wait] = C / (Nμ − λ), seconds (every caller is answered)
    occupancy: float      # a / N


def erlang_c_figures(arrival_rate: float, mean_service: float, agents: int,
                     threshold: float = 20.0) -> ErlangC:
    """Erlang C for λ = ``arrival_rate`` calls/s, mean talk ``mean_service`` s, N agents, SL threshold t s.

    The wait W of an M/M/N FCFS queue is 0 with probability 1 − C and exponential with rate
    Nμ − λ otherwise, so P(W > t) = C·e^{−(Nμ−λ)t} and E[W] = C/(Nμ − λ).
    Worked check: 100 calls per 30 min, AHT 180 s (a = 10 Erlangs), t = 20 s: 13 agents →
    C = 0.2853, SL 79.56 %; 14 agents → C = 0.1741, SL 88.84 %, ASA 7.8 s.
    """
    service_rate = 1.0 / mean_service
    _check(arrival_rate, service_rate, agents)
    load = arrival_rate * mean_service
    c = erlang_c(load, agents)
    drain = agents * service_rate - arrival_rate
    return ErlangC(load=load, agents=agents, threshold=threshold, p_wait=c,
                   service_level=1.0 - c * math.exp(-drain * threshold),
                   asa=c / drain, occupancy=load / agents)


# --------------------------------------------------------------------------- Erlang A


@dataclass(frozen=True)
class ErlangA:
    """M/M/N+M (Erlang A) figures for one arriving caller; times in seconds, rates per second.

    ``service_level`` is answered within ``threshold`` / offered (the product's ``sl_offered``),
    ``answered_within`` the same; ``sl_answered`` is answered within t / answered.
    """

    arrival_rate: float
    service_rate: float
    patience_rate: float
    agents: int
    threshold: float
    load: float             # a = λ/μ, Erlangs
    p_wait: float           # P(all N agents busy on arrival) = Σ_{n≥N} π_n
    p_abandon: float        # θ·E[queue length] / λ
    service_level: float    # P(wait ≤ t and answered)
    asa: float | None       # E[wait | answered], seconds
    mean_queue: float       # E[(n − N)^+], callers waiting
    occupancy: float        # E[min(n, N)] / N = λ(1 − P(abandon)) / (Nμ)
    states: int             # states of the truncated chain (n = 0 … states − 1)

    @property
    def p_answer(self) -> float:
        return 1.0 - self.p_abandon

    @property
    def sl_answered(self) -> float | None:
        return self.service_level / self.p_answer if self.p_answer > 0 else None


def stationary_distribution(arrival_rate: float, service_rate: float, agents: int,
                            patience_rate: float) -> list[float]:
    """Stationary π_n of the M/M/N+M birth–death chain, n = calls in the system.

    Births at rate λ; deaths at rate min(n, N)·μ + max(n − N, 0)·θ (serving agents finish,
    waiting callers run out of patience). Detailed balance gives
        π_n ∝ a^n / n!                                   for n ≤ N,
        π_n = π_N · Π_{j=1..n−N} λ / (Nμ + jθ)            for n > N
    (Garnett, Mandelbaum & Reiman 2002). The chain is truncated where π_n falls below
    ``TAIL_EPSILON`` of the total. With θ = 0 this is M/M/N, which needs λ < Nμ.
    """
    _check(arrival_rate, service_rate, agents)
    if patience_rate < 0 or not math.isfinite(patience_rate):
        raise ValueError(f"patience rate must be ≥ 0 and finite, not {patience_rate!r}")
    if patience_rate == 0 and arrival_rate >= agents * service_rate:
        raise ValueError("without abandonment the queue needs λ < Nμ")
    # Work with weights relative to the largest so far (no overflow for large N or load).
    weights = [1.0]
    for n in range(1, agents + 1):
        weights.append(weights[-1] * arrival_rate / (n * service_rate))
        if weights[-1] > 1e250:
            weights = [w / weights[-1] for w in weights]
    total = sum(weights)
    n = agents
    while True:
        n += 1
        ratio = arrival_rate / (agents * service_rate + (n - agents) * patience_rate)
        weights.append(weights[-1] * ratio)
        total += weights[-1]
        if ratio < 1 and weights[-1] < TAIL_EPSILON * total:
            break
        if len(weights) > MAX_STATES:
            raise ValueError("the queue does not settle within a million states "
                             "(load far above capacity with almost no abandonment)")
    return [w / total for w in weights]


def _poisson_weights(mean: float, tail: float = 1e-15) -> list[float]:
    """Poisson(mean) probabilities p_0 … p_M, M large enough that the rest is below ``tail``."""
    if mean == 0:
        return [1.0]
    top = int(mean + 12 * math.sqrt(mean) + 30)
    weights = [math.exp(-mean + m * math.log(mean) - math.lgamma(m + 1)) for m in range(top + 1)]
    while sum(weights) < 1 - tail and top < 10 * mean + 1000:
        top += 1
        weights.append(math.exp(-mean + top * math.log(mean) - math.lgamma(top + 1)))
    return weights


def answered_within(pi: list[float], agents: int, service_rate: float, patience_rate: float,
                    threshold: float) -> float:
    """P(answered with wait ≤ t) for an arriving caller (t = ``threshold`` s).

    A caller who finds n < N in the system is answered at once (wait 0). One who finds
    n = N + k (k callers waiting ahead) would be answered after the *virtual wait*
    V_k = X_k + … + X_0, X_j ~ Exp(r_j), r_j = Nμ + jθ: with j callers ahead, the next one
    moves up when an agent frees (Nμ) or one of the j ahead abandons (jθ); at the head (j = 0)
    only an agent can take the caller. The caller's own patience τ ~ Exp(θ) is independent, and
    they are answered within t iff V_k ≤ t and τ > V_k:
        SL = Σ_{n<N} π_n + Σ_k π_{N+k} · E[e^{−θ V_k} ; V_k ≤ t]
    (Mandelbaum & Zeltyn, waiting-time distribution of Erlang A). Computed for all k at
    once by uniformization of the pure-death chain "callers ahead" with killing rate θ: every
    term is a probability, so nothing cancels (the partial-fraction form of the hypoexponential
    does, badly, for large k).
    """
    within = sum(pi[:agents])
    if threshold < 0:
        return 0.0
    ahead = pi[agents:]  # ahead[k] = π_{N+k}: an arrival finds k callers waiting
    if not ahead or threshold == 0:
        return within
    top = len(ahead) - 1
    uniform = agents * service_rate + top * patience_rate + patience_rate
    state = list(ahead)  # probability of k ahead after m uniformized steps, not absorbed
    served = 0.0  # absorbed into "answered" after m steps
    result = 0.0
    # One uniformized step: k → k−1 (k = 0: answered) w.p. r_k/Λ, abandon w.p. θ/Λ, else stay.
    move = [(agents * service_rate + k * patience_rate) / uniform for k in range(top + 1)]
    stay = [1.0 - move[k] - patience_rate / uniform for k in range(top + 1)]
    weights = _poisson_weights(uniform * threshold)
    remaining = 1.0  # P(Poisson(Λt) > m)
    for m, weight in enumerate(weights):
        # P(answered by t) = Σ_m P(Poisson(Λt) = m) · P(answered within m steps)
        remaining -= weight
        result += weight * served
        if m == len(weights) - 1:
            break
        served += state[0] * move[0]
        state = [state[k] * stay[k] + state[k + 1] * move[k + 1] for k in range(top)] + \
                [state[top] * stay[top]]
        if sum(state) < 1e-17:  # all answered or abandoned: later steps add nothing
            result += max(remaining, 0.0) * served
            break
    return within + result


def erlang_a(arrival_rate: float, mean_service: float, agents: int, mean_patience: float,
             threshold: float = 20.0) -> ErlangA:
    """Erlang A (M/M/N+M) for λ = ``arrival_rate`` calls/s, mean talk ``mean_service`` s (μ = 1/mean),
    N agents, mean patience ``mean_patience`` s (θ = 1/mean; ``math.inf`` = never abandons,
    which is Erlang C and needs λ < Nμ), SL threshold t s.

    Formulas (π from :func:`stationary_distribution`; PASTA):
        P(wait > 0)  = Σ_{n≥N} π_n
        P(abandon)   = θ·E[(n−N)^+] / λ      (abandonment flow = θ × mean queue length)
        SL           = :func:`answered_within`
        P(answered | k ahead)   = E[e^{−θV_k}] = Π_{j=0..k} r_j / (r_j + θ)
        E[wait; answered | k]   = E[V_k e^{−θV_k}] = Π_j r_j/(r_j+θ) · Σ_j 1/(r_j+θ)
        ASA = Σ_k π_{N+k} E[wait; answered | k] / (1 − P(abandon))
    (Garnett, Mandelbaum & Reiman 2002; Mandelbaum & Zeltyn).
    """
    service_rate = 1.0 / mean_service
    patience_rate = 0.0 if math.isinf(mean_patience) else 1.0 / mean_patience
    pi = stationary_distribution(arrival_rate, service_rate, agents, patience_rate)
    p_wait = sum(pi[agents:])
    mean_queue = sum(k * p for k, p in enumerate(pi[agents:]))
    p_abandon = patience_rate * mean_queue / arrival_rate
    wait_answered = 0.0
    survive, inverse_sum = 1.0, 0.0
    for k, p in enumerate(pi[agents:]):
        rate = agents * service_rate + k * patience_rate
        survive *= rate / (rate + patience_rate)
        inverse_sum += 1.0 / (rate + patience_rate)
        wait_answered += p * survive * inverse_sum
    p_answer = 1.0 - p_abandon
    return ErlangA(
        arrival_rate=arrival_rate, service_rate=service_rate, patience_rate=patience_rate,
        agents=agents, threshold=threshold, load=arrival_rate / service_rate, p_wait=p_wait,
        p_abandon=p_abandon,
        service_level=answered_within(pi, agents, service_rate, patience_rate, threshold),
        asa=wait_answered / p_answer if p_answer > 0 else None, mean_queue=mean_queue,
        occupancy=arrival_rate * p_answer / (agents * service_rate), states=len(pi))
