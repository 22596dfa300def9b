"""Plain data objects shared by the queue, the stores and the worker.

They are frozen dataclasses: cheap to build (a claim builds one per job), easy to
compare in tests, and free of I/O. Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from sclib.jobtypes import JobStatus

__all__ = [
    "ErrorRecord",
    "Job",
    "JobEvent",
    "Lease",
    "Progress",
    "from_timestamp",
    "new_job_id",
    "to_timestamp",
]

JSON = Any  # a value that json.dumps accepts


def from_timestamp(ts: float) -> datetime:
    """A POSIX timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)


def to_timestamp(dt: datetime) -> float:
    """An aware datetime as a POSIX timestamp; naive datetimes are refused."""
    if dt.tzinfo is None:
        raise ValueError(
            f"naive datetime {dt!r}: sclib needs timezone-aware datetimes "
            "(use datetime.now(timezone.utc))"
        )
    return dt.timestamp()


_id_lock = threading.Lock()
_id_last_ms = 0
_id_seq = 0


def new_job_id() -> str:
    """A 32-hex-digit id that sorts by creation time (UUIDv7 layout).

    48 bits of milliseconds, then a per-process counter, then random bits, so ids
    made in one process sort in the order they were made and ids from many processes
    do not collide.
    """
    global _id_last_ms, _id_seq
    with _id_lock:
        ms = int(time.time() * 1000)
        if ms <= _id_last_ms:
            ms = _id_last_ms
            _id_seq += 1
            if _id_seq > 0xFFF:
                ms += 1
                _id_seq = 0
        else:
            _id_seq = 0
        _id_last_ms = ms
        seq = _id_seq
    rand = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    return f"{value:032x}"


@dataclass(frozen=True, slots=True)
class Progress:
    """What a running job last reported. ``bytes_*`` are optional."""

    percentage: float | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None
    message: str = ""

    def to_dict(self) -> dict[str, JSON]:
        return {
            "percentage": self.percentage,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, JSON] | None) -> Progress:
        if not data:
            return cls()
        return cls(
            percentage=data.get("percentage"),
            bytes_done=data.get("bytes_done"),
            bytes_total=data.get("bytes_total"),
            message=data.get("message") or "",
        )


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One failed attempt, kept in the job's error history."""

    attempt: int
    at: datetime
    error: str
    worker_id: str | None = None
    # "error", "fatal" (a retry cannot help: no retry), "timeout" or "crash"
    kind: str = "error"

    def to_dict(self) -> dict[str, JSON]:
        return {
            "attempt": self.attempt,
            "at": self.at.timestamp(),
            "error": self.error,
            "worker_id": self.worker_id,
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, JSON]) -> ErrorRecord:
        at = data["at"]
        return cls(
            attempt=int(data["attempt"]),
            at=at if isinstance(at, datetime) else from_timestamp(float(at)),
            error=str(data["error"]),
            worker_id=data.get("worker_id"),
            kind=str(data.get("kind", "error")),
        )


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One entry of a job's history: created, claimed, retried, rescued, ..."""

    kind: str
    at: datetime
    worker_id: str | None = None
    attempt: int | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Lease:
    """What a worker holds while it runs a job; every later write is fenced by it."""

    job_id: str
    worker_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Job:
    """A job as stored, at the moment it was read."""

    id: str
    type: str
    status: JobStatus
    priority: int
    parameters: Mapping[str, JSON] = field(default_factory=dict)
    dataset_uuid: str | None = None
    owner: str | None = None
    attempts: int = 0
    max_attempts: int = 3
    failures: int = 0
    crashes: int = 0
    max_crashes: int = 3
    timeout_seconds: float = 3600.0
    run_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    worker_id: str | None = None
    lease_until: datetime | None = None
    cancel_requested: bool = False
    progress: Progress = field(default_factory=Progress)
    result: JSON = None
    error: str | None = None
    error_history: tuple[ErrorRecord, ...] = ()
    idempotency_key: str | None = None
    depends_on: tuple[str, ...] = ()
    waiting_on: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def lease(self) -> Lease:
        """The lease of the current attempt (meaningful while ``running``)."""
        if self.worker_id is None:
            raise ValueError(f"job {self.id} is not held by a worker")
        return Lease(self.id, self.worker_id, self.attempts)

    @property
    def finished(self) -> bool:
        return self.status.finished

    def to_dict(self) -> dict[str, JSON]:
        """A JSON-ready view (times as ISO 8601 strings), as the CLI and API show it."""

        def iso(dt: datetime | None) -> str | None:
            return dt.isoformat() if dt is not None else None

        return {
            "job_id": self.id,
            "job_type": self.type,
            "status": self.status.value,
            "priority": self.priority,
            "dataset_uuid": self.dataset_uuid,
            "owner": self.owner,
            "parameters": dict(self.parameters),
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "failures": self.failures,
            "crashes": self.crashes,
            "max_crashes": self.max_crashes,
            "timeout_seconds": self.timeout_seconds,
            "run_at": iso(self.run_at),
            "worker_id": self.worker_id,
            "lease_until": iso(self.lease_until),
            "cancel_requested": self.cancel_requested,
            "progress": self.progress.to_dict(),
            "result": self.result,
            "error": self.error,
            "error_history": [
                {**e.to_dict(), "at": e.at.isoformat()} for e in self.error_history
            ],
            "idempotency_key": self.idempotency_key,
            "depends_on": list(self.depends_on),
            "waiting_on": self.waiting_on,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }


def _positional_builder(cls: type[Any]) -> Any:
    """A function that makes a ``cls`` from every field's value, in field order,
    without the frozen ``__init__``'s ``object.__setattr__`` per field (a third
    of the time: a claim, a list and ``enqueue_many`` build one Job per job).
    Only for values sclib itself read or made; nothing is checked."""
    names = [f.name for f in fields(cls)]
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    for name in names:
        scope[f"_set_{name}"] = getattr(cls, name).__set__
    lines = [f"def build({', '.join(f'{n}_' for n in names)}):", "    o = _new(_cls)"]
    lines += [f"    _set_{n}(o, {n}_)" for n in names]
    lines.append("    return o")
    exec("\n".join(lines), scope)  # noqa: S102 (no outside text: as dataclasses)
    return scope["build"]


#: the names of :class:`Job`'s fields, in order
JOB_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Job))
#: ``build_job(id, type, status, ..., finished_at)``: a :class:`Job` from every
#: field's value in field order (see :func:`_positional_builder`)
build_job: Callable[..., Job] = _positional_builder(Job)
