"""The ACD against queueing theory: Erlang C and Erlang A (M/M/N+M), and an M/M/N+M workload
through the real webhooks measured with the product's own metrics."""
from __future__ import annotations

import math
import statistics
from fractions import Fraction

import pytest

from reporting.erlang import (answered_within, erlang_a, erlang_b, erlang_c, erlang_c_figures,
                              stationary_distribution)
from simulator.mmn import (DEFAULT_START, Draw, Workload, batch_means, draw_workload,
                           ideal_figures, ideal_queue, run_mmn, t_quantile)

# --------------------------------------------------------------------------- helpers derived here


def _poisson(a: float, n: int) -> float:
    return math.exp(-a + n * math.log(a) - math.lgamma(n + 1))


def _erlang_c_exact(a: Fraction, n: int) -> Fraction:
    """Textbook Erlang C in exact rationals: [a^N/N! · N/(N−a)] / [Σ_{k<N} a^k/k! + a^N/N! · N/(N−a)]."""
    top = a ** n / math.factorial(n) * Fraction(n) / (n - a)
    return top / (sum(a ** k / math.factorial(k) for k in range(n)) + top)


# --------------------------------------------------------------------------- Erlang C


def test_erlang_c_worked_example_100_calls_per_half_hour():
    """100 calls per 30 min, AHT 180 s (a = 10 Erlangs), 80/20 target: 13 agents miss it
    (79.56 %), 14 agents meet it."""
    rate, aht = 100 / 1800, 180.0
    for agents in (13, 14):
        exact_c = _erlang_c_exact(Fraction(10), agents)
        expected_sl = 1 - float(exact_c) * math.exp(-(agents - 10) * 20 / aht)
        figures = erlang_c_figures(rate, aht, agents, threshold=20)
        assert figures.load == pytest.approx(10.0)
        assert figures.p_wait == pytest.approx(float(exact_c), rel=1e-12)
        assert figures.service_level == pytest.approx(expected_sl, rel=1e-12)
        assert figures.asa == pytest.approx(float(exact_c) * aht / (agents - 10), rel=1e-12)
    assert round(100 * erlang_c_figures(rate, aht, 13).service_level, 2) == 79.56
    assert erlang_c_figures(rate, aht, 14).service_level > 0.80
    # Erlang B from its definition, and C(1, a) = a (M/M/1: P(wait) = ρ).
    b = Fraction(10) ** 13 / math.factorial(13) / sum(Fraction(10) ** k / math.factorial(k)
                                                       for k in range(14))
    assert erlang_b(10.0, 13) == pytest.approx(float(b), rel=1e-12)
    assert erlang_c(0.7, 1) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        erlang_c(10.0, 10)


# --------------------------------------------------------------------------- Erlang A


@pytest.mark.parametrize("agents,load", [(13, 10.0), (14, 10.0), (1, 0.6), (20, 19.0)])
def test_erlang_a_without_abandonment_is_erlang_c(agents, load):
    aht = 180.0
    rate = load / aht
    c = erlang_c_figures(rate, aht, agents, threshold=20)
    for patience in (math.inf, 1e10):
        a = erlang_a(rate, aht, agents, patience, threshold=20)
        assert a.p_wait == pytest.approx(c.p_wait, rel=1e-6)
        assert a.service_level == pytest.approx(c.service_level, rel=1e-6)
        assert a.asa == pytest.approx(c.asa, rel=1e-6)
        assert a.p_abandon == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("agents,load,threshold", [(1, 0.8, 20.0), (5, 5.0, 20.0),
                                                   (10, 12.0, 30.0), (20, 24.0, 20.0)])
def test_erlang_a_with_patience_equal_to_talk_time_is_m_m_infinity(agents, load, threshold):
    """θ = μ: every caller leaves at rate μ whether talking or waiting, so the number of callers
    in the system is that of M/M/∞: Poisson(a). Then, with X ~ Poisson(a):
    P(wait > 0) = P(X ≥ N); P(abandon) = E[(X − N)^+] / a (abandonment flow θ·E[queue] over λ);
    and an arrival finding k waiting is answered within t with probability
    N/(N+k+1) · P(Binomial(N+k+1, 1 − e^{−μt}) ≥ k+1): its virtual wait (rates (N+j)μ, j = 0…k)
    is the (k+1)-th smallest of N+k i.i.d. Exp(μ) clocks, its own patience is one more such
    clock, and it must not be among the first k+1 of the N+k+1 (rank independent of the values).
    """
    mean_talk = 60.0
    mu = 1 / mean_talk
    figures = erlang_a(load * mu, mean_talk, agents, mean_talk, threshold)
    p = 1 - math.exp(-mu * threshold)
    tail = range(0, 400)
    p_wait = 1 - sum(_poisson(load, n) for n in range(agents))
    p_abandon = sum(k * _poisson(load, agents + k) for k in tail) / load
    sl = (1 - p_wait) + sum(
        _poisson(load, agents + k) * agents / (agents + k + 1)
        * sum(math.comb(agents + k + 1, i) * p ** i * (1 - p) ** (agents + k + 1 - i)
              for i in range(k + 1, agents + k + 2))
        for k in tail if _poisson(load, agents + k) > 1e-300)
    assert figures.p_wait == pytest.approx(p_wait, rel=1e-9)
    assert figures.p_abandon == pytest.approx(p_abandon, rel=1e-9)
    assert figures.service_level == pytest.approx(sl, rel=1e-9)
    pi = stationary_distribution(load * mu, mu, agents, mu)
    assert pi == pytest.approx([_poisson(load, n) for n in range(len(pi))], rel=1e-9, abs=1e-15)


def test_erlang_a_service_level_limits_and_the_two_abandonment_formulas_agree():
    rate, mean_talk, agents, patience = 0.1, 100.0, 10, 60.0
    pi = stationary_distribution(rate, 1 / mean_talk, agents, 1 / patience)
    figures = erlang_a(rate, mean_talk, agents, patience, threshold=20)
    # t = 0: only callers answered at once; t → ∞: everyone who is answered at all.
    assert answered_within(pi, agents, 1 / mean_talk, 1 / patience, 0) == \
        pytest.approx(1 - figures.p_wait)
    # P(answered) from the virtual waits, Σ_k π_{N+k} Π_j r_j/(r_j+θ), against θ·E[queue]/λ.
    theta, answered, survive = 1 / patience, sum(pi[:agents]), 1.0
    for k, p in enumerate(pi[agents:]):
        rate_k = agents / mean_talk + k * theta
        survive *= rate_k / (rate_k + theta)
        answered += p * survive
    assert answered == pytest.approx(1 - figures.p_abandon, rel=1e-9)
    assert answered_within(pi, agents, 1 / mean_talk, theta, 1e5) == \
        pytest.approx(answered, rel=1e-9)
    levels = [answered_within(pi, agents, 1 / mean_talk, theta, t) for t in (0, 5, 20, 60, 600)]
    assert levels == sorted(levels) and levels[2] == pytest.approx(figures.service_level)
    # More patience: fewer abandons, a longer queue and lower P(answered within 20 s | answered).
    impatient, patient = erlang_a(rate, mean_talk, agents, 30.0), erlang_a(rate, mean_talk, agents, 600.0)
    assert impatient.p_abandon > figures.p_abandon > patient.p_abandon
    assert impatient.sl_answered > figures.sl_answered > patient.sl_answered


def test_student_t_quantiles():
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(0.975, 2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(0.975, 4) == pytest.approx(2.776, abs=2e-3)
    assert t_quantile(0.975, 9) == pytest.approx(2.262, abs=1e-3)
    assert t_quantile(0.975, 19) == pytest.approx(2.093, abs=1e-3)
    assert t_quantile(0.995, 29) == pytest.approx(2.756, abs=1e-3)
    interval = batch_means([1.0, 2.0, 3.0])
    assert interval.estimate == 2.0 and interval.half_width == pytest.approx(4.303 / math.sqrt(3), abs=1e-3)


# --------------------------------------------------------------------------- the ideal queue


def test_ideal_fcfs_queue_by_hand():
    # One agent: A arrives at 0 and talks 10 s; B comes at 1 and waits 9 s (patience 20);
    # C comes at 2 with patience 5 and abandons; D comes at 3 and is answered at 10 + 4 = 14.
    draws = [Draw(0.0, 10.0, 100.0), Draw(1.0, 4.0, 20.0), Draw(2.0, 1.0, 5.0), Draw(3.0, 1.0, None)]
    assert ideal_queue(draws, 1) == [(True, 0.0), (True, 9.0), (False, 5.0), (True, 11.0)]
    # Two agents: B is answered at once (talks until 5), C at 5 (waits 3, talks until 6) and D,
    # who came after C, at 6 (waits 3), not before C.
    assert ideal_queue(draws, 2) == [(True, 0.0), (True, 0.0), (True, 3.0), (True, 3.0)]


def test_ideal_queue_agrees_with_erlang_a_over_many_calls():
    """The Erlang A formulas and the FCFS recursion, independently: 100,000 simulated calls after
    a warm-up must land inside a 99.9 % batch-means interval (20 batches of 4,950 calls, each
    about 14 h of traffic, far longer than the queue's memory of a few talk times)."""
    workload = Workload(rate=0.1, agents=10, mean_talk=100.0, mean_patience=60.0, calls=100_000,
                        seed=2024, warmup=1_000, batches=20)
    outcomes = ideal_queue(draw_workload(workload), workload.agents)[workload.skip:]
    size = workload.batch_size
    batches = [ideal_figures(outcomes[b * size:(b + 1) * size], 20) for b in range(20)]
    theory = workload.theory()
    for name, expected in (("service_level", theory.service_level),
                           ("abandonment_rate", theory.p_abandon), ("asa", theory.asa)):
        interval = batch_means([getattr(b, name) for b in batches], confidence=0.999)
        assert interval.contains(expected), (name, interval, expected)
        assert interval.half_width < 0.15 * expected  # narrow enough to mean something


# --------------------------------------------------------------------------- through the webhooks

# A setting at one Erlang per agent where a quarter of the callers wait more than 20 s and one in
# six abandons: errors in dispatch order or abandon handling move both figures.
WEBHOOK_SETTING = dict(rate=0.1, agents=5, mean_talk=50.0, mean_patience=60.0)
WEBHOOK_CALLS, WEBHOOK_WARMUP = 330, 30


def _settings(app) -> dict:
    from config import SETTINGS

    return {s.name: app.config[s.name] for s in SETTINGS}


def test_mmn_workload_through_the_webhooks_matches_erlang_a(app, session):
    """Poisson callers with exponential talk and patience through the real webhooks.

    1. Exact: every call's outcome and wait in the service's call log equal those of an ideal
       FCFS M/M/N+M queue fed the same draws (no tolerance for the order the ACD serves in, for
       agents idling while callers wait, or for lost abandons).
    2. Statistical: the service level and abandonment rate the product computes (its metric
       code, and ``flask report`` over the day) lie within 4σ of Erlang A, where σ is the
       standard deviation of that very estimator (300 measured calls after a 30-call warm-up
       from an empty centre) over 400 independent replications of the ideal queue with other
       seeds. The product's figures are one draw of that estimator (1. makes them equal to the
       ideal queue's), so a correct ACD fails this with probability below 1e-4 if the estimator
       is close to normal, and below 1/16 (Chebyshev) whatever its shape; the replications also
       bound the warm-up bias. σ is estimated within about 4 % (400 replications).
    """
    from reporting.report import build_report

    workload = Workload(**WEBHOOK_SETTING, calls=WEBHOOK_CALLS, seed=7, warmup=WEBHOOK_WARMUP,
                        batches=10)
    run = run_mmn(workload, _settings(app))
    result = run.result
    assert result.errors == [] and result.anomalies == []
    assert run.ivr_seconds[0] == run.ivr_seconds[1] > 0  # the same IVR time for every caller
    assert run.mismatches == []
    assert run.total.offered == workload.measured and run.total.in_progress == 0
    assert (run.total.service_level, run.total.abandonment_rate) == \
        (run.ideal.service_level, run.ideal.abandonment_rate)

    # The same calls through flask report's query (warm-up included: it is on the same day).
    day = DEFAULT_START.date()
    report = build_report(session, day, day, "Europe/Tallinn", 20)
    assert report.total.offered == run.everything.offered == WEBHOOK_CALLS
    assert (report.total.answered, report.total.abandoned, report.total.answered_within) == \
        (run.everything.answered, run.everything.abandoned, run.everything.answered_within)

    # Abandoned callers hung up when their patience ran out (the end is the Enqueue action's
    # time, or the status callback's whole-second Timestamp if they hung up during the "please
    # hold" prompt before the <Enqueue>); answered ones talked for their exponential talk time.
    for call, draw in zip(run.calls, draw_workload(workload)):
        if call.outcome == "abandoned":
            waited = (call.ended_at - call.queue_entered_at).total_seconds()
            assert draw.patience - 1.001 < waited <= draw.patience + 0.001
        else:
            assert abs(call.talk_seconds - draw.talk) <= 0.5 + 1e-6

    theory = workload.theory()
    replicated = []
    for seed in range(1000, 1400):
        draws = draw_workload(Workload(**WEBHOOK_SETTING, calls=WEBHOOK_CALLS, seed=seed,
                                       warmup=WEBHOOK_WARMUP))
        figures = ideal_figures(ideal_queue(draws, workload.agents)[WEBHOOK_WARMUP:], 20)
        replicated.append((figures.service_level, figures.abandonment_rate))
    for index, (name, measured, expected) in enumerate((
            ("service level", run.total.service_level, theory.service_level),
            ("abandonment rate", run.total.abandonment_rate, theory.p_abandon))):
        values = [r[index] for r in replicated]
        sigma = statistics.stdev(values)
        # Warm-up bias of the 300-call estimator, seen over the replications: small against σ.
        assert abs(statistics.fmean(values) - expected) < 0.25 * sigma, name
        assert abs(measured - expected) <= 4 * sigma, (name, measured, expected, sigma)


def test_flask_simulate_mmn_prints_product_and_erlang_figures(app):
    out = app.test_cli_runner().invoke(args=[
        "simulate", "mmn", "--rate", "0.1", "--agents", "3", "--talk", "25", "--patience", "inf",
        "--calls", "60", "--batches", "5", "--seed", "3"])
    assert out.exit_code == 0, out.output
    assert "N = 3 agents, mean talk 1/μ = 25 s, mean patience 1/θ = ∞" in out.output
    assert "Erlang C" in out.output and "service level (20 s)" in out.output
    assert "errors / anomalies     0 / 0" in out.output
    assert "calls whose outcome or wait differs from it: 0 of 60" in out.output
    bad = app.test_cli_runner().invoke(args=[
        "simulate", "mmn", "--rate", "1", "--agents", "2", "--talk", "10", "--patience", "inf"])
    assert bad.exit_code != 0 and "below the number of agents" in bad.output
