"""``flask simulate``: replay a day of real call records through the service's webhooks."""
from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from config import SETTINGS
from simulator.data import (DEFAULT_DATA, REPO_ROOT, DataError, DayFigures, day_figures, days_in,
                            read_records)
from simulator.engine import (CENTRE_TZ, SAMPLE_CONFIG, Options, Result, Simulation,
                              SimulationError, agent_shifts)


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def run_simulation(data: Path, day: date | None = None, *, limit: int | None = None,
                   options: Options | None = None, settings: dict | None = None
                   ) -> tuple[Result, DayFigures, DayFigures]:
    """Replay ``day`` of the file ``data`` (default its first day) against the current app's database.

    Returns the run, the input-side figures of the replayed rows and the simulated figures
    from the call log. Raises DataError / SimulationError for unusable input.
    """
    options = options or Options()
    records = read_records(data)
    days = days_in(records)
    if not days:
        raise SimulationError(f"{data}: no call records")
    day = day or days[0]
    day_records = [r for r in records if r.date == day]
    if not day_records:
        raise SimulationError(f"{data}: no records on {day} (the file has {days[0]} to {days[-1]})")
    selected = day_records
    if limit is not None:
        calls = sorted((r for r in day_records if not r.phantom), key=lambda r: (r.vru_entry, r.line))
        selected = calls[:limit]
    talk_pool = [r.ser_time for r in day_records if r.answered]
    settings = dict(settings if settings is not None else
                    {s.name: current_app.config[s.name] for s in SETTINGS if s.name in current_app.config})
    simulation = Simulation(selected, day=day, talk_pool=talk_pool, shifts=agent_shifts(day_records, options.break_gap),
                            settings=settings, options=options)
    result = simulation.run()
    result.file_rows = len(records)
    expected = day_figures(selected, threshold=settings.get("SERVICE_LEVEL_SECONDS", 20))
    simulated = result.figures
    return result, expected, simulated


def _pct(value: float | None) -> str:
    return "no data" if value is None else f"{100 * value:.1f} %"


def _secs(value: float | None) -> str:
    return "no data" if value is None else f"{value:.1f} s"


def _local(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(CENTRE_TZ).strftime("%Y-%m-%d %H:%M:%S")


def _delays(delays: list[float]) -> str:
    """'p50 0.0 s, p99 0.0 s, max 0.0 s over 1234 offers' (virtual seconds a free agent waited)."""
    if not delays:
        return "no offers"
    ordered = sorted(delays)
    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return (f"p50 {pick(0.5):.1f} s, p99 {pick(0.99):.1f} s, max {ordered[-1]:.1f} s over "
            f"{len(ordered)} offers (virtual time)")


def format_report(result: Result, expected: DayFigures, simulated: DayFigures, *, data: Path,
                  limit: int | None, options: Options) -> str:
    """The plain-text summary printed by ``flask simulate``."""
    day = result.day
    span = ((result.last_event - result.first_event).total_seconds()
            if result.first_event and result.last_event else 0)
    hours, rest = divmod(int(span), 3600)
    lines = [
        f"Simulated {day.isoformat()} ({day.strftime('%A')}) from {_display_path(data)}"
        + (f", first {limit} calls" if limit is not None else ""),
        f"  rows read            {result.rows} of {result.file_rows} in the file "
        f"({expected.phantom} PHANTOM ignored)",
        f"  calls placed         {len(result.calls)}",
        f"  agents               {len(result.agents)} (one per `server` name of the day; "
        f"{sum(a.calls_answered for a in result.agents)} calls answered)",
        f"  webhook requests     {result.webhook_requests} (+ {result.api_requests} agent API requests)",
        f"  errors               {len(result.errors)} (expected 0)",
        f"  anomalies            {len(result.anomalies)} (expected 0: offers to a busy or absent "
        f"agent, unexpected redirects)",
        f"  REST redirects       {result.rest_redirects} (waiting callers moved to a free agent)",
        f"  virtual span         {_local(result.first_event)} to {_local(result.last_event)} "
        f"Europe/Tallinn ({hours} h {rest // 60} min; {result.events} events)",
        f"  wall clock           {result.wall_seconds:.1f} s",
        f"  free agent → offer   {_delays(result.offer_delays)}",
        "",
        f"  {'':28}{'input file':>12}{'simulated':>12}",
    ]
    rows = [
        ("offered", expected.offered, simulated.offered),
        ("answered", expected.answered, simulated.answered),
        ("abandoned", expected.abandoned, simulated.abandoned),
        ("IVR-only (hung up in IVR)", expected.ivr_only, simulated.ivr_only),
        (f"answered within {expected.threshold} s", expected.answered_within, simulated.answered_within),
        (f"service level ({expected.threshold} s)", _pct(expected.service_level),
         _pct(simulated.service_level)),
        ("ASA", _secs(expected.asa), _secs(simulated.asa)),
    ]
    lines += [f"  {name:28}{str(a):>12}{str(b):>12}" for name, a, b in rows]
    wrap = (f"wrap-up {options.wrap_up:g} s" + (" (the data's ser_time is talk only)"
                                                 if options.wrap_up == 0 else "")
            + (" ended by the service's timer and `flask worker`" if options.server_wrap_up
               else ""))
    lines += [
        "",
        "Notes:",
        "  - Business hours are ignored (HOURS_ALWAYS_OPEN): this replays another centre's history,",
        "    its times read as Europe/Tallinn local time on the record's date.",
        "  - Pooled centre: every simulated agent has every queue of the line as a skill. Agents are",
        "    on duty from 1 min before a service of theirs to its end, through gaps shorter than",
        f"    {options.break_gap:g} s (longer gaps are breaks); they answer within "
        f"{options.answer_delay:g} s, {wrap}.",
        "    They take every call they can while on duty, so waits are shorter and abandons rarer",
        "    than in the data, where agents on duty also did other work.",
        "  - Callers: PE rows choose English, others Estonian 75 % / Russian 25 %; topics by weight;",
        "    HANG rows that queued give up q_time s after their <Enqueue>/<Dial> (after the",
        "    'all busy' prompt); served rows wait as long as needed; IVR hang-ups never queue.",
        "  - Input: offered = AGENT or queued (PHANTOM ignored); SL = AGENT with q_time <= "
        f"{expected.threshold} s / offered;",
        "    ASA = mean q_time of AGENT rows. Simulated: from the service's call log (offered = entered",
        "    a queue; wait = queue entry to agent answer).",
    ]
    if result.surveys is not None:
        lines += ["", *format_survey_figures(result, options)]
    if result.gave_up_max_wait:
        lines.append(f"  - {result.gave_up_max_wait} caller(s) gave up after --max-wait "
                     f"{options.max_wait:g} s.")
    if result.anomalies:
        lines.append(f"  - {len(result.anomalies)} anomalies, first: {result.anomalies[0]}")
    for error in result.errors[:10]:
        lines.append(f"  ! {error}")
    lines += ["", "Report this day (same DATABASE_URL): flask --app app report --from {0} --to {0}"
              .format(day.isoformat())]
    return "\n".join(lines)


def format_survey_figures(result: Result, options: Options) -> list[str]:
    """The survey lines of ``flask simulate --surveys``."""
    f = result.surveys
    nps = "no data" if f.nps is None else f"{f.nps:+.1f}"
    answered = f.answered_ivr + f.answered_sms
    return [
        "Post-call survey (--surveys)",
        f"  surveys offered      {f.offered} (IVR {f.ivr_offered}, SMS {f.sms_queued})",
        f"  answered by IVR      {f.answered_ivr} (callers still on the line answer "
        f"{options.survey_ivr_answer:.0%})",
        f"  SMS sent             {f.sms_sent} (callers who hung up first; "
        f"{result.survey_rounds} worker rounds)",
        f"  SMS answered         {f.answered_sms} ({result.sms_replies} callers replied: "
        f"{options.survey_sms_reply:.0%})",
        f"  NPS                  {nps} (n = {answered}: {f.promoters} promoters, "
        f"{f.passives} passives, {f.detractors} detractors)",
    ]


@click.group("simulate", invoke_without_command=True)
@click.option("--data", "data", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=DEFAULT_DATA, show_default="the shipped October 1999 excerpt",
              help="Anonymous Bank call records (raw TSV, gzip or not).")
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Day to replay, YYYY-MM-DD (default: the first day in the file).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Replay only the day's first N calls (by arrival).")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the random draws.")
@click.option("--wrap-up", "wrap_up", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Agent wrap-up seconds after each call (the data's ser_time is talk only).")
@click.option("--server-wrap-up", "server_wrap_up", is_flag=True,
              help="Wrap-up ends on the service's own timer (WRAP_UP_SECONDS = --wrap-up) and "
                   "`flask worker` offers the next caller, instead of agents saying they are "
                   "available.")
@click.option("--answer-delay", "answer_delay", type=click.FloatRange(min=0), default=2.0,
              show_default=True, help="Seconds an agent's phone rings before they answer.")
@click.option("--max-wait", "max_wait", type=click.FloatRange(min=0), default=3600.0,
              show_default=True,
              help="A caller the data shows served gives up after this wait (0: never).")
@click.option("--break-gap", "break_gap", type=click.FloatRange(min=0), default=600.0,
              show_default=True,
              help="A gap of this many seconds between an agent's services is a break.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=SAMPLE_CONFIG, show_default="config/line.sample.yaml",
              help="Line configuration whose agents are replaced by the day's agents.")
@click.option("--surveys", is_flag=True,
              help="Post-call survey on: callers still on the line answer the IVR question "
                   "(--survey-answer of them), those who hung up first get the SMS and reply "
                   "(--sms-reply of them); prints the survey figures and NPS.")
@click.option("--survey-answer", "survey_answer", type=click.FloatRange(0, 1), default=0.7,
              show_default=True, help="Share of callers who answer the IVR survey.")
@click.option("--sms-reply", "sms_reply", type=click.FloatRange(0, 1), default=0.4,
              show_default=True, help="Share of survey SMS that get a reply.")
@with_appcontext
def simulate_command(data: Path, day: datetime | None, limit: int | None, seed: int,
                     wrap_up: float, server_wrap_up: bool, answer_delay: float,
                     max_wait: float, break_gap: float, config_path: Path, surveys: bool = False,
                     survey_answer: float = 0.7, sms_reply: float = 0.4) -> None:
    """Replay a day of real call records through the webhooks on a virtual clock.

    Places one call per record (the provider's side: signed requests, TwiML walking, queues,
    agent legs, recordings, status callbacks) and drives the day's agents through the JSON
    API. Writes the calls into the configured database; loads the day's agents into the line
    configuration. Prints the run's figures next to the same figures computed from the file.

    ``flask simulate mmn …`` runs a synthetic M/M/N+M workload instead (see its --help).
    """
    if click.get_current_context().invoked_subcommand is not None:
        return
    if server_wrap_up and wrap_up <= 0:
        raise click.UsageError("--server-wrap-up needs a --wrap-up of more than 0 s")
    options = Options(seed=seed, wrap_up=wrap_up, answer_delay=answer_delay, max_wait=max_wait,
                      break_gap=break_gap, config_path=config_path, server_wrap_up=server_wrap_up,
                      surveys=surveys, survey_ivr_answer=survey_answer, survey_sms_reply=sms_reply)
    try:
        result, expected, simulated = run_simulation(
            data, day.date() if day else None, limit=limit, options=options)
    except (DataError, SimulationError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_report(result, expected, simulated, data=data, limit=limit, options=options))
    if result.errors:
        raise SystemExit(1)


@simulate_command.command("mmn")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Arrival rate λ in calls per second (Poisson), e.g. 0.1 for one per 10 s.")
@click.option("--agents", type=click.IntRange(min=1, max=500), required=True,
              help="Agents N, each with only the queue's skill.")
@click.option("--talk", "mean_talk", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Mean talk time 1/μ in seconds (exponential).")
@click.option("--patience", "mean_patience", type=click.FloatRange(min=0, min_open=True),
              required=True, help="Mean patience 1/θ in seconds (exponential); inf: nobody "
              "abandons (compared with Erlang C).")
@click.option("--calls", type=click.IntRange(min=20, max=1_000_000), default=2000,
              show_default=True, help="Calls placed, warm-up included.")
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help="First calls not measured (default: 10 % of --calls).")
@click.option("--batches", type=click.IntRange(min=2, max=1000), default=20, show_default=True,
              help="Batches for the batch-means confidence interval.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the random draws.")
@click.option("--threshold", type=click.FloatRange(min=0), default=None,
              help="Service-level threshold in seconds (default: SERVICE_LEVEL_SECONDS).")
@click.option("--queue", default="et.pension", show_default=True,
              help="The queue callers choose in the IVR (its first menu keys that lead there).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=SAMPLE_CONFIG, show_default="config/line.sample.yaml",
              help="Line configuration whose agents are replaced by the simulated agents.")
@with_appcontext
def mmn_command(rate: float, agents: int, mean_talk: float, mean_patience: float, calls: int,
                warmup: int | None, batches: int, seed: int, threshold: float | None, queue: str,
                config_path: Path) -> None:
    """Poisson callers, exponential talk and patience (M/M/N+M) through the real webhooks.

    Measures offered, service level, abandonment rate and ASA with the product's own metrics
    from the call log it wrote, and prints them next to Erlang A (Erlang C with --patience inf)
    with 95 % batch-means confidence intervals. Exit status 1: the simulation had errors; 3: the
    service answered a caller differently from an ideal FCFS queue fed the same draws.
    """
    from simulator.mmn import Workload, format_mmn_report, run_mmn

    settings = {s.name: current_app.config[s.name] for s in SETTINGS if s.name in current_app.config}
    if threshold is None:
        threshold = settings.get("SERVICE_LEVEL_SECONDS", 20)
    try:
        workload = Workload(rate=rate, agents=agents, mean_talk=mean_talk,
                            mean_patience=mean_patience, calls=calls, seed=seed, warmup=warmup,
                            batches=batches, threshold=threshold, queue=queue)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        run = run_mmn(workload, settings, options=Options(seed=seed, config_path=config_path))
    except SimulationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_mmn_report(run))
    if run.result.errors:
        raise SystemExit(1)
    if run.mismatches:
        raise SystemExit(3)
