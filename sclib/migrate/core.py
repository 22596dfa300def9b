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

Statuses match in any case and with stray spaces, and the original's own words
read as the sclib status that means the same (``completed`` is ``done``,
``conversion failed`` is ``conversion error``, ``cancelled`` is ``upload error``,
``processing`` is ``conversion queued``; :data:`sclib.models.legacy.STATUS_WORDS`).

Rules (see ``docs/operations.md``, "Upgrading from the old system"):

* A dry run (:meth:`Migrator.migrate` without ``apply``) writes nothing.
* Every document of every shape the original wrote is read
  (:func:`sclib.models.legacy.read_document`). What cannot be mapped is
  *reported*, with a reason code and what to do, and left alone: an unknown
  status, ``retrying`` (it does not say which step; unless the original's job
  queue, left in the MongoDB ``jobs`` collection, holds the dataset's job: then
  that job's step is queued again), no uuid, no owner, no name,
  a sync without a ``google_drive_link``, an unzip without an ``archive``, a
  conversion of a sensor sclib does not convert, and every document of a *clash*
  of uuids (:func:`~sclib.migrate.plan.find_clashes`: one uuid held by several
  documents, or spelt with and without dashes).
* Clashes are all listed, including repeated slugs (all migrated; with
  ``resolve``, the older datasets get numbered slugs) and repeated numbers.
* Every job is created with the idempotency key ``migrate:<uuid>:<status>`` and the
  parameters ``migrated: true`` and ``legacy_status``: a second run creates
  nothing, and rollback deletes exactly these jobs. A dataset that already has a
  pending or running job for its step gets none.
* Documents are *normalised* (:func:`~sclib.migrate.plan.normalise`) so sclib's
  queries and writes find them as they mean: ``user``, ``name``, ``status`` in
  sclib's spelling, ``created_at`` / ``updated_at`` as dates, ``tags`` as a list,
  booleans as booleans; every other field stays as it was. Before anything of a
  dataset is changed, the whole original document goes into the migration ledger
  (:mod:`sclib.migrate.store`), so :meth:`Migrator.rollback` puts it back exactly.
* Legacy documents can also come from an export file (:func:`load_legacy_file`):
  they are imported into the dataset store, all or nothing per document; rollback
  removes them again.
* One dataset that cannot be written is reported (``apply-failed``); the others
  are still migrated.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

from sclib.datasets import DatasetStore, open_dataset_store
from sclib.errors import SclibError
from sclib.jobs.queue import JobQueue
from sclib.jobtypes import DatasetStatus, JobStatus
from sclib.migrate.plan import (
    HANDLER_NOTES,
    LIVE,
    STATUS_JOBS,
    Clash,
    Entry,
    MigrationItem,
    MigrationReport,
    RollbackItem,
    RollbackReport,
    ValidationItem,
    ValidationReport,
    accepted_types,
    find_clashes,
    is_migrated,
    job_parameters,
    load_legacy_file,
    migration_key,
    normalise,
    renamed_slugs,
    text_field,
)
from sclib.migrate.store import (
    LegacyDocuments,
    SQLiteLegacyDocuments,
    delete_jobs,
    legacy_documents_for,
)
from sclib.models import Job
from sclib.models.legacy import read_document, read_status

__all__ = [
    "STATUS_JOBS",
    "Clash",
    "MigrationItem",
    "MigrationReport",
    "Migrator",
    "RollbackItem",
    "RollbackReport",
    "ValidationItem",
    "ValidationReport",
    "load_legacy_file",
]

#: The original job queue's job types -> the status a dataset waiting for a new
#: try of that step is in (for documents the original left 'retrying').
_RETRIED: Mapping[str, DatasetStatus] = {
    "dataset_conversion": DatasetStatus.CONVERSION_QUEUED,
    "google_sync": DatasetStatus.SYNC_QUEUED,
    "rsync_transfer": DatasetStatus.SYNC_QUEUED,
    "file_upload": DatasetStatus.UPLOAD_QUEUED,
    "file_extraction": DatasetStatus.UNZIPPING,
    "data_compression": DatasetStatus.ZIPPING,
}

#: What to do about each reason a document is reported for (said once per item).
_FIXES: Mapping[str, str] = {
    "no-uuid": (
        "give it a uuid (e.g. db.visstoredatas.updateOne({_id: ObjectId('...')}, "
        "{$set: {uuid: '<new uuid>'}}); its files belong in upload/<uuid>/) and "
        "migrate again"
    ),
    "bad-uuid": (
        "give it a uuid of letters, digits, '.', '_' and '-' (rename its folder "
        "upload/<uuid>/ to match) and migrate again"
    ),
    "no-owner": "set user to the owner's email and migrate again",
    "no-name": "set name and migrate again",
    "unknown-status": (
        "set status to the sclib status it means (e.g. 'failed' to retry it by "
        "hand) and migrate again"
    ),
    "no-date": "set created_at to when it was made and migrate again",
}

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
        try:
            datasets: DatasetStore = open_dataset_store(
                url, **dict(dataset_options or {})
            )
        except BaseException:
            queue.close()
            raise
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
        self,
        entry: Entry,
        doc: Mapping[str, Any],
        blocked: tuple[str, str] | None,
    ) -> tuple[MigrationItem, dict[str, Any], dict[str, Any] | None]:
        """The item for ``doc`` (``entry``'s document, with what the ledger keeps
        of it), the normalising changes, and the job's parameters."""
        imported = entry.source == "file"
        read = entry.read if doc is entry.doc else read_document(doc)
        raw_status = doc.get("status")
        status = read.status.value if read.status is not None else None
        retried = None
        if read.status is DatasetStatus.RETRYING and not imported:
            retried = self._retried_step(text_field(doc, "uuid"))
            if retried is not None:
                status = retried[0]
        item = MigrationItem(
            text_field(doc, "uuid"),
            status or (raw_status if isinstance(raw_status, str) else None),
            name=read.dataset.name or None,
            imported=imported,
            id=entry.object_id,
        )
        if isinstance(raw_status, str) and status is not None and raw_status != status:
            item.original_status = raw_status
        for reason, message in read.missing.items():
            fix = _FIXES.get(reason)
            item.problem(reason, f"{message}: {fix}" if fix else message)
        if blocked is not None:
            item.problem(*blocked)
        item.notes += read.notes
        item.notes += read.report
        changes = normalise(doc, read) if not item.problems else {}
        if retried is not None and not item.problems:
            changes["status"] = status
            item.notes.append(
                f"'retrying' after the original's {retried[1]}: read as {status!r}"
            )
        merged = {**doc, **changes}
        params: dict[str, Any] | None = None
        job_type = STATUS_JOBS.get(str(status))
        if status == DatasetStatus.RETRYING:
            item.problem(
                "retrying",
                "'retrying' does not say which step to run again, and the jobs "
                "collection holds no job of the original system for it: set the "
                "step's error status (e.g. 'sync error') or queued status and "
                "migrate again",
            )
        elif job_type is not None:
            item.job_type = job_type
            params, problems = job_parameters(job_type, merged)
            for problem in problems:
                item.problem(f"{job_type}-parameters", problem)
        elif read.status is not None and read.status.is_error:
            item.notes.append("an error status: nothing restarts it; retry it by hand")
        if item.problems:
            item.action = "skip"
            item.job_type = None
            return item, {}, None
        item.changes = sorted(changes)
        if job_type is None:
            return item, changes, None
        uuid, key_status = item.uuid, item.status
        assert uuid is not None and key_status is not None
        if job_type in HANDLER_NOTES:
            item.notes.append(HANDLER_NOTES[job_type])
        key = migration_key(uuid, key_status)
        accepted = accepted_types(key_status)
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

    def _entries(
        self, stored: Sequence[Mapping[str, Any]], imports: Sequence[Mapping[str, Any]]
    ) -> builtins.list[Entry]:
        """The documents to consider: the store's, and the file's that are neither
        imported by an earlier run nor the same as the stored one."""
        by_uuid: dict[str, builtins.list[Mapping[str, Any]]] = {}
        for doc in stored:
            u = text_field(doc, "uuid")
            if u is not None:
                by_uuid.setdefault(u, []).append(doc)
        entries: builtins.list[Entry] = []
        for doc in imports:
            u = text_field(doc, "uuid")
            if u is not None:
                ledger = self.docs.ledger_get(u)
                if ledger is not None and ledger.get("imported") and u in by_uuid:
                    continue  # imported by an earlier run: handled as a stored one
                bare = {k: v for k, v in doc.items() if k != "_id"}
                if any(
                    {k: v for k, v in d.items() if k != "_id"} == bare
                    for d in by_uuid.get(u, ())
                ):
                    continue  # the same document: handled as a stored one
            entries.append(Entry(doc, "file", read_document(doc)))
        for doc in stored:
            entries.append(Entry(doc, "store", read_document(doc)))
        return entries

    def migrate(
        self,
        *,
        apply: bool = False,
        imports: Sequence[Mapping[str, Any]] | None = None,
        dataset_uuid: str | None = None,
        resolve: bool = False,
    ) -> MigrationReport:
        """Plan the migration and, with ``apply``, carry it out.

        ``imports``: legacy documents (e.g. :func:`load_legacy_file`) to import
        into the dataset store first. ``dataset_uuid``: only that dataset.
        ``resolve``: give the older datasets of a repeated slug numbered slugs
        (always done for imports into SQLite, whose slugs are unique per owner).
        """
        stored = list(self.docs.documents())
        entries = self._entries(stored, imports or ())
        clashes, blocked = find_clashes(entries)
        items: builtins.list[MigrationItem] = []
        plans: dict[int, tuple[MigrationItem, dict[str, Any], Any]] = {}
        for n, entry in enumerate(entries):
            u = text_field(entry.doc, "uuid")
            if dataset_uuid is not None and u != dataset_uuid:
                continue
            doc: Mapping[str, Any] = entry.doc
            ledger = self.docs.ledger_get(u) if u and entry.source == "store" else None
            if ledger is not None:
                # a SQLite row holds only the store's fields: the legacy ones it
                # was imported with (google_drive_link, ...) are in the ledger
                doc = {**ledger["original"], **entry.doc}
            item, changes, params = self._plan(entry, doc, blocked.get(n))
            item.imported = entry.source == "file" or bool(
                ledger and ledger.get("imported")
            )
            items.append(item)
            plans[n] = (item, changes, params)
        self._rename_slugs(entries, clashes, plans, resolve)
        if dataset_uuid is not None:
            clashes = [c for c in clashes if set(c.members) & set(plans)]
        report = MigrationReport(apply, items, clashes, self._store_notes())
        if apply:
            for n, (item, changes, params) in plans.items():
                entry = entries[n]
                if item.action == "skip":
                    continue
                if entry.source == "file":
                    self._apply(item, entry.doc, {**entry.doc, **changes}, params)
                elif item.action == "create" or changes:
                    self._apply(item, entry.doc, changes, params)
        return report

    def _rename_slugs(
        self,
        entries: Sequence[Entry],
        clashes: Sequence[Clash],
        plans: dict[int, tuple[MigrationItem, dict[str, Any], Any]],
        resolve: bool,
    ) -> None:
        """With ``resolve`` (or for imports into SQLite), plan numbered slugs for
        the older datasets of each repeated slug, and say so in the clash."""
        sqlite = isinstance(self.docs, SQLiteLegacyDocuments)
        for clash in clashes:
            if clash.kind != "slug":
                continue
            # a SQLite row keeps its slug (the table's are unique already)
            movable = [
                n
                for n in clash.members[1:]
                if n in plans
                and plans[n][0].action != "skip"
                and (entries[n].source == "file" if sqlite else resolve)
            ]
            if not movable:
                continue
            owner = entries[clash.members[0]].read.dataset.owner
            taken = {
                e.read.dataset.slug
                for e in entries
                if e.read.dataset.owner == owner and e.read.dataset.slug
            }
            wanted = {n: s for n, s in renamed_slugs(clash, entries, taken).items()}
            done = []
            for n in movable:
                item, changes, _ = plans[n]
                changes["slug"] = wanted[n]
                item.changes = sorted(changes)
                item.notes.append(
                    f"slug {entries[n].read.dataset.slug!r} is the newest dataset's "
                    f"too: renamed {wanted[n]!r}"
                )
                done.append(f"{entries[n].label()} -> {wanted[n]}")
            why = " (SQLite keeps one slug per owner)" if sqlite else ""
            clash.action = (
                f"the newest, {entries[clash.members[0]].label()}, keeps the slug "
                f"and the older ones are renamed{why}: " + ", ".join(done)
            )
            if len(movable) == len(clash.members) - 1:
                clash.resolved = True
                clash.resolve = "nothing to do (rollback gives the old slugs back)"

    def _retried_step(self, uuid: str | None) -> tuple[str, str] | None:
        """For a dataset the original left 'retrying': the queued status of the
        step its newest job in the original's job queue ran (that queue's
        documents stay in the MongoDB jobs collection), and that job, named."""
        coll = getattr(self.queue.store, "coll", None)
        if uuid is None or coll is None or not hasattr(coll, "find_one"):
            return None
        from pymongo.errors import PyMongoError

        try:
            job = coll.find_one(
                {"dataset_uuid": uuid, "type": {"$exists": False}},
                sort=[("created_at", -1), ("_id", -1)],
            )
        except PyMongoError:
            return None
        step = _RETRIED.get(str((job or {}).get("job_type")))
        if job is None or step is None:
            return None
        name = job.get("job_id") or job.get("_id")
        return step.value, f"{job['job_type']} job {name} ({job.get('status')})"

    def _store_notes(self) -> builtins.list[str]:
        """What the report says about the whole store."""
        notes = list(self.docs.store_notes())
        legacy_jobs = _legacy_job_count(self.queue)
        if legacy_jobs:
            notes.append(
                f"the jobs collection holds {legacy_jobs} documents of the original "
                "system's job queue (job_type, no type): sclib leaves them alone; "
                "delete them once the original is retired"
            )
        return notes

    def _apply(
        self,
        item: MigrationItem,
        original: Mapping[str, Any],
        payload: Mapping[str, Any],
        params: Mapping[str, Any] | None,
    ) -> None:
        """Carry out one item; a failure is reported on it (``apply-failed``)."""
        assert item.uuid is not None and item.status is not None
        try:
            self.docs.ledger_put(
                item.uuid,
                {
                    "imported": item.imported,
                    "original": dict(original),
                    "legacy_status": item.original_status or item.status,
                    "migrated_at": self.queue.clock(),
                },
            )
            if item.imported:
                if self.docs.get(item.uuid) is None:
                    try:
                        self.docs.insert(payload)
                    except BaseException:
                        self.docs.ledger_delete(item.uuid)  # nothing was imported
                        raise
                    stored = self.docs.get(item.uuid) or {}
                    if stored.get("slug") != payload.get("slug") and payload.get(
                        "slug"
                    ):
                        item.notes.append(
                            f"stored with the slug {stored.get('slug')!r}: "
                            f"{payload.get('slug')!r} is taken by another of the "
                            "owner's datasets"
                        )
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
        except SclibError as exc:
            item.problem("apply-failed", f"not migrated: {exc}")
            item.action = "skip"

    # -- validate ---------------------------------------------------------------------

    def validate(self, dataset_uuid: str | None = None) -> ValidationReport:
        """Check every dataset's status against its jobs.

        A status that waits for a step (``conversion queued``, ``syncing``, ...,
        ``retrying``) needs a pending or running job of that step; ``submitted``,
        ``done``, the error statuses and ``failed`` need none. An unknown status is
        a problem, and so is a migrated job whose dataset document is gone.
        Statuses are read as the migration reads them (any case, the original's
        words).
        """
        items: builtins.list[ValidationItem] = []
        present: set[str] = set()
        for doc in self.docs.documents():
            u = text_field(doc, "uuid")
            if dataset_uuid is not None and u != dataset_uuid:
                continue
            raw = doc.get("status")
            read, note = read_status(raw)
            item = ValidationItem(
                u, read.value if read else raw if isinstance(raw, str) else None
            )
            items.append(item)
            if u is None:
                oid = doc.get("_id")
                item.problems.append(
                    "no uuid"
                    + (f" (_id {oid})" if oid is not None else "")
                    + ": sclib cannot address it"
                )
                continue
            present.add(u)
            jobs = self._jobs_of(u)
            item.jobs = [j.id for j in jobs if j.status in LIVE]
            if read is None:
                item.problems.append(note or f"unknown status {raw!r}")
                continue
            status = read.value
            waits = status in STATUS_JOBS or status == DatasetStatus.RETRYING
            if not waits:
                continue
            accepted = accepted_types(status)
            if not any(j.type in accepted and j.status in LIVE for j in jobs):
                want = STATUS_JOBS.get(status, "step")
                item.problems.append(
                    f"status {status!r} waits for its {want} job, but the dataset "
                    "has no pending or running one"
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


def _legacy_job_count(queue: JobQueue) -> int:
    """How many of the original system's job-queue documents the MongoDB jobs
    collection holds (0 on SQLite)."""
    coll = getattr(queue.store, "coll", None)
    if coll is None or not hasattr(coll, "count_documents"):
        return 0
    from pymongo.errors import PyMongoError

    try:
        return int(coll.count_documents({"type": {"$exists": False}}))
    except PyMongoError:  # a count is only a note: never fail the migration for it
        return 0
