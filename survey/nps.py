"""Net Promoter Score over a list of answers (the recommendation index, *soovitusindeks*).

The classes and the score are :func:`reporting.metrics.nps_class` and
:func:`reporting.metrics.net_promoter_score`, the same definitions the reports use.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from reporting.metrics import net_promoter_score, nps_class


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
        return net_promoter_score(self.promoters, self.passives, self.detractors)


def nps(scores: Iterable[int]) -> NpsResult:
    """Compute NPS over answers 0–10 (source: ../shared/design/metrics.md, Bain's definition).

    Raises ValueError for an answer outside 0–10 (0 is valid; 6 is a detractor).
    """
    classes = Counter(nps_class(score) for score in scores)
    return NpsResult(sum(classes.values()), classes["promoter"], classes["passive"],
                     classes["detractor"])
