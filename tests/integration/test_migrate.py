"""The migration from the old status-based system (``sclib migrate``).

Every library test runs on SQLite (a real file) and on MongoDB through pymongo
against mongomock, an in-process stand-in (no MongoDB server can be installed on
these machines; the code uses only operations MongoDB 6/7 have). The command-line
tests run ``sclib`` as a real subprocess on a real SQLite file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sclib.backends.sqlite import SQLiteJobStore
from sclib.backends.sqlite_datasets import SQLiteDatasetStore
from sclib.datasets import Dataset
from sclib.errors import InvalidInput
from sclib.jobs.queue import JobQueue
from sclib.migrate import Migrator, load_legacy_file
from sclib.migrate.store import decode_json, legacy_documents_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def U(n: int) -> str:
    return f"{n:032x}"


# A realistic export of the old system: user_email instead of user, dates as
# strings (with and without a zone) and as extended-JSON dates, tags as a comma
# string, fields sclib does not know, and the odd ones that must be reported.
LEGACY: list[dict[str, Any]] = [
    {
        "uuid": U(1),
        "name": "Drive folder",
        "status": "sync queued",
        "user_email": "ana@example.org",
        "sensor": "TIFF",
        "google_drive_link": "https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOp?usp=sharing",
        "date_created": "2023-04-01 10:00:00",
        "tags": "soil, maize,2023",
        "dimensions": [512, 512, 100],
        "portal_flags": {"starred": True},
    },
    {
        "uuid": U(2),
        "name": "Drive file",
        "status": "syncing",
        "user": "ben@example.org",
        "sensor": "NETCDF",
        "google_drive_link": "https://drive.google.com/file/d/1ZyXwVuTsRqPoNmLk/view",
        "created_at": {"$date": "2023-05-02T08:30:00Z"},
        "updated_at": {"$date": {"$numberLong": "1683100000000"}},
    },
    {
        "uuid": U(3),
        "name": "Stack",
        "status": "conversion queued",
        "user_email": "ana@example.org",
        "sensor": "HDF5",
        "conversion_parameters": {"dataset": "/entry/data", "compression": "zstd"},
        "created_at": "2023-06-01T12:00:00+02:00",
    },
    {
        "uuid": U(4),
        "name": "Half converted",
        "status": "converting",
        "user": "ben@example.org",
        "sensor": "IDX",
        "conversion_parameters": '{"resolution": 2}',
        "created_at": "2023-06-02T00:00:00Z",
    },
    {
        "uuid": U(5),
        "name": "Uploading",
        "status": "upload queued",
        "user": "cai@example.org",
        "sensor": "OTHER",
        "created_at": "2023-06-03T00:00:00Z",
    },
    {
        "uuid": U(6),
        "name": "Archive",
        "status": "unzipping",
        "user": "cai@example.org",
        "sensor": "TIFF",
        "archive": "raw/scan.zip",
        "created_at": "2023-06-04T00:00:00Z",
    },
    {
        "uuid": U(7),
        "name": "Packing",
        "status": "zipping",
        "user": "cai@example.org",
        "sensor": "RGB",
        "created_at": "2023-06-05T00:00:00Z",
    },
    {
        "uuid": U(8),
        "name": "Fresh",
        "status": "submitted",
        "user": "dan@example.org",
        "sensor": "MAPIR",
        "created_at": "2023-06-06T00:00:00Z",
    },
    {
        "uuid": U(9),
        "name": "Finished",
        "status": "done",
        "user": "dan@example.org",
        "sensor": "4D_NEXUS",
        "created_at": "2022-01-01T00:00:00Z",
        "date_updated": "2022-02-01T00:00:00Z",
    },
    {
        "uuid": U(10),
        "name": "Sync failed",
        "status": "sync error",
        "user": "dan@example.org",
        "sensor": "TIFF",
        "created_at": "2022-01-01T00:00:00Z",
        "error_message": "quota exceeded",
    },
]
# uuid -> what must be reported about it
ODD: list[dict[str, Any]] = [
    {  # neither sclib's status nor one the original wrote
        "uuid": U(20),
        "name": "Broken",
        "status": "paused",
        "user": "eve@example.org",
        "sensor": "TIFF",
        "created_at": "2023-01-01T00:00:00Z",
    },
    {  # a conversion needs an owner
        "uuid": U(21),
        "name": "Nobody's",
        "status": "conversion queued",
        "sensor": "TIFF",
        "created_at": "2023-01-01T00:00:00Z",
    },
    {  # a sync needs a link
        "uuid": U(22),
        "name": "Linkless",
        "status": "sync queued",
        "user": "eve@example.org",
        "sensor": "TIFF",
        "created_at": "2023-01-01T00:00:00Z",
    },
    {  # twice in the file
        "uuid": U(23),
        "name": "Twin A",
        "status": "done",
        "user": "eve@example.org",
        "sensor": "TIFF",
        "created_at": "2023-01-01T00:00:00Z",
    },
    {
        "uuid": U(23),
        "name": "Twin B",
        "status": "done",
        "user": "eve@example.org",
        "sensor": "TIFF",
        "created_at": "2023-01-01T00:00:00Z",
    },
    {  # which step?
        "uuid": U(24),
        "name": "Retrying",
        "status": "retrying",
        "user": "eve@example.org",
        "sensor": "TIFF",
        "created_at": "2023-01-01T00:00:00Z",
    },
    {  # the portal's dashed uuid form: taken as it is
        "uuid": "550e8400-e29b-41d4-a716-446655440000",
        "name": "Dashed",
        "status": "done",
        "user": "eve@example.org",
        "sensor": "TIFF",
        "created_at": "2023-01-01T00:00:00Z",
    },
    {"name": "No uuid", "status": "done", "user": "eve@example.org"},
]
DASHED = "550e8400-e29b-41d4-a716-446655440000"
ODD_UUIDS = {U(20), U(21), U(22), U(23), U(24), None}
WANT = {
    U(1): ("create", "google_sync"),
    U(2): ("create", "google_sync"),
    U(3): ("create", "dataset_conversion"),
    U(4): ("create", "dataset_conversion"),
    U(5): ("create", "upload"),
    U(6): ("create", "file_extraction"),
    U(7): ("create", "data_compression"),
    U(8): ("nothing", None),
    U(9): ("nothing", None),
    U(10): ("nothing", None),
    DASHED: ("nothing", None),
}
# a dataset the new system already has, waiting for a conversion nobody queued,
# with an unrelated job of its own that rollback must not touch
NATIVE = U(100)


def write_export(path: Path) -> Path:
    path.write_text("\n".join(json.dumps(d) for d in LEGACY + ODD) + "\n")
    return path


def make_mongo() -> tuple[JobQueue, Any]:
    mongomock = pytest.importorskip("mongomock")
    from sclib.backends.mongo import MongoJobStore
    from sclib.backends.mongo_datasets import MongoDatasetStore

    client = mongomock.MongoClient(tz_aware=True)
    jobs = MongoJobStore(client, database="scientistcloud", write_concern={"w": 1})
    return JobQueue(jobs), MongoDatasetStore(client, write_concern={"w": 1})


@pytest.fixture(params=["sqlite", pytest.param("mongo", marks=pytest.mark.mongo)])
def migrator(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Migrator]:
    if request.param == "sqlite":
        queue = JobQueue(SQLiteJobStore(tmp_path / "sclib.db"))
        datasets: Any = SQLiteDatasetStore(tmp_path / "sclib.db")
    else:
        queue, datasets = make_mongo()
    datasets.create(
        Dataset(
            uuid=NATIVE,
            name="Native",
            owner="zoe@example.org",
            sensor="TIFF",
            status="conversion queued",
            created_at=datetime(2024, 1, 1, tzinfo=UTC),
        )
    )
    queue.enqueue("data_validation", {"why": "scrub"}, dataset_uuid=NATIVE)
    m = Migrator(queue, legacy_documents_for(datasets))
    yield m
    m.close()


def docs(m: Migrator) -> list[dict[str, Any]]:
    return sorted(m.docs.documents(), key=lambda d: str(d.get("uuid")))


def jobs(m: Migrator) -> list[tuple[str, str, str | None, str]]:
    return sorted(
        (j.id, j.type, j.dataset_uuid, j.status.value)
        for j in m.queue.list(limit=10_000)
    )


def test_dry_run_reports_the_plan_and_changes_nothing(
    migrator: Migrator, tmp_path: Path
) -> None:
    """A dry run over the export plans one job per step status, nothing for
    submitted / done / error statuses, reports every odd document, and writes
    nothing: no document, no job, no ledger entry."""
    before_docs, before_jobs = docs(migrator), jobs(migrator)
    imports = load_legacy_file(write_export(tmp_path / "export.jsonl"))
    report = migrator.migrate(imports=imports)
    by_uuid = {i.uuid: i for i in report.items}
    for uuid, (action, job_type) in WANT.items():
        assert (by_uuid[uuid].action, by_uuid[uuid].job_type) == (action, job_type)
        assert by_uuid[uuid].imported
    assert by_uuid[NATIVE].action == "create"
    assert by_uuid[NATIVE].job_type == "dataset_conversion"
    skipped = {i.uuid for i in report.items if i.action == "skip"}
    assert skipped == ODD_UUIDS
    assert all(i.problems for i in report.items if i.action == "skip")
    text = {i.uuid: " ".join(i.problems) for i in report.problems}
    assert "unknown status 'paused'" in text[U(20)]
    assert "no user or user_email" in text[U(21)]
    assert "google_drive_link" in text[U(22)]
    assert "2 times in the file" in text[U(23)]
    assert "retrying" in text[U(24)]
    assert DASHED not in text and by_uuid[DASHED].action == "nothing"
    assert "sync error" in by_uuid[U(10)].status and by_uuid[U(10)].notes
    assert docs(migrator) == before_docs
    assert jobs(migrator) == before_jobs
    assert migrator.docs.ledger_all() == []


def test_apply_creates_marked_jobs_once(migrator: Migrator, tmp_path: Path) -> None:
    """--apply imports the good documents and creates each job with the
    idempotency key migrate:<uuid>:<status>, migrated: true, the legacy status and
    parameters taken from the legacy fields; a second run creates nothing."""
    imports = load_legacy_file(write_export(tmp_path / "export.jsonl"))
    report = migrator.migrate(apply=True, imports=imports)
    assert report.counts()["create"] == 8
    created = {i.uuid: i.job_id for i in report.items if i.action == "create"}
    assert set(created) == {*(u for u, w in WANT.items() if w[0] == "create"), NATIVE}
    for uuid, job_id in created.items():
        assert job_id is not None
        job = migrator.queue.get(job_id)
        status = job.parameters["legacy_status"]
        assert job.idempotency_key == f"migrate:{uuid}:{status}"
        assert job.parameters["migrated"] is True
        assert job.dataset_uuid == uuid and job.owner
    from sclib.pipeline.gsync import drive_id_from

    p1 = migrator.queue.get(created[U(1)]).parameters
    # what the google_sync handler will read from the job
    assert drive_id_from(None, p1["google_drive_link"]) == "1AbCdEfGhIjKlMnOp"
    assert migrator.queue.get(created[U(1)]).owner == "ana@example.org"
    p2 = migrator.queue.get(created[U(2)]).parameters
    assert drive_id_from(None, p2["google_drive_link"]) == "1ZyXwVuTsRqPoNmLk"
    p3 = migrator.queue.get(created[U(3)]).parameters
    assert p3["conversion_parameters"] == {
        "dataset": "/entry/data",
        "compression": "zstd",
    }
    p4 = migrator.queue.get(created[U(4)]).parameters
    assert p4["conversion_parameters"] == {"resolution": 2}
    assert migrator.queue.get(created[U(6)]).parameters["archive"] == "raw/scan.zip"
    # the imported documents read as datasets, statuses untouched
    ds1 = migrator.docs.datasets.get(U(1))
    assert (ds1.owner, str(ds1.status), ds1.tags) == (
        "ana@example.org",
        "sync queued",
        ("soil", "maize", "2023"),
    )
    assert ds1.created_at == datetime(2023, 4, 1, 10, tzinfo=UTC)
    assert migrator.docs.datasets.get(U(3)).created_at == datetime(
        2023, 6, 1, 10, tzinfo=UTC
    )
    for odd in (U(20), U(21), U(22), U(23)):
        assert migrator.docs.get(odd) is None  # reported, never imported
    before = jobs(migrator)
    again = migrator.migrate(apply=True, imports=imports)
    assert again.counts()["create"] == 0
    assert {i.uuid for i in again.items if i.action == "exists"} == set(created)
    assert jobs(migrator) == before


def test_validate_fails_before_and_passes_after(
    migrator: Migrator, tmp_path: Path
) -> None:
    """Before migrating, the dataset waiting in 'conversion queued' has no job and
    validate says so; after --apply every dataset is consistent with its jobs,
    including submitted and done ones that have none."""
    first = migrator.validate()
    assert [i.uuid for i in first.problems] == [NATIVE]
    assert "dataset_conversion" in first.problems[0].problems[0]
    imports = load_legacy_file(write_export(tmp_path / "export.jsonl"))
    migrator.migrate(apply=True, imports=imports)
    report = migrator.validate()
    assert report.ok, [i.to_dict() for i in report.problems]
    assert len(report.items) == 12  # the eleven imported and the native one
    # a step status without its job is caught
    (job,) = migrator.queue.list(dataset_uuid=U(3))
    migrator.queue.cancel(job.id)
    assert [i.uuid for i in migrator.validate().problems] == [U(3)]


def test_rollback_restores_exactly_and_deletes_only_migrated_jobs(
    migrator: Migrator, tmp_path: Path
) -> None:
    """migrate -> validate -> rollback: the dataset documents are exactly as
    before (imported ones gone, the native one restored even after its status
    moved), only the migrated jobs are deleted (the native dataset's own
    validation job stays), the ledger is empty, and migrating again works."""
    before_docs, before_jobs = docs(migrator), jobs(migrator)
    imports = load_legacy_file(write_export(tmp_path / "export.jsonl"))
    migrator.migrate(apply=True, imports=imports)
    assert migrator.validate().ok
    # the new system moves on meanwhile
    migrator.docs.datasets.set_status(NATIVE, "converting")
    dry = migrator.rollback()
    assert not dry.applied and len(dry.items) == 12
    assert migrator.docs.get(U(1)) is not None  # dry run: nothing undone
    report = migrator.rollback(apply=True)
    assert not report.problems
    assert sum(len(i.jobs) for i in report.items) == 8
    assert docs(migrator) == before_docs
    assert jobs(migrator) == before_jobs
    assert migrator.docs.ledger_all() == []
    again = migrator.migrate(apply=True, imports=imports)
    assert again.counts()["create"] == 8


def test_rollback_of_one_dataset(migrator: Migrator, tmp_path: Path) -> None:
    """rollback --dataset-uuid undoes that dataset only: its migrated job and its
    imported document go; every other migrated job and document stays."""
    imports = load_legacy_file(write_export(tmp_path / "export.jsonl"))
    migrator.migrate(apply=True, imports=imports)
    others_before = [j for j in jobs(migrator) if j[2] != U(3)]
    report = migrator.rollback(U(3), apply=True)
    assert [i.uuid for i in report.items] == [U(3)] and not report.problems
    assert migrator.queue.list(dataset_uuid=U(3)) == []
    assert migrator.docs.get(U(3)) is None
    assert jobs(migrator) == others_before
    assert migrator.docs.get(U(4)) is not None
    assert migrator.docs.ledger_get(U(4)) is not None


def test_rollback_leaves_a_dataset_whose_migrated_job_runs(
    migrator: Migrator,
) -> None:
    """A migrated job a worker holds is not deleted: rollback reports it, changes
    nothing of that dataset, and says how to proceed."""
    migrator.migrate(apply=True)
    now = datetime.now(UTC)
    claimed = migrator.queue.store.claim(
        "w1", ["dataset_conversion"], now, now + timedelta(minutes=5)
    )
    assert claimed is not None and claimed.dataset_uuid == NATIVE
    report = migrator.rollback(apply=True)
    assert "is running" in report.problems[0].problems[0]
    assert migrator.queue.get(claimed.id).status.value == "running"
    assert migrator.docs.ledger_get(NATIVE) is not None


@pytest.mark.mongo
def test_mongo_legacy_documents_normalised_and_restored_byte_for_byte() -> None:
    """Legacy documents already in visstoredatas (user_email, string dates, tags
    as a comma string, unknown fields) are normalised so the dataset store reads
    them, the unknown fields survive the store's own status writes, and rollback
    puts every document back equal, _id and field order included."""
    queue, datasets = make_mongo()
    # as pymongo gives them: extended-JSON dates become datetimes
    raw = [decode_json(json.dumps(d)) for d in LEGACY[:4]]
    raw.append(dict(ODD[0]))  # an unknown status, in the store already
    datasets.coll.insert_many([dict(d) for d in raw])
    before = list(datasets.coll.find({}).sort("_id", 1))
    m = Migrator(queue, legacy_documents_for(datasets))
    report = m.migrate(apply=True)
    by_uuid = {i.uuid: i for i in report.items}
    assert by_uuid[U(1)].changes == ["created_at", "tags", "user"]
    assert by_uuid[U(20)].action == "skip"
    assert datasets.get(U(1)).owner == "ana@example.org"
    datasets.set_status(U(1), "syncing")  # the store writes only what it owns
    doc = datasets.coll.find_one({"uuid": U(1)})
    assert doc["dimensions"] == [512, 512, 100]
    assert doc["portal_flags"] == {"starred": True}
    assert doc["user_email"] == "ana@example.org"
    assert doc["date_created"] == "2023-04-01 10:00:00"
    assert [i.uuid for i in m.validate().problems] == [U(20)]
    assert not m.rollback(apply=True).problems
    after = list(datasets.coll.find({}).sort("_id", 1))
    assert after == before
    # field order too (MongoDB always stores _id first; mongomock may not)
    order = [[k for k in d if k != "_id"] for d in before]
    assert [[k for k in d if k != "_id"] for d in after] == order
    assert queue.list() == []


def test_load_legacy_file_understands_exports(tmp_path: Path) -> None:
    """A JSON array and mongoexport's JSONL both load, with extended-JSON dates
    as aware datetimes; a bad line is refused with its file and line number."""
    array = tmp_path / "a.json"
    array.write_text(
        json.dumps([{"uuid": U(1), "created_at": {"$date": "2023-01-02T03:04:05Z"}}])
    )
    (doc,) = load_legacy_file(array)
    assert doc["created_at"] == datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"uuid": "x"}\n{oops\n')
    with pytest.raises(InvalidInput, match=r"b\.jsonl, line 2"):
        load_legacy_file(bad)
    not_list = tmp_path / "c.json"
    not_list.write_text('{"uuid": "x"}')
    with pytest.raises(InvalidInput, match="JSON array"):
        load_legacy_file(not_list)


# -- the command ---------------------------------------------------------------------


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


def test_command_round_trip(tmp_path: Path) -> None:
    """sclib migrate (dry run, exit 1 for the odd documents it reports), --apply,
    validate (exit 0), rollback (dry run, then --apply) on a real SQLite file;
    bad usage exits 2."""
    export = write_export(tmp_path / "export.jsonl")
    dry = sclib(tmp_path, "migrate", "--from", str(export), "--json")
    assert dry.returncode == 1, dry.stderr
    plan = json.loads(dry.stdout)
    assert not plan["applied"] and plan["counts"]["create"] == 7
    # one item per document, twins included; the dashed uuid is no problem
    assert plan["problems"] == len(ODD) - 1
    text = sclib(tmp_path, "migrate", "--from", str(export))
    assert "dry run, nothing changed" in text.stdout
    assert "unknown status 'paused'" in text.stdout
    done = sclib(tmp_path, "migrate", "--from", str(export), "--apply", "--json")
    assert done.returncode == 1 and json.loads(done.stdout)["counts"]["create"] == 7
    listed = sclib(tmp_path, "jobs", "list", "--json")
    assert len(json.loads(listed.stdout)) == 7
    ok = sclib(tmp_path, "migrate", "validate", "--json")
    assert ok.returncode == 0, ok.stdout
    assert json.loads(ok.stdout)["checked"] == 11  # the dashed uuid too
    dry_back = sclib(tmp_path, "migrate", "rollback", "--json")
    assert dry_back.returncode == 0 and not json.loads(dry_back.stdout)["applied"]
    assert len(json.loads(sclib(tmp_path, "jobs", "list", "--json").stdout)) == 7
    back = sclib(tmp_path, "migrate", "rollback", "--apply")
    assert back.returncode == 0, back.stderr
    assert "11 datasets rolled back" in back.stdout
    assert json.loads(sclib(tmp_path, "jobs", "list", "--json").stdout) == []
    assert json.loads(sclib(tmp_path, "datasets", "list", "--json").stdout) == []
    usage = sclib(tmp_path, "migrate", "rollback", "--nope")
    assert usage.returncode == 2 and "sclib: error" in usage.stderr
    missing = sclib(tmp_path, "migrate", "--from", str(tmp_path / "none.json"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_options_before_the_action_are_not_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sclib migrate --dataset-uuid U rollback --apply` rolls back dataset U
    only (argparse used to let the action's own defaults overwrite options given
    before it, so every dataset was rolled back); `--from` with `validate` or
    `rollback`, and `--apply` with `validate`, are refused as bad usage instead
    of being ignored; a --dataset-uuid that matches nothing is reported (exit 1)."""
    from sclib.cli import main

    url = f"sqlite:///{tmp_path / 'sclib.db'}"
    export = write_export(tmp_path / "export.jsonl")
    with Migrator.open(url) as m:
        m.migrate(apply=True, imports=load_legacy_file(export))
        before = {u for u, w in WANT.items() if w[0] == "create"}
        assert {j.dataset_uuid for j in m.queue.list(limit=100)} == before
    argv = ["--backend", url, "migrate", "--dataset-uuid", U(3), "rollback"]
    assert main([*argv, "--apply", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [i["uuid"] for i in out["items"]] == [U(3)]
    with Migrator.open(url) as m:
        assert {j.dataset_uuid for j in m.queue.list(limit=100)} == before - {U(3)}
        assert m.docs.get(U(4)) is not None and m.docs.get(U(3)) is None
    for action in ("rollback", "validate"):
        code = main(["--backend", url, "migrate", "--from", str(export), action])
        assert code == 2
        assert "--from" in capsys.readouterr().err
    assert main(["--backend", url, "migrate", "--apply", "validate"]) == 2
    assert "changes nothing" in capsys.readouterr().err
    # a uuid that matches nothing is said, not passed over as "0 datasets"
    assert main([*argv, "--apply"]) == 1  # U(3) was rolled back already
    assert f"dataset {U(3)} was not migrated" in capsys.readouterr().err
    for action in ([], ["validate"]):
        assert main(["--backend", url, "migrate", "--dataset-uuid", "f" * 32, *action])
        assert f"no dataset {'f' * 32}" in capsys.readouterr().err
    with Migrator.open(url) as m:
        assert {j.dataset_uuid for j in m.queue.list(limit=100)} == before - {U(3)}
