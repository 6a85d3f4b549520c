"""Net Promoter Score arithmetic (the recommendation index, *soovitusindeks*)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class NpsResult:
    """``n`` answers split into promoters (9–10), passives (7–8), detractors (0–6); ``score`` is
    % promoters − % detractors in −100…+100, None when n = 0."""

    n: int
    promoters: int
    passives: int
    detractors: int

    @property
    def score(self) -> float | None:
        if self.n == 0:
            return None
        return 100.0 * (self.promoters - self.detractors) / self.n


def nps(scores: Iterable[int]) -> NpsResult:
    """Compute NPS over answers 0–10 (source: ../shared/design/metrics.md, Bain's definition).

    Raises ValueError for an answer outside 0–10 (0 is valid; 6 is a detractor).
    """
    promoters = passives = detractors = n = 0
    for score in scores:
        if not isinstance(score, int) or not 0 <= score <= 10:
            raise ValueError(f"an NPS answer is an integer 0–10, not {score!r}")
        n += 1
        if score >= 9:
            promoters += 1
        elif score >= 7:
            passives += 1
        else:
            detractors += 1
    return NpsResult(n, promoters, passives, detractors)
