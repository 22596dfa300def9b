"""The migration on a collection shaped like the original ScientistCloud's.

The fixture (legacy_fixture.py) holds every document shape the original's code
writes and the odd cases of a years-old collection. Both paths are run through
dry run, apply, validate, a second apply and rollback: the MongoDB collection in
place (pymongo against mongomock, an in-process stand-in: no MongoDB server can be
installed here) and the mongoexport JSONL file (imported into SQLite by the real
``sclib`` command, and into MongoDB by the library). ``sclib datasets list`` and
``show`` are run before and after the migration and after the rollback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3
import pytest

from sclib.errors import BackendError, InvalidInput
from sclib.jobs.queue import JobQueue
from sclib.migrate import MigrationReport, Migrator, load_legacy_file
from sclib.migrate.store import legacy_documents_for

mongomock = pytest.importorskip("mongomock")
pytest.importorskip("bson")

from bson import ObjectId  # noqa: E402

from sclib.backends.mongo import MongoJobStore  # noqa: E402
from sclib.backends.mongo_datasets import MongoDatasetStore  # noqa: E402

from .legacy_fixture import (  # noqa: E402
    EXPECTED,
    EXPECTED_FROM_FILE,
    PORTAL_INDEXES,
    SPELT,
    TWICE,
    U,
    documents,
    export_lines,
    legacy_jobs,
    number_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.mongo]

ROOT = Path(__file__).resolve().parents[2]
CREATED = {n for n, (action, _, _) in EXPECTED.items() if action == "create"}
REPORTED = {n for n, (action, _, _) in EXPECTED.items() if action == "skip"}
FILE_CREATED = {n for n, w in EXPECTED_FROM_FILE.items() if w[0] == "create"}
FILE_REPORTED = {n for n, w in EXPECTED_FROM_FILE.items() if w[0] == "skip"}
REASONS = {
    "no-owner": 1,
    "no-uuid": 2,
    "retrying": 1,
    "unknown-status": 1,
    "uuid-clash": 2,
    "uuid-spelling": 2,
}
FILE_REASONS = {**REASONS, "retrying": 2}
CLASH_KINDS = ["uuid", "uuid spelling", "no uuid", "slug", "number"]


class Shared:
    """One mongomock server shared by the stores and the command under test."""

    def __init__(self) -> None:
        self.client = mongomock.MongoClient(tz_aware=True)
        self.db = self.client.scientistcloud

    def migrator(self) -> Migrator:
        queue = JobQueue(MongoJobStore(self.client, write_concern={"w": 1}))
        datasets = MongoDatasetStore(self.client, write_concern={"w": 1})
        return Migrator(queue, legacy_documents_for(datasets))

    def documents(self) -> list[dict[str, Any]]:
        return list(self.db.visstoredatas.find().sort("_id", 1))


def fill(shared: Shared) -> None:
    """The collection as the portal's database holds it: sclib's indexes made
    when sclib first opened it (as on a real server, where its unique indexes
    cover only sclib's own documents; mongomock would refuse to build them on
    documents they do not cover), the portal's own indexes, the documents, and
    the original's job-queue documents."""
    MongoDatasetStore(shared.client, write_concern={"w": 1})
    for name in PORTAL_INDEXES:
        shared.db.visstoredatas.create_index(name)
    shared.db.visstoredatas.insert_many(documents())
    shared.db.jobs.insert_many(legacy_jobs())


@pytest.fixture
def shared() -> Shared:
    return Shared()


def by_number(report: MigrationReport) -> dict[int, Any]:
    return {int(str(i.id)[8:], 16): i for i in report.items}


def check_plan(report: MigrationReport, *, imported: bool = False) -> None:
    """Every document is in the report with the expected action and reasons
    (``imported``: from the export file, with no job queue beside it)."""
    items = by_number(report)
    expected = EXPECTED_FROM_FILE if imported else EXPECTED
    assert set(items) == set(expected), "a document is missing from the report"
    for n, (action, job_type, reasons) in expected.items():
        item = items[n]
        assert (item.action, item.job_type, set(item.reasons)) == (
            action,
            job_type,
            reasons,
        ), (n, item.to_dict())
        assert bool(item.problems) is (action == "skip")
        assert item.imported is imported
    assert report.reported() == (FILE_REASONS if imported else REASONS)
    assert [c.kind for c in report.clashes] == CLASH_KINDS
    counts = report.counts()
    want = (5, 18, 10) if imported else (6, 18, 9)
    assert (counts["create"], counts["nothing"], counts["skip"]) == want
    assert counts["clashes"] == 4


def test_mongo_collection_round_trip(shared: Shared) -> None:
    """On the collection in place: the dry run finishes despite the clashes,
    lists each of them and changes nothing; apply creates the six jobs (one for
    the dataset the original left 'retrying', from its job-queue document) and
    normalises what sclib's queries need; validate reports exactly the reported
    documents; a second apply creates and changes nothing; rollback restores
    every field of every document, in order, and leaves only the original's own
    job documents."""
    fill(shared)
    before = shared.documents()
    their_jobs = list(shared.db.jobs.find().sort("_id", 1))
    m = shared.migrator()
    dry = m.migrate()
    check_plan(dry)
    assert shared.documents() == before and m.docs.ledger_all() == []
    assert m.queue.list(limit=100) == []
    clashes = {c.kind: c for c in dry.clashes}
    assert clashes["uuid"].key == TWICE and len(clashes["uuid"].documents) == 2
    assert clashes["uuid spelling"].key == SPELT.replace("-", "")
    assert clashes["slug"].key == "amy@visus.net amy-test-2025"
    assert U(17) in clashes["slug"].action  # the newest keeps it
    assert clashes["number"].key == "31337"
    assert not clashes["slug"].blocking and clashes["uuid"].blocking
    assert any("job queue" in n for n in dry.notes)
    assert not any("index" in n for n in dry.notes)  # sclib's indexes are there

    done = m.migrate(apply=True)
    check_plan(done)
    jobs = {j.dataset_uuid: j for j in m.queue.list(limit=100)}
    assert set(jobs) == {U(n) for n in CREATED}
    assert jobs[U(2)].type == "dataset_conversion"  # the original's job ignored
    assert jobs[U(14)].parameters["legacy_status"] == "conversion queued"
    assert jobs[U(14)].idempotency_key == f"migrate:{U(14)}:conversion queued"
    assert jobs[U(4)].type == "upload"
    assert jobs[U(33)].type == "dataset_conversion"  # 'retrying', step from its job
    assert by_number(done)[33].original_status == "retrying"
    stored = {number_of(d): d for d in shared.documents()}
    assert stored[5]["status"] == "conversion error"
    assert stored[7]["status"] == "upload error" and stored[7]["error_message"]
    assert stored[9]["user"] == "amy@visus.net" and stored[9]["status"] == "done"
    assert stored[10]["is_public"] is False
    assert stored[10]["created_at"] == datetime(2025, 1, 20, 10, tzinfo=UTC)
    assert stored[3]["tags"] == ["soil", "maize"]
    assert stored[18]["status"] == stored[19]["status"] == "done"
    assert stored[20]["created_at"] == datetime.fromtimestamp(1732000000, UTC)
    assert stored[23]["status"] == stored[33]["status"] == "conversion queued"
    assert stored[1]["files"] == before[0]["files"]  # kept as the original wrote
    assert stored[11]["folder_uuid"] == "CEDMAV"  # unknown fields survive
    for n in REPORTED:
        assert stored[n] == next(d for d in before if number_of(d) == n)
    ds = m.docs.datasets
    got = ds.get(U(14))
    assert (got.is_public, got.is_public_downloadable) == (True, True)
    assert ds.get(U(11)).folder == "CEDMAV"
    assert [f.path for f in ds.get(U(11)).files] == [
        "run/a.tif",
        "run/b.tif",
        "run/sub/c.tif",
    ]

    check = m.validate()
    problem_uuids = sorted(str(i.uuid) for i in check.problems)
    want = sorted(
        str(d.get("uuid"))
        for d in before
        # the reported ones that wait for a step, or have no uuid or known status
        if number_of(d) in {15, 26, 27, 28, 29, 30, 32}
    )
    assert problem_uuids == want

    after_apply = shared.documents()
    again = m.migrate(apply=True)
    assert again.counts()["create"] == 0 and again.counts()["exists"] == 6
    assert again.counts()["normalised"] == 0
    assert shared.documents() == after_apply
    assert len(m.queue.list(limit=100)) == 6

    undo = m.rollback(apply=True)
    touched = [i for i in done.items if i.action == "create" or i.changes]
    assert not undo.problems and len(undo.items) == len(touched) == 16
    after = shared.documents()
    assert after == before
    assert [list(d) for d in after] == [list(d) for d in before]  # field order
    assert m.queue.list(limit=100) == []
    assert list(shared.db.jobs.find().sort("_id", 1)) == their_jobs
    m.close()


def test_export_into_mongo_round_trip(shared: Shared, tmp_path: Path) -> None:
    """The mongoexport file imported into an empty MongoDB collection: the
    same plan (every document imported or reported), a second apply imports
    and creates nothing, rollback removes every imported document."""
    export = tmp_path / "visstoredatas.jsonl"
    export.write_text(export_lines())
    imports = load_legacy_file(export)
    m = shared.migrator()
    check_plan(m.migrate(imports=imports), imported=True)
    assert shared.documents() == []
    done = m.migrate(apply=True, imports=imports)
    check_plan(done, imported=True)
    assert len(shared.documents()) == len(EXPECTED) - len(FILE_REPORTED)
    assert len(m.queue.list(limit=100)) == len(FILE_CREATED) == 5
    assert not m.validate().problems
    again = m.migrate(apply=True, imports=imports)
    assert again.counts()["create"] == 0
    assert {i.action for i in again.items if not i.problems} == {"exists", "nothing"}
    assert len(shared.documents()) == len(EXPECTED) - len(FILE_REPORTED)
    assert not m.rollback(apply=True).problems
    assert shared.documents() == [] and m.queue.list(limit=100) == []
    m.close()


def test_resolve_renames_the_older_slugs_and_rollback_restores_them(
    shared: Shared,
) -> None:
    """--resolve keeps the slug on the newest dataset and gives the older one
    the first free numbered slug; rollback puts the original slug back."""
    fill(shared)
    m = shared.migrator()
    dry = m.migrate(resolve=True)
    slug = next(c for c in dry.clashes if c.kind == "slug")
    assert f"{U(16)} -> amy-test-2025-2" in slug.action and slug.resolved
    assert dry.counts()["clashes"] == 3
    assert shared.db.visstoredatas.find_one({"uuid": U(16)})["slug"] == "amy-test-2025"
    m.migrate(apply=True, resolve=True)
    assert m.docs.datasets.get(U(16)).slug == "amy-test-2025-2"
    assert m.docs.datasets.get(U(17)).slug == "amy-test-2025"
    m.rollback(apply=True)
    assert shared.db.visstoredatas.find_one({"uuid": U(16)})["slug"] == "amy-test-2025"
    m.close()


def test_one_dataset_that_cannot_be_written_does_not_stop_the_others(
    shared: Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails for one dataset reports it (apply-failed, with the
    store's message) and the migration carries on with the others."""
    fill(shared)
    m = shared.migrator()
    real = m.docs.update

    def update(uuid: str, changes: Any) -> None:
        if uuid == U(3):
            raise BackendError("MongoDB dataset store: the disk is full")
        real(uuid, changes)

    monkeypatch.setattr(m.docs, "update", update)
    done = m.migrate(apply=True)
    failed = by_number(done)[3]
    assert failed.reasons == ["apply-failed"] and "disk is full" in failed.problems[0]
    assert {j.dataset_uuid for j in m.queue.list(limit=100)} == {
        U(n) for n in CREATED - {3}
    }
    m.close()


# -- the commands ---------------------------------------------------------------------


def sclib(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCLIB_DATA_DIR": str(tmp_path)}
    env.pop("MONGO_URL", None)
    env.pop("SCLIB_BACKEND", None)
    return subprocess.run(
        [sys.executable, "-m", "sclib", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_export_into_sqlite_with_the_command(tmp_path: Path) -> None:
    """`sclib migrate --from export.jsonl` on a SQLite file: the dry run exits 1
    and lists every clash; --apply imports every document it does not report
    (the older of two datasets sharing a slug gets a numbered one, as SQLite
    keeps slugs unique); validate passes; a second --apply creates nothing;
    `sclib datasets list` and `show` work after the migration and after the
    rollback, which removes every imported dataset and job."""
    export = tmp_path / "visstoredatas.jsonl"
    export.write_text(export_lines())
    dry = sclib(tmp_path, "migrate", "--from", str(export), "--json")
    assert dry.returncode == 1, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["counts"]["create"] == 5 and plan["counts"]["skip"] == 10
    assert plan["reported"] == FILE_REASONS
    assert [c["kind"] for c in plan["clashes"]] == CLASH_KINDS
    text = sclib(tmp_path, "migrate", "--from", str(export))
    assert "CLASHES" in text.stdout and "- uuid spelling" in text.stdout
    assert "10 skipped with problems (1 no-owner, 2 no-uuid" in text.stdout
    # the slug clash is resolved: SQLite gives the older dataset a numbered slug
    assert "3 clashes to look at; dry run, nothing changed" in text.stdout
    assert "amy-test-2025-2" in text.stdout

    done = sclib(tmp_path, "migrate", "--from", str(export), "--apply", "--json")
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["counts"]["create"] == 5
    ok = sclib(tmp_path, "migrate", "validate", "--json")
    assert ok.returncode == 0, ok.stdout
    assert json.loads(ok.stdout)["checked"] == len(EXPECTED) - len(FILE_REPORTED)
    again = sclib(tmp_path, "migrate", "--from", str(export), "--apply", "--json")
    assert json.loads(again.stdout)["counts"]["create"] == 0
    assert len(json.loads(sclib(tmp_path, "jobs", "list", "--json").stdout)) == 5

    listed = sclib(tmp_path, "datasets", "list", "--limit", "100", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {d["uuid"]: d for d in json.loads(listed.stdout)}
    assert len(rows) == len(EXPECTED) - len(FILE_REPORTED)
    assert {rows[U(16)]["slug"], rows[U(17)]["slug"]} == {
        "amy-test-2025-2",
        "amy-test-2025",
    }
    assert rows[U(17)]["slug"] == "amy-test-2025"  # the newest keeps it
    assert rows[U(24)]["slug"] == "ana--2024"  # the original's slug, kept
    shown = sclib(tmp_path, "datasets", "show", "ben.kim-scan-2024")
    assert shown.returncode == 0, shown.stderr
    assert "digest not known yet" in shown.stdout
    for identifier in (U(11), U(11).replace("-", ""), "my-dataset-001", "40011"):
        out = sclib(tmp_path, "datasets", "show", identifier, "--json")
        assert json.loads(out.stdout)["uuid"] in (U(11), "my-dataset-001"), out

    back = sclib(tmp_path, "migrate", "rollback", "--apply")
    assert back.returncode == 0, back.stderr
    assert json.loads(sclib(tmp_path, "datasets", "list", "--json").stdout) == []
    assert json.loads(sclib(tmp_path, "jobs", "list", "--json").stdout) == []


def test_datasets_and_migrate_commands_on_a_shared_mongo_collection(
    shared: Shared, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sclib datasets list` and `show` on the MongoDB collection work before the
    migration, after it and after the rollback: a document sclib cannot fully
    read is shown with what it has and its notes, never an error. `sclib
    migrate` itself finishes its dry run and lists the clashes, and `sclib jobs
    list` ignores the original's job documents."""
    import pymongo

    fill(shared)
    monkeypatch.setattr(pymongo, "MongoClient", lambda *a, **k: shared.client)
    from sclib.cli import main

    url = ["--backend", "mongodb://db.example:27017/scientistcloud"]

    def run(*args: str) -> tuple[int, str]:
        code = main([*url, *args])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out

    def look() -> None:
        code, out = run("datasets", "list", "--limit", "100", "--json")
        assert code == 0
        listed = json.loads(out)
        assert len(listed) == len(EXPECTED)
        partial = [d for d in listed if d.get("notes")]
        assert len(partial) >= 4
        code, out = run("datasets", "list", "--limit", "100")
        assert code == 0 and "no owner" in out and "no uuid" in out
        for doc in documents():
            ident = doc.get("uuid") or str(doc["_id"])
            code, out = run("datasets", "show", ident)
            assert code == 0, (ident, out)
        code, out = run("datasets", "show", str(documents()[29]["_id"]))
        assert "note: no uuid" in out

    look()
    code, out = run("migrate")
    assert code == 1 and "CLASHES" in out and "dry run, nothing changed" in out
    code, out = run("jobs", "list", "--json")
    assert code == 0 and json.loads(out) == []
    code, out = run("migrate", "--apply", "--json")
    assert code == 1 and json.loads(out)["counts"]["create"] == 6
    look()
    code, out = run("jobs", "stats", "--json")
    assert code == 0 and json.loads(out)["total"] == 6
    code, out = run("migrate", "rollback", "--apply")
    assert code == 0, out
    look()


# -- the shared collection, store by store ---------------------------------------------


def test_the_store_opens_whatever_indexes_it_cannot_build(shared: Shared) -> None:
    """Unique indexes MongoDB will not build (here mongomock, which checks
    every document, not only those its partial filter covers) and an index of
    sclib's name on other keys are reported, never raised: the store opens,
    reads every document and still refuses a second dataset with a stored
    uuid; the portal's unique uuid_1 and status_1 stand in for sclib's own."""
    shared.db.visstoredatas.insert_many(documents())
    shared.db.visstoredatas.create_index([("name", 1)], name="user_new")
    store = MongoDatasetStore(shared.client, write_concern={"w": 1})
    problems = " ".join(store.index_problems)
    assert "sclib_uuid not built" in problems and "dataset store" in problems
    assert "user_new: an index of that name exists on other keys" in problems
    assert len(store.list(limit=100)) == len(EXPECTED)
    from sclib.datasets import Dataset

    with pytest.raises(InvalidInput, match="exists"):
        store.create(Dataset(uuid=U(1), name="x", owner="o@x", sensor="TIFF"))
    other = Shared()
    other.db.visstoredatas.create_index("uuid", unique=True, name="uuid_1")
    other.db.visstoredatas.create_index("status", name="status_1")
    fresh = MongoDatasetStore(other.client, write_concern={"w": 1})
    names = {ix["name"] for ix in other.db.visstoredatas.list_indexes()}
    assert {"sclib_uuid", "uuid_lookup", "status"}.isdisjoint(names)
    assert {"sclib_user_slug", "user_new"} <= names and not fresh.index_problems


def test_an_index_conflict_is_reported_not_raised(
    shared: Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IndexOptionsConflict (85) from a real server is reported and the store
    opens; any other server error still fails, naming the dataset store."""
    from pymongo.errors import OperationFailure

    calls: list[str] = []

    def conflict(self: Any, keys: Any, *, name: str, **options: Any) -> str:
        calls.append(name)
        raise OperationFailure("Index already exists with a different name", 85)

    monkeypatch.setattr(type(shared.db.visstoredatas), "create_index", conflict)
    store = MongoDatasetStore(shared.client, write_concern={"w": 1})
    assert len(store.index_problems) == len(calls) == 7
    assert (
        "OperationFailure: Index already exists with a different name"
        in (store.index_problems[0])
    )

    def broken(self: Any, keys: Any, *, name: str, **options: Any) -> str:
        raise OperationFailure("not authorized on scientistcloud", 13)

    monkeypatch.setattr(type(shared.db.visstoredatas), "create_index", broken)
    with pytest.raises(BackendError, match=r"MongoDB dataset store.*not authorized"):
        MongoDatasetStore(shared.client, write_concern={"w": 1})


def test_sclib_writes_keep_the_original_documents_working(
    shared: Shared, tmp_path: Path
) -> None:
    """On the original's documents: set_status finds the status however it was
    spelt; an update keeps is_public_downloadable and folder_uuid in step with
    sclib's fields; the validation job records the digests the original never
    kept, and the file entries keep the original's fields."""
    fill(shared)
    store = MongoDatasetStore(shared.client, write_concern={"w": 1})
    assert store.get(U(18)).status == "done"  # stored as 'DONE'
    store.set_status(U(18), "conversion queued")
    assert shared.db.visstoredatas.find_one({"uuid": U(18)})["status"] == (
        "conversion queued"
    )
    store.update(U(1), is_public_downloadable=True, folder="Runs")
    raw = shared.db.visstoredatas.find_one({"uuid": U(1)})
    assert (raw["is_downloadable"], raw["is_public_downloadable"]) == (True, True)
    assert (raw["folder"], raw["folder_uuid"]) == ("Runs", "Runs")
    with pytest.raises(InvalidInput, match="migrate it first"):
        store.set_status(U(32), "done")  # 'paused': sclib does not read it

    from sclib.jobs.context import JobContext
    from sclib.jobtypes import JobStatus
    from sclib.models import Job
    from sclib.pipeline.validate import ValidationHandler

    folder = tmp_path / "upload" / U(11) / "run"
    (folder / "sub").mkdir(parents=True)
    bodies = {"a.tif": b"a" * 100, "b.tif": b"b" * 200, "sub/c.tif": b"c" * 300}
    for name, body in bodies.items():
        (folder / name).write_bytes(body)
    job = Job(
        id="9" * 32,
        type="data_validation",
        status=JobStatus.RUNNING,
        priority=2,
        dataset_uuid=U(11),
        worker_id="w",
        attempts=1,
    )
    report = ValidationHandler(tmp_path, store)(JobContext(job))
    assert report["ok"] and report["recorded"] == [
        "run/a.tif",
        "run/b.tif",
        "run/sub/c.tif",
    ]
    got = store.get(U(11))
    assert got.total_size == 600
    assert got.files[0].blake3 == blake3.blake3(b"a" * 100).hexdigest()
    entry = shared.db.visstoredatas.find_one({"uuid": U(11)})["files"][0]
    assert entry["source_type"] == "local" and entry["size"] == 100
    assert entry["destination_path"].endswith("/run/a.tif")


def test_the_original_job_documents_do_not_break_the_job_store(
    shared: Shared,
) -> None:
    """The original's job-queue documents in jobs (job_type, no type) are left
    out of listings, counts and statistics, and claiming never picks one."""
    shared.db.jobs.insert_many(legacy_jobs())
    queue = JobQueue(MongoJobStore(shared.client, write_concern={"w": 1}))
    assert queue.list(dataset_uuid=U(2)) == []
    assert queue.store.count_jobs() == 0
    assert queue.stats()["total"] == 0
    mine = queue.enqueue("data_validation", dataset_uuid=U(2))
    assert [j.id for j in queue.list(dataset_uuid=U(2))] == [mine.id]
    claimed = queue.claim("w", None)
    assert claimed is not None and claimed.id == mine.id
    assert shared.db.jobs.count_documents({"_id": ObjectId(legacy_jobs()[0]["_id"])})
