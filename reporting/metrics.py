"""Contact-centre metrics over per-call records: pure functions, no Flask, no database.

Definitions follow ``shared/design/metrics.md`` ("Contact-centre metrics: definitions the product
reports"), which follows ICMI's service-level variants:

* **offered**: the call reached a queue (it has a queue-entry time). IVR-only, out-of-hours,
  transferred-from-the-menu calls and IVR hang-ups are *not* offered and are not records here.
* **answered**: an agent answered. Wait = queue entry → answer.
* **abandoned**: offered, never answered, ended. Wait (time to abandon) = queue entry → end.
* **in progress**: offered, neither answered nor ended yet. Counted as offered; no wait.
* **within T**: wait ≤ T (a call answered at exactly 20 s is within 20 s).

Rates and averages are ``None`` ("no data") when their denominator is zero: a period with no
offered calls is never reported as 0 % or 100 %.

Records are folded one at a time into a :class:`MetricsAccumulator`, so millions of rows stream
through in constant memory; accumulators of groups can be merged into totals.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Iterable

ANSWERED = "answered"
ABANDONED = "abandoned"
IN_PROGRESS = "in_progress"
OFFERED_CLASSES = (ANSWERED, ABANDONED, IN_PROGRESS)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One offered call: its class (answered / abandoned / in_progress), wait and talk time.

    ``wait_seconds`` is queue entry → answer (answered) or → end (abandoned), None when in
    progress. ``talk_seconds`` is the agent conversation of an answered call (None if not known yet).
    """

    kind: str
    wait_seconds: float | None = None
    talk_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in OFFERED_CLASSES:
            raise ValueError(f"unknown call class {self.kind!r}")
        if self.kind != IN_PROGRESS and self.wait_seconds is None:
            raise ValueError(f"a {self.kind} call needs a wait")


def classify_offered(queue_entered_at: datetime, answered_at: datetime | None,
                     ended_at: datetime | None, talk_seconds: float | None = None) -> CallRecord:
    """Turn the timings of a call that entered a queue into a :class:`CallRecord`.

    answered if ``answered_at`` is set (wait = answered_at − queue_entered_at); otherwise
    abandoned if ``ended_at`` is set (wait = ended_at − queue_entered_at); otherwise in progress.
    Time in the IVR (before queue entry) is never wait (metrics.md, "Call classes"). A negative
    wait (an answer time derived from the agent leg's duration that falls before the queue
    entry) is clamped to 0.
    """
    if answered_at is not None:
        wait = max(0.0, (answered_at - queue_entered_at).total_seconds())
        return CallRecord(ANSWERED, wait, talk_seconds)
    if ended_at is not None:
        return CallRecord(ABANDONED, max(0.0, (ended_at - queue_entered_at).total_seconds()))
    return CallRecord(IN_PROGRESS)


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or None ("no data") when the denominator is 0."""
    return None if not denominator else numerator / denominator


def service_level_offered(answered_within: int, offered: int) -> float | None:
    """``sl_offered`` = answered within T / offered (metrics.md default; ICMI formula #3).

    Abandoned calls, including those abandoned within T, count against the service level.
    ICMI worked check: 860 answered within 20 s of 1060 offered → 0.811 (81 %).
    """
    return ratio(answered_within, offered)


def answer_rate(answered: int, offered: int) -> float | None:
    """answer rate = answered / offered (metrics.md, "Other rates")."""
    return ratio(answered, offered)


def abandonment_rate(abandoned: int, offered: int) -> float | None:
    """abandonment rate = abandoned / offered (metrics.md, "Other rates")."""
    return ratio(abandoned, offered)


def average_speed_of_answer(total_answered_wait: float, answered: int) -> float | None:
    """ASA = total wait of answered calls / answered, in seconds (metrics.md, "Other rates").

    Worked check (metrics.md): waits 30, 15, 45, 60, 10 s → 160 / 5 = 32 s.
    """
    return ratio(total_answered_wait, answered)


def mean_talk_time(total_talk: float, answered_with_talk: int) -> float | None:
    """Mean talk time = talk seconds of answered calls / answered calls, in seconds.

    Talk time is the talk part of AHT (metrics.md: "report talk time separately"). Calls still
    talking have no talk time yet and are left out of both sums.
    """
    return ratio(total_talk, answered_with_talk)


@dataclass(slots=True)
class MetricsAccumulator:
    """Running sums for one group (a queue on a day, a day, a range) at threshold ``threshold`` s.

    ``add`` folds in one offered call, ``merge`` adds another group's sums; the rates are
    computed from the sums on demand, so the group never holds its calls.
    """

    threshold: float
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    in_progress: int = 0
    answered_within: int = 0
    abandoned_within: int = 0
    answered_wait_total: float = 0.0
    abandoned_wait_total: float = 0.0
    talk_total: float = 0.0
    talk_count: int = 0
    # Filled by the SQL aggregation (reporting/aggregate.py); ``add`` leaves them at 0 except
    # ``short_abandoned`` (needs ``short_abandon``).
    short_abandon: float = 5.0
    short_abandoned: int = 0
    dequeued: int = 0
    hold_total: float = 0.0
    wrap_up_total: float = 0.0
    handled: int = 0
    disposed: int = 0
    resolved: int = 0

    def add(self, record: CallRecord) -> None:
        """Count one offered call."""
        self.offered += 1
        if record.kind == ANSWERED:
            self.answered += 1
            self.answered_wait_total += record.wait_seconds
            if record.wait_seconds <= self.threshold:
                self.answered_within += 1
            if record.talk_seconds is not None:
                self.talk_total += record.talk_seconds
                self.talk_count += 1
        elif record.kind == ABANDONED:
            self.abandoned += 1
            self.abandoned_wait_total += record.wait_seconds
            if record.wait_seconds <= self.threshold:
                self.abandoned_within += 1
            if record.wait_seconds <= self.short_abandon:
                self.short_abandoned += 1
        else:
            self.in_progress += 1

    def merge(self, other: "MetricsAccumulator") -> None:
        """Add ``other``'s sums (same threshold) to this group's."""
        if not (other.threshold == self.threshold and other.short_abandon == self.short_abandon):
            raise ValueError("cannot merge groups computed with different thresholds")
        for f in fields(self):
            if f.name not in ("threshold", "short_abandon"):
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def sl_offered(self) -> float | None:
        """answered within T / offered, or None with no offered calls."""
        return service_level_offered(self.answered_within, self.offered)

    @property
    def sl_answered(self) -> float | None:
        """``sl_answered`` = answered within T / answered (ICMI #2)."""
        return ratio(self.answered_within, self.answered)

    @property
    def sl_excl_early_abandons(self) -> float | None:
        """``sl_excl_early_abandons`` = answered within T / (answered + abandoned after T)
        (ICMI #4; Cisco "abandons ignored")."""
        return ratio(self.answered_within, self.answered + self.abandoned - self.abandoned_within)

    @property
    def sl_excl_short_abandons(self) -> float | None:
        """``sl_excl_short_abandons`` = answered within T / (offered − short abandons)."""
        return ratio(self.answered_within, self.offered - self.short_abandoned)

    @property
    def sl_abandons_met(self) -> float | None:
        """``sl_abandons_met`` = (answered within T + abandoned within T) / offered (ICMI #1)."""
        return ratio(self.answered_within + self.abandoned_within, self.offered)

    @property
    def abandonment_rate_excl_short(self) -> float | None:
        """(abandoned − short abandons) / (offered − short abandons)."""
        return ratio(self.abandoned - self.short_abandoned, self.offered - self.short_abandoned)

    @property
    def aht(self) -> float | None:
        """AHT = (talk + hold + wrap-up) / handled calls, in seconds (metrics.md, "Other rates");
        handled = answered calls with a talk time."""
        return ratio(self.talk_total + self.hold_total + self.wrap_up_total, self.handled)

    @property
    def fcr_disposition(self) -> float | None:
        """Disposition FCR = answered calls marked ``resolved`` / answered calls with a
        disposition (metrics.md, FCR measure 2). SQM check: 280 of 400 → 0.70."""
        return ratio(self.resolved, self.disposed)

    @property
    def answer_rate(self) -> float | None:
        """answered / offered, or None with no offered calls."""
        return answer_rate(self.answered, self.offered)

    @property
    def abandonment_rate(self) -> float | None:
        """abandoned / offered, or None with no offered calls."""
        return abandonment_rate(self.abandoned, self.offered)

    @property
    def asa(self) -> float | None:
        """Average speed of answer in seconds, or None with no answered calls."""
        return average_speed_of_answer(self.answered_wait_total, self.answered)

    @property
    def mean_talk(self) -> float | None:
        """Mean talk seconds of answered calls, or None with none that has a talk time."""
        return mean_talk_time(self.talk_total, self.talk_count)


def summarize(records: Iterable[CallRecord], threshold: float) -> MetricsAccumulator:
    """Fold ``records`` (any iterable, consumed once) into one accumulator at threshold T."""
    acc = MetricsAccumulator(threshold)
    for record in records:
        acc.add(record)
    return acc


def repeat_contact_fcr(repeated: int, base: int) -> float | None:
    """Repeat-contact FCR = 1 − repeated / base (metrics.md, FCR measure 1).

    ``base`` = answered calls with an identifiable caller whose window lies inside the data;
    ``repeated`` = those followed by another offered call from the same caller within the
    window. SQM Group's check: 280 of 400 resolved first time (120 repeated) → 0.70.
    None when ``base`` is 0.
    """
    return None if not base else 1 - repeated / base


NPS_PROMOTER_MIN = 9
NPS_DETRACTOR_MAX = 6


def nps_class(score: int) -> str:
    """'promoter' (9–10), 'passive' (7–8) or 'detractor' (0–6) for a 0–10 answer
    (metrics.md, "Recommendation index"). Raises ValueError outside 0–10."""
    if not isinstance(score, int) or isinstance(score, bool) or not 0 <= score <= 10:
        raise ValueError(f"an NPS answer is an integer 0–10, not {score!r}")
    if score >= NPS_PROMOTER_MIN:
        return "promoter"
    return "detractor" if score <= NPS_DETRACTOR_MAX else "passive"


def net_promoter_score(promoters: int, passives: int, detractors: int) -> float | None:
    """NPS = % promoters − % detractors, from −100 to +100 (metrics.md); None when n = 0.

    Worked check: 30 % promoters and 20 % detractors → +10.
    """
    n = promoters + passives + detractors
    return None if not n else 100.0 * (promoters - detractors) / n
