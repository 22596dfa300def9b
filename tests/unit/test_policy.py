"""Retry policy: exponential backoff with jitter, and the crash cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sclib import InvalidInput, RetryPolicy

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_backoff_doubles_without_jitter() -> None:
    """base, 2x base, 4x base ... capped at max_delay."""
    policy = RetryPolicy(base_delay=5, factor=2, max_delay=30, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == [5, 10, 20, 30, 30]


@given(
    failures=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0, max_value=100),
    jitter=st.floats(min_value=0, max_value=1),
    draw=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_delay_stays_within_bounds(
    failures: int, base: float, jitter: float, draw: float
) -> None:
    """Jitter only shortens the delay, by at most the jitter fraction; no overflow."""
    policy = RetryPolicy(
        base_delay=base, max_delay=600, jitter=jitter, rng=lambda: draw
    )
    full = min(600.0, base * 2.0 ** min(failures - 1, 64))
    d = policy.delay(failures)
    assert full * (1 - jitter) - 1e-9 <= d <= full + 1e-9


def test_gives_up_after_max_attempts() -> None:
    """The max_attempts-th failure is final: no off-by-one extra attempt."""
    policy = RetryPolicy(base_delay=1, jitter=0)
    assert policy.after_error(1, 3, NOW) == NOW + timedelta(seconds=1)
    assert policy.after_error(2, 3, NOW) == NOW + timedelta(seconds=2)
    assert policy.after_error(3, 3, NOW) is None
    assert policy.after_error(1, 1, NOW) is None


def test_crash_retry_is_immediate_until_cap() -> None:
    """A crash makes the job claimable now, until the crash cap."""
    policy = RetryPolicy()
    assert policy.after_crash(1, 3, NOW) == NOW
    assert policy.after_crash(3, 3, NOW) is None


def test_rejects_nonsense() -> None:
    """Negative delays, shrinking factors and jitter outside [0, 1] are refused."""
    with pytest.raises(InvalidInput):
        RetryPolicy(base_delay=-1)
    with pytest.raises(InvalidInput):
        RetryPolicy(factor=0.5)
    with pytest.raises(InvalidInput):
        RetryPolicy(jitter=2)
