"""Periodic jobs: cron schedules that workers turn into jobs, once per tick.

A schedule is declared in code, on the :class:`~sclib.HandlerRegistry` the
workers load::

    handlers.schedule("nightly-check", "0 3 * * *", "data_validation",
                      {"path": "/data"}, timezone="Europe/Berlin")

    @handlers.periodic("cleanup", "*/15 * * * *")   # a type, its handler, a schedule
    def cleanup(ctx): ...

Every worker running the registry checks its schedules about once a second and
enqueues each tick that came due with the idempotency key
``schedule:<name>:<tick, UTC ISO 8601>``. However many workers run, on however
many machines, the store's unique idempotency key lets exactly one job per tick
exist: the other workers' enqueue returns that job.

Ticks missed while no worker ran follow the schedule's ``missed`` policy:

* ``"latest"`` (the default): the most recent missed tick is enqueued once, late;
  older missed ticks are skipped. A schedule deployed for the first time runs
  its most recent tick at once, as anacron would.
* ``"skip"``: missed ticks are skipped; a tick is enqueued only while it is less
  than ``grace`` seconds (default 60) old.
* ``"all"``: every missed tick since the last one that was enqueued, oldest
  first, at most ``max_catchup`` (default 100) of them.

Cron expressions are read by cronsim (five fields, or six with seconds first;
``@hourly``, ``@daily``... and ``L``, ``W``, ``#`` as cron knows them), in the
schedule's IANA ``timezone`` (default UTC), so ``0 3 * * *`` in Europe/Berlin
stays at 03:00 across daylight-saving changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sclib.errors import InvalidInput, MissingDependency, SclibError
from sclib.jobtypes import check_priority

if TYPE_CHECKING:
    from sclib.jobs.queue import JobQueue
    from sclib.models import Job

__all__ = ["Missed", "Schedule", "Scheduler", "tick_key"]

log = logging.getLogger(__name__)

Missed = Literal["latest", "skip", "all"]
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def _cronsim() -> Any:
    try:
        import cronsim
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise MissingDependency("cronsim", None, "Periodic jobs") from exc
    return cronsim


def tick_key(name: str, tick: datetime) -> str:
    """The idempotency key of one tick of schedule ``name``."""
    return f"schedule:{name}:{tick.astimezone(UTC).isoformat()}"


@dataclass(frozen=True)
class Schedule:
    """One cron schedule: which job to enqueue, and when (see the module)."""

    name: str
    cron: str
    job_type: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    missed: Missed = "latest"
    grace: float = 60.0
    max_catchup: int = 100
    priority: int | None = None
    owner: str | None = None
    dataset_uuid: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not set(self.name.lower()) <= _NAME_CHARS:
            raise InvalidInput(
                f"schedule names use letters, digits, '-', '_' and '.', got "
                f"{self.name!r}"
            )
        try:
            object.__setattr__(self, "_zone", ZoneInfo(self.timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(
                f"schedule {self.name!r}: unknown time zone {self.timezone!r} "
                "(an IANA name such as 'UTC' or 'Europe/Berlin')"
            ) from None
        cronsim = _cronsim()
        try:
            cronsim.CronSim(self.cron, datetime.now(self.zone))
        except cronsim.CronSimError as exc:
            raise InvalidInput(
                f"schedule {self.name!r}: {self.cron!r} is not a cron expression: {exc}"
            ) from None
        if self.missed not in ("latest", "skip", "all"):
            raise InvalidInput(
                f"schedule {self.name!r}: missed must be 'latest', 'skip' or 'all', "
                f"got {self.missed!r}"
            )
        if self.grace <= 0 or self.max_catchup < 1:
            raise InvalidInput(
                f"schedule {self.name!r}: grace must be positive and max_catchup >= 1"
            )
        if self.priority is not None:
            check_priority(self.priority)
        object.__setattr__(self, "parameters", dict(self.parameters))

    @property
    def zone(self) -> ZoneInfo:
        zone: ZoneInfo = self.__dict__["_zone"]
        return zone

    def ticks_after(self, start: datetime) -> Iterator[datetime]:
        """Ticks later than ``start``, in UTC, earliest first (endless)."""
        it = _cronsim().CronSim(self.cron, start.astimezone(self.zone))
        for tick in it:
            yield tick.astimezone(UTC)

    def ticks_before(self, end: datetime) -> Iterator[datetime]:
        """Ticks up to and including ``end``, in UTC, latest first (endless)."""
        local = end.astimezone(self.zone)
        # cronsim's reverse iteration yields ticks strictly before a whole second
        it = _cronsim().CronSim(
            self.cron, local + timedelta(microseconds=1), reverse=True
        )
        for tick in it:
            yield tick.astimezone(UTC)

    def next_tick(self, now: datetime) -> datetime:
        return next(self.ticks_after(now))

    def previous_tick(self, now: datetime) -> datetime:
        return next(self.ticks_before(now))

    def key(self, tick: datetime) -> str:
        return tick_key(self.name, tick)


class Scheduler:
    """Turns due ticks into jobs on ``queue`` (what a worker runs, once a second).

    The first :meth:`run_pending` applies each schedule's ``missed`` policy to
    what came due while no worker ran; later calls enqueue every tick since the
    previous call.
    """

    def __init__(self, queue: JobQueue, schedules: Mapping[str, Schedule]) -> None:
        self.queue = queue
        self.schedules = dict(schedules)
        self._checked: dict[str, datetime] = {}
        for schedule in self.schedules.values():
            queue.job_types.require(schedule.job_type)

    def run_pending(self, now: datetime | None = None) -> list[Job]:
        """Enqueue what is due; the jobs enqueued (or found already enqueued)."""
        now = now or self.queue.clock()
        made: list[Job] = []
        for name, schedule in self.schedules.items():
            last = self._checked.get(name)
            try:
                if last is None:
                    ticks = self._backlog(schedule, now)
                else:
                    ticks = _between(schedule, last, now)
                for tick in ticks:
                    made.append(self._enqueue(schedule, tick))
            except SclibError as exc:  # the store is down: try again next time
                log.warning("schedule %s: could not enqueue: %s", name, exc)
                continue
            self._checked[name] = now
        return made

    def _backlog(self, schedule: Schedule, now: datetime) -> list[datetime]:
        """Due ticks when this scheduler starts, by the ``missed`` policy."""
        latest = schedule.previous_tick(now)
        if schedule.missed == "skip":
            fresh = (now - latest).total_seconds() < schedule.grace
            return [latest] if fresh else []
        if schedule.missed == "latest":
            return [latest]
        due: list[datetime] = []
        for tick in schedule.ticks_before(now):
            if self._enqueued(schedule, tick) or len(due) >= schedule.max_catchup:
                break
            due.append(tick)
        return list(reversed(due))

    def _enqueued(self, schedule: Schedule, tick: datetime) -> bool:
        from sclib.backends.base import JobFilter

        found = self.queue.store.list_jobs(
            JobFilter(idempotency_key=schedule.key(tick)), limit=1
        )
        return bool(found)

    def _enqueue(self, schedule: Schedule, tick: datetime) -> Job:
        job = self.queue.enqueue(
            schedule.job_type,
            {**schedule.parameters, "scheduled_for": tick.isoformat()},
            idempotency_key=schedule.key(tick),
            priority=schedule.priority,
            owner=schedule.owner,
            dataset_uuid=schedule.dataset_uuid,
        )
        log.debug("schedule %s: tick %s is job %s", schedule.name, tick, job.id)
        return job


def _between(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Ticks in ``(start, end]``."""
    found = []
    for tick in schedule.ticks_after(start):
        if tick > end:
            break
        found.append(tick)
    return found
