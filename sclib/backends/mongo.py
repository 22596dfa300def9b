"""MongoDB job store (pymongo), written for a MongoDB 6/7 replica set.

One document per job in the ``jobs`` collection of the ``scientistcloud`` database
(the seed's names; both configurable). The job id is the document ``_id``. A job's
history is embedded in the document as ``events`` and never loaded with the job.

Atomicity: a claim is one ``find_one_and_update`` with ``sort`` and
``ReturnDocument.AFTER``; every later write is a ``find_one_and_update`` whose filter
holds the fence (``_id``, ``worker_id``, ``attempts``, ``status: running``), so a
worker that lost its lease matches nothing. Operations that touch several documents
(unblocking or cancelling dependents) are idempotent follow-ups, each write a
compare-and-set; the rescue sweep takes turns through every waiting job and repairs
what a crash between two writes left behind (a missed completion, a missed cascade).
On a replica set these steps could run in one transaction; they do not, so that the
same code runs against the in-process stand-in used in CI.

Indexes are created idempotently on first use; an equivalent index an existing
application made under another name is used as it is.

Transient errors (a dropped connection, a new primary): pymongo retries
single-document writes and reads once, and a retried write is not applied twice.
``createIndexes``, ``update_many`` and ``delete_many``, which it does not retry,
are idempotent here and sent once more (:func:`_again`). Errors reach the caller as
BackendError naming the store and the operation; values BSON cannot hold as
InvalidInput.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from sclib.backends.base import ClaimedJob
from sclib.errors import (
    BackendError,
    JobNotFound,
    LeaseLost,
    MissingDependency,
)
from sclib.models import ErrorRecord, Job, Lease, Progress

try:
    from pymongo.errors import (
        DuplicateKeyError,
    )
except ImportError as exc:  # pragma: no cover - depends on the install
    raise MissingDependency("pymongo", "mongo", "The MongoDB backend") from exc

if TYPE_CHECKING:
    from sclib.jobs.policy import RetryPolicy
from sclib.backends.mongo_common import (
    _AFTER,
    _DRIVER_ERRORS,
    _NO_EVENTS,
    _again,
    _backend_error,
    _doc_to_job,
    _error_doc,
    _event,
)
from sclib.backends.mongo_ops import MongoJobBase

__all__ = ["MongoJobStore"]

log = logging.getLogger(__name__)


class MongoJobStore(MongoJobBase):
    """A :class:`~sclib.backends.base.JobStore` on a MongoDB collection (see the
    module docstring); :class:`~sclib.backends.mongo_ops.MongoJobBase` holds the
    collections, the helpers and the calls off the hot path."""

    # -- producing -----------------------------------------------------------------

    def enqueue(self, job: Job) -> tuple[Job, bool]:
        try:
            if job.idempotency_key is not None:
                existing = self.coll.find_one(
                    {"idempotency_key": job.idempotency_key}, projection=_NO_EVENTS
                )
                if existing is not None:
                    return _doc_to_job(existing), False
            doc = self._new_doc(job, self._statuses(job.depends_on))
            try:
                self.coll.insert_one(doc)
            except DuplicateKeyError:
                existing = self.coll.find_one(
                    {"idempotency_key": job.idempotency_key}, projection=_NO_EVENTS
                )
                if existing is None:
                    raise
                return _doc_to_job(existing), False
            if job.depends_on and doc["status"] != "cancelled":
                # a dependency may have completed, failed or been cancelled between
                # the check and the insert
                self._recount([job.id], "enqueue", job.created_at)
            return _doc_to_job(self._find(job.id, "enqueue")), True
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "enqueue") from exc

    def enqueue_many(self, jobs: Sequence[Job]) -> list[Job]:
        """Jobs without idempotency keys that share their dependencies (what
        :meth:`JobQueue.enqueue_many` makes) go in with one ``insert_many`` and
        are read back with one query, instead of three round trips each. MongoDB
        has no transaction here: a driver error part way leaves the jobs before
        it stored (as one call each would)."""
        if not jobs:
            return []
        shared = jobs[0].depends_on
        if any(j.idempotency_key is not None or j.depends_on != shared for j in jobs):
            return super().enqueue_many(jobs)
        try:
            statuses = self._statuses(shared)
            docs = [self._new_doc(job, statuses) for job in jobs]
            ids = [doc["_id"] for doc in docs]
            self.coll.insert_many(docs, ordered=True)
            if shared and docs[0]["status"] != "cancelled":
                self._recount_shared(ids, shared, docs[0]["waiting_on"], jobs[0])
            found = {
                d["_id"]: _doc_to_job(d)
                for d in self.coll.find({"_id": {"$in": ids}}, projection=_NO_EVENTS)
            }
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "enqueue_many") from exc
        # (a job deleted meanwhile: as written)
        return [found.get(d["_id"]) or _doc_to_job(d) for d in docs]

    def _recount_shared(
        self, ids: list[str], deps: Sequence[str], written: int, first: Job
    ) -> None:
        """:meth:`_recount` for new jobs that share ``deps`` and were written
        with ``waiting_on == written``: the dependencies are read once, and the
        jobs set with one compare-and-set (a job a completion already counted
        down is left alone, as :meth:`_recount` would)."""
        dead = self.coll.find_one(
            {"_id": {"$in": list(deps)}, "status": {"$in": ["failed", "cancelled"]}},
            projection={"status": True},
        )
        if dead is not None:  # rare: one at a time, with the cascade
            self._recount(ids, "enqueue_many", first.created_at)
            return
        waiting = self._count_waiting(deps)
        if waiting != written:
            _again(
                partial(
                    self.coll.update_many,
                    {"_id": {"$in": ids}, "status": "pending", "waiting_on": written},
                    {"$set": {"waiting_on": waiting}},
                )
            )

    def _statuses(self, deps: Sequence[str]) -> dict[str, str]:
        """The status of each of ``deps``; :class:`JobNotFound` for a missing one."""
        statuses: dict[str, str] = (
            {
                d["_id"]: d["status"]
                for d in self.coll.find(
                    {"_id": {"$in": list(deps)}}, projection={"status": True}
                )
            }
            if deps
            else {}
        )
        for dep in deps:
            if dep not in statuses:
                raise JobNotFound(dep)
        return statuses

    @staticmethod
    def _new_doc(job: Job, statuses: dict[str, str]) -> dict[str, Any]:
        """A new job's document, given its dependencies' statuses: born
        cancelled behind a failed or cancelled one."""
        dead = next(
            (
                f"dependency {d} {statuses[d]}"
                for d in job.depends_on
                if statuses[d] in ("failed", "cancelled")
            ),
            None,
        )
        now = job.created_at
        doc: dict[str, Any] = {
            "_id": job.id,
            "type": job.type,
            "status": "cancelled" if dead else job.status.value,
            "priority": job.priority,
            "parameters": dict(job.parameters),
            "dataset_uuid": job.dataset_uuid,
            "owner": job.owner,
            "attempts": 0,
            "max_attempts": job.max_attempts,
            "failures": 0,
            "crashes": 0,
            "held": False,
            "held_rescues": 0,
            "max_crashes": job.max_crashes,
            "timeout_seconds": job.timeout_seconds,
            "run_at": job.run_at,
            "worker_id": None,
            "lease_until": None,
            "cancel_requested": False,
            "progress": None,
            "result": None,
            "error": dead,
            "error_history": [],
            "depends_on": list(job.depends_on),
            "waiting_on": sum(1 for d in job.depends_on if statuses[d] != "completed"),
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "finished_at": now if dead else None,
            "events": [_event("created", now)]
            + ([_event("cancelled", now, message=dead)] if dead else []),
        }
        if job.idempotency_key is not None:
            doc["idempotency_key"] = job.idempotency_key
        return doc

    # -- consuming -------------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        types: Sequence[str] | None,
        now: datetime,
        lease_until: datetime,
    ) -> Job | None:
        doc = self._claim_one(worker_id, types, now, lease_until, held=False)
        return None if doc is None else _doc_to_job(doc)

    def claim_held(
        self,
        worker_id: str,
        types: Sequence[str] | None,
        now: datetime,
        lease_until: datetime,
        limit: int,
    ) -> list[ClaimedJob]:
        out: list[ClaimedJob] = []
        while len(out) < limit:
            try:
                doc = self._claim_one(worker_id, types, now, lease_until, held=True)
            except BackendError:
                if not out:
                    raise
                break  # keep what was claimed: dropping it would strand those jobs
            if doc is None:
                break
            job = _doc_to_job(doc)
            out.append(
                ClaimedJob(
                    job.lease,
                    job.type,
                    job.timeout_seconds,
                    job=job,
                    held=True,
                    held_rescues=doc.get("held_rescues", 0),
                )
            )
        return out

    def record_started(
        self, leases: Sequence[Lease], now: datetime, lease_until: datetime
    ) -> list[LeaseLost | None]:
        out: list[LeaseLost | None] = []
        for lease in leases:
            try:
                self._fenced_update(
                    lease,
                    {
                        "$set": {
                            "held": False,
                            "lease_until": lease_until,
                            "updated_at": now,
                        },
                        "$push": {
                            "events": _event(
                                "started", now, lease.worker_id, lease.attempt
                            )
                        },
                    },
                    "record_started",
                )
                out.append(None)
            except LeaseLost as exc:
                out.append(exc)
        return out

    def _claim_one(
        self,
        worker_id: str,
        types: Sequence[str] | None,
        now: datetime,
        lease_until: datetime,
        *,
        held: bool,
    ) -> dict[str, Any] | None:
        query: dict[str, Any] = {
            "status": "pending",
            "waiting_on": 0,
            "run_at": {"$lte": now},
        }
        if types is not None:
            if not types:
                return None
            query["type"] = {"$in": list(types)}
        try:
            doc = self.coll.find_one_and_update(
                query,
                {
                    "$set": {
                        "status": "running",
                        "worker_id": worker_id,
                        "lease_until": lease_until,
                        "updated_at": now,
                        "cancel_requested": False,
                        "held": held,
                    },
                    "$inc": {"attempts": 1},
                },
                sort=[("priority", 1), ("run_at", 1), ("_id", 1)],
                projection=_NO_EVENTS,
                return_document=_AFTER,
            )
            if doc is None:
                return None
            started = doc.get("started_at") or now
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "claim") from exc
        try:
            # second, fenced write: the attempt number is known only now. It only
            # records the event; if it fails, the claim stands.
            doc = (
                self.coll.find_one_and_update(
                    {
                        "_id": doc["_id"],
                        "worker_id": worker_id,
                        "attempts": doc["attempts"],
                        "status": "running",
                    },
                    {
                        "$set": {"started_at": started},
                        "$push": {
                            "events": _event("claimed", now, worker_id, doc["attempts"])
                        },
                    },
                    projection=_NO_EVENTS,
                    return_document=_AFTER,
                )
                or doc
            )
        except _DRIVER_ERRORS as exc:
            log.warning(
                "job %s claimed, but its claim event was not stored: %s",
                doc["_id"],
                _backend_error(exc, "claim"),
            )
        claimed: dict[str, Any] = doc
        return claimed

    def heartbeat(
        self,
        lease: Lease,
        now: datetime,
        lease_until: datetime,
        progress: Progress | None = None,
    ) -> bool:
        update: dict[str, Any] = {"lease_until": lease_until, "updated_at": now}
        if progress is not None:
            update["progress"] = progress.to_dict()
        return self._fenced_update(
            lease, {"$set": update}, "heartbeat"
        ).cancel_requested

    def complete(self, lease: Lease, now: datetime, result: Any = None) -> Job:
        job = self._fenced_update(
            lease,
            {
                "$set": {
                    "status": "completed",
                    "result": result,
                    "lease_until": None,
                    "updated_at": now,
                    "finished_at": now,
                },
                "$push": {
                    "events": _event("completed", now, lease.worker_id, lease.attempt)
                },
            },
            "complete",
        )
        try:
            dependents = [
                d["_id"]
                for d in self.coll.find(
                    {"depends_on": lease.job_id, "status": "pending"},
                    projection={"_id": True},
                )
            ]
            if dependents:
                self._recount(dependents, "complete")
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "complete") from exc
        return job

    def fail(
        self, lease: Lease, now: datetime, error: ErrorRecord, policy: RetryPolicy
    ) -> Job:
        current = self._find(lease.job_id, "fail")
        failures = current.get("failures", 0) + 1
        retry_at = policy.after_error(
            failures,
            current["max_attempts"],
            now,
            retryable=error.kind != "fatal",
            job_type=current.get("type"),
        )
        fence = {**self._fence(lease), "failures": current.get("failures", 0)}
        if retry_at is not None and current.get("cancel_requested"):
            # cancelled while running, then it failed: no retry
            message = f"cancelled; its last attempt failed: {error.error}"
            try:
                doc = self.coll.find_one_and_update(
                    fence,
                    {
                        "$set": {
                            "status": "cancelled",
                            "failures": failures,
                            "error": message,
                            "lease_until": None,
                            "updated_at": now,
                            "finished_at": now,
                        },
                        "$push": {
                            "error_history": _error_doc(error),
                            "events": _event(
                                "cancelled",
                                now,
                                lease.worker_id,
                                lease.attempt,
                                message,
                            ),
                        },
                    },
                    projection=_NO_EVENTS,
                    return_document=_AFTER,
                )
            except _DRIVER_ERRORS as exc:
                raise _backend_error(exc, "fail") from exc
            if doc is None:
                raise LeaseLost(lease.job_id, lease.worker_id, lease.attempt)
            self._cascade_cancel(lease.job_id, now, "cancelled", "fail")
            return _doc_to_job(doc)
        if retry_at is None:
            update: dict[str, Any] = {
                "$set": {
                    "status": "failed",
                    "failures": failures,
                    "error": error.error,
                    "lease_until": None,
                    "updated_at": now,
                    "finished_at": now,
                },
                "$push": {
                    "error_history": _error_doc(error),
                    "events": _event(
                        "failed", now, lease.worker_id, lease.attempt, error.error
                    ),
                },
            }
        else:
            update = {
                "$set": {
                    "status": "pending",
                    "failures": failures,
                    "error": error.error,
                    "lease_until": None,
                    "run_at": retry_at,
                    "updated_at": now,
                },
                "$push": {
                    "error_history": _error_doc(error),
                    "events": _event(
                        "retried",
                        now,
                        lease.worker_id,
                        lease.attempt,
                        f"{error.error} (failure {failures} of "
                        f"{current['max_attempts']}; next try at "
                        f"{retry_at.isoformat()})",
                    ),
                },
            }
        try:
            doc = self.coll.find_one_and_update(
                fence, update, projection=_NO_EVENTS, return_document=_AFTER
            )
            if doc is None:
                raise LeaseLost(lease.job_id, lease.worker_id, lease.attempt)
            if retry_at is None:
                self._cascade_cancel(lease.job_id, now, "failed", "fail")
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "fail") from exc
        return _doc_to_job(doc)

    def cancel_running(self, lease: Lease, now: datetime, message: str) -> Job:
        job = self._fenced_update(
            lease,
            {
                "$set": {
                    "status": "cancelled",
                    "error": message,
                    "lease_until": None,
                    "updated_at": now,
                    "finished_at": now,
                },
                "$push": {
                    "events": _event(
                        "cancelled", now, lease.worker_id, lease.attempt, message
                    )
                },
            },
            "cancel_running",
        )
        self._cascade_cancel(lease.job_id, now, "cancelled", "cancel_running")
        return job

    def release(self, lease: Lease, now: datetime, message: str) -> Job:
        current = self._find(lease.job_id, "release")
        if current.get("cancel_requested") and all(
            current.get(k) == v for k, v in self._fence(lease).items()
        ):
            # cancelled while running: do not hand it to another worker
            return self.cancel_running(lease, now, f"cancelled ({message})")
        return self._fenced_update(
            lease,
            {
                "$set": {
                    "status": "pending",
                    "lease_until": None,
                    "run_at": now,
                    "updated_at": now,
                },
                "$push": {
                    "events": _event(
                        "released", now, lease.worker_id, lease.attempt, message
                    )
                },
            },
            "release",
        )
