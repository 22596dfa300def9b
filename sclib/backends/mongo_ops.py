"""The MongoDB job store's collections and helpers, and every call that is not
the queue's hot path: operators' changes (cancel, retry, rescue), reads, lists,
counts, deletions and the monitor's queries. :class:`MongoJobStore` adds
enqueueing and the worker's calls (see :mod:`sclib.backends.mongo`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

from sclib.backends.base import JobFilter, JobStore, WorkerRecord
from sclib.errors import (
    ConfigurationError,
    InvalidJobState,
    JobNotFound,
    LeaseLost,
    MissingDependency,
)
from sclib.jobtypes import PRIORITY_HIGH, PRIORITY_LOW
from sclib.models import ErrorRecord, Job, JobEvent, Lease

try:
    import pymongo
    from pymongo.errors import (
        PyMongoError,
    )
    from pymongo.write_concern import WriteConcern
except ImportError as exc:  # pragma: no cover - depends on the install
    raise MissingDependency("pymongo", "mongo", "The MongoDB backend") from exc

if TYPE_CHECKING:
    from sclib.jobs.policy import RetryPolicy
from sclib.backends.mongo_common import (
    _AFTER,
    _DRIVER_ERRORS,
    _FINISHED,
    _NO_EVENTS,
    _OURS,
    _again,
    _aware,
    _backend_error,
    _create_index,
    _doc_to_job,
    _error_doc,
    _event,
)

__all__ = ["MongoJobBase"]

log = logging.getLogger("sclib.backends.mongo")


class MongoJobBase(JobStore):
    """Jobs in a MongoDB collection.

    :param client: a ``pymongo.MongoClient`` (or a compatible stand-in in tests).
    :param database: database name (seed default ``scientistcloud``).
    :param collection: collection name (seed default ``jobs``).
    :param write_concern: e.g. ``{"w": "majority", "j": True}`` (the default).
    """

    schemes = ("mongodb", "mongodb+srv")

    def __init__(
        self,
        client: Any,
        *,
        database: str = "scientistcloud",
        collection: str = "jobs",
        write_concern: Mapping[str, Any] | None = None,
        owns_client: bool = False,
    ) -> None:
        if not database or not collection:
            raise ConfigurationError("database and collection names must not be empty")
        self.client = client
        self._owns_client = owns_client
        concern = dict(write_concern or {"w": "majority", "j": True})
        try:
            wc = WriteConcern(**concern)
        except (TypeError, ValueError, PyMongoError) as exc:
            raise ConfigurationError(f"bad write concern {concern!r}: {exc}") from exc
        self.coll = client[database].get_collection(collection, write_concern=wc)
        #: one document per worker, refreshed by its heartbeat thread
        self.workers = client[database].get_collection(
            f"{collection}_workers", write_concern=wc
        )
        self.database = database
        self.collection = collection
        self._sweep_after: str | None = None
        self._ensure_indexes()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        database: str | None = None,
        collection: str = "jobs",
        write_concern: Mapping[str, Any] | None = None,
        **client_options: Any,
    ) -> Self:
        """Connect to ``mongodb://host/[database]``; the path names the database."""
        parts = urlsplit(url)
        if not parts.hostname:
            raise ConfigurationError(
                f"malformed MongoDB URL {url!r}: no host; expected "
                "'mongodb://host:27017/database'"
            )
        name = database or parts.path.lstrip("/") or "scientistcloud"
        # fail within seconds, not the driver's 30 s, when the server is unreachable
        client_options.setdefault("serverSelectionTimeoutMS", 10_000)
        try:
            client = pymongo.MongoClient(url, tz_aware=True, **client_options)
        except (PyMongoError, ValueError, TypeError) as exc:
            raise ConfigurationError(f"bad MongoDB URL {url!r}: {exc}") from exc
        return cls(
            client,
            database=name,
            collection=collection,
            write_concern=write_concern,
            owns_client=True,
        )

    def __repr__(self) -> str:
        return (
            f"MongoJobStore(database={self.database!r}, collection={self.collection!r})"
        )

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def _ensure_indexes(self) -> None:
        claimable = [("status", 1), ("waiting_on", 1), ("priority", 1), ("run_at", 1)]
        indexes: list[tuple[Any, Any, dict[str, Any]]] = [
            (self.coll, [*claimable, ("_id", 1)], {"name": "claimable"}),
            (self.coll, [("status", 1), ("lease_until", 1)], {"name": "leases"}),
            (
                self.coll,
                "idempotency_key",
                {"unique": True, "sparse": True, "name": "idempotency"},
            ),
            (self.coll, "depends_on", {"name": "dependents"}),
            (self.coll, [("status", 1), ("type", 1)], {"name": "status_type"}),
            # lists filter on one or two fields and sort by _id: each index ends
            # with _id, so a page is read in order whatever the number of jobs
            (self.coll, [("status", 1), ("_id", 1)], {"name": "status_id"}),
            (self.coll, [("type", 1), ("_id", 1)], {"name": "type_id"}),
            (self.coll, [("dataset_uuid", 1), ("_id", 1)], {"name": "dataset_id"}),
            (
                self.coll,
                [("owner", 1), ("status", 1), ("_id", 1)],
                {"name": "owner_status_id"},
            ),
            (self.coll, [("owner", 1), ("_id", 1)], {"name": "owner_id"}),
            (self.coll, "finished_at", {"name": "finished"}),
            (self.workers, "last_seen", {"name": "last_seen"}),
        ]
        try:
            for coll, keys, options in indexes:
                _create_index(coll, keys, **options)
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "create indexes") from exc

    # -- helpers -----------------------------------------------------------------

    @staticmethod
    def _fence(lease: Lease) -> dict[str, Any]:
        return {
            "_id": lease.job_id,
            "worker_id": lease.worker_id,
            "attempts": lease.attempt,
            "status": "running",
        }

    def _fenced_update(
        self, lease: Lease, update: Mapping[str, Any], operation: str
    ) -> Job:
        try:
            doc = self.coll.find_one_and_update(
                self._fence(lease),
                update,
                projection=_NO_EVENTS,
                return_document=_AFTER,
            )
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, operation) from exc
        if doc is None:
            raise LeaseLost(lease.job_id, lease.worker_id, lease.attempt)
        return _doc_to_job(doc)

    def _find(self, job_id: str, operation: str = "get") -> dict[str, Any]:
        try:
            doc: dict[str, Any] | None = self.coll.find_one(
                {"_id": job_id}, projection=_NO_EVENTS
            )
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, operation) from exc
        if doc is None:
            raise JobNotFound(job_id)
        return doc

    def _count_waiting(self, deps: Sequence[str]) -> int:
        if not deps:
            return 0
        return int(
            self.coll.count_documents(
                {"_id": {"$in": list(deps)}, "status": {"$ne": "completed"}}
            )
        )

    def _recount(
        self, job_ids: Sequence[str], operation: str, now: datetime | None = None
    ) -> None:
        """Set ``waiting_on`` of pending jobs from their dependencies' statuses, and
        cancel those behind a failed or cancelled dependency. Each write is a
        compare-and-set on what was read, so concurrent recounts cannot lose one."""
        try:
            for doc in self.coll.find(
                {"_id": {"$in": list(job_ids)}, "status": "pending"},
                projection={"depends_on": True, "waiting_on": True},
            ):
                deps = doc.get("depends_on", [])
                dead = (
                    self.coll.find_one(
                        {
                            "_id": {"$in": deps},
                            "status": {"$in": ["failed", "cancelled"]},
                        },
                        projection={"status": True},
                    )
                    if deps
                    else None
                )
                if dead is not None:
                    when = now or datetime.now(UTC)
                    message = f"dependency {dead['_id']} {dead['status']}"
                    if self._cancel_pending(doc["_id"], when, message):
                        self._cascade_cancel(doc["_id"], when, "cancelled", operation)
                    continue
                waiting = self._count_waiting(deps)
                old = doc.get("waiting_on", 0)
                if waiting != old:
                    self.coll.update_one(
                        {"_id": doc["_id"], "status": "pending", "waiting_on": old},
                        {"$set": {"waiting_on": waiting}},
                    )
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, operation) from exc

    def _cancel_pending(self, job_id: str, now: datetime, message: str) -> bool:
        """Cancel a job if it is still pending (a compare-and-set); True if it was."""
        done = self.coll.find_one_and_update(
            {"_id": job_id, "status": "pending"},
            {
                "$set": {
                    "status": "cancelled",
                    "error": message,
                    "updated_at": now,
                    "finished_at": now,
                },
                "$push": {"events": _event("cancelled", now, message=message)},
            },
            projection={"_id": True},
        )
        return done is not None

    def _cascade_cancel(
        self, job_id: str, now: datetime, why: str, operation: str
    ) -> None:
        try:
            todo = [job_id]
            while todo:
                dep = todo.pop()
                message = f"dependency {dep} {why}"
                for doc in self.coll.find(
                    {"depends_on": dep, "status": "pending"}, projection={"_id": True}
                ):
                    if self._cancel_pending(doc["_id"], now, message):
                        todo.append(doc["_id"])
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, operation) from exc

    # -- operating -------------------------------------------------------------------

    def request_cancel(self, job_id: str, now: datetime, reason: str) -> Job:
        try:
            doc = self.coll.find_one_and_update(
                {"_id": job_id, "status": "pending"},
                {
                    "$set": {
                        "status": "cancelled",
                        "error": reason,
                        "updated_at": now,
                        "finished_at": now,
                    },
                    "$push": {"events": _event("cancelled", now, message=reason)},
                },
                projection=_NO_EVENTS,
                return_document=_AFTER,
            )
            if doc is not None:
                self._cascade_cancel(job_id, now, "cancelled", "request_cancel")
                return _doc_to_job(doc)
            doc = self.coll.find_one_and_update(
                {"_id": job_id, "status": "running"},
                {
                    "$set": {"cancel_requested": True, "updated_at": now},
                    "$push": {
                        "events": _event("cancel_requested", now, message=reason)
                    },
                },
                projection=_NO_EVENTS,
                return_document=_AFTER,
            )
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "request_cancel") from exc
        if doc is not None:
            return _doc_to_job(doc)
        current = self._find(job_id, "request_cancel")
        raise InvalidJobState(
            f"job {job_id} is already {current['status']}; only pending or running "
            "jobs can be cancelled"
        )

    def _dead_dependency(
        self, deps: Sequence[str], operation: str
    ) -> dict[str, Any] | None:
        if not deps:
            return None
        try:
            found: dict[str, Any] | None = self.coll.find_one(
                {
                    "_id": {"$in": list(deps)},
                    "status": {"$in": ["failed", "cancelled"]},
                },
                projection={"status": True},
            )
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, operation) from exc
        return found

    def retry(self, job_id: str, now: datetime) -> Job:
        current = self._find(job_id, "retry")
        if current["status"] not in ("failed", "cancelled"):
            raise InvalidJobState(
                f"job {job_id} is {current['status']}; only failed or cancelled jobs "
                "can be retried"
            )
        dead = self._dead_dependency(current.get("depends_on", []), "retry")
        if dead is not None:
            raise InvalidJobState(
                f"job {job_id} depends on job {dead['_id']}, which is "
                f"{dead['status']}; retry that one first (its dependents come back "
                "with it)"
            )
        try:
            waiting = self._count_waiting(current.get("depends_on", []))
            doc = self.coll.find_one_and_update(
                {"_id": job_id, "status": current["status"]},
                {
                    "$set": {
                        "status": "pending",
                        "failures": 0,
                        "crashes": 0,
                        "held": False,
                        "held_rescues": 0,
                        "cancel_requested": False,
                        "worker_id": None,
                        "lease_until": None,
                        "run_at": now,
                        "waiting_on": waiting,
                        "updated_at": now,
                        "finished_at": None,
                        # a run's duration starts at its next claim, not at the
                        # first claim before the failure
                        "started_at": None,
                    },
                    "$push": {
                        "events": _event(
                            "retried", now, message="retried by an operator"
                        )
                    },
                },
                projection=_NO_EVENTS,
                return_document=_AFTER,
            )
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "retry") from exc
        if doc is None:
            raise InvalidJobState(f"job {job_id} changed while it was being retried")
        self._revive_dependents(job_id, now)
        return _doc_to_job(doc)

    def _revive_dependents(self, job_id: str, now: datetime) -> None:
        """Re-queue the jobs that were cancelled only because ``job_id`` ended
        (those still behind another dead dependency stay cancelled, saying so)."""
        try:
            todo = [job_id]
            while todo:
                dep = todo.pop()
                for doc in self.coll.find(
                    {
                        "depends_on": dep,
                        "status": "cancelled",
                        "error": {"$regex": f"^dependency {dep} "},
                    },
                    projection={"depends_on": True},
                ):
                    deps = doc.get("depends_on", [])
                    dead = self._dead_dependency(deps, "retry")
                    if dead is not None:
                        self.coll.update_one(
                            {"_id": doc["_id"], "status": "cancelled"},
                            {
                                "$set": {
                                    "error": f"dependency {dead['_id']} "
                                    f"{dead['status']}",
                                    "updated_at": now,
                                }
                            },
                        )
                        continue
                    done = self.coll.find_one_and_update(
                        {"_id": doc["_id"], "status": "cancelled"},
                        {
                            "$set": {
                                "status": "pending",
                                "error": None,
                                "run_at": now,
                                "waiting_on": self._count_waiting(deps),
                                "updated_at": now,
                                "finished_at": None,
                            },
                            "$push": {
                                "events": _event(
                                    "retried", now, message=f"dependency {dep} retried"
                                )
                            },
                        },
                        projection={"_id": True},
                    )
                    if done is not None:
                        todo.append(doc["_id"])
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "retry") from exc

    def rescue_expired(
        self, now: datetime, policy: RetryPolicy, limit: int = 100
    ) -> list[Job]:
        rescued: list[Job] = []
        try:
            expired = list(
                self.coll.find(
                    {"status": "running", "lease_until": {"$lt": now}},
                    projection=_NO_EVENTS,
                )
                .sort("lease_until", 1)
                .limit(limit)
            )
            for cur in expired:
                rescued_job = self._rescue_one(cur, now, policy)
                if rescued_job is not None:
                    rescued.append(rescued_job)
            # Repair what a crash between two writes may have left: dependency
            # counts that missed a completion, and dependents of a job that failed
            # or was cancelled before its cascade ran. One page per sweep, taking
            # turns through every waiting job.
            query: dict[str, Any] = {"status": "pending", "waiting_on": {"$gt": 0}}
            if self._sweep_after is not None:
                query["_id"] = {"$gt": self._sweep_after}
            page = [
                d["_id"]
                for d in self.coll.find(query, projection={"_id": True})
                .sort("_id", 1)
                .limit(limit)
            ]
            self._sweep_after = page[-1] if len(page) == limit else None
            if page:
                self._recount(page, "rescue_expired", now)
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "rescue_expired") from exc
        return rescued

    def _rescue_one(
        self, cur: Mapping[str, Any], now: datetime, policy: RetryPolicy
    ) -> Job | None:  # driver errors: translated by rescue_expired
        if cur.get("held"):
            return self._rescue_held(cur, now)
        crashes = cur.get("crashes", 0) + 1
        worker, attempt = cur.get("worker_id"), cur["attempts"]
        message = (
            f"worker {worker} stopped renewing its lease (attempt {attempt}); "
            "presumed crashed"
        )
        record = _error_doc(ErrorRecord(attempt, now, message, worker, "crash"))
        events = [_event("rescued", now, worker, attempt, message)]
        sets: dict[str, Any] = {
            "crashes": crashes,
            "lease_until": None,
            "updated_at": now,
        }
        why = ""
        if cur.get("cancel_requested"):
            why = "cancelled"
            events[0]["message"] += "; cancellation had been requested"
        else:
            retry_at = policy.after_crash(crashes, cur["max_crashes"], now)
            if retry_at is None:
                why = "failed"
                message = (
                    f"crash loop: the job's worker vanished {crashes} times "
                    f"(cap {cur['max_crashes']}); last: {message}"
                )
            else:
                sets.update(status="pending", run_at=retry_at)
        if why:
            sets.update(status=why, finished_at=now)
            events.append(_event(why, now, message=message))
        sets["error"] = message
        doc = self.coll.find_one_and_update(
            {
                "_id": cur["_id"],
                "worker_id": worker,
                "attempts": attempt,
                "status": "running",
                "lease_until": {"$lt": now},
            },
            {
                "$set": sets,
                "$push": {"error_history": record, "events": {"$each": events}},
            },
            projection=_NO_EVENTS,
            return_document=_AFTER,
        )
        if doc is None:
            return None  # someone else rescued it, or the worker came back in time
        if why:
            self._cascade_cancel(cur["_id"], now, why, "rescue_expired")
        return _doc_to_job(doc)

    def _rescue_held(self, cur: Mapping[str, Any], now: datetime) -> Job | None:
        """Take back an expired *held* attempt: its handler never started, so no
        crash is counted; pending again (``cancelled`` if that was requested)."""
        worker, attempt = cur.get("worker_id"), cur["attempts"]
        message = (
            f"worker {worker} stopped renewing its lease before the handler of "
            f"attempt {attempt} started; not counted as a crash"
        )
        cancel = bool(cur.get("cancel_requested"))
        sets: dict[str, Any] = {
            "held": False,
            "lease_until": None,
            "updated_at": now,
        }
        events = [
            _event(
                "rescued",
                now,
                worker,
                attempt,
                message + ("; cancellation had been requested" if cancel else ""),
            )
        ]
        if cancel:
            sets.update(status="cancelled", finished_at=now, error=message)
            events.append(_event("cancelled", now, message=message))
        else:
            sets.update(status="pending", run_at=now)
        doc = self.coll.find_one_and_update(
            {
                "_id": cur["_id"],
                "worker_id": worker,
                "attempts": attempt,
                "status": "running",
                "held": True,
                "lease_until": {"$lt": now},
            },
            {
                "$set": sets,
                "$inc": {"held_rescues": 1},
                "$push": {"events": {"$each": events}},
            },
            projection=_NO_EVENTS,
            return_document=_AFTER,
        )
        if doc is None:
            return None  # someone else rescued it, or the worker came back in time
        if cancel:
            self._cascade_cancel(cur["_id"], now, "cancelled", "rescue_expired")
        return _doc_to_job(doc)

    # -- reading ---------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        return _doc_to_job(self._find(job_id))

    @staticmethod
    def _query(filter: JobFilter | None) -> dict[str, Any]:
        f = filter or JobFilter()
        query: dict[str, Any] = {
            k: v
            for k, v in (
                ("status", f.status),
                ("type", f.type),
                ("dataset_uuid", f.dataset_uuid),
                ("owner", f.owner),
                ("idempotency_key", f.idempotency_key),
            )
            if v is not None
        }
        if f.after is not None:
            query["_id"] = {"$gt": f.after}
        return query if "type" in query else {**query, **_OURS}

    def count_jobs(self, filter: JobFilter | None = None) -> int:
        try:
            return int(self.coll.count_documents(self._query(filter)))
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "count_jobs") from exc

    def list_jobs(
        self, filter: JobFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        query = self._query(filter)
        try:
            cursor = self.coll.find(query, projection=_NO_EVENTS).sort("_id", 1)
            return [_doc_to_job(d) for d in cursor.skip(offset).limit(limit)]
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "list_jobs") from exc

    def counts(self) -> Mapping[tuple[str, str], int]:
        try:
            rows = self.coll.aggregate(
                [
                    {"$match": _OURS},
                    {
                        "$group": {
                            "_id": {"status": "$status", "type": "$type"},
                            "n": {"$sum": 1},
                        }
                    },
                ]
            )
            return {(r["_id"]["status"], r["_id"]["type"]): r["n"] for r in rows}
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "counts") from exc

    def events(self, job_id: str) -> list[JobEvent]:
        try:
            doc = self.coll.find_one({"_id": job_id}, projection={"events": True})
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "events") from exc
        if doc is None:
            raise JobNotFound(job_id)
        return [
            JobEvent(
                e["kind"],
                _aware(e["at"]) or datetime.now(UTC),
                e.get("worker_id"),
                e.get("attempt"),
                e.get("message", ""),
            )
            for e in doc.get("events", [])
        ]

    def delete_finished(self, before: datetime, *, limit: int | None = None) -> int:
        old = {"status": {"$in": _FINISHED}, "finished_at": {"$lt": before}}
        try:
            if limit is not None:  # the oldest ``limit``: by id, then deleted
                ids = [
                    d["_id"]
                    for d in self.coll.find(old, {"_id": 1})
                    .sort("finished_at", 1)
                    .limit(limit)
                ]
                if not ids:
                    return 0
                old = {**old, "_id": {"$in": ids}}
            # sent again after a transient error; the count is then of the
            # second try's deletions only
            res = _again(partial(self.coll.delete_many, old))
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "delete_finished") from exc
        return int(res.deleted_count)

    def delete_jobs(self, job_ids: Sequence[str]) -> list[str]:
        gone = []
        try:
            for job_id in dict.fromkeys(job_ids):  # one each: report exactly what went
                res = self.coll.delete_one(
                    {"_id": job_id, "status": {"$ne": "running"}}
                )
                if res.deleted_count:
                    gone.append(job_id)
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "delete_jobs") from exc
        return gone

    # -- monitoring ------------------------------------------------------------------

    def oldest_claimable(self) -> datetime | None:
        best: datetime | None = None
        try:
            # one index seek per priority: the claimable index's (.., priority, run_at)
            for priority in range(PRIORITY_HIGH, PRIORITY_LOW + 1):
                doc = self.coll.find_one(
                    {"status": "pending", "waiting_on": 0, "priority": priority},
                    projection={"run_at": True},
                    sort=[("run_at", 1)],
                )
                at = None if doc is None else _aware(doc["run_at"])
                if at is not None and (best is None or at < best):
                    best = at
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "oldest_claimable") from exc
        return best

    def finished_counts(
        self, start: datetime | None, end: datetime
    ) -> Mapping[tuple[str, str], int]:
        window: dict[str, Any] = {"$lt": end}
        if start is not None:
            window["$gte"] = start
        try:
            rows = self.coll.aggregate(
                [
                    {"$match": {"finished_at": window, "status": {"$in": _FINISHED}}},
                    {
                        "$group": {
                            "_id": {"status": "$status", "type": "$type"},
                            "n": {"$sum": 1},
                        }
                    },
                ]
            )
            return {(r["_id"]["status"], r["_id"]["type"]): r["n"] for r in rows}
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "finished_counts") from exc

    def finished_jobs(
        self,
        start: datetime,
        end: datetime,
        *,
        status: str | None = None,
        owner: str | None = None,
        limit: int = 1000,
    ) -> list[Job]:
        query: dict[str, Any] = {"finished_at": {"$gte": start, "$lt": end}}
        if status is not None:
            query["status"] = status
        if owner is not None:
            query["owner"] = owner
        try:
            cursor = (
                self.coll.find(query, projection=_NO_EVENTS)
                .sort([("finished_at", -1), ("_id", -1)])
                .limit(limit)
            )
            return [_doc_to_job(d) for d in cursor]
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "finished_jobs") from exc

    def finished_durations(
        self, start: datetime, end: datetime, *, limit: int = 50_000
    ) -> list[tuple[str, float, float]]:
        query = {
            "finished_at": {"$gte": start, "$lt": end},
            "status": "completed",
            "started_at": {"$ne": None},
        }
        fields = {"_id": 0, "type": 1, "started_at": 1, "finished_at": 1}
        try:
            cursor = (
                self.coll.find(query, projection={**fields, "timeout_seconds": 1})
                .sort([("finished_at", -1), ("_id", -1)])
                .limit(limit)
            )
            found: list[tuple[str, float, float]] = []
            for d in cursor:
                began: datetime = d["started_at"]
                ended: datetime = d["finished_at"]
                seconds = (ended - began).total_seconds()  # both stored in UTC
                found.append((str(d["type"]), seconds, float(d["timeout_seconds"])))
            return found
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "finished_durations") from exc

    tracks_workers = True

    def record_worker(
        self, worker_id: str, now: datetime, info: Mapping[str, Any]
    ) -> None:
        try:
            self.workers.update_one(
                {"_id": worker_id},
                {
                    "$set": {"info": dict(info), "last_seen": now},
                    "$setOnInsert": {"first_seen": now},
                },
                upsert=True,
            )
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "record_worker") from exc

    def remove_worker(self, worker_id: str) -> None:
        try:
            self.workers.delete_one({"_id": worker_id})
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "remove_worker") from exc

    def list_workers(
        self, seen_since: datetime | None = None, *, limit: int = 1000
    ) -> list[WorkerRecord]:
        query = {} if seen_since is None else {"last_seen": {"$gte": seen_since}}
        try:
            docs = list(
                self.workers.find(query)
                .sort([("last_seen", -1), ("_id", 1)])
                .limit(limit)
            )
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "list_workers") from exc
        out = []
        for d in docs:
            first, last = _aware(d["first_seen"]), _aware(d["last_seen"])
            assert first is not None and last is not None
            out.append(WorkerRecord(d["_id"], first, last, d.get("info") or {}))
        return out

    def delete_workers(self, seen_before: datetime) -> int:
        try:
            res = _again(
                partial(self.workers.delete_many, {"last_seen": {"$lt": seen_before}})
            )
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "delete_workers") from exc
        return int(res.deleted_count)
