"""What every MongoDB store shares: the driver's errors and how they become
sclib's, the transient retry, index creation that tolerates an operator's own
indexes, and how a job document becomes a :class:`~sclib.models.Job`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from sclib.errors import (
    BackendError,
    InvalidInput,
    MissingDependency,
)
from sclib.jobtypes import JobStatus
from sclib.models import ErrorRecord, Job, Progress

try:
    from bson.errors import InvalidDocument
    from pymongo import IndexModel, ReturnDocument
    from pymongo.errors import (
        AutoReconnect,
        OperationFailure,
        PyMongoError,
        ServerSelectionTimeoutError,
    )
except ImportError as exc:  # pragma: no cover - depends on the install
    raise MissingDependency("pymongo", "mongo", "The MongoDB backend") from exc

if TYPE_CHECKING:
    pass


log = logging.getLogger("sclib.backends.mongo")

#: what bson raises for a value it cannot store: InvalidDocument (a key that is not
#: a str or holds NUL; a document over 16 MB is a DocumentTooLarge, which is one),
#: OverflowError (an int beyond 64 bits) and UnicodeEncodeError (a str holding a
#: lone surrogate, which is not UTF-8)
_UNSTORABLE: tuple[type[Exception], ...] = (
    InvalidDocument,
    OverflowError,
    UnicodeEncodeError,
)
#: what the driver raises: its own errors, and bson's for values it cannot store
_DRIVER_ERRORS: tuple[type[Exception], ...] = (PyMongoError, *_UNSTORABLE)

_FINISHED = ["completed", "failed", "cancelled"]
#: sclib's jobs: the collection may also hold the original ScientistCloud's
#: job-queue documents (``job_id``, ``job_type``, ...), which sclib leaves alone
_OURS: dict[str, Any] = {"type": {"$exists": True}}
_NO_EVENTS = {"events": False}
_AFTER = ReturnDocument.AFTER


def _aware(dt: datetime | None) -> datetime | None:
    """pymongo returns naive UTC datetimes unless the client is tz_aware."""
    if dt is None:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _doc_to_job(doc: Mapping[str, Any]) -> Job:
    def req(name: str) -> datetime:
        value = _aware(doc[name])
        assert value is not None
        return value

    return Job(
        id=doc["_id"],
        type=doc["type"],
        status=JobStatus(doc["status"]),
        priority=doc["priority"],
        parameters=doc.get("parameters") or {},
        dataset_uuid=doc.get("dataset_uuid"),
        owner=doc.get("owner"),
        attempts=doc.get("attempts", 0),
        max_attempts=doc["max_attempts"],
        failures=doc.get("failures", 0),
        crashes=doc.get("crashes", 0),
        max_crashes=doc["max_crashes"],
        timeout_seconds=doc["timeout_seconds"],
        run_at=req("run_at"),
        worker_id=doc.get("worker_id"),
        lease_until=_aware(doc.get("lease_until")),
        cancel_requested=bool(doc.get("cancel_requested", False)),
        progress=Progress.from_dict(doc.get("progress")),
        result=doc.get("result"),
        error=doc.get("error"),
        error_history=tuple(
            ErrorRecord.from_dict({**e, "at": _aware(e["at"])})
            for e in doc.get("error_history", [])
        ),
        idempotency_key=doc.get("idempotency_key"),
        depends_on=tuple(doc.get("depends_on", [])),
        waiting_on=doc.get("waiting_on", 0),
        created_at=req("created_at"),
        updated_at=req("updated_at"),
        started_at=_aware(doc.get("started_at")),
        finished_at=_aware(doc.get("finished_at")),
    )


#: error codes after which a command may be sent again (the retryable writes spec:
#: the primary stepped down, is shutting down, or the network failed)
_RETRYABLE_CODES = frozenset(
    {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
)

_T = TypeVar("_T")


def _transient(exc: PyMongoError) -> bool:
    """Whether sending the same idempotent command again may succeed: a dropped
    connection or a change of primary, as pymongo's own retries judge it. Not after
    server selection timed out (that already waited), nor a write concern timeout."""
    if isinstance(exc, ServerSelectionTimeoutError):
        return False
    if isinstance(exc, AutoReconnect) or exc.has_error_label("RetryableWriteError"):
        return True
    return isinstance(exc, OperationFailure) and exc.code in _RETRYABLE_CODES


def _again(call: Callable[[], _T]) -> _T:
    """``call()``, and once more after a transient error (:func:`_transient`).

    Only for idempotent commands that pymongo does not retry itself: multi-document
    writes (``update_many``, ``delete_many``) and ``createIndexes``. pymongo retries
    single-document writes (``lsid`` + ``txnNumber``, so one applied before the
    error is not applied twice) and reads once on its own; these it sends once.
    """
    try:
        return call()
    except PyMongoError as exc:
        if not _transient(exc):
            raise
        log.info("MongoDB: %s: sending it once more", type(exc).__name__)
    return call()


def _create_index(coll: Any, keys: Any, **options: Any) -> None:
    """Create an index, once more after a transient error (:func:`_again`).

    MongoDB refuses an index whose keys another index of the collection already has
    under another name (IndexOptionsConflict, 85) -- such as ``uuid_1``, the
    default name an application or ODM gives a unique field. When that index has
    the options this store relies on (unique, sparse, partial filter), it is used
    as it is; otherwise the error stands, naming it.
    """
    try:
        _again(partial(coll.create_index, keys, **options))
    except OperationFailure as exc:
        if exc.code != 85:
            raise
        wanted = IndexModel(keys, **options).document
        for info in coll.list_indexes():
            if info["name"] != wanted["name"] and _same_index(info, wanted):
                log.info(
                    "%s: index %s serves as %s", coll.full_name, info["name"], wanted
                )
                return
        raise


def _same_index(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same keys in the same order and directions (1 and 1.0 alike: shells and ODMs
    send doubles), same uniqueness, sparseness and partial filter."""

    def keys(index: Mapping[str, Any]) -> list[tuple[str, Any]]:
        return [
            (k, float(v) if isinstance(v, int | float) else v)
            for k, v in index["key"].items()
        ]

    return (
        keys(a) == keys(b)
        and all(bool(a.get(o)) == bool(b.get(o)) for o in ("unique", "sparse"))
        and a.get("partialFilterExpression") == b.get("partialFilterExpression")
    )


def _backend_error(
    exc: Exception, operation: str, store: str = "job store"
) -> BackendError | InvalidInput:
    """The sclib error for a driver error: one readable line (the driver's messages
    can run to kilobytes) naming the store and the operation. A value BSON cannot
    hold is the caller's to change (InvalidInput, not retryable); anything else is
    the store failing (BackendError)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if len(text) > 300:
        text = text[:300] + "..."
    if isinstance(exc, _UNSTORABLE):
        return InvalidInput(
            f"MongoDB {store}: {operation}: a value cannot be stored in MongoDB "
            f"({type(exc).__name__}: {text})"
        )
    return BackendError(
        f"MongoDB {store}: {operation} failed: {type(exc).__name__}: {text}"
    )


def _event(
    kind: str,
    at: datetime,
    worker_id: str | None = None,
    attempt: int | None = None,
    message: str = "",
) -> dict[str, Any]:
    return {
        "kind": kind,
        "at": at,
        "worker_id": worker_id,
        "attempt": attempt,
        "message": message,
    }


def _error_doc(error: ErrorRecord) -> dict[str, Any]:
    return {
        "attempt": error.attempt,
        "at": error.at,
        "error": error.error,
        "worker_id": error.worker_id,
        "kind": error.kind,
    }
