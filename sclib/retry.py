"""Retrying with backoff, written once: the client's requests, the transfer
engine's reads and writes, and the queue's stored retry policy
(:class:`~sclib.jobs.policy.RetryPolicy`) all compute their waits with
:class:`Backoff`; :func:`retry_call` runs a call until it succeeds, fails with an
error a retry cannot fix, or runs out of attempts.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sclib.errors import InvalidInput, SclibError

__all__ = ["Backoff", "RetryCancelled", "is_retryable", "retry_call"]

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter.

    The wait before retry ``n`` (``n`` = failures so far, from 1) is
    ``min(cap, base * factor ** (n - 1))``, scaled by a random factor in
    ``[1 - jitter, 1]`` so that callers failing together do not retry together.
    """

    base: float
    factor: float = 2.0
    cap: float = math.inf
    jitter: float = 0.0
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise InvalidInput("retry delays must not be negative")
        if self.factor < 1:
            raise InvalidInput(f"backoff factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise InvalidInput(f"jitter must lie in [0, 1], got {self.jitter}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after failure number ``failures`` (from 1)."""
        # a capped exponent: a huge failure count cannot overflow a float
        raw = self.base * self.factor ** min(max(0, failures - 1), 64)
        return min(self.cap, raw) * (1.0 - self.jitter * self.rng())


class RetryCancelled(Exception):
    """The wait before a retry was cancelled; ``__cause__`` is the last error."""


def is_retryable(exc: BaseException) -> bool:
    """sclib's rule: an :class:`~sclib.errors.SclibError` that says a retry can
    help (``retryable``); anything else is a bug or a caller's mistake."""
    return isinstance(exc, SclibError) and exc.retryable


def retry_call(
    fn: Callable[[], T],
    *,
    attempts: int,
    backoff: Backoff,
    retryable: Callable[[BaseException], bool] = is_retryable,
    what: str = "the call",
    log: logging.Logger | None = None,
    wait: Callable[[float], bool] | None = None,
) -> T:
    """``fn()``, tried up to ``attempts`` times while it raises what ``retryable``
    accepts; the last error propagates.

    :param wait: sleeps between tries and returns True when the caller cancelled
        meanwhile (e.g. ``threading.Event.wait``): then :class:`RetryCancelled`
        is raised from the last error. Default: :func:`time.sleep`.
    :param log: where each retry is reported (a warning naming ``what``).
    """
    if attempts < 1:
        raise InvalidInput(f"attempts must be >= 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not retryable(exc):
                raise
            delay = backoff.delay(attempt)
            if log is not None:
                log.warning(
                    "%s failed (try %d of %d): %s; retrying in %.1fs",
                    what,
                    attempt,
                    attempts,
                    exc,
                    delay,
                )
            if wait is None:
                time.sleep(delay)
            elif wait(delay):
                raise RetryCancelled(f"cancelled while retrying {what}") from exc
    raise AssertionError("unreachable")  # pragma: no cover
