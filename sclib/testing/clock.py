"""A clock for tests: time moves only when the test says so."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

__all__ = ["ManualClock"]


class ManualClock:
    """Callable returning an aware UTC datetime that changes only on :meth:`advance`.

    It starts at a whole second, and :meth:`advance` takes seconds, so stores that
    keep milliseconds (MongoDB) round-trip every value exactly.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now
