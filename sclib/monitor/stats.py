"""Small numeric helpers shared by the monitor and its report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

__all__ = ["percentile", "until"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``.

    Nearest rank: the smallest value with at least ``q`` percent of the values at
    or below it, so the answer is always one of the values (p100 is the max).
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def until(now: datetime) -> datetime:
    """The exclusive end of a window that includes ``now`` (stores keep at least
    milliseconds)."""
    return now + timedelta(milliseconds=1)
