"""A ``visstoredatas`` collection shaped like the original ScientistCloud's.

Built from reading the original's code (sci-visus/scientistCloudLib; see
/work/notes/orig_datasets.md for the shapes and where each is written), not
copied from it:

* the upload processor's insert (SCLib_UploadProcessor, the dataset entry it
  creates): ``user`` and ``user_id``, ``folder_uuid``, ``is_public_downloadable``,
  ``tags`` joined one letter at a time, a ``files`` array of
  ``{source_path, destination_path, source_type, total_size_bytes, created_at}``,
  a slug ``<email local part>-<name>-<year>`` that nobody checked was free, a
  5-digit ``id`` that may repeat, naive UTC datetimes;
* the Dataset API's create (SCLib_DatasetAPI): ``date_imported`` /
  ``date_updated`` / ``last_accessed``, ``user_email``, a free ``sensor`` string,
  ``tags`` as a list that may hold ``""``, ``metadata``;
* the first weeks' upload shape (``user_email``, ``folder``, ``completed``), the
  portal's older documents (``time``, ``is_public: "false"``, ``team_uuid: ""``,
  ``data_size: "758.16 KB"``) and the private branch's ``is_downloadable``;
* and the odd cases a years-old collection holds: statuses in other case or with
  trailing spaces, epoch-number dates, one uuid stored twice, one uuid in its
  dashed and undashed spelling, documents without a uuid or an owner.

``EXPECTED`` says what the migration must do with each document.
"""

from __future__ import annotations

import json
import uuid as uuid_module
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

NAIVE = datetime(2025, 11, 20, 15, 4, 5, 123456)  # datetime.utcnow(), as written
UPLOAD_ROOT = "/mnt/visus_datasets/upload"


def U(n: int) -> str:
    """A dashed lowercase uuid4, as str(uuid.uuid4()) makes them."""
    return str(uuid_module.UUID(int=n << 64 | 0xA5A5, version=4))


def OID(n: int) -> ObjectId:
    """A fixed ObjectId: its time is when the document was inserted."""
    return ObjectId(f"{1763651045 + n:08x}" + f"{n:016x}")


def upload_entry(uuid: str, relative: str, when: datetime = NAIVE) -> dict[str, Any]:
    """One element of the upload processor's ``files`` array."""
    return {
        "source_path": f"/tmp/tmpk2j4h1/{relative.rsplit('/', 1)[-1]}",
        "destination_path": f"{UPLOAD_ROOT}/{uuid}/{relative}",
        "source_type": "local",
        "total_size_bytes": 0,
        "created_at": when,
    }


def upload_doc(
    n: int, name: str, email: str, status: str, slug: str, **more: Any
) -> dict[str, Any]:
    """The upload processor's new dataset document (main, late 2025), after its
    status was moved to ``status``."""
    uuid = more.pop("uuid", U(n))
    files = more.pop("files", None) or [upload_entry(uuid, f"{slug[-9:]}.tif")]
    doc: dict[str, Any] = {
        "_id": OID(n),
        "uuid": uuid,
        "name": name,
        "slug": slug,
        "id": more.pop("id", 40000 + n),
        "user": email,
        "user_id": email,
        "sensor": more.pop("sensor", "TIFF"),
        "convert": True,
        "is_public": more.pop("is_public", False),
        "is_public_downloadable": more.pop("is_public_downloadable", False),
        "folder_uuid": more.pop("folder_uuid", None),
        "team_uuid": more.pop("team_uuid", None),
        "source_type": "local",
        "source_path": files[0]["source_path"],
        "destination_path": files[0]["destination_path"],
        "total_size_bytes": 0,
        "status": status,
        "tags": more.pop("tags", ""),
        "created_at": more.pop("created_at", NAIVE),
        "updated_at": NAIVE,
        "job_id": f"upload_1763651045_{n:08x}",
        "files": files,
    }
    doc.update(more)
    return doc


def api_doc(n: int, name: str, email: str, slug: str, **more: Any) -> dict[str, Any]:
    """The Dataset API's new dataset document (POST /api/v1/datasets)."""
    doc: dict[str, Any] = {
        "_id": OID(n),
        "uuid": U(n),
        "id": 50000 + n,
        "slug": slug,
        "name": name,
        "user": email,
        "user_email": email,
        "description": None,
        "sensor": "TIFF",
        "tags": [],
        "folder_uuid": None,
        "team_uuid": None,
        "is_public": False,
        "data_conversion_needed": True,
        "preferred_dashboard": "openvisus",
        "dimensions": None,
        "status": "submitted",
        "file_count": 0,
        "total_size": 0,
        "date_imported": NAIVE,
        "date_updated": NAIVE,
        "last_accessed": NAIVE,
        "metadata": {},
    }
    doc.update(more)
    return doc


AMY, JOHN, BEN, ANA = (
    "amy@visus.net",
    "john.doe@utah.edu",
    "ben.kim@visus.net",
    "ana@visus.net",
)
TWICE = U(27)  # one uuid inserted twice (the upload's find-then-insert race)
SPELT = U(25)  # stored dashed, and again undashed


def documents() -> list[dict[str, Any]]:
    """The collection, in insertion order."""
    u4 = U(4)
    return [
        upload_doc(
            1,
            "Sample 1",
            AMY,
            "done",
            "amy-sample-1-2025",
            data_conversion_needed=True,
            completed_at=NAIVE,
        ),
        upload_doc(
            2,
            "scan_v1.2",
            JOHN,
            "conversion queued",
            "john.doe-scanv12-2025",
            data_conversion_needed=True,
        ),
        upload_doc(
            3,
            "Field A",
            AMY,
            "converting",
            "amy-field-a-2025",
            tags=",".join("soil,maize"),
            data_conversion_needed=True,
        ),
        upload_doc(  # Google Drive: the entry names the dataset's folder
            4,
            "Drive stuff",
            AMY,
            "uploading",
            "amy-drive-stuff-2025",
            source_type="google_drive",
            source_path="1AbCdEfGhIjKlMnOpQrSt",
            google_drive_link="https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrSt",
            files=[
                {
                    "source_path": "1AbCdEfGhIjKlMnOpQrSt",
                    "destination_path": f"{UPLOAD_ROOT}/{u4}",
                    "source_type": "google_drive",
                    "total_size_bytes": 0,
                    "created_at": NAIVE,
                }
            ],
        ),
        upload_doc(
            5,
            "Broken",
            AMY,
            "conversion failed",
            "amy-broken-2025",
            data_conversion_needed=True,
            conversion_retry_count=3,
            conversion_last_error="Dataset conversion failed with return code 1",
        ),
        upload_doc(
            6,
            "Lost",
            AMY,
            "failed",
            "amy-lost-2025",
            error_message="Upload timed out - no progress for over 1 hour",
        ),
        upload_doc(7, "Stopped", AMY, "cancelled", "amy-stopped-2025"),
        api_doc(8, "My Set", AMY, "amy-my-set-1762200000", tags=["soil", "maize"]),
        {  # the upload processor's first weeks (Oct 2025)
            "_id": OID(9),
            "uuid": U(9),
            "name": "Old one",
            "user_email": AMY,
            "sensor": "IDX",
            "convert": False,
            "is_public": False,
            "folder": "research",
            "team_uuid": None,
            "source_type": "local",
            "source_path": "/tmp/tmpz9/a.idx",
            "destination_path": f"{UPLOAD_ROOT}/{U(9)}/a.idx",
            "total_size_bytes": 0,
            "status": "completed",
            "created_at": NAIVE,
            "updated_at": NAIVE,
            "completed_at": NAIVE,
        },
        {  # the portal's older documents, as its readers expect them
            "_id": OID(10),
            "uuid": U(10),
            "name": "Legacy",
            "user": AMY,
            "sensor": "TIFF",
            "status": "done",
            "compression_status": "compressed",
            "time": "2025-01-20T10:00:00Z",
            "data_size": "758.16 KB",
            "dimensions": "1024x1024x100",
            "google_drive_link": None,
            "folder_uuid": "CEDMAV",
            "team_uuid": "",
            "is_public": "false",
            "tags": "test,sample",
        },
        upload_doc(  # the private branch; a folder of three files
            11,
            "Team data",
            AMY,
            "done",
            "amy-team-data-2026",
            team_uuid="CHESS",
            folder_uuid="CEDMAV",
            is_downloadable="only owner",
            files=[
                upload_entry(U(11), "run/a.tif"),
                upload_entry(U(11), "run/b.tif"),
                upload_entry(U(11), "run/sub/c.tif"),
            ],
        ),
        upload_doc(  # dataset_identifier taken as the uuid
            12,
            "By id",
            AMY,
            "done",
            "amy-by-id-2025",
            uuid="my-dataset-001",
            files=[upload_entry("my-dataset-001", "by-id.tif")],
        ),
        api_doc(
            13,
            "Probe",
            AMY,
            "amy-probe-1762200001",
            sensor="4D_Probe",
            tags=["a", "b", ""],
            is_public=True,
        ),
        upload_doc(  # files added through the Dataset API: 'processing'
            14,
            "Public",
            AMY,
            "processing",
            "amy-public-2025",
            is_public=True,
            is_public_downloadable=True,
        ),
        upload_doc(15, "Retry", AMY, "retrying", "amy-retry-2025"),
        # the same user, name and year: one slug, never checked; one number too
        upload_doc(16, "test", AMY, "done", "amy-test-2025", id=31337),
        upload_doc(
            17,
            "test",
            AMY,
            "done",
            "amy-test-2025",
            id=31337,
            created_at=datetime(2025, 12, 1, 9, 0),
        ),
        upload_doc(18, "Upper", AMY, "DONE", "amy-upper-2025"),
        upload_doc(19, "Spaced", AMY, "done ", "amy-spaced-2025"),
        upload_doc(20, "Epoch", AMY, "done", "amy-epoch-2025", created_at=1732000000),
        {  # the portal's older shape, its time as epoch seconds
            "_id": OID(21),
            "uuid": U(21),
            "name": "Timed",
            "user": BEN,
            "sensor": "NETCDF",
            "status": "done",
            "time": 1737367200,
            "is_public": "True",
            "tags": "",
        },
        upload_doc(22, "Scan", BEN, "done", "ben.kim-scan-2024"),
        upload_doc(
            23,
            "Run 42 - final",
            ANA,
            "Conversion Queued ",
            "ana-run-42---final-2024",
            sensor="HDF5",
        ),
        upload_doc(24, "データ", ANA, "done", "ana--2024"),
        upload_doc(25, "Spelt", ANA, "done", "ana-spelt-2024"),
        upload_doc(
            26,
            "Spelt again",
            ANA,
            "uploading",
            "ana-spelt-again-2024",
            uuid=uuid_module.UUID(SPELT).hex,
        ),
        upload_doc(27, "Race", ANA, "uploading", "ana-race-2024", uuid=TWICE),
        upload_doc(28, "Race", ANA, "conversion queued", "ana-race-2024", uuid=TWICE),
        {  # no uuid, twice
            "_id": OID(29),
            "name": "Nameless A",
            "user": ANA,
            "sensor": "TIFF",
            "status": "done",
            "created_at": NAIVE,
        },
        {
            "_id": OID(30),
            "name": "Nameless B",
            "user": ANA,
            "sensor": "TIFF",
            "status": "done",
            "created_at": NAIVE,
        },
        {  # the owner only as a portal profile id
            "_id": OID(31),
            "uuid": U(31),
            "name": "Whose",
            "user_id": "65a1b2c3d4e5f60718293a4b",
            "sensor": "TIFF",
            "status": "done",
            "time": "2024-06-01T08:00:00",
        },
        upload_doc(32, "Paused", AMY, "paused", "amy-paused-2025"),
        # 'retrying' as the original's background service left it before Nov
        # 2025; its job-queue document (legacy_jobs) says which step
        upload_doc(33, "Retried", AMY, "retrying", "amy-retried-2025"),
    ]


#: what the migration does with each document in the MongoDB collection, where
#: the original's job queue is beside it: (action, job type, reasons)
EXPECTED: dict[int, tuple[str, str | None, frozenset[str]]] = {
    n: ("nothing", None, frozenset())
    for n in (1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 22, 24)
}
EXPECTED.update(
    {
        2: ("create", "dataset_conversion", frozenset()),
        3: ("create", "dataset_conversion", frozenset()),
        4: ("create", "upload", frozenset()),
        14: ("create", "dataset_conversion", frozenset()),
        23: ("create", "dataset_conversion", frozenset()),
        15: ("skip", None, frozenset({"retrying"})),
        25: ("skip", None, frozenset({"uuid-spelling"})),
        26: ("skip", None, frozenset({"uuid-spelling"})),
        27: ("skip", None, frozenset({"uuid-clash"})),
        28: ("skip", None, frozenset({"uuid-clash"})),
        29: ("skip", None, frozenset({"no-uuid"})),
        30: ("skip", None, frozenset({"no-uuid"})),
        31: ("skip", None, frozenset({"no-owner"})),
        32: ("skip", None, frozenset({"unknown-status"})),
        33: ("create", "dataset_conversion", frozenset()),
    }
)
#: the same from an export file, which has no job queue beside it
EXPECTED_FROM_FILE = {**EXPECTED, 33: ("skip", None, frozenset({"retrying"}))}


def legacy_jobs() -> list[dict[str, Any]]:
    """The original's job-queue documents (Oct to Nov 2025) left in ``jobs``."""
    return [
        {
            "_id": OID(100),
            "job_id": str(uuid_module.UUID(int=100, version=4)),
            "dataset_uuid": U(2),
            "job_type": "dataset_conversion",
            "status": "pending",
            "priority": 2,
            "created_at": NAIVE,
            "attempts": 0,
            "max_attempts": 3,
            "parameters": {"sensor": "TIFF"},
            "logs": [],
            "updated_at": NAIVE,
        },
        {
            "_id": OID(101),
            "job_id": str(uuid_module.UUID(int=101, version=4)),
            "dataset_uuid": U(1),
            "job_type": "google_sync",
            "status": "completed",
            "priority": 1,
            "created_at": NAIVE,
            "completed_at": NAIVE,
            "attempts": 1,
            "max_attempts": 3,
            "parameters": {},
            "result": {"ok": True},
            "logs": ["synced"],
            "updated_at": NAIVE,
        },
        {
            "_id": OID(102),
            "job_id": str(uuid_module.UUID(int=102, version=4)),
            "dataset_uuid": U(33),
            "job_type": "dataset_conversion",
            "status": "retrying",
            "priority": 2,
            "created_at": NAIVE,
            "attempts": 1,
            "max_attempts": 3,
            "parameters": {"sensor": "TIFF"},
            "error": "conversion failed with return code 1",
            "logs": [],
            "updated_at": NAIVE,
        },
    ]


#: the portal's own indexes (SC_Docker/mongo-init/init.js), except its unique
#: uuid_1, which a collection with a repeated uuid cannot have
PORTAL_INDEXES = ("user_id", "team_id", "folder_uuid", "status", "created_at")


def extended_json(value: Any) -> Any:
    """``value`` in MongoDB extended JSON, as mongoexport writes it."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        text = aware.astimezone(UTC).isoformat(timespec="milliseconds")
        return {"$date": text.replace("+00:00", "Z")}
    if isinstance(value, ObjectId):
        return {"$oid": str(value)}
    if isinstance(value, dict):
        return {k: extended_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [extended_json(v) for v in value]
    return value


def export_lines() -> str:
    """The collection as ``mongoexport`` writes it: one JSON document a line."""
    return "".join(json.dumps(extended_json(d)) + "\n" for d in documents())


def number_of(doc: dict[str, Any]) -> int:
    """Which fixture document ``doc`` is (from its _id)."""
    return int(str(doc["_id"])[8:], 16)
