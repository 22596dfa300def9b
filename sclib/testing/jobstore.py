"""The JobStore contract: the semantics every job store keeps, as tests.

Use it from a backend's test module::

    import pytest
    from sclib.testing.jobstore import JobStoreContract

    class TestMyStore(JobStoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            s = MyStore(...)
            yield s
            s.close()

Every test drives the store through :class:`~sclib.JobQueue` with a
:class:`~sclib.testing.ManualClock`, so leases expire and backoffs pass without
sleeping.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sclib.backends.base import ClaimedJob, JobStore, Settlement
from sclib.errors import (
    InvalidInput,
    InvalidJobState,
    JobNotFound,
    LeaseLost,
    UnknownJobType,
)
from sclib.jobs.policy import RetryPolicy
from sclib.jobs.queue import JobQueue
from sclib.jobtypes import JobStatus
from sclib.models import ErrorRecord, Progress
from sclib.testing.clock import ManualClock

__all__ = ["JobStoreContract"]

LEASE = 30.0
BACKOFF = 10.0


class JobStoreContract:
    """Subclass this and provide a ``store`` fixture (a fresh, empty store)."""

    @pytest.fixture
    def store(self) -> Iterator[JobStore]:  # pragma: no cover - overridden
        raise NotImplementedError("provide a `store` fixture")

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def queue(self, store: JobStore, clock: ManualClock) -> JobQueue:
        # no jitter: backoff times are exact, so tests can step over them
        policy = RetryPolicy(base_delay=BACKOFF, factor=2.0, jitter=0.0)
        return JobQueue(store, clock=clock, retry_policy=policy, max_crashes=2)

    # -- enqueue ---------------------------------------------------------------

    def test_enqueue_fills_per_type_defaults(self, queue: JobQueue) -> None:
        """A new job is pending, with its type's priority, attempts and time limit."""
        job = queue.enqueue(
            "dataset_conversion",
            {"input_path": "/in"},
            dataset_uuid="d1",
            owner="a@example.org",
        )
        assert job.status is JobStatus.PENDING
        assert (job.priority, job.max_attempts, job.timeout_seconds) == (1, 2, 7200.0)
        assert job.parameters == {"input_path": "/in"}
        assert job.attempts == 0
        assert queue.get(job.id) == job
        assert [e.kind for e in queue.events(job.id)] == ["created"]

    def test_enqueue_rejects_bad_input_and_stores_nothing(
        self, queue: JobQueue
    ) -> None:
        """Unknown type, bad priority, non-JSON parameters, naive times: errors."""
        with pytest.raises(UnknownJobType, match=r"unknown job type 'nope'.*known"):
            queue.enqueue("nope")
        with pytest.raises(InvalidInput, match="priority must be 1"):
            queue.enqueue("upload", priority=7)
        with pytest.raises(InvalidInput, match="JSON"):
            queue.enqueue("upload", {"f": object()})
        with pytest.raises(InvalidInput, match="timezone-aware"):
            queue.enqueue("upload", run_at=datetime(2030, 1, 1))
        with pytest.raises(InvalidInput, match="max_attempts"):
            queue.enqueue("upload", max_attempts=0)
        with pytest.raises(JobNotFound, match="missing"):
            queue.enqueue("upload", depends_on=["missing"])
        assert queue.stats()["total"] == 0

    def test_enqueue_returns_the_job_as_get_reads_it(self, queue: JobQueue) -> None:
        """What enqueue returns is what get returns, to the JSON the API
        answers with (a time limit of whole seconds stays a float)."""
        import json

        job = queue.enqueue("upload", {"n": 1}, owner="a@b.c", timeout_seconds=60)
        assert isinstance(job.timeout_seconds, float)
        assert json.dumps(job.to_dict(), sort_keys=True, default=str) == json.dumps(
            queue.get(job.id).to_dict(), sort_keys=True, default=str
        )

    def test_idempotency_key_returns_the_existing_job(self, queue: JobQueue) -> None:
        """Enqueueing the same key twice creates one job and returns it both times."""
        first = queue.enqueue("upload", {"n": 1}, idempotency_key="k1")
        second = queue.enqueue("upload", {"n": 2}, idempotency_key="k1")
        assert second.id == first.id
        assert second.parameters == {"n": 1}
        assert queue.stats()["total"] == 1

    def test_enqueue_many_stores_each_job_in_order(self, queue: JobQueue) -> None:
        """enqueue_many makes one job per parameters item, with the shared
        options, returned as stored and in order; they are claimed as single
        enqueues would be; a dependency holds them all back."""
        first = queue.enqueue("upload")
        jobs = queue.enqueue_many(
            "data_validation",
            [{"n": n} for n in range(5)],
            owner="ada@lab.org",
            depends_on=[first.id],
        )
        assert [j.parameters for j in jobs] == [{"n": n} for n in range(5)]
        assert [queue.get(j.id) for j in jobs] == jobs
        assert all(
            j.owner == "ada@lab.org" and j.type == "data_validation" for j in jobs
        )
        assert len({j.id for j in jobs}) == 5
        assert queue.enqueue_many("upload", []) == []
        claimed = queue.claim("w")
        assert claimed is not None and claimed.id == first.id
        assert queue.claim("w") is None  # the five wait for the first
        queue.complete(claimed.lease)
        order = [queue.claim("w") for _ in range(5)]
        assert [j.id for j in order if j is not None] == [j.id for j in jobs]

    def test_enqueue_many_returns_plain_values(self, queue: JobQueue) -> None:
        """Options given as int or str subclasses (an IntEnum priority, a str
        subclass owner) come back as the plain int and str the store holds, in
        the returned jobs as from ``get``; so do nested tuples (JSON lists)."""

        class Priority(enum.IntEnum):
            HIGH = 1

        class Owner(str):
            def __str__(self) -> str:
                return "not the value"

        jobs = queue.enqueue_many(
            "upload",
            [{"pair": (1, 2)}, {}],
            priority=Priority.HIGH,
            owner=Owner("ada"),
            dataset_uuid=Owner("d-1"),
        )
        for job in jobs:
            assert job == queue.get(job.id)
            assert type(job.priority) is int and job.priority == 1
            assert type(job.owner) is str and job.owner == "ada"
            assert type(job.dataset_uuid) is str and job.dataset_uuid == "d-1"
            assert type(job.type) is str
        assert jobs[0].parameters == {"pair": [1, 2]}

    def test_enqueue_many_checks_every_job_before_storing_any(
        self, queue: JobQueue
    ) -> None:
        """One bad item, a bad shared option or a missing dependency: an error
        that names it, and no job stored."""
        with pytest.raises(InvalidInput, match="JSON"):
            queue.enqueue_many("upload", [{"ok": 1}, {"f": object()}])
        for bad in ({"x": float("nan")}, {"x": 10**5000}, {"x": float("inf")}):
            # (an int too long for json to write: checked as json.dumps would)
            with pytest.raises(InvalidInput, match="JSON"):
                queue.enqueue_many("upload", [{}, bad])
            with pytest.raises(InvalidInput, match="JSON"):
                queue.enqueue("upload", bad)
        with pytest.raises(InvalidInput, match="iterable of mappings"):
            queue.enqueue_many("upload", {"n": 1})  # type: ignore[dict-item]
        with pytest.raises(InvalidInput, match="depends_on"):
            queue.enqueue_many("upload", [{}], depends_on="abc")
        with pytest.raises(UnknownJobType):
            queue.enqueue_many("nope", [{}])
        assert queue.stats()["total"] == 0

    # -- claim -----------------------------------------------------------------

    def test_claim_order_priority_then_run_at_then_id(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """Priority 1 first; within a priority the oldest run_at, then creation."""
        low = queue.enqueue("upload", priority=3)
        normal_late = queue.enqueue("upload", priority=2)
        normal_early = queue.enqueue(
            "upload", priority=2, run_at=clock() - timedelta(seconds=5)
        )
        high = queue.enqueue("upload", priority=1)
        normal_late_2 = queue.enqueue("upload", priority=2)
        order = []
        while (job := queue.claim("w")) is not None:
            order.append(job.id)
        assert order == [
            high.id,
            normal_early.id,
            normal_late.id,
            normal_late_2.id,
            low.id,
        ]

    def test_claim_returns_job_after_claim(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """The claim returns the running job: worker, lease end, attempts + 1."""
        job = queue.enqueue("upload")
        claimed = queue.claim("w1", lease_seconds=LEASE)
        assert claimed is not None and claimed.id == job.id
        assert claimed.status is JobStatus.RUNNING
        assert claimed.worker_id == "w1"
        assert claimed.attempts == 1
        assert claimed.lease_until == clock() + timedelta(seconds=LEASE)
        assert queue.claim("w2") is None
        events = queue.events(job.id)
        assert (events[-1].kind, events[-1].worker_id, events[-1].attempt) == (
            "claimed",
            "w1",
            1,
        )

    def test_claim_filters_by_type(self, queue: JobQueue) -> None:
        """A worker only gets the job types it asked for."""
        queue.enqueue("upload", priority=1)
        conv = queue.enqueue("dataset_conversion", priority=3)
        got = queue.claim("w", ["dataset_conversion", "data_validation"])
        assert got is not None and got.id == conv.id
        assert queue.claim("w", ["data_validation"]) is None
        assert queue.claim("w", []) is None

    def test_scheduled_job_waits_for_run_at(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """A job with run_at in the future is pending but not claimable until then."""
        job = queue.enqueue("upload", delay=60)
        assert queue.claim("w") is None
        clock.advance(59)
        assert queue.claim("w") is None
        clock.advance(1)
        claimed = queue.claim("w")
        assert claimed is not None and claimed.id == job.id

    # -- dependencies --------------------------------------------------------------

    def test_dependent_waits_until_every_dependency_completed(
        self, queue: JobQueue
    ) -> None:
        """depends_on holds a job back until all its dependencies completed."""
        a = queue.enqueue("upload")
        b = queue.enqueue("upload")
        c = queue.enqueue("dataset_conversion", depends_on=[a.id, b.id])
        assert c.waiting_on == 2
        for _ in range(2):
            job = queue.claim("w", ["upload"])
            assert job is not None
            assert queue.claim("w", ["dataset_conversion"]) is None
            queue.complete(job.lease)
        got = queue.claim("w", ["dataset_conversion"])
        assert got is not None and got.id == c.id

    def test_dependency_on_completed_job_is_satisfied(self, queue: JobQueue) -> None:
        """A dependency that already completed does not hold the new job back."""
        a = queue.enqueue("upload")
        job = queue.claim("w")
        assert job is not None
        queue.complete(job.lease, {"done": True})
        b = queue.enqueue("upload", depends_on=[a.id])
        assert b.waiting_on == 0
        got = queue.claim("w")
        assert got is not None and got.id == b.id

    def test_failed_dependency_cancels_dependents_transitively(
        self, queue: JobQueue
    ) -> None:
        """When a job fails for good, its dependents and theirs are cancelled."""
        a = queue.enqueue("upload", max_attempts=1)
        b = queue.enqueue("file_extraction", depends_on=[a.id])
        c = queue.enqueue("dataset_conversion", depends_on=[b.id])
        job = queue.claim("w")
        assert job is not None and job.id == a.id
        queue.fail(job.lease, "source vanished")
        assert queue.get(a.id).status is JobStatus.FAILED
        for dependent, dep in ((b, a), (c, b)):
            got = queue.get(dependent.id)
            assert got.status is JobStatus.CANCELLED
            assert got.error is not None and dep.id in got.error
        late = queue.enqueue("data_validation", depends_on=[a.id])
        assert late.status is JobStatus.CANCELLED
        assert late.error is not None and "failed" in late.error

    def test_cancelled_dependency_cancels_dependents(self, queue: JobQueue) -> None:
        """Cancelling a pending job cancels the jobs waiting for it."""
        a = queue.enqueue("upload")
        b = queue.enqueue("file_extraction", depends_on=[a.id])
        queue.cancel(a.id, "user changed their mind")
        assert queue.get(b.id).status is JobStatus.CANCELLED

    # -- heartbeat and fencing -----------------------------------------------------

    def test_heartbeat_extends_lease_and_stores_progress(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """A heartbeat moves lease_until forward and keeps the reported progress."""
        queue.enqueue("upload")
        job = queue.claim("w", lease_seconds=LEASE)
        assert job is not None
        clock.advance(20)
        progress = Progress(45.2, 1024000, 2264000, "dataset.zip")
        assert queue.heartbeat(job.lease, progress, lease_seconds=LEASE) is False
        stored = queue.get(job.id)
        assert stored.lease_until == clock() + timedelta(seconds=LEASE)
        assert stored.progress == progress
        clock.advance(20)  # past the first lease, within the renewed one
        assert queue.rescue_expired() == []
        assert queue.get(job.id).status is JobStatus.RUNNING

    def test_heartbeat_reports_cancel_request(self, queue: JobQueue) -> None:
        """Cancelling a running job is a request the worker learns by heartbeat."""
        job = queue.enqueue("upload")
        claimed = queue.claim("w")
        assert claimed is not None
        after = queue.cancel(job.id)
        assert after.status is JobStatus.RUNNING and after.cancel_requested
        assert queue.heartbeat(claimed.lease, lease_seconds=LEASE) is True
        done = queue.cancel_running(claimed.lease, "stopped at a chunk boundary")
        assert done.status is JobStatus.CANCELLED
        assert [e.kind for e in queue.events(job.id)][-2:] == [
            "cancel_requested",
            "cancelled",
        ]

    def test_lost_lease_writes_change_nothing(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """After a rescue and a new claim, the old lease holder's writes are refused."""
        queue.enqueue("upload")
        old = queue.claim("w-old", lease_seconds=LEASE)
        assert old is not None
        clock.advance(LEASE + 1)
        assert [j.id for j in queue.rescue_expired()] == [old.id]
        new = queue.claim("w-new", lease_seconds=LEASE)
        assert new is not None and new.id == old.id and new.attempts == 2
        before = queue.get(old.id)
        with pytest.raises(LeaseLost):
            queue.heartbeat(old.lease, Progress(99.0), lease_seconds=LEASE)
        with pytest.raises(LeaseLost):
            queue.complete(old.lease, {"stale": True})
        with pytest.raises(LeaseLost):
            queue.fail(old.lease, "stale failure")
        with pytest.raises(LeaseLost):
            queue.release(old.lease)
        with pytest.raises(LeaseLost):
            queue.cancel_running(old.lease)
        assert queue.get(old.id) == before
        queue.complete(new.lease, {"fresh": True})
        assert queue.get(old.id).result == {"fresh": True}

    def test_same_worker_new_attempt_fences_old_attempt(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """The attempt number is part of the fence, not just the worker id."""
        queue.enqueue("upload")
        first = queue.claim("w", lease_seconds=LEASE)
        assert first is not None
        queue.release(first.lease)
        second = queue.claim("w", lease_seconds=LEASE)
        assert second is not None and second.attempts == first.attempts + 1
        with pytest.raises(LeaseLost):
            queue.complete(first.lease)
        queue.complete(second.lease)

    # -- failure and retry ---------------------------------------------------------

    def test_fail_retries_with_backoff_then_fails(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """Errors retry after exponential backoff; after max_attempts: failed."""
        job = queue.enqueue("upload", max_attempts=3)
        delays = []
        for attempt in range(1, 4):
            claimed = queue.claim("w")
            assert claimed is not None and claimed.attempts == attempt
            after = queue.fail(claimed.lease, RuntimeError(f"boom {attempt}"))
            if attempt < 3:
                assert after.status is JobStatus.PENDING
                delay = (after.run_at - clock()).total_seconds()
                delays.append(delay)
                assert queue.claim("w") is None  # not before the backoff
                clock.advance(delay)
        assert delays == [BACKOFF, BACKOFF * 2]
        final = queue.get(job.id)
        assert final.status is JobStatus.FAILED
        assert final.error == "RuntimeError: boom 3"
        assert [e.error for e in final.error_history] == [
            "RuntimeError: boom 1",
            "RuntimeError: boom 2",
            "RuntimeError: boom 3",
        ]
        assert final.failures == 3
        kinds = [e.kind for e in queue.events(job.id)]
        assert kinds.count("retried") == 2 and kinds[-1] == "failed"

    def test_fatal_error_fails_at_once(self, queue: JobQueue) -> None:
        """An error of kind ``fatal`` (a retry cannot help) ends the job on its
        first attempt, whatever max_attempts says; an operator can still retry."""
        job = queue.enqueue("upload", max_attempts=3)
        claimed = queue.claim("w")
        assert claimed is not None
        after = queue.fail(claimed.lease, "ConversionError: bad.tif", kind="fatal")
        assert after.status is JobStatus.FAILED
        assert [e.kind for e in after.error_history] == ["fatal"]
        assert queue.claim("w") is None
        assert queue.retry(job.id).status is JobStatus.PENDING

    def test_operator_retry_of_failed_job(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """A failed job retried by an operator is pending again with a fresh budget;
        its started_at is that of the run after the retry, so the time it sat
        failed does not count as running time."""
        job = queue.enqueue("upload", max_attempts=1)
        claimed = queue.claim("w")
        assert claimed is not None
        queue.fail(claimed.lease, "disk full")
        clock.advance(3 * 86400)
        again = queue.retry(job.id)
        assert again.status is JobStatus.PENDING and again.failures == 0
        assert again.started_at is None
        assert again.error_history[-1].error == "disk full"
        got = queue.claim("w")
        assert got is not None and got.id == job.id and got.attempts == 2
        assert queue.get(job.id).started_at == clock()

    def test_retry_revives_dependents_it_cancelled(self, queue: JobQueue) -> None:
        """Retrying a failed job re-queues the jobs its failure cancelled, and waits."""
        a = queue.enqueue("upload", max_attempts=1)
        b = queue.enqueue("file_extraction", depends_on=[a.id])
        c = queue.enqueue("dataset_conversion", depends_on=[b.id])
        other = queue.enqueue("data_validation")
        queue.cancel(other.id, "not wanted")
        claimed = queue.claim("w", ["upload"])
        assert claimed is not None
        queue.fail(claimed.lease, "network down")
        assert queue.get(c.id).status is JobStatus.CANCELLED
        queue.retry(a.id)
        for job in (b, c):
            back = queue.get(job.id)
            assert back.status is JobStatus.PENDING
            assert back.waiting_on == 1 and back.error is None
        assert queue.get(other.id).status is JobStatus.CANCELLED
        claimed = queue.claim("w")
        assert claimed is not None and claimed.id == a.id  # b and c still wait
        assert queue.claim("w") is None

    def test_retry_and_cancel_refuse_wrong_states(self, queue: JobQueue) -> None:
        """Retrying a live job or cancelling a finished one is a clear error."""
        job = queue.enqueue("upload")
        with pytest.raises(InvalidJobState, match="only failed or cancelled"):
            queue.retry(job.id)
        claimed = queue.claim("w")
        assert claimed is not None
        queue.complete(claimed.lease)
        with pytest.raises(InvalidJobState, match="already completed"):
            queue.cancel(job.id)
        with pytest.raises(JobNotFound):
            queue.cancel("no-such-job")
        with pytest.raises(JobNotFound):
            queue.retry("no-such-job")
        with pytest.raises(JobNotFound):
            queue.get("no-such-job")
        with pytest.raises(JobNotFound):
            queue.events("no-such-job")

    # -- rescue --------------------------------------------------------------------

    def test_rescue_returns_expired_jobs_and_spares_live_ones(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """Expired leases come back as pending crashes; live ones are untouched."""
        queue.enqueue("upload")
        queue.enqueue("upload")
        dead = queue.claim("dead", lease_seconds=10)
        live = queue.claim("live", lease_seconds=100)
        assert dead is not None and live is not None
        clock.advance(11)
        rescued = queue.rescue_expired()
        assert [j.id for j in rescued] == [dead.id]
        back = queue.get(dead.id)
        assert back.status is JobStatus.PENDING
        assert (back.crashes, back.failures) == (1, 0)
        assert back.error_history[-1].kind == "crash"
        assert queue.get(live.id).status is JobStatus.RUNNING
        assert queue.rescue_expired() == []
        assert "rescued" in [e.kind for e in queue.events(dead.id)]

    def test_crash_loop_is_capped(self, queue: JobQueue, clock: ManualClock) -> None:
        """A job whose worker vanishes max_crashes times ends failed as a crash loop."""
        job = queue.enqueue("upload", max_attempts=5)
        for _ in range(2):  # the queue fixture uses max_crashes=2
            claimed = queue.claim("w", lease_seconds=10)
            assert claimed is not None
            clock.advance(11)
            queue.rescue_expired()
        final = queue.get(job.id)
        assert final.status is JobStatus.FAILED
        assert final.error is not None and "crash loop" in final.error
        assert final.failures == 0  # crashes do not use up the error budget

    def test_rescue_of_cancel_requested_job_cancels_it(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """If the worker dies after cancel was requested, the job ends cancelled."""
        job = queue.enqueue("upload")
        claimed = queue.claim("w", lease_seconds=10)
        assert claimed is not None
        queue.cancel(job.id)
        clock.advance(11)
        queue.rescue_expired()
        assert queue.get(job.id).status is JobStatus.CANCELLED

    # -- held claims (prefetch): a crash counts only once a handler started -----

    @staticmethod
    def _claim_held(queue: JobQueue, worker: str, seconds: float) -> list[ClaimedJob]:
        now = queue.clock()
        _, claimed = queue.store.settle_and_claim(
            [],
            now,
            queue.retry_policy,
            worker,
            None,
            now + timedelta(seconds=seconds),
            10,
            held=True,
        )
        return claimed

    def test_held_claims_come_in_claim_order_and_say_so(self, queue: JobQueue) -> None:
        """A held claim takes jobs like any claim: running, attempts + 1, in
        priority order; each ClaimedJob says it is held and has no held rescues."""
        low = queue.enqueue("upload", priority=3)
        high = queue.enqueue("upload", priority=1)
        claimed = self._claim_held(queue, "w", LEASE)
        assert [c.id for c in claimed] == [high.id, low.id]
        assert all(c.held and c.held_rescues == 0 for c in claimed)
        for c in claimed:
            job = queue.get(c.id)
            assert job.status is JobStatus.RUNNING
            assert (job.worker_id, job.attempts) == ("w", 1)
            assert c.lease == job.lease

    def test_expired_held_attempt_comes_back_without_a_crash(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """A held attempt whose handler never started is rescued as pending with
        no crash charged, however often; the next claim counts its held rescues."""
        job = queue.enqueue("upload")
        for n in range(3):  # more than max_crashes=2: never a crash loop
            (claimed,) = self._claim_held(queue, f"w{n}", 10)
            assert claimed.held_rescues == n
            clock.advance(11)
            assert [j.id for j in queue.rescue_expired()] == [job.id]
            back = queue.get(job.id)
            assert back.status is JobStatus.PENDING
            assert (back.crashes, back.failures) == (0, 0)
            assert back.error_history == ()
        rescued = [e for e in queue.events(job.id) if e.kind == "rescued"]
        assert len(rescued) == 3
        assert "not counted as a crash" in rescued[-1].message
        assert queue.rescue_expired() == []

    def test_record_started_ends_the_hold_and_renews_the_lease(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """record_started renews the lease; from then on a rescue is a crash, and
        a job whose started handler keeps killing its worker hits the crash cap
        (held rescues in between do not count). A stale lease changes nothing."""
        job = queue.enqueue("upload", max_attempts=5)
        (first,) = self._claim_held(queue, "w", 10)
        clock.advance(11)
        queue.rescue_expired()  # never started: free
        for n in range(2):  # the queue fixture uses max_crashes=2
            (claimed,) = self._claim_held(queue, "w", 10)
            assert claimed.held_rescues == 1
            clock.advance(5)
            now = clock()
            started = queue.store.record_started(
                [claimed.lease, first.lease], now, now + timedelta(seconds=10)
            )
            assert started[0] is None and isinstance(started[1], LeaseLost)
            assert queue.get(job.id).lease_until == now + timedelta(seconds=10)
            clock.advance(6)  # past the claim's lease, not the renewed one
            assert queue.rescue_expired() == []
            clock.advance(5)
            queue.rescue_expired()
            assert queue.get(job.id).crashes == n + 1
        final = queue.get(job.id)
        assert final.status is JobStatus.FAILED
        assert final.error is not None and "crash loop" in final.error
        assert [e.kind for e in final.error_history] == ["crash", "crash"]
        starts = [e for e in queue.events(job.id) if e.kind == "started"]
        assert [(e.worker_id, e.attempt) for e in starts] == [("w", 2), ("w", 3)]
        now = clock()
        (lost,) = queue.store.record_started(
            [first.lease], now, now + timedelta(seconds=10)
        )
        assert isinstance(lost, LeaseLost)
        assert queue.get(job.id) == final

    def test_held_rescue_of_cancel_requested_job_cancels_it(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """A held job whose cancellation was requested ends cancelled, with its
        dependents, when its worker vanishes; no crash is charged."""
        job = queue.enqueue("upload")
        after = queue.enqueue("upload", depends_on=[job.id])
        (claimed,) = self._claim_held(queue, "w", 10)
        assert claimed.id == job.id
        queue.cancel(job.id)
        clock.advance(11)
        queue.rescue_expired()
        final = queue.get(job.id)
        assert final.status is JobStatus.CANCELLED
        assert final.crashes == 0
        assert queue.get(after.id).status is JobStatus.CANCELLED

    def test_retry_resets_held_rescues(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """An operator's retry gives a fresh budget: held rescues start again at 0."""
        job = queue.enqueue("upload", max_attempts=1)
        self._claim_held(queue, "w", 10)
        clock.advance(11)
        queue.rescue_expired()
        (claimed,) = self._claim_held(queue, "w", 10)
        assert claimed.held_rescues == 1
        queue.fail(claimed.lease, "boom")
        assert queue.get(job.id).status is JobStatus.FAILED
        queue.retry(job.id)
        (again,) = self._claim_held(queue, "w", 10)
        assert again.held_rescues == 0

    def test_release_makes_job_claimable_at_once(self, queue: JobQueue) -> None:
        """A released job is pending and claimable now; attempts stay counted."""
        job = queue.enqueue("upload")
        claimed = queue.claim("w1")
        assert claimed is not None
        released = queue.release(claimed.lease, "shutting down")
        assert released.status is JobStatus.PENDING
        assert (released.failures, released.crashes) == (0, 0)
        again = queue.claim("w2")
        assert again is not None and again.id == job.id and again.attempts == 2

    # -- batched forms -------------------------------------------------------------

    def test_claim_many_keeps_claim_order_and_limit(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """claim_many takes up to N claimable jobs, in priority/run_at/id order."""
        low = queue.enqueue("upload", priority=3)
        high = queue.enqueue("upload", priority=1)
        mid = [queue.enqueue("upload", priority=2) for _ in range(3)]
        later = queue.enqueue("upload", priority=1, delay=60)
        now = clock()
        got = queue.store.claim_many("w", None, now, now + timedelta(seconds=LEASE), 4)
        assert [j.id for j in got] == [high.id, *[j.id for j in mid]]
        assert all(j.status is JobStatus.RUNNING and j.attempts == 1 for j in got)
        rest = queue.store.claim_many(
            "w", None, now, now + timedelta(seconds=LEASE), 10
        )
        assert [j.id for j in rest] == [low.id]
        assert queue.get(later.id).status is JobStatus.PENDING

    def test_settle_and_claim_is_fenced_per_job(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """One call records several outcomes, refuses a stale lease, then claims."""
        done, bad, back, stale, nxt = (queue.enqueue("upload") for _ in range(5))
        now = clock()
        until = now + timedelta(seconds=LEASE)
        held = queue.store.claim_many("w", None, now, until, 4)
        assert [j.id for j in held] == [done.id, bad.id, back.id, stale.id]
        queue.release(held[3].lease)  # the worker's lease on `stale` is now dead
        error = ErrorRecord(1, now, "boom", "w")
        outcomes, claimed = queue.store.settle_and_claim(
            [
                Settlement(held[0].lease, "complete", result={"ok": 1}),
                Settlement(held[1].lease, "fail", error=error),
                Settlement(held[2].lease, "release", message="stopping"),
                Settlement(held[3].lease, "complete", result={"stale": 1}),
            ],
            now,
            queue.retry_policy,
            "w",
            None,
            until,
            1,
        )
        assert outcomes[:3] == [None, None, None]
        assert isinstance(outcomes[3], LeaseLost)
        assert queue.get(done.id).result == {"ok": 1}
        assert queue.get(bad.id).status is JobStatus.PENDING
        assert queue.get(bad.id).failures == 1
        assert "released" in [e.kind for e in queue.events(back.id)]
        assert queue.get(stale.id).result is None
        # one of the claimable jobs, all tied on priority and run_at
        assert [j.id for j in claimed] in ([stale.id], [back.id], [nxt.id])
        assert claimed[0].attempts == queue.get(claimed[0].id).attempts

    def test_settling_together_unblocks_a_common_dependent(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """Two dependencies completed in one settle call release their dependent."""
        a, b = queue.enqueue("upload"), queue.enqueue("upload")
        c = queue.enqueue("dataset_conversion", depends_on=[a.id, b.id])
        now = clock()
        until = now + timedelta(seconds=LEASE)
        held = queue.store.claim_many("w", ["upload"], now, until, 2)
        outcomes, claimed = queue.store.settle_and_claim(
            [Settlement(j.lease, "complete") for j in held],
            now,
            queue.retry_policy,
            "w",
            ["dataset_conversion"],
            until,
            5,
        )
        assert outcomes == [None, None]
        assert [j.id for j in claimed] == [c.id]

    def test_cancel_request_survives_release_and_failure(self, queue: JobQueue) -> None:
        """A job cancelled while running is not handed on: releasing it or failing
        it (even with retries left) ends it cancelled."""
        for end in ("release", "fail"):
            job = queue.enqueue("upload", max_attempts=5)
            claimed = queue.claim("w")
            assert claimed is not None and claimed.id == job.id
            queue.cancel(job.id, "stop it")
            if end == "release":
                queue.release(claimed.lease, "shutting down")
            else:
                queue.fail(claimed.lease, "boom")
            assert queue.get(job.id).status is JobStatus.CANCELLED, end
            assert queue.claim("w") is None

    def test_retry_refuses_a_job_behind_a_dead_dependency(
        self, queue: JobQueue
    ) -> None:
        """A dependent cannot be retried alone while its dependency is dead; and
        reviving through one dependency leaves it cancelled if another is dead."""
        x = queue.enqueue("upload", max_attempts=1)
        y = queue.enqueue("upload", max_attempts=1)
        z = queue.enqueue("dataset_conversion", depends_on=[x.id, y.id])
        for _ in range(2):
            claimed = queue.claim("w", ["upload"])
            assert claimed is not None
            queue.fail(claimed.lease, "gone")
        assert queue.get(z.id).status is JobStatus.CANCELLED
        with pytest.raises(InvalidJobState, match="retry that one first"):
            queue.retry(z.id)
        queue.retry(x.id)
        still = queue.get(z.id)
        assert still.status is JobStatus.CANCELLED
        assert still.error is not None and y.id in still.error
        queue.retry(y.id)
        assert queue.get(z.id).status is JobStatus.PENDING

    def test_stale_and_fresh_lease_of_one_job_in_one_batch(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """In one settle call, the stale lease is refused even though the fresh one
        for the same job is accepted."""
        job = queue.enqueue("upload")
        first = queue.claim("w")
        assert first is not None
        queue.release(first.lease)
        second = queue.claim("w")
        assert second is not None and second.attempts == first.attempts + 1
        now = clock()
        outcomes, _ = queue.store.settle_and_claim(
            [
                Settlement(second.lease, "complete", result={"n": 2}),
                Settlement(first.lease, "complete", result={"n": 1}),
            ],
            now,
            queue.retry_policy,
            "w",
            None,
            now,
            0,
        )
        assert outcomes[0] is None
        assert isinstance(outcomes[1], LeaseLost)
        assert queue.get(job.id).result == {"n": 2}
        completed = [e for e in queue.events(job.id) if e.kind == "completed"]
        assert [e.attempt for e in completed] == [second.attempts]

    def test_heartbeat_many_reports_each_lease(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """heartbeat_many renews live leases and reports lost ones and cancels."""
        a, b = queue.enqueue("upload"), queue.enqueue("upload")
        now = clock()
        until = now + timedelta(seconds=LEASE)
        ja, jb = queue.store.claim_many("w", None, now, until, 2)
        queue.cancel(a.id)
        queue.release(jb.lease)
        out = queue.store.heartbeat_many(
            [(ja.lease, Progress(10.0)), (jb.lease, None)], now, until
        )
        assert out[0] is True
        assert isinstance(out[1], LeaseLost)
        assert queue.get(a.id).progress.percentage == 10.0
        assert queue.get(b.id).status is JobStatus.PENDING

    # -- reading -------------------------------------------------------------------

    def test_list_pages_by_key(self, queue: JobQueue) -> None:
        """``after`` (the last id of a page) gives the next page, with or
        without a filter, the same pages as offsets give; a page after the
        last job is empty; a bad ``after`` is refused."""
        made = [queue.enqueue("upload", owner=f"u{i % 2}") for i in range(7)]
        pages, after = [], None
        while True:
            page = queue.list(limit=3, after=after)
            if not page:
                break
            pages.append([j.id for j in page])
            after = page[-1].id
        assert pages == [[j.id for j in made[i : i + 3]] for i in (0, 3, 6)]
        mine = [j.id for j in made if j.owner == "u1"]
        first = queue.list(owner="u1", limit=2)
        rest = queue.list(owner="u1", limit=10, after=first[-1].id)
        assert [j.id for j in first + rest] == mine
        assert queue.list(after=made[-1].id) == []
        with pytest.raises(InvalidInput, match="after must be a job id"):
            queue.list(after="")

    def test_list_filters_and_paginates_in_stable_order(self, queue: JobQueue) -> None:
        """list() filters by status, type, dataset and owner; pages do not overlap."""
        made = [
            queue.enqueue("upload", dataset_uuid=f"d{i % 2}", owner=f"u{i % 3}")
            for i in range(7)
        ]
        made.append(queue.enqueue("dataset_conversion", dataset_uuid="d0"))
        page1 = queue.list(limit=3)
        page2 = queue.list(limit=3, offset=3)
        page3 = queue.list(limit=3, offset=6)
        assert [j.id for j in page1 + page2 + page3] == [j.id for j in made]
        assert {j.id for j in queue.list(dataset_uuid="d0")} == {
            j.id for j in made if j.dataset_uuid == "d0"
        }
        assert {j.id for j in queue.list(owner="u1")} == {
            j.id for j in made if j.owner == "u1"
        }
        assert [j.id for j in queue.list(job_type="dataset_conversion")] == [
            made[-1].id
        ]
        claimed = queue.claim("w")
        assert claimed is not None
        assert [j.id for j in queue.list(status="running")] == [claimed.id]
        with pytest.raises(InvalidInput, match="unknown job status"):
            queue.list(status="queued")

    def test_count_matches_what_list_pages_through(self, queue: JobQueue) -> None:
        """count() with each filter gives the number of jobs list() returns."""
        for i in range(7):
            queue.enqueue("upload", dataset_uuid=f"d{i % 2}", owner=f"u{i % 3}")
        queue.enqueue("dataset_conversion", dataset_uuid="d0")
        claimed = queue.claim("w")
        assert claimed is not None
        filters: list[dict[str, Any]] = [
            {},
            {"owner": "u1"},
            {"dataset_uuid": "d0"},
            {"job_type": "upload", "owner": "u0"},
            {"status": "running"},
            {"status": "pending", "job_type": "dataset_conversion"},
            {"owner": "nobody"},
        ]
        for f in filters:
            assert queue.count(**f) == len(queue.list(limit=100, **f)), f
        with pytest.raises(InvalidInput, match="unknown job status"):
            queue.count(status="queued")

    def test_stats_count_by_status_and_type(self, queue: JobQueue) -> None:
        """stats() counts jobs by status, by type, and by type and status."""
        for _ in range(3):
            queue.enqueue("upload")
        queue.enqueue("data_validation")
        claimed = queue.claim("w", ["upload"])
        assert claimed is not None
        queue.complete(claimed.lease)
        stats = queue.stats()
        assert stats["total"] == 4
        assert stats["by_status"] == {
            "pending": 3,
            "running": 0,
            "completed": 1,
            "failed": 0,
            "cancelled": 0,
        }
        assert stats["by_type"] == {"upload": 3, "data_validation": 1}
        assert stats["by_type_status"]["upload"] == {"pending": 2, "completed": 1}

    def test_delete_finished_keeps_recent_and_live_jobs(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """Only jobs that finished before the cut-off are deleted."""
        old = queue.enqueue("upload")
        claimed = queue.claim("w")
        assert claimed is not None
        queue.complete(claimed.lease)
        pending = queue.enqueue("upload", delay=10**8)
        clock.advance(3600 * 24 * 31)
        recent = queue.enqueue("upload")
        claimed = queue.claim("w")
        assert claimed is not None and claimed.id == recent.id
        queue.complete(claimed.lease)
        assert queue.delete_finished(timedelta(days=30)) == 1
        with pytest.raises(JobNotFound):
            queue.get(old.id)
        assert queue.get(pending.id).status is JobStatus.PENDING
        assert queue.get(recent.id).status is JobStatus.COMPLETED

    def test_delete_finished_in_batches_takes_the_oldest_first(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """With a limit, at most that many go, those that finished first; what
        is left goes in the next batch; idempotency keys of deleted jobs free up."""
        made = []
        for n in range(5):
            job = queue.enqueue("upload", idempotency_key=f"k{n}")
            claimed = queue.claim("w")
            assert claimed is not None and claimed.id == job.id
            queue.complete(claimed.lease)
            made.append(job.id)
            clock.advance(60)
        clock.advance(3600 * 24 * 31)
        assert queue.delete_finished(timedelta(days=30), limit=2) == 2
        left = {j.id for j in queue.list(limit=10)}
        assert left == set(made[2:])
        assert queue.delete_finished(timedelta(days=30), limit=10) == 3
        assert queue.list(limit=10) == []
        assert queue.enqueue("upload", idempotency_key="k0").id not in made
        with pytest.raises(InvalidInput):
            queue.delete_finished(timedelta(days=30), limit=0)

    def test_delete_jobs_skips_running_and_unknown_ids(self, queue: JobQueue) -> None:
        """delete_jobs removes pending and finished jobs with their history, leaves
        a running job alone, ignores unknown ids, and says which went."""
        done = queue.enqueue("upload", priority=1)
        claimed = queue.claim("w")
        assert claimed is not None and claimed.id == done.id
        queue.complete(claimed.lease)
        running = queue.enqueue("upload", priority=1)
        claimed = queue.claim("w")
        assert claimed is not None and claimed.id == running.id
        pending = queue.enqueue("upload")
        gone = queue.store.delete_jobs([done.id, running.id, pending.id, "0" * 32])
        assert sorted(gone) == sorted([done.id, pending.id])
        for job_id in (done.id, pending.id):
            with pytest.raises(JobNotFound):
                queue.get(job_id)
        assert queue.get(running.id).status is JobStatus.RUNNING
        assert queue.store.delete_jobs([]) == []

    # -- monitoring queries ------------------------------------------------------

    def test_oldest_claimable_ignores_blocked_and_finished_jobs(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """oldest_claimable is the earliest run_at of pending jobs without an
        unfinished dependency, across priorities; None when there is none."""
        assert queue.store.oldest_claimable() is None
        start = clock()
        parent = queue.enqueue("upload", priority=3)  # run_at = start
        clock.advance(5)
        queue.enqueue("upload", priority=1, depends_on=[parent.id])  # blocked
        later = queue.enqueue("upload", priority=1, delay=60)
        assert queue.store.oldest_claimable() == start
        claimed = queue.claim("w", lease_seconds=LEASE)
        assert claimed is not None and claimed.id == parent.id
        assert queue.store.oldest_claimable() == later.run_at
        queue.complete(claimed.lease)  # unblocks the child, due since start + 5
        assert queue.store.oldest_claimable() == start + timedelta(seconds=5)

    def test_finished_counts_and_jobs_by_window(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """finished_counts groups jobs finished in [start, end) by status and
        type; finished_jobs lists them newest first, by status and owner."""
        t0 = clock()
        done = queue.enqueue("upload", owner="a")
        job = queue.claim("w")
        assert job is not None
        queue.complete(job.lease)  # finished at t0
        clock.advance(60)
        bad = queue.enqueue("data_validation", owner="b", max_attempts=1)
        job = queue.claim("w")
        assert job is not None
        queue.fail(job.lease, "boom")  # finished at t0 + 60
        clock.advance(60)
        gone = queue.enqueue("upload", owner="a")
        queue.cancel(gone.id)  # finished at t0 + 120
        queue.enqueue("upload")  # still pending: never counted
        end = clock() + timedelta(seconds=1)
        store = queue.store
        assert dict(store.finished_counts(t0, end)) == {
            ("completed", "upload"): 1,
            ("failed", "data_validation"): 1,
            ("cancelled", "upload"): 1,
        }
        assert dict(store.finished_counts(t0 + timedelta(seconds=1), end)) == {
            ("failed", "data_validation"): 1,
            ("cancelled", "upload"): 1,
        }
        assert dict(store.finished_counts(None, t0 + timedelta(seconds=60))) == {
            ("completed", "upload"): 1
        }
        ids = [j.id for j in store.finished_jobs(t0, end)]
        assert ids == [gone.id, bad.id, done.id]
        assert [j.id for j in store.finished_jobs(t0, end, limit=2)] == ids[:2]
        assert [j.id for j in store.finished_jobs(t0, end, status="failed")] == [bad.id]
        assert [j.id for j in store.finished_jobs(t0, end, owner="a")] == [
            gone.id,
            done.id,
        ]
        assert store.finished_jobs(end, end + timedelta(hours=1)) == []

    def test_finished_durations_of_completed_jobs(
        self, queue: JobQueue, clock: ManualClock
    ) -> None:
        """finished_durations gives (type, seconds run, time limit) of the jobs
        completed in the window, newest first: failed and cancelled ones are
        left out; the same numbers as the jobs themselves give."""
        t0 = clock()
        first = queue.enqueue("upload", timeout_seconds=100)
        job = queue.claim("w")
        assert job is not None
        clock.advance(5)
        queue.complete(job.lease)  # ran 5 s
        queue.enqueue("data_validation", max_attempts=1)
        job = queue.claim("w")
        assert job is not None
        clock.advance(2)
        queue.fail(job.lease, "boom")  # failed: not a duration
        second = queue.enqueue("dataset_conversion", timeout_seconds=50)
        job = queue.claim("w")
        assert job is not None
        clock.advance(7.5)
        queue.complete(job.lease)  # ran 7.5 s
        end = clock() + timedelta(seconds=1)
        found = queue.store.finished_durations(t0, end)
        assert [(t, round(s, 3), lim) for t, s, lim in found] == [
            ("dataset_conversion", 7.5, 50.0),
            ("upload", 5.0, 100.0),
        ]
        assert len(queue.store.finished_durations(t0, end, limit=1)) == 1
        jobs = {j.id: j for j in queue.store.finished_jobs(t0, end)}
        assert jobs[first.id].started_at is not None
        assert jobs[second.id].status.value == "completed"
        assert queue.store.finished_durations(end, end + timedelta(hours=1)) == []

    def test_worker_records(self, store: JobStore, clock: ManualClock) -> None:
        """A worker's record is created, refreshed (first_seen kept), listed by
        last sign of life, removed, and old ones deleted."""
        if not store.tracks_workers:
            pytest.skip("this store keeps no worker records")
        t0 = clock()
        store.record_worker("w1", t0, {"pid": 1})
        store.record_worker("w2", t0, {"pid": 2})
        later = clock.advance(30)
        store.record_worker("w1", later, {"pid": 1, "running": 2})
        found = store.list_workers()
        assert [(w.worker_id, w.first_seen, w.last_seen) for w in found] == [
            ("w1", t0, later),
            ("w2", t0, t0),
        ]
        assert found[0].info == {"pid": 1, "running": 2}
        assert [w.worker_id for w in store.list_workers(later)] == ["w1"]
        assert store.delete_workers(later) == 1
        store.remove_worker("w1")
        assert store.list_workers() == []

    def test_result_round_trips(self, queue: JobQueue) -> None:
        """The handler's JSON result is stored as given."""
        job = queue.enqueue("upload")
        claimed = queue.claim("w")
        assert claimed is not None
        result: dict[str, Any] = {
            "files": ["a.tif", "b.tif"],
            "bytes": 2**40,
            "nested": {"ok": True, "ratio": 0.5},
        }
        queue.complete(claimed.lease, result)
        assert queue.get(job.id).result == result
        assert queue.get(job.id).finished_at is not None

    def test_times_are_aware_utc(self, queue: JobQueue) -> None:
        """Every time a store returns is timezone-aware UTC."""
        job = queue.enqueue("upload")
        claimed = queue.claim("w")
        assert claimed is not None
        for value in (
            claimed.created_at,
            claimed.run_at,
            claimed.lease_until,
            claimed.started_at,
        ):
            assert value is not None and value.utcoffset() == timedelta(0)
        assert all(e.at.tzinfo is not None for e in queue.events(job.id))
        assert claimed.created_at.tzinfo is not None
        assert claimed.created_at.astimezone(UTC) == claimed.created_at
