"""Worker: claim -> run handler -> complete / fail, with leases and heartbeats.

One worker owns ``concurrency`` slots. Each claimed job runs in a thread (default)
or in a child process (``mode="process"``), while one heartbeat thread, which the
handlers cannot block, renews every lease, stores the latest progress, and passes
cancellation requests on. A job past its time limit is failed (and retried by the
policy): in process mode its process is killed; in thread mode the thread cannot be
killed, so it is abandoned and any write it makes later is refused by fencing.

A worker's death costs only the jobs it was running. Jobs are claimed *held*
(:meth:`JobQueue.settle_and_claim` with ``held=True``): a prefetched job that never
started comes back without a crash charge when the worker dies. Before a handler
runs, the worker records its start (:meth:`JobQueue.record_started`) in process
mode always, and in thread mode for a job that already came back that way once,
so a job that kills its worker every time still reaches the crash cap.

In process mode a job's process dies with its worker: it runs in its own process
group, gets SIGKILL from the kernel when the worker's thread that started it exits
(Linux, ``PR_SET_PDEATHSIG``), and everywhere a thread in it watches
``os.getppid()`` and kills its group once the worker is gone. A worker that could
not renew a lease for ``lease_seconds - lease_seconds / 6`` (its store unreachable)
kills that job's process and releases the job, so the job's process is gone before
its lease can expire and a rescue start the job elsewhere
(see docs/guarantees.md, "One attempt at a time").

Stopping (``stop()``, SIGTERM or SIGINT): claim nothing more, let running jobs
finish for ``grace_period`` seconds, then release the rest so another worker can
take them at once. A second signal stops without waiting.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import queue as queue_mod
import signal
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from types import FrameType
from typing import Literal

from sclib.backends.base import ClaimedJob, Settlement
from sclib.errors import (
    InvalidInput,
    LeaseLost,
    SclibError,
)
from sclib.jobs.child import _child_main, _kill_job_process
from sclib.jobs.context import JobContext
from sclib.jobs.execute import (
    LEASE_MARGIN,
    PARENT_CHECK_SECONDS,
    _check_result,
    _execute,
    _Outcome,
    job_log_context,
    new_worker_id,
    run_inline,
)
from sclib.jobs.queue import JobQueue
from sclib.jobs.registry import HandlerRegistry
from sclib.jobs.schedules import Scheduler

__all__ = ["Worker", "WorkerStats", "new_worker_id", "run_inline"]

log = logging.getLogger(__name__)

#: "auto" prefetch: seconds of work each runner may hold ahead, the cap, and how
#: long a claimed job may wait unstarted before it is given back to the queue
AUTO_AHEAD_SECONDS = 0.25
AUTO_PREFETCH_MAX = 32
AUTO_HOLD_SECONDS = 1.0


@dataclass
class WorkerStats:
    """What a worker did since it started."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    timed_out: int = 0
    lost: int = 0
    released: int = 0


# -- the worker -----------------------------------------------------------------


class _Slot:
    """One held job: claimed, maybe waiting in the prefetch buffer, maybe running."""

    __slots__ = (
        "abandoned",
        "claimed_at",
        "conn",
        "ctx",
        "done",
        "fenced",
        "held",
        "held_rescues",
        "id",
        "lease_deadline",
        "process",
        "replaced",
        "started",
        "timeout_seconds",
        "type",
    )

    def __init__(self, claimed: ClaimedJob, lease_deadline: float) -> None:
        self.id = claimed.lease.job_id
        self.type = claimed.type
        #: ``time.monotonic()`` when this worker claimed it
        self.claimed_at = time.monotonic()
        self.timeout_seconds = claimed.timeout_seconds
        self.ctx = JobContext(claimed)
        #: the store holds the claim (no crash charged if this worker vanishes)
        self.held = claimed.held
        self.held_rescues = claimed.held_rescues
        #: ``time.monotonic()`` past which the lease may have expired in the
        #: store, less a margin: the job must not be running then
        self.lease_deadline = lease_deadline
        #: stopped because its lease could not be renewed in time
        self.fenced = False
        self.started = False
        self.done = False
        self.process: multiprocessing.process.BaseProcess | None = None
        self.conn: Connection | None = None
        #: the worker gave the job up (timed out or lease lost); the handler's
        #: outcome, if it ever comes, is not recorded
        self.abandoned = False
        #: a replacement runner thread took over this slot's runner
        self.replaced = False


class Worker:
    """Runs jobs from a :class:`~sclib.JobQueue` with registered handlers.

    One dispatcher loop does every write but heartbeats: it records finished
    attempts and claims new jobs in one call (:meth:`JobQueue.settle_and_claim`,
    one SQLite transaction). ``concurrency`` runner threads execute handlers; one
    heartbeat thread renews every held lease in one call.

    :param concurrency: how many jobs run at once.
    :param prefetch: how many extra jobs to claim ahead, so a runner that finishes
        finds its next job already leased (fewer round trips for short jobs; the
        prefetched jobs' leases are renewed while they wait, and if the worker
        dies, a job that never started comes back without a crash charge).
        ``"auto"`` (default) adapts it to the jobs' observed run times: each
        runner holds about :data:`AUTO_AHEAD_SECONDS` of work ahead (at most
        :data:`AUTO_PREFETCH_MAX` jobs in all), so jobs that take milliseconds
        are claimed in batches and jobs that take a second or more are never
        held away from other workers. ``0`` claims only for idle runners; a
        number fixes the count.
    :param types: job types to take (default: every type with a handler).
    :param mode: ``"thread"`` (default) or ``"process"`` (each job in a fresh
        interpreter; handlers must be importable functions; hard time limits).
    :param lease_seconds: how long a claim is valid without a heartbeat; a crashed
        worker's jobs are rescued this long after its last heartbeat. A job whose
        lease the worker could not renew for five sixths of it is stopped and
        released (process mode kills its process), so it never runs beside the
        attempt that replaces it.
    :param heartbeat_interval: seconds between lease renewals (default a third of
        the lease; at most half of it).
    :param poll_interval: seconds to wait before asking again when nothing was
        claimable.
    :param grace_period: seconds running jobs get to finish on a graceful stop.
    :param rescue_interval: seconds between sweeps for expired leases; ``None``
        turns rescue off for this worker (another worker or the server does it).
    :param keep_finished: how long finished jobs (and their results) are kept;
        the worker deletes older ones in batches of 500, a sweep a minute.
        ``None`` or zero keeps them forever.
    :param schedules: enqueue the periodic jobs declared on ``handlers``
        (:meth:`HandlerRegistry.schedule`), checked every ``schedule_interval``
        seconds; every worker may do it, each tick still makes one job.
    """

    def __init__(
        self,
        queue: JobQueue,
        handlers: HandlerRegistry,
        *,
        concurrency: int = 1,
        prefetch: int | Literal["auto"] = "auto",
        types: Iterable[str] | None = None,
        mode: Literal["thread", "process"] = "thread",
        lease_seconds: float = 30.0,
        heartbeat_interval: float | None = None,
        poll_interval: float = 1.0,
        grace_period: float = 30.0,
        rescue_interval: float | None = 5.0,
        worker_id: str | None = None,
        schedules: bool = True,
        schedule_interval: float = 1.0,
        keep_finished: timedelta | None = timedelta(days=30),
    ) -> None:
        if concurrency < 1:
            raise InvalidInput(f"concurrency must be >= 1, got {concurrency}")
        if prefetch != "auto" and (
            isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0
        ):
            raise InvalidInput(
                f"prefetch must be 'auto' or a number >= 0, got {prefetch!r}"
            )
        if mode not in ("thread", "process"):
            raise InvalidInput(f"mode must be 'thread' or 'process', got {mode!r}")
        if lease_seconds <= 0 or poll_interval <= 0 or grace_period < 0:
            raise InvalidInput(
                "lease_seconds and poll_interval must be positive and grace_period "
                "not negative"
            )
        if heartbeat_interval is not None and not (
            0 < heartbeat_interval <= lease_seconds / 2
        ):
            raise InvalidInput(
                f"heartbeat_interval must be positive and at most half the lease "
                f"({lease_seconds / 2:g}s), got {heartbeat_interval!r}"
            )
        if not handlers:
            raise InvalidInput("a worker needs at least one handler")
        selected = list(handlers) if types is None else list(dict.fromkeys(types))
        missing = [t for t in selected if t not in handlers]
        if missing:
            raise InvalidInput(
                f"no handler for job type(s) {', '.join(missing)}; handlers exist "
                f"for: {', '.join(sorted(handlers))}"
            )
        if isinstance(handlers, HandlerRegistry):
            queue.adopt(handlers)  # the job types the handlers define
        for job_type in selected:
            queue.job_types.require(job_type)
        if mode == "process":
            for job_type in selected:
                try:
                    pickle.dumps(handlers[job_type])
                except Exception as exc:
                    raise InvalidInput(
                        f"process mode sends handlers to a fresh interpreter by "
                        f"reference, but the handler for {job_type!r} cannot be "
                        f"pickled ({exc}); make it a module-level function"
                    ) from None
        self.queue = queue
        self.handlers = handlers
        self.types = selected
        self.concurrency = concurrency
        self._auto = prefetch == "auto"
        self._fixed_prefetch = 0 if prefetch == "auto" else prefetch
        #: average seconds a job of each type ran here lately (exponential,
        #: for "auto"; only runs whose handler ran count)
        self._avg_run: dict[str, float] = {}
        self._avg_lock = threading.Lock()
        self.mode = mode
        self.lease_seconds = lease_seconds
        #: how long after a renewal was sent the lease is taken to be good
        self._lease_budget = lease_seconds * (1 - LEASE_MARGIN)
        self.heartbeat_interval = heartbeat_interval or lease_seconds / 3
        self.poll_interval = poll_interval
        self.grace_period = grace_period
        self.rescue_interval = rescue_interval
        self.worker_id = worker_id or new_worker_id()
        self.stats = WorkerStats()
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self._ready: queue_mod.SimpleQueue[_Slot | None] = queue_mod.SimpleQueue()
        self._settlements: list[tuple[Settlement, str]] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._hurry = threading.Event()
        self._beat_stop = threading.Event()
        self._last_rescue = 0.0
        self._store_ok = True
        self._mp = multiprocessing.get_context("spawn")
        if schedule_interval <= 0:
            raise InvalidInput(
                f"schedule_interval must be positive, got {schedule_interval}"
            )
        self.schedule_interval = schedule_interval
        if keep_finished is not None and keep_finished < timedelta(0):
            raise InvalidInput(f"keep_finished must not be negative: {keep_finished}")
        self.keep_finished = keep_finished or None
        self._next_expiry = 0.0
        declared = handlers.schedules if isinstance(handlers, HandlerRegistry) else {}
        self._scheduler = Scheduler(queue, declared) if schedules and declared else None
        self._send_lock = threading.Lock()

    @property
    def prefetch(self) -> int:
        """Jobs claimed ahead of the free runners now: fixed, or for ``"auto"``
        about :data:`AUTO_AHEAD_SECONDS` of work per runner at the run time of
        the slowest type seen lately (0 until a job has run). A claimed job can
        be of any type this worker takes, so the slowest one decides; a held
        job that still waits unstarted after :data:`AUTO_HOLD_SECONDS` is given
        back to the queue (see :meth:`_give_back_held`)."""
        if not self._auto:
            return self._fixed_prefetch
        with self._avg_lock:  # not self._lock: _settle reads this holding it
            slowest = max(self._avg_run.values(), default=None)
        if slowest is None:
            return 0
        ahead = self.concurrency * AUTO_AHEAD_SECONDS / max(slowest, 1e-4)
        return min(AUTO_PREFETCH_MAX, int(ahead))

    def _observe_run(self, job_type: str, seconds: float) -> None:
        with self._avg_lock:
            avg = self._avg_run.get(job_type)
            self._avg_run[job_type] = (
                seconds if avg is None else 0.8 * avg + 0.2 * seconds
            )

    def _give_back_held(self) -> None:
        """``"auto"``: a claimed job still waiting for a runner after
        :data:`AUTO_HOLD_SECONDS` (behind a slower job than the averages
        expected) goes back to the queue, where an idle worker can take it. It
        never started, so it costs no attempt's crash budget."""
        if not self._auto:
            return
        cutoff = time.monotonic() - AUTO_HOLD_SECONDS
        with self._lock:
            stale = [
                s
                for s in self._slots.values()
                if not s.started and not s.abandoned and s.claimed_at < cutoff
            ]
            for slot in stale:
                slot.abandoned = True  # a runner that pops it skips it
        for slot in stale:
            self._release(slot, "held unstarted too long; given back to the queue")

    def __repr__(self) -> str:
        return f"Worker({self.worker_id!r}, types={self.types}, mode={self.mode!r})"

    # -- control ----------------------------------------------------------------

    def stop(self, *, hurry: bool = False) -> None:
        """Ask the worker to stop (safe from any thread and from signal handlers).

        Running jobs get ``grace_period`` seconds to finish, then are released;
        ``hurry=True`` releases them without waiting.
        """
        if hurry:
            self._hurry.set()
        self._stopping.set()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop gracefully; a second one stops without waiting."""

        def handle(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._stopping.is_set():
                log.warning("second %s: stopping now", name)
                self.stop(hurry=True)
            else:
                log.info(
                    "%s: finishing running jobs (up to %gs), claiming no more",
                    name,
                    self.grace_period,
                )
                self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(
        self, *, until_idle: bool = False, max_jobs: int | None = None
    ) -> WorkerStats:
        """Work until stopped (or, with ``until_idle``, until nothing is claimable)."""
        log.info("worker %s taking %s", self.worker_id, ", ".join(self.types))
        beat = threading.Thread(
            target=self._heartbeat_loop,
            daemon=True,
            name=f"sclib-heartbeat-{self.worker_id}",
        )
        beat.start()
        if self._scheduler is not None:
            self._scheduler.run_pending()  # what came due while no worker ran
            threading.Thread(
                target=self._schedule_loop,
                daemon=True,
                name=f"sclib-schedules-{self.worker_id}",
            ).start()
        for _ in range(self.concurrency):
            self._start_runner()
        try:
            self._dispatch(until_idle, max_jobs)
            self._drain()
        finally:
            self._stopping.set()
            self._beat_stop.set()
            for _ in range(self.concurrency + 1):
                self._ready.put(None)
            beat.join(timeout=5)
            self._report_gone()
        log.info("worker %s stopped: %s", self.worker_id, self.stats)
        return self.stats

    # -- the dispatcher ------------------------------------------------------------

    def _dispatch(self, until_idle: bool, max_jobs: int | None) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            self._maybe_rescue()
            self._maybe_expire()
            self._check_deadlines()
            self._give_back_held()
            left = None if max_jobs is None else max_jobs - self.stats.claimed
            claimed, room = self._settle(claim=True, most=left)
            if (
                max_jobs is not None
                and self.stats.claimed >= max_jobs
                and not (self._slots or self._settlements)
            ):
                return
            if (
                until_idle
                and self._store_ok
                and not claimed
                and not self._slots
                and not self._settlements
            ):
                return
            if claimed and claimed == room:
                continue  # a full batch: there may be more right away
            if self._settlements:
                timeout = 0.05  # outcomes are gathering: record them soon
            elif self._slots:
                timeout = min(self.poll_interval, 0.25)
            else:
                timeout = self.poll_interval
            self._wake.wait(timeout)

    def _settle(
        self, *, claim: bool = False, most: int | None = None
    ) -> tuple[int, int]:
        """Write finished attempts; with ``claim``, fill the free slots (at most
        ``most`` new jobs). Returns how many jobs were claimed and the limit used.
        """
        with self._lock:
            pending, self._settlements = self._settlements, []
            slots = self._slots
            freed = 0
            for item, _ in pending:
                if item.lease.job_id in slots:
                    freed += 1
            free = self.concurrency + self.prefetch - len(slots) + freed
            limit = max(0, free if most is None else min(free, most)) if claim else 0
        if not pending and limit <= 0:
            return 0, 0
        sent = time.monotonic()
        try:
            outcomes, jobs = self.queue.settle_and_claim(
                [item for item, _ in pending],
                self.worker_id,
                self.types,
                lease_seconds=self.lease_seconds,
                limit=limit,
                held=True,
            )
        except SclibError as exc:
            log.warning("could not reach the job store (%s); trying again shortly", exc)
            with self._lock:
                self._settlements[:0] = pending
            self._store_ok = False
            self._wake.wait(self.poll_interval)
            return 0, limit
        self._store_ok = True
        counts: dict[str, int] = {}
        lost_ids: list[str] = []
        good_until = sent + self._lease_budget
        new = [_Slot(job, good_until) for job in jobs]
        stats = self.stats
        with self._lock:  # one acquisition for the whole batch
            for (item, what), lost in zip(pending, outcomes, strict=True):
                lease = item.lease
                if lost is not None:
                    lost_ids.append(lease.job_id)
                    what = "lost"
                counts[what] = counts.get(what, 0) + 1
                slot = slots.get(lease.job_id)
                if slot is not None and (
                    slot.ctx.lease is lease or slot.ctx.lease == lease
                ):
                    del slots[lease.job_id]
            for what, count in counts.items():
                if hasattr(stats, what):
                    setattr(stats, what, getattr(stats, what) + count)
            stats.claimed += len(new)
            for slot in new:
                slots[slot.id] = slot
        for job_id in lost_ids:
            log.info(
                "job %s: lease lost before its outcome was stored; dropped", job_id
            )
        put = self._ready.put
        for slot in new:
            put(slot)
        return len(new), limit

    def _add_settlement(self, item: Settlement, what: str) -> None:
        with self._lock:
            self._settlements.append((item, what))
            waiting = len(self._settlements)
        # With prefetched jobs still queued for the runners, let a few outcomes
        # gather so one transaction records them and claims the next batch; the
        # dispatcher still writes within 50 ms (see _dispatch).
        if not self._wake.is_set() and (
            self.prefetch == 0
            or waiting >= max(1, self.prefetch // 2)
            or self._ready.empty()
            or self._stopping.is_set()
        ):
            # (already set: the dispatcher has not cleared it yet, and it clears
            # it before it takes the settlements, this one included)
            self._wake.set()

    def _outcome_settlement(self, slot: _Slot, outcome: _Outcome) -> None:
        lease = slot.ctx.lease
        if outcome.kind == "lost":
            with self._lock:
                self._slots.pop(slot.id, None)
            self._count("lost")
            self._wake.set()
            return
        if outcome.kind == "ok":
            try:
                if outcome.result is not None:
                    _check_result(outcome.result)
            except InvalidInput as exc:
                self._add_settlement(
                    self.queue.failure(
                        lease, f"handler returned an unusable result: {exc}"
                    ),
                    "failed",
                )
                return
            self._add_settlement(
                Settlement(lease, "complete", result=outcome.result), "completed"
            )
        elif outcome.kind == "cancelled":
            self._add_settlement(
                Settlement(lease, "cancel", message=outcome.message), "cancelled"
            )
        elif outcome.kind == "release":
            self._add_settlement(
                Settlement(lease, "release", message=outcome.message), "released"
            )
        elif outcome.kind == "timeout":
            self._add_settlement(
                self.queue.failure(lease, outcome.message, kind="timeout"), "timed_out"
            )
        else:
            self._add_settlement(
                self.queue.failure(lease, outcome.message, kind=outcome.error_kind),
                "failed",
            )

    def _count(self, what: str) -> None:
        with self._lock:  # counted from the dispatcher and the heartbeat thread
            if hasattr(self.stats, what):
                setattr(self.stats, what, getattr(self.stats, what) + 1)

    # -- runners -------------------------------------------------------------------

    def _start_runner(self) -> None:
        threading.Thread(
            target=self._runner, daemon=True, name=f"sclib-runner-{self.worker_id}"
        ).start()

    def _runner(self) -> None:
        while True:
            slot = self._ready.get()
            if slot is None:
                return
            with self._lock:  # against a concurrent release of a prefetched slot
                skip = slot.abandoned or self._hurry.is_set()
                if not skip:
                    slot.started = True
                    slot.ctx.deadline = time.monotonic() + slot.timeout_seconds
            if skip:
                slot.done = True
                continue
            with job_log_context(slot.ctx.job):
                self._run_slot(slot)
            if slot.replaced:
                return  # a replacement runner took this one's place

    def _run_slot(self, slot: _Slot) -> None:
        began = time.monotonic()
        try:
            if self.mode == "process":
                outcome = self._run_process(slot)
            else:
                outcome = self._run_thread(slot)
            if outcome.kind in ("ok", "error", "timeout", "cancelled"):
                # a handler ran (not a lost lease or a release before it began)
                self._observe_run(slot.type, time.monotonic() - began)
        except BaseException as exc:
            log.exception("job %s: the worker could not run it", slot.id)
            outcome = _Outcome(
                "error",
                message=f"the worker could not run the job: "
                f"{type(exc).__name__}: {exc}",
            )
        try:
            if not slot.abandoned:
                self._outcome_settlement(slot, outcome)
        finally:
            slot.done = True

    def _record_start(self, slot: _Slot) -> _Outcome | None:
        """Record in the store that the slot's handler starts now (ending the
        hold, renewing the lease); ``None`` if it may start, else why not."""
        sent = time.monotonic()
        try:
            (answer,) = self.queue.record_started(
                [slot.ctx.lease], lease_seconds=self.lease_seconds
            )
        except SclibError as exc:
            log.warning("job %s: could not record its start (%s)", slot.id, exc)
            return _Outcome(
                "release",
                message=f"worker {self.worker_id} could not record the start: {exc}",
            )
        if answer is not None:
            log.info("job %s: lease lost before its handler started", slot.id)
            slot.ctx.mark_lost()
            return _Outcome("lost", message=str(answer))
        slot.held = False
        with self._lock:
            slot.lease_deadline = max(slot.lease_deadline, sent + self._lease_budget)
        return None

    def _fenced_outcome(self, slot: _Slot) -> _Outcome:
        return _Outcome(
            "release",
            message=f"worker {self.worker_id} could not renew the lease in time; "
            "the job was stopped",
        )

    def _run_thread(self, slot: _Slot) -> _Outcome:
        if slot.held and slot.held_rescues:
            # it came back once already without a crash charge: if it is what
            # kills its workers, this start must count
            refused = self._record_start(slot)
            if refused is not None:
                return refused
        elif time.monotonic() > slot.lease_deadline:
            slot.fenced = True
            return _Outcome(
                "release",
                message=f"worker {self.worker_id} could not renew the lease in time; "
                "the job was not started",
            )
        outcome = _execute(self.handlers[slot.type], slot.ctx)
        if outcome.kind == "lost" and slot.fenced:
            return self._fenced_outcome(slot)
        return outcome

    def _send(self, slot: _Slot, message: str) -> None:
        """Send to a job process (the runner and the heartbeat thread both do)."""
        conn = slot.conn
        if conn is not None:
            with self._send_lock, contextlib.suppress(OSError):
                conn.send(message)

    def _run_process(self, slot: _Slot) -> _Outcome:
        parent, child = self._mp.Pipe()
        try:
            # not daemonic: a handler may start processes of its own
            process = self._mp.Process(
                target=_child_main,
                args=(
                    pickle.dumps(self.handlers[slot.type]),
                    slot.ctx.job,
                    child,
                    slot.timeout_seconds,
                    os.getpid(),
                ),
            )
            process.start()
            slot.process, slot.conn = process, parent
            if slot.abandoned:  # abandoned while starting: do not let it run
                _kill_job_process(process)
        finally:
            child.close()
        outcome: _Outcome | None = None
        try:
            while outcome is None:
                # this thread never waits for the store (except to record the
                # start), so it stops the job in time when the heartbeats fail
                if time.monotonic() > slot.lease_deadline and not slot.abandoned:
                    log.warning(
                        "job %s: its lease could not be renewed in time; killing "
                        "its process so that no other attempt overlaps",
                        slot.id,
                    )
                    slot.fenced = True
                    _kill_job_process(process)
                    outcome = self._fenced_outcome(slot)
                    break
                if not parent.poll(PARENT_CHECK_SECONDS):
                    continue
                message = parent.recv()
                if message[0] == "ready":
                    refused = self._record_start(slot)
                    if refused is not None:
                        self._send(slot, "stop")
                        _kill_job_process(process)
                        outcome = refused
                    else:
                        self._send(slot, "go")
                elif message[0] == "progress":
                    with slot.ctx._lock:
                        slot.ctx._progress = message[1]
                elif message[0] == "outcome":
                    outcome = message[1]
        except (EOFError, OSError):
            process.join(timeout=1)
            outcome = _Outcome(
                "error",
                message=f"job process exited with code {process.exitcode} "
                "before reporting an outcome",
            )
        finally:
            process.join(timeout=5)
            if process.is_alive():
                _kill_job_process(process)
            parent.close()
        return outcome

    # -- supervision ---------------------------------------------------------------

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [
                s
                for s in self._slots.values()
                if s.started
                and not s.abandoned
                and s.ctx.deadline is not None
                and now > s.ctx.deadline
            ]
        if self.mode == "thread":
            self._fence_threads(now)
        for slot in late:
            log.warning(
                "job %s (%s) ran past its %gs limit; stopping it",
                slot.id,
                slot.type,
                slot.timeout_seconds,
            )
            slot.ctx.mark_timed_out()
            self._abandon(slot)
            self._add_settlement(
                self.queue.failure(
                    slot.ctx.lease,
                    f"timed out after {slot.timeout_seconds:g}s",
                    kind="timeout",
                ),
                "timed_out",
            )
            with self._lock:  # the settlement frees the slot when it is written
                self._slots[slot.id] = slot

    def _fence_threads(self, now: float) -> None:
        """Tell handlers whose leases could not be renewed in time to stop (a
        thread cannot be killed; ``ctx.check()`` raises LeaseLost). Process mode
        kills such a job's process from its runner thread."""
        with self._lock:
            stale = [
                s
                for s in self._slots.values()
                if s.started
                and not s.done
                and not s.abandoned
                and not s.fenced
                and now > s.lease_deadline
            ]
            for slot in stale:
                slot.fenced = True
        for slot in stale:
            log.warning(
                "job %s: its lease could not be renewed in time; telling the "
                "handler to stop (a thread cannot be killed)",
                slot.id,
            )
            slot.ctx.mark_lost()

    def _abandon(self, slot: _Slot) -> None:
        """Give up a job this worker no longer owns (or no longer waits for)."""
        slot.abandoned = True
        slot.ctx.request_cancel("stopped by the worker")
        if slot.process is not None:
            _kill_job_process(slot.process)
        elif slot.started and not slot.done:
            log.warning(
                "job %s: a thread cannot be killed; it keeps running in the "
                "background and its writes will be refused (use mode='process' for "
                "hard limits)",
                slot.id,
            )
            slot.replaced = True
            self._start_runner()
        with self._lock:
            self._slots.pop(slot.id, None)
        self._wake.set()

    def _maybe_rescue(self) -> None:
        if self.rescue_interval is None:
            return
        now = time.monotonic()
        if now - self._last_rescue < self.rescue_interval:
            return
        self._last_rescue = now
        try:
            self.queue.rescue_expired()
        except SclibError as exc:
            log.warning("rescue sweep failed: %s", exc)

    #: jobs deleted per expiry sweep, and seconds between sweeps
    EXPIRY_BATCH = 500
    EXPIRY_INTERVAL = 60.0

    def _maybe_expire(self) -> None:
        """Delete one batch of jobs finished longer than ``keep_finished`` ago;
        the next batch comes in a second when there were more, else in a minute."""
        if self.keep_finished is None or time.monotonic() < self._next_expiry:
            return
        try:
            deleted = self.queue.delete_finished(
                self.keep_finished, limit=self.EXPIRY_BATCH
            )
        except SclibError as exc:
            log.warning("deleting old finished jobs failed: %s", exc)
            deleted = 0
        if deleted:
            log.info(
                "deleted %d job(s) finished over %s ago", deleted, self.keep_finished
            )
        more = deleted >= self.EXPIRY_BATCH
        self._next_expiry = time.monotonic() + (1.0 if more else self.EXPIRY_INTERVAL)

    def _schedule_loop(self) -> None:
        scheduler = self._scheduler
        assert scheduler is not None
        while not self._stopping.wait(self.schedule_interval):
            if scheduler.run_pending():
                self._wake.set()  # a tick made a job: claim it now

    def _heartbeat_loop(self) -> None:
        # runs until the worker has shut down: jobs in their grace period still
        # need their leases renewed
        self._report_alive()
        while not self._beat_stop.wait(self.heartbeat_interval):
            if self._hurry.is_set():
                return
            self._report_alive()
            with self._lock:
                slots = [
                    # done but not yet saved too: the outcome still needs the lease
                    s
                    for s in self._slots.values()
                    if not s.abandoned
                ]
            if not slots:
                continue
            sent = time.monotonic()
            try:
                answers = self.queue.heartbeat_many(
                    [(s.ctx.lease, s.ctx.take_progress()) for s in slots],
                    lease_seconds=self.lease_seconds,
                )
            except SclibError as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            good_until = sent + self._lease_budget
            with self._lock:
                for slot, answer in zip(slots, answers, strict=True):
                    if not isinstance(answer, LeaseLost):
                        slot.lease_deadline = max(slot.lease_deadline, good_until)
            for slot, answer in zip(slots, answers, strict=True):
                if isinstance(answer, LeaseLost):
                    log.warning("job %s: lease lost; dropping it", slot.id)
                    slot.ctx.mark_lost()
                    self._count("lost")
                    self._abandon(slot)
                elif answer and not slot.ctx.cancelled:
                    slot.ctx.request_cancel("cancellation requested")
                    self._send(slot, "cancel")

    def _report_alive(self) -> None:
        """Refresh this worker's record, so monitors see it even when idle."""
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "types": self.types,
            "concurrency": self.concurrency,
            "mode": self.mode,
            "running": len(self._slots),
        }
        try:
            self.queue.store.record_worker(self.worker_id, self.queue.clock(), info)
        except SclibError as exc:
            log.warning("could not record worker %s: %s", self.worker_id, exc)

    def _report_gone(self) -> None:
        try:
            self.queue.store.remove_worker(self.worker_id)
        except SclibError as exc:
            log.warning("could not remove worker record %s: %s", self.worker_id, exc)

    def _drain(self) -> None:
        """Graceful stop: let running jobs finish, then release what is left."""
        end = time.monotonic() + self.grace_period
        with self._lock:  # a runner checks `abandoned` under the same lock
            waiting = [s for s in self._slots.values() if not s.started]
            for slot in waiting:
                slot.abandoned = True
        for slot in waiting:  # prefetched, never started: give them back now
            self._release(slot)
        while self._slots and not self._hurry.is_set() and time.monotonic() < end:
            self._check_deadlines()
            self._settle()
            self._wake.wait(0.05)
            self._wake.clear()
        self._settle()
        with self._lock:
            left = list(self._slots.values())
        if left:
            log.info("releasing %d unfinished job(s)", len(left))
        for slot in left:
            self._release(slot)
        self._settle()

    def _release(self, slot: _Slot, why: str | None = None) -> None:
        slot.abandoned = True
        slot.ctx.request_cancel("worker shutting down")
        slot.ctx.mark_lost()
        if slot.process is not None:
            _kill_job_process(slot.process)
        message = why or f"worker {self.worker_id} stopped"
        self._add_settlement(
            Settlement(slot.ctx.lease, "release", message=message), "released"
        )
