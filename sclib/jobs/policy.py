"""Retry policy: pure decisions, no I/O.

A store calls :meth:`RetryPolicy.after_error` and :meth:`RetryPolicy.after_crash`
inside the write that records the failure, so the decision and the write are one
atomic step; the policy itself only computes.

* After an error (the handler raised or timed out) the job runs again after an
  exponential backoff with jitter, until it has failed ``max_attempts`` times.
* After a crash (the worker vanished and its lease expired) the job is claimable
  again at once, until it has crashed ``max_crashes`` times: a job that kills its
  worker every time is a crash loop and must stop, but a crash says nothing about
  the job, so it does not use up the error budget.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sclib.retry import Backoff

__all__ = ["RetryPolicies", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff after errors and the cap on crashes.

    The delay before retry ``n`` (``n`` = failures so far, from 1) is
    ``min(max_delay, base_delay * factor ** (n - 1))``, scaled by a random factor in
    ``[1 - jitter, 1]`` so that jobs failing together do not retry together.
    """

    base_delay: float = 5.0
    factor: float = 2.0
    max_delay: float = 3600.0
    jitter: float = 0.5
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        # the same checks as every Backoff
        Backoff(self.base_delay, self.factor, self.max_delay, self.jitter)

    def delay(self, failures: int) -> float:
        """Seconds to wait before the retry that follows failure number ``failures``."""
        return Backoff(
            self.base_delay, self.factor, self.max_delay, self.jitter, self.rng
        ).delay(failures)

    def after_error(
        self,
        failures: int,
        max_attempts: int,
        now: datetime,
        *,
        retryable: bool = True,
        job_type: str | None = None,
    ) -> datetime | None:
        """When to run again after the ``failures``-th error of a job (of
        ``job_type``); ``None`` means give up (always, for an error that says a
        retry cannot help)."""
        if not retryable or failures >= max_attempts:
            return None
        return now + timedelta(seconds=self.delay(failures))

    def after_crash(
        self, crashes: int, max_crashes: int, now: datetime
    ) -> datetime | None:
        """When to run again after the ``crashes``-th crash; ``None`` means give up."""
        if crashes >= max_crashes:
            return None
        return now


class RetryPolicies(RetryPolicy):
    """A queue's retry policy with some job types' own (``register(...,
    retry=RetryPolicy(...))``): errors of those types back off by their policy,
    every other job and every crash by this one."""

    by_type: dict[str, RetryPolicy]

    def __init__(
        self, default: RetryPolicy, by_type: Mapping[str, RetryPolicy]
    ) -> None:
        super().__init__(
            base_delay=default.base_delay,
            factor=default.factor,
            max_delay=default.max_delay,
            jitter=default.jitter,
            rng=default.rng,
        )
        object.__setattr__(self, "by_type", dict(by_type))

    def after_error(
        self,
        failures: int,
        max_attempts: int,
        now: datetime,
        *,
        retryable: bool = True,
        job_type: str | None = None,
    ) -> datetime | None:
        own = self.by_type.get(job_type) if job_type is not None else None
        if own is not None:
            return own.after_error(failures, max_attempts, now, retryable=retryable)
        return super().after_error(failures, max_attempts, now, retryable=retryable)
