"""Moving datasets of the old, status-based system onto the job queue.

The old ScientistCloud kept each dataset's progress only in its ``status`` string
(``visstoredatas`` documents). :class:`Migrator` reads those documents and creates,
for each dataset, the job that continues it from where it stood:

=========================================  =======================
legacy status                               job created
=========================================  =======================
``sync queued``, ``syncing``                ``google_sync``
``conversion queued``, ``converting``       ``dataset_conversion``
``upload queued``, ``uploading``            ``upload``
``unzipping``                               ``file_extraction``
``zipping``                                 ``data_compression``
``submitted``, ``done``                     none
the error statuses and ``failed``           none (an operator retries them)
=========================================  =======================

Rules (see ``docs/operations.md``, "Upgrading from the old system"):

* A dry run (:meth:`Migrator.migrate` without ``apply``) writes nothing.
* Anything that cannot be mapped is *reported* and left alone: an unknown status
  (``conversion failed``), ``retrying`` (it does not say which step), no uuid, no
  owner (``user`` / ``user_email``), no name or creation date, a sync without a
  ``google_drive_link``, an unzip without an ``archive``.
* Every job is created with the idempotency key ``migrate:<uuid>:<status>`` and the
  parameters ``migrated: true`` and ``legacy_status``: a second run creates
  nothing, and rollback deletes exactly these jobs. A dataset that already has a
  pending or running job for its step gets none.
* Documents the new dataset store cannot read as they are (``user_email`` but no
  ``user``, dates as strings or under ``date_created``, tags as one comma string)
  are *normalised*: the missing store fields are added (``user``, ``created_at``,
  ``updated_at``, ``name``) and ``tags`` becomes a list; every other field, the
  status included, stays as it was. Before anything of a dataset is changed, the
  whole original document goes into the migration ledger
  (:mod:`sclib.migrate_store`), so :meth:`Migrator.rollback` puts it back exactly.
* Legacy documents can also come from an export file (:func:`load_legacy_file`):
  they are imported into the dataset store, all or nothing per document; rollback
  removes them again.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

from sclib.datasets import DatasetStore, open_dataset_store
from sclib.errors import InvalidInput
from sclib.jobs.queue import JobQueue
from sclib.jobtypes import DatasetStatus, JobStatus
from sclib.migrate_plan import (
    HANDLER_NOTES,
    LIVE,
    STATUS_JOBS,
    MigrationItem,
    MigrationReport,
    RollbackItem,
    RollbackReport,
    ValidationItem,
    ValidationReport,
    accepted_types,
    is_migrated,
    job_parameters,
    load_legacy_file,
    migration_key,
    normalise,
    text_field,
)
from sclib.migrate_store import (
    LegacyDocuments,
    dataset_from_doc,
    delete_jobs,
    legacy_documents_for,
)
from sclib.models import Job

__all__ = [
    "STATUS_JOBS",
    "MigrationItem",
    "MigrationReport",
    "Migrator",
    "RollbackItem",
    "RollbackReport",
    "ValidationItem",
    "ValidationReport",
    "load_legacy_file",
]

# -- the migrator ---------------------------------------------------------------------


class Migrator:
    """Plan, apply, check and undo the migration over one backend.

    :param queue: the job queue jobs are created in.
    :param documents: the backend's dataset documents and migration ledger.
    """

    def __init__(self, queue: JobQueue, documents: LegacyDocuments) -> None:
        self.queue = queue
        self.docs = documents

    @classmethod
    def open(
        cls,
        url: str,
        *,
        store_options: Mapping[str, Any] | None = None,
        dataset_options: Mapping[str, Any] | None = None,
    ) -> Migrator:
        """The migrator over the backend at ``url`` (jobs and datasets)."""
        from sclib.backends import open_store

        queue = JobQueue(open_store(url, **dict(store_options or {})))
        datasets: DatasetStore = open_dataset_store(url, **dict(dataset_options or {}))
        return cls(queue, legacy_documents_for(datasets))

    def close(self) -> None:
        self.docs.close()
        self.queue.close()

    def __enter__(self) -> Migrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _jobs_of(self, uuid: str) -> builtins.list[Job]:
        jobs: builtins.list[Job] = []
        while True:
            page = self.queue.list(dataset_uuid=uuid, limit=1000, offset=len(jobs))
            jobs += page
            if len(page) < 1000:
                return jobs

    # -- migrate ----------------------------------------------------------------------

    def _plan(
        self, doc: Mapping[str, Any], imported: bool
    ) -> tuple[MigrationItem, dict[str, Any], dict[str, Any] | None]:
        """The item for ``doc``, the normalising changes, and the job parameters."""
        uuid = text_field(doc, "uuid")
        status = doc.get("status")
        item = MigrationItem(
            uuid,
            status if isinstance(status, str) else None,
            name=text_field(doc, "name") or text_field(doc, "dataset_name"),
            imported=imported,
        )
        if uuid is None:
            item.problems.append("no uuid")
        if not isinstance(status, str):
            item.problems.append("no status")
        elif status not in DatasetStatus._value2member_map_:
            item.problems.append(
                f"unknown status {status!r}: not a legacy status, nothing is mapped"
            )
        changes, problems = normalise(doc)
        item.problems += problems
        merged = {**doc, **changes}
        if not item.problems:
            try:
                dataset_from_doc(merged)
            except InvalidInput as exc:
                item.problems.append(f"the dataset store cannot read it: {exc}")
        params: dict[str, Any] | None = None
        job_type = STATUS_JOBS.get(str(status))
        if status == DatasetStatus.RETRYING:
            item.problems.append(
                "'retrying' does not say which step to run again: set the step's "
                "error status (e.g. 'sync error') or queued status and migrate again"
            )
        elif job_type is not None:
            item.job_type = job_type
            params, problems = job_parameters(job_type, merged)
            item.problems += problems
        elif item.status in DatasetStatus._value2member_map_ and (
            DatasetStatus(str(item.status)).is_error
        ):
            item.notes.append("an error status: nothing restarts it; retry it by hand")
        if item.problems:
            item.action = "skip"
            item.job_type = None
            return item, {}, None
        item.changes = sorted(changes)
        if job_type is None:
            return item, changes, None
        assert uuid is not None and isinstance(status, str)
        if job_type in HANDLER_NOTES:
            item.notes.append(HANDLER_NOTES[job_type])
        key = migration_key(uuid, status)
        accepted = accepted_types(status)
        for job in [] if imported else self._jobs_of(uuid):
            if job.idempotency_key == key:
                item.action, item.job_id = "exists", job.id
                item.notes.append("created by an earlier migration")
                return item, changes, None
            if job.type in accepted and job.status in LIVE:
                item.action, item.job_id = "exists", job.id
                item.notes.append(f"continued by its {job.status.value} {job.type} job")
                return item, changes, None
        item.action = "create"
        return item, changes, params

    def _plan_imports(
        self, imports: Sequence[Mapping[str, Any]], uuid: str | None
    ) -> tuple[
        builtins.list[MigrationItem],
        dict[str, tuple[dict[str, Any], dict[str, Any] | None]],
    ]:
        """Items for the file's documents, and by uuid the documents to import
        (normalised) with their job's parameters."""
        items: builtins.list[MigrationItem] = []
        todo: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}
        seen: dict[str, int] = {}
        for doc in imports:
            u = text_field(doc, "uuid")
            if u is not None:
                seen[u] = seen.get(u, 0) + 1
        for doc in imports:
            u = text_field(doc, "uuid")
            if uuid is not None and u != uuid:
                continue
            if u is not None and seen[u] > 1:
                item = MigrationItem(
                    u, text_field(doc, "status"), "skip", imported=True
                )
                item.problems.append(
                    f"uuid appears {seen[u]} times in the file: none of them is "
                    "imported"
                )
                items.append(item)
                continue
            if u is not None:
                entry = self.docs.ledger_get(u)
                if entry is not None and entry.get("imported"):
                    continue  # imported by an earlier run: handled as a stored one
                stored = self.docs.get(u)
                if stored is not None:
                    same = {k: v for k, v in stored.items() if k != "_id"} == {
                        k: v for k, v in doc.items() if k != "_id"
                    }
                    if not same:
                        item = MigrationItem(u, text_field(doc, "status"), "skip")
                        item.problems.append(
                            "a dataset with this uuid is already in the store, with "
                            "other contents: the file's copy is not imported"
                        )
                        items.append(item)
                    continue
            item, changes, params = self._plan(doc, imported=True)
            items.append(item)
            if item.action != "skip":
                assert item.uuid is not None
                todo[item.uuid] = ({**doc, **changes}, params)
        return items, todo

    def migrate(
        self,
        *,
        apply: bool = False,
        imports: Sequence[Mapping[str, Any]] | None = None,
        dataset_uuid: str | None = None,
    ) -> MigrationReport:
        """Plan the migration and, with ``apply``, carry it out.

        ``imports``: legacy documents (e.g. :func:`load_legacy_file`) to import
        into the dataset store first. ``dataset_uuid``: only that dataset.
        """
        items, todo = self._plan_imports(imports or (), dataset_uuid)
        originals = {
            u: dict(d) for d in imports or () if (u := text_field(d, "uuid")) in todo
        }
        planned: builtins.list[tuple[MigrationItem, Mapping[str, Any], Any, Any]] = []
        for item in items:
            if item.uuid in todo and item.action != "skip":
                doc, params = todo[item.uuid]
                planned.append((item, originals[item.uuid], doc, params))
        for doc in self.docs.documents():
            u = text_field(doc, "uuid")
            if dataset_uuid is not None and u != dataset_uuid:
                continue
            if u in todo:
                continue
            entry = self.docs.ledger_get(u) if u else None
            # a SQLite row holds only the store's fields: the legacy ones it was
            # imported with (google_drive_link, ...) are in the ledger
            seen = {**entry["original"], **doc} if entry else doc
            item, changes, params = self._plan(seen, imported=False)
            item.imported = bool(entry and entry.get("imported"))
            items.append(item)
            if item.action == "create" or changes:
                planned.append((item, doc, changes, params))
        if apply:
            for item, original, payload, params in planned:
                self._apply(item, original, payload, params)
        return MigrationReport(apply, items)

    def _apply(
        self,
        item: MigrationItem,
        original: Mapping[str, Any],
        payload: Mapping[str, Any],
        params: Mapping[str, Any] | None,
    ) -> None:
        assert item.uuid is not None and item.status is not None
        self.docs.ledger_put(
            item.uuid,
            {
                "imported": item.imported,
                "original": dict(original),
                "legacy_status": item.status,
                "migrated_at": self.queue.clock(),
            },
        )
        if item.imported:
            if self.docs.get(item.uuid) is None:
                self.docs.insert(payload)
        elif payload:
            self.docs.update(item.uuid, payload)
        if params is not None and item.job_type is not None:
            doc = self.docs.get(item.uuid) or {}
            job = self.queue.enqueue(
                item.job_type,
                params,
                dataset_uuid=item.uuid,
                owner=doc.get("user"),
                idempotency_key=migration_key(item.uuid, item.status),
            )
            item.job_id = job.id

    # -- validate ---------------------------------------------------------------------

    def validate(self, dataset_uuid: str | None = None) -> ValidationReport:
        """Check every dataset's status against its jobs.

        A status that waits for a step (``conversion queued``, ``syncing``, ...,
        ``retrying``) needs a pending or running job of that step; ``submitted``,
        ``done``, the error statuses and ``failed`` need none. An unknown status is
        a problem, and so is a migrated job whose dataset document is gone.
        """
        items: builtins.list[ValidationItem] = []
        present: set[str] = set()
        for doc in self.docs.documents():
            u = text_field(doc, "uuid")
            if dataset_uuid is not None and u != dataset_uuid:
                continue
            status = doc.get("status")
            item = ValidationItem(u, status if isinstance(status, str) else None)
            items.append(item)
            if u is None:
                item.problems.append("no uuid")
                continue
            present.add(u)
            jobs = self._jobs_of(u)
            item.jobs = [j.id for j in jobs if j.status in LIVE]
            if not isinstance(status, str) or (
                status not in DatasetStatus._value2member_map_
            ):
                item.problems.append(f"unknown status {status!r}")
                continue
            waits = status in STATUS_JOBS or status == DatasetStatus.RETRYING
            if not waits:
                continue
            accepted = accepted_types(status)
            if not any(j.type in accepted and j.status in LIVE for j in jobs):
                want = STATUS_JOBS.get(status, "step")
                item.problems.append(
                    f"status {status!r} waits for a {want} job, but the dataset has "
                    "no pending or running one"
                )
        for entry in self.docs.ledger_all():
            u = str(entry["_id"])
            if u in present or (dataset_uuid is not None and u != dataset_uuid):
                continue
            migrated = [j.id for j in self._jobs_of(u) if is_migrated(j)]
            if migrated:
                items.append(
                    ValidationItem(
                        u,
                        None,
                        migrated,
                        ["migrated jobs remain but the dataset document is gone"],
                    )
                )
        return ValidationReport(items)

    # -- rollback ---------------------------------------------------------------------

    def rollback(
        self, dataset_uuid: str | None = None, *, apply: bool = False
    ) -> RollbackReport:
        """Undo the migration (of one dataset, or all); with ``apply`` only.

        For each dataset in the ledger: delete its migrated jobs (and no other),
        then put back its document exactly as the ledger holds it (or remove it if
        the migration imported it), then forget the ledger entry. A dataset whose
        migrated job is running, or has other jobs depending on it, is reported
        and left as it is.
        """
        items: builtins.list[RollbackItem] = []
        for entry in self.docs.ledger_all():
            u = str(entry["_id"])
            if dataset_uuid is not None and u != dataset_uuid:
                continue
            item = RollbackItem(u, "removed" if entry.get("imported") else "restored")
            items.append(item)
            jobs = self._jobs_of(u)
            mine = [j for j in jobs if is_migrated(j)]
            item.jobs = [j.id for j in mine]
            ids = set(item.jobs)
            for j in mine:
                if j.status is JobStatus.RUNNING:
                    item.problems.append(
                        f"job {j.id} is running: cancel it (sclib jobs cancel "
                        f"{j.id}) and roll back again"
                    )
            for j in jobs:
                if j.id not in ids and ids.intersection(j.depends_on):
                    item.problems.append(
                        f"job {j.id} ({j.type}) depends on a migrated job: cancel "
                        "or delete it first"
                    )
            if item.problems or not apply:
                continue
            deleted = delete_jobs(self.queue.store, item.jobs)
            if len(deleted) != len(item.jobs):
                left = sorted(ids - set(deleted))
                item.problems.append(
                    f"jobs {', '.join(left)} were claimed meanwhile: roll back again"
                )
                continue
            if entry.get("imported"):
                self.docs.remove(u)
            else:
                self.docs.restore(entry["original"])
            self.docs.ledger_delete(u)
        return RollbackReport(apply, items)
