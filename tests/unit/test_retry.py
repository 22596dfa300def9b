"""sclib.retry: the one backoff and retry loop the client, the engine and the
queue's retry policy share."""

from __future__ import annotations

import threading

import pytest

from sclib.client._base import backoff
from sclib.errors import InvalidInput, SourceError
from sclib.jobs.policy import RetryPolicy
from sclib.retry import Backoff, RetryCancelled, is_retryable, retry_call


def test_backoff_doubles_up_to_its_cap_and_jitters_down() -> None:
    plain = Backoff(0.5, cap=3.0)
    assert [plain.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert Backoff(1.0, jitter=0.5, rng=lambda: 1.0).delay(1) == 0.5
    assert Backoff(1.0, jitter=0.5, rng=lambda: 0.0).delay(3) == 4.0
    assert Backoff(1.0).delay(10**9) == pytest.approx(2.0**64)  # no overflow


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base": -1}, "must not be negative"),
        ({"base": 1, "factor": 0.5}, "factor must be >= 1"),
        ({"base": 1, "jitter": 2}, r"jitter must lie in \[0, 1\]"),
    ],
)
def test_backoff_refuses_bad_settings(options: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Backoff(**options)


def test_the_users_of_backoff_agree_with_it() -> None:
    policy = RetryPolicy(base_delay=5, factor=3, max_delay=100, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [5, 15, 45, 100]
    assert all(0.125 <= backoff(1) <= 0.25 for _ in range(50))
    assert all(4.0 <= backoff(9) <= 8.0 for _ in range(50))
    with pytest.raises(InvalidInput, match="factor"):
        RetryPolicy(factor=0.1)


def test_retry_call_retries_what_a_retry_can_fix() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise SourceError("connection reset")
        return "ok"

    def wait(delay: float) -> bool:
        waits.append(delay)
        return False

    assert retry_call(flaky, attempts=5, backoff=Backoff(0.1), wait=wait) == "ok"
    assert len(calls) == 3 and waits == [0.1, 0.2]


def test_retry_call_gives_up_at_once_on_other_errors_and_after_the_last_try() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("a bug, not a network")

    with pytest.raises(ValueError, match="a bug"):
        retry_call(broken, attempts=5, backoff=Backoff(0), wait=lambda d: False)
    assert len(calls) == 1 and not is_retryable(ValueError())

    def down() -> None:
        calls.append(1)
        raise SourceError("unreachable")

    calls.clear()
    with pytest.raises(SourceError):
        retry_call(down, attempts=3, backoff=Backoff(0), wait=lambda d: False)
    assert len(calls) == 3
    with pytest.raises(InvalidInput, match="attempts"):
        retry_call(down, attempts=0, backoff=Backoff(0))


def test_a_cancelled_wait_stops_the_retries() -> None:
    cancel = threading.Event()
    cancel.set()
    error = SourceError("timeout")

    def fails() -> None:
        raise error

    with pytest.raises(RetryCancelled, match="retrying the read") as caught:
        retry_call(
            fails, attempts=4, backoff=Backoff(60), what="the read", wait=cancel.wait
        )
    assert caught.value.__cause__ is error
