"""The original Unified app's routes, sent exactly what the original Unified
clients send (``SCLib_UploadClient_Unified``), against a real sclib server.

Every test's docstring names the ``docs/compat.md`` rows it covers (``R..`` for
routes, ``M..`` for client methods, ``B..`` for behaviours, ``S..`` for the
example scripts).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.compat.servers import Served, original_token
from tests.compat.wire import (
    AMY,
    BOB,
    JOB_STATUS,
    STATUS_WORDS,
    UPLOAD_RESULT,
    AsyncUnifiedWire,
    Part,
    UnifiedWire,
    Wire,
    blake3_hex,
    reads,
    wait_for_completion,
)

pytestmark = pytest.mark.integration

MIB = 1024**2
SENSORS = [
    "IDX",
    "TIFF",
    "TIFF RGB",
    "NETCDF",
    "HDF5",
    "4D_NEXUS",
    "RGB",
    "MAPIR",
    "OTHER",
]


@pytest.fixture
def unified(original: Served) -> Iterator[UnifiedWire]:
    """The sync Unified client's wire, pointed at the ``original`` server."""
    client = UnifiedWire(original.url)
    try:
        yield client
    finally:
        client.close()


def _file(folder: Path, name: str, size: int) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def _original_404(answer: httpx.Response) -> dict[str, Any]:
    """The original Unified app's 404 body: ``error`` and a ``404: `` detail."""
    assert answer.status_code == 404, answer.text
    body = answer.json()
    assert body["error"] == "Not found"
    assert body["detail"].startswith("404: ")
    return dict(body)


def _stored_as_sent(served: Served, answer: dict[str, Any], source: Path) -> None:
    """The file is in the dataset folder, byte-identical (BLAKE3), and its
    upload left nothing in ``<data>/tmp/uploads``."""
    stored = served.stored(answer["dataset_uuid"], source.name)
    assert blake3_hex(stored) == blake3_hex(source)
    if "upload_id" in answer:
        assert not (served.staging / answer["upload_id"]).exists()


# -- service routes --------------------------------------------------------------------


def test_root_and_health_answer_the_original_keys(unified: UnifiedWire) -> None:
    """Rows R01, R02, M13, M14, S01: ``GET /`` and ``GET /health`` carry every
    key the Unified app gave, all text as there (the example script reads
    ``status``, ``upload_type``, ``large_file_threshold_mb``,
    ``max_file_size_tb``)."""
    root = unified.get_api_info()
    assert root.status_code == 200
    info = reads(
        root,
        {
            "message": str,
            "version": str,
            "description": str,
            "docs": str,
            "redoc": str,
            "large_file_threshold_mb": str,
            "authentication": str,
        },
    )
    assert info["docs"] == "/docs" and info["redoc"] == "/redoc"
    assert info["large_file_threshold_mb"] == "100"
    health = unified.health_check()
    assert health.status_code == 200
    body = reads(
        health,
        {
            "status": str,
            "timestamp": str,
            "upload_type": str,
            "large_file_threshold_mb": str,
            "max_file_size_tb": str,
        },
    )
    assert body["status"] == "healthy"
    assert body["upload_type"] == "unified"
    assert (body["large_file_threshold_mb"], body["max_file_size_tb"]) == ("100", "10")


def test_limits_answer_the_original_keys_and_types(unified: UnifiedWire) -> None:
    """Rows R09, M12, S01, B17: ``GET /api/upload/limits`` has the original's keys
    with their types and values (the 7 days of resumability come from
    SCLIB_UPLOAD_EXPIRY_HOURS=168; the example script reads ``chunk_size_mb``)."""
    answer = unified.get_upload_limits()
    assert answer.status_code == 200
    limits = reads(
        answer,
        {
            "max_file_size_bytes": int,
            "max_file_size_tb": float,
            "large_file_threshold_bytes": int,
            "large_file_threshold_mb": float,
            "chunk_size_bytes": int,
            "chunk_size_mb": float,
            "resumable_upload_timeout_days": float,
            "supported_source_types": list,
            "temp_directory": str,
        },
    )
    assert limits["max_file_size_bytes"] == 10 * 1024**4
    assert limits["max_file_size_tb"] == 10.0
    assert limits["large_file_threshold_bytes"] == 100 * MIB
    assert limits["large_file_threshold_mb"] == 100.0
    assert limits["chunk_size_bytes"] == 100 * MIB
    assert limits["chunk_size_mb"] == 100.0
    assert limits["resumable_upload_timeout_days"] == 7.0
    assert {"local", "google_drive", "s3", "url"} <= set(
        limits["supported_source_types"]
    )


def test_supported_sources_answer_the_original_keys(unified: UnifiedWire) -> None:
    """Rows R08, M11, B23: ``GET /api/upload/supported-sources`` has
    ``source_types``, the nine ``sensor_types``, ``required_parameters`` and
    ``optional_parameters`` per source (what ``SCLib_UploadClient.main`` reads
    with ``[]`` and ``.keys()``), and the Unified app's
    ``large_file_threshold_mb`` (a number there)."""
    answer = unified.get_supported_sources()
    assert answer.status_code == 200
    sources = reads(
        answer,
        {
            "source_types": list,
            "sensor_types": list,
            "required_parameters": dict,
            "optional_parameters": dict,
            "large_file_threshold_mb": int,
        },
    )
    assert {"local", "google_drive", "s3", "url"} <= set(sources["source_types"])
    assert sources["sensor_types"] == SENSORS
    for name in ("local", "google_drive", "s3", "url"):
        assert isinstance(sources["required_parameters"][name], list)
        assert {"folder", "team_uuid"} <= set(sources["optional_parameters"][name])
    assert sources["required_parameters"]["local"] == ["file"]
    assert sources["required_parameters"]["url"] == ["url"]
    assert sources["large_file_threshold_mb"] == 100


def test_docs_routes_answer(original: Served) -> None:
    """Row R15: FastAPI's ``/docs``, ``/redoc`` and ``/openapi.json`` answer, as
    the original apps' did (with sclib's own schema)."""
    with Wire(original.url, UnifiedWire.AGENT) as wire:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert wire.get(path).status_code == 200, path
        paths = wire.get("/openapi.json").json()["paths"]
    assert "/api/upload/upload" in paths
    assert "/api/upload/large/chunk/{upload_id}/{chunk_index}" in paths


def test_unknown_routes_redirects_and_methods(original: Served) -> None:
    """Rows R14, R16, B09: an unknown route is a 404 with the Unified app's
    body (``error`` "Not found", ``detail`` "404: Not Found"); the Sharing/Team
    and Dataset Management services it mounted are not provided; a trailing
    slash is a 307 to the route without it; a wrong method is a 405."""
    with Wire(original.url, UnifiedWire.AGENT) as wire:
        for path in ("/nope", "/teams/by-user", "/api/v1/share/user/amy"):
            body = _original_404(wire.get(path))
            assert body["detail"] == "404: Not Found"
        redirect = wire.http.get("/health/", follow_redirects=False)
        assert redirect.status_code == 307
        assert redirect.headers["location"].endswith("/health")
        assert wire.get("/health/").json()["status"] == "healthy"
        assert wire.http.put("/api/upload/upload").status_code == 405


# -- one-request uploads ---------------------------------------------------------------


def test_upload_file_is_stored_and_completes(
    original: Served, unified: UnifiedWire, tmp_path: Path
) -> None:
    """Rows R03, R06, M01, M08, M15, S04, B06, B07, B21, B24: the sync client's
    multipart (``original_file_path`` and ``add_to_existing`` always sent,
    booleans ``true``/``false``) gets 200 with ``job_id``, ``status`` "queued",
    ``message``, ``upload_type`` "standard" and an int ``estimated_duration``;
    the file is stored byte-identical; the job id reaches ``completed`` with
    progress 100, through the original status words only."""
    source = _file(tmp_path, "s.bin", 20_000)
    answer = unified.upload_file(source, AMY, "Upload", "OTHER")
    assert answer.status_code == 200, answer.text
    result = reads(answer, UPLOAD_RESULT)
    assert result["status"] == "queued"
    assert result["upload_type"] == "standard"
    assert result["message"] == "Standard upload initiated: s.bin"
    assert isinstance(result["estimated_duration"], int)
    assert not isinstance(result["estimated_duration"], bool)
    seen = set()
    for _ in range(300):
        status = reads(unified.get_upload_status(result["job_id"]), JOB_STATUS)
        seen.add(status["status"])
        if status["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.05)
    assert status["status"] == "completed", status
    assert status["job_id"] == result["job_id"]
    assert status["progress_percentage"] == 100.0
    assert status["bytes_uploaded"] == status["bytes_total"] == 20_000
    assert isinstance(status["created_at"], str) and status["error"] is None
    assert seen <= STATUS_WORDS - {"initializing", "verifying", "paused"}
    _stored_as_sent(original, result, source)


def test_upload_file_with_every_option(
    original: Served, unified: UnifiedWire, tmp_path: Path
) -> None:
    """Rows R03, M01, M15: ``folder``, ``team_uuid``, ``convert=False`` and
    ``is_public=True`` are accepted and recorded; ``wait_for_completion`` ends
    on ``completed``."""
    source = _file(tmp_path, "opts.bin", 1000)
    answer = unified.upload_file(source, AMY, "Options", "OTHER", False, True, "F", "T")
    assert answer.status_code == 200, answer.text
    result = reads(answer, UPLOAD_RESULT)
    assert wait_for_completion(unified, result["job_id"])["status"] == "completed"
    found = unified.wire.get(f"/api/upload/datasets/{result['dataset_uuid']}").json()
    dataset = found["dataset"]
    assert dataset["is_public"] is True and dataset["convert"] is False
    assert dataset["folder_uuid"] == "F" and dataset["team_uuid"] == "T"
    _stored_as_sent(original, result, source)


def test_upload_form_variants_are_accepted(
    original: Served, unified: UnifiedWire, tmp_path: Path
) -> None:
    """Row R03: capitalised ``True``/``False`` in multipart, fields the
    server does not know, and the Unified app's other fields (``tags``,
    ``relative_path``, ``is_public_downloadable``) are accepted, as the
    original (pydantic forms) accepted them."""
    source = _file(tmp_path, "v.bin", 100)
    parts = [
        ("user_email", AMY),
        ("dataset_name", "Variants"),
        ("sensor", "OTHER"),
        ("convert", "True"),
        ("is_public", "False"),
        ("is_public_downloadable", "True"),
        ("tags", "a, b"),
        ("relative_path", "x/y"),
        ("original_file_path", str(source)),
        ("some_future_field", "ignored"),
    ]
    answer = unified.wire.post_multipart(
        "/api/upload/upload",
        [Part(k, v) for k, v in parts]
        + [Part("file", source.read_bytes(), "v.bin", "application/octet-stream")],
    )
    assert answer.status_code == 200, answer.text
    result = reads(answer, UPLOAD_RESULT)
    stored = original.stored(result["dataset_uuid"], "x", "y", "v.bin")
    assert blake3_hex(stored) == blake3_hex(source)
    assert wait_for_completion(unified, result["job_id"])["status"] == "completed"


def test_upload_errors_have_the_original_codes(
    unified: UnifiedWire, tmp_path: Path
) -> None:
    """Rows R03, B08, B09: a bad email, sensor or boolean and a missing file
    part are 422 as in the original; an empty file name is 422 and an unknown
    ``dataset_identifier`` with ``add_to_existing`` is 404 (the original
    answered both with a 500)."""
    source = _file(tmp_path, "e.bin", 10)
    for kw in ({"user_email": "nope"}, {"sensor": "BAD"}):
        args = {"user_email": AMY, "sensor": "OTHER", **kw}
        answer = unified.upload_file(
            source, args["user_email"], "Errors", args["sensor"]
        )
        assert answer.status_code == 422, answer.text
        assert isinstance(answer.json()["detail"], str)
    base = [Part("user_email", AMY), Part("dataset_name", "E"), Part("sensor", "OTHER")]
    bad_bool = unified.wire.post_multipart(
        "/api/upload/upload",
        [*base, Part("convert", "maybe"), Part("file", b"x", "x.bin")],
    )
    assert bad_bool.status_code == 422
    no_file = unified.wire.post_multipart("/api/upload/upload", base)
    assert no_file.status_code == 422
    empty_name = unified.wire.post_multipart(
        "/api/upload/upload", [*base, Part("file", b"x", "")]
    )
    assert empty_name.status_code == 422
    unknown = unified.upload_file(
        source, AMY, "E", "OTHER", dataset_identifier="no-such", add_to_existing=True
    )
    body = _original_404(unknown)
    assert "Dataset not found: no-such" in body["detail"]


def test_same_file_name_twice_in_a_dataset_is_a_conflict(
    original: Served, unified: UnifiedWire, tmp_path: Path
) -> None:
    """Row B15: a second file of the same name and path for one dataset is
    refused with 409 and the stored one is kept (the original overwrote it)."""
    first = _file(tmp_path / "1", "same.bin", 100)
    second = _file(tmp_path / "2", "same.bin", 200)
    result = reads(unified.upload_file(first, AMY, "Twice", "OTHER"), UPLOAD_RESULT)
    again = unified.upload_file(
        second,
        AMY,
        "Twice",
        "OTHER",
        dataset_identifier=result["dataset_uuid"],
        add_to_existing=True,
    )
    assert again.status_code == 409, again.text
    _stored_as_sent(original, result, first)


# -- datasets --------------------------------------------------------------------------


def test_upload_directory_makes_one_dataset(
    original: Served, unified: UnifiedWire, tmp_path: Path
) -> None:
    """Rows M16, M17, B14: ``upload_directory`` (and
    ``upload_directory_from_source('local')``, which calls it) sends a fresh
    dashed uuid4 as ``dataset_identifier``, ``add_to_existing`` false for the
    first file and true for the others, ``folder`` the file's parent: every
    answer is 200 and all files land, byte-identical, in the one dataset that
    uuid names."""
    folder = tmp_path / "dir"
    sources = [
        _file(folder, "a.txt", 300),
        _file(folder, "sub/b.dat", 400),
        _file(folder, "sub/deeper/c.dat", 500),
    ]
    answers = unified.upload_directory(folder, AMY, "Directory", "OTHER")
    assert [a.status_code for a in answers] == [200, 200, 200]
    results = [reads(a, UPLOAD_RESULT) for a in answers]
    assert len({r["dataset_uuid"] for r in results}) == 1
    for result in results:
        assert wait_for_completion(unified, result["job_id"])["status"] == "completed"
    by_name = {s.name: s for s in sources}
    found = unified.wire.get(f"/api/upload/datasets/{results[0]['dataset_uuid']}")
    dataset = found.json()["dataset"]
    assert sorted(f["path"] for f in dataset["files"]) == sorted(by_name)
    for result in results:
        name = result["message"].rsplit(": ", 1)[1]
        _stored_as_sent(original, result, by_name[name])


def test_dataset_identifier_names_a_new_dataset_then_joins_it(
    original: Served, unified: UnifiedWire, tmp_path: Path
) -> None:
    """Rows R10, B14: ``dataset_identifier`` with ``add_to_existing=false``
    creates the dataset under that identifier (a dashed uuid is kept as its 32
    hex digits, other identifiers of letters, digits, ``.``, ``_`` and ``-`` as
    sent, anything else refused with 422); the next file with
    ``add_to_existing=true`` joins it, named by the dashed or dashless uuid,
    its numeric id, its slug or its name."""
    dashed = str(uuid.uuid4())
    first = unified.upload_file(
        _file(tmp_path, "first.bin", 50), AMY, "Named Set", "OTHER",
        dataset_identifier=dashed,
    )  # fmt: skip
    assert first.status_code == 200, first.text
    created = reads(first, UPLOAD_RESULT)["dataset_uuid"]
    assert created == dashed.replace("-", "")
    document = unified.wire.get(f"/api/upload/datasets/{dashed}").json()["dataset"]
    names = [dashed, created, str(document["id"]), document["slug"], document["name"]]
    for n, name in enumerate(names):
        answer = unified.upload_file(
            _file(tmp_path, f"more{n}.bin", 10), AMY, "Named Set", "OTHER",
            dataset_identifier=name, add_to_existing=True,
        )  # fmt: skip
        assert answer.status_code == 200, (name, answer.text)
        assert answer.json()["dataset_uuid"] == created, name
    own = unified.upload_file(
        _file(tmp_path, "own.bin", 10), AMY, "Own Id", "OTHER",
        dataset_identifier="my-own-id",
    )  # fmt: skip
    assert own.status_code == 200 and own.json()["dataset_uuid"] == "my-own-id"
    joined = unified.upload_file(
        _file(tmp_path, "own2.bin", 10), AMY, "Own Id", "OTHER",
        dataset_identifier="my-own-id", add_to_existing=True,
    )  # fmt: skip
    assert joined.json()["dataset_uuid"] == "my-own-id"
    spaced = unified.upload_file(
        _file(tmp_path, "sp.bin", 10), AMY, "Spaced", "OTHER",
        dataset_identifier="has space",
    )  # fmt: skip
    assert spaced.status_code == 422, spaced.text


def test_dataset_routes_find_a_dataset_by_any_identifier(
    original: Served, unified: UnifiedWire, tmp_path: Path
) -> None:
    """Rows R10, R11, R12, R13, B08: ``/api/upload/datasets/{identifier}`` resolves a
    dashed or dashless uuid, the numeric id, the slug and the name to
    ``{identifier, resolved_uuid, dataset}``; ``/api/datasets`` lists the
    user's (``{success, datasets}``); ``/api/dataset/{id}`` and its ``/status``
    answer the shapes the original meant (it always gave 500); an unknown
    identifier is the original's 404."""
    result = reads(
        unified.upload_file(_file(tmp_path, "d.bin", 64), AMY, "Lookup Set", "OTHER"),
        UPLOAD_RESULT,
    )
    wait_for_completion(unified, result["job_id"])
    hexed = result["dataset_uuid"]
    dashed = str(uuid.UUID(hexed))
    doc = unified.wire.get(f"/api/upload/datasets/{hexed}").json()["dataset"]
    for name in (dashed, hexed, str(doc["id"]), doc["slug"], "Lookup Set"):
        answer = unified.wire.get(f"/api/upload/datasets/{name}")
        found = reads(
            answer, {"identifier": str, "resolved_uuid": str, "dataset": dict}
        )
        assert found["identifier"] == name and found["resolved_uuid"] == hexed
        dataset = reads(
            found["dataset"],
            {"uuid": str, "name": str, "slug": str, "id": int, "user": str},
        )
        assert dataset["user"] == AMY and dataset["name"] == "Lookup Set"
    _original_404(unified.wire.get("/api/upload/datasets/nope"))
    listed = reads(
        unified.wire.get("/api/datasets", [("user_email", AMY)]),
        {"success": bool, "datasets": list},
    )
    assert listed["success"] is True
    assert hexed in {d["uuid"] for d in listed["datasets"]}
    by_id = unified.wire.get("/api/datasets", [("user_id", AMY)]).json()
    assert hexed in {d["uuid"] for d in by_id["datasets"]}
    for name in (dashed, str(doc["id"])):
        one = reads(
            unified.wire.get(f"/api/dataset/{name}", [("user_email", AMY)]),
            {"success": bool, "dataset": dict},
        )
        assert one["dataset"]["uuid"] == hexed
        state = reads(
            unified.wire.get(f"/api/dataset/{name}/status", [("user_email", AMY)]),
            {"success": bool, "status": str, "progress": float, "message": str},
        )
        assert state["status"] == "done" and state["progress"] == 100.0
    _original_404(unified.wire.get("/api/dataset/nope", [("user_email", AMY)]))


def test_unknown_dataset_detail_is_the_originals(unified: UnifiedWire) -> None:
    """Row R10: an unknown identifier's 404 says ``404: Dataset not found:
    <identifier>``, as the original did."""
    body = _original_404(unified.wire.get("/api/upload/datasets/nope"))
    assert body["detail"] == "404: Dataset not found: nope"


def test_user_datasets_without_a_user_is_400(unified: UnifiedWire) -> None:
    """Row R11: ``/api/datasets`` naming no user is the original's 400."""
    answer = unified.wire.get("/api/datasets")
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"] == "Either user_id or user_email must be provided"


def test_another_users_dataset_is_not_found(
    original: Served, unified: UnifiedWire, tmp_path: Path
) -> None:
    """Rows R10, R12, B03, B14: with a token, another user's private dataset is a
    404 exactly like a missing one: it cannot be looked up, listed or added to,
    and its identifier cannot name a new dataset (409); a public one can be
    looked up but not added to (the original let anyone name any dataset)."""
    result = reads(
        unified.upload_file(_file(tmp_path, "p.bin", 10), AMY, "Private", "OTHER"),
        UPLOAD_RESULT,
    )
    headers = {"Authorization": f"Bearer {original_token(BOB)}"}
    with UnifiedWire(original.url, headers=headers) as bob:
        _original_404(bob.wire.get(f"/api/upload/datasets/{result['dataset_uuid']}"))
        _original_404(bob.wire.get(f"/api/dataset/{result['dataset_uuid']}"))
        _original_404(bob.get_upload_status(result["job_id"]))
        listed = bob.wire.get("/api/datasets", [("user_email", BOB)]).json()
        assert result["dataset_uuid"] not in {d["uuid"] for d in listed["datasets"]}
        added = bob.upload_file(
            _file(tmp_path, "b.bin", 10), BOB, "Private", "OTHER",
            dataset_identifier=result["dataset_uuid"], add_to_existing=True,
        )  # fmt: skip
        _original_404(added)
        taken = bob.upload_file(
            _file(tmp_path, "c.bin", 10), BOB, "Private", "OTHER",
            dataset_identifier=result["dataset_uuid"],
        )  # fmt: skip
        assert taken.status_code == 409, taken.text
    public = reads(
        unified.upload_file(
            _file(tmp_path, "pub.bin", 10), AMY, "Public", "OTHER", is_public=True
        ),
        UPLOAD_RESULT,
    )
    with UnifiedWire(original.url, headers=headers) as bob:
        seen = bob.wire.get(f"/api/upload/datasets/{public['dataset_uuid']}")
        assert seen.status_code == 200, seen.text
        joined = bob.upload_file(
            _file(tmp_path, "d.bin", 10), BOB, "Public", "OTHER",
            dataset_identifier=public["dataset_uuid"], add_to_existing=True,
        )  # fmt: skip
        _original_404(joined)


# -- server paths ----------------------------------------------------------------------


def test_upload_file_by_path_takes_the_urlencoded_form(
    original: Served, unified: UnifiedWire
) -> None:
    """Rows R04, M02, M03, B11: the urlencoded form with ``True``/``False`` (also
    what ``upload_file_by_path_async`` sends before it fails in the client)
    gets 200 with ``upload_type`` "path" for a file inside
    SCLIB_UPLOAD_PATH_ROOTS, ``dataset_uuid`` ignored as the original did; the
    file is copied byte-identical and the job completes. A missing path is the
    original's 400, a path outside the allowed folders 403 (the original read
    any path), a folder is accepted (the original's 400)."""
    source = original.files / "a.bin"
    answer = unified.upload_file_by_path(
        str(source), AMY, "By path", "OTHER", folder="F", team_uuid="T",
        dataset_uuid="ignored",
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    result = reads(answer, UPLOAD_RESULT)
    assert result["upload_type"] == "path"
    assert result["status"] == "queued"
    assert result["message"] == "File path upload initiated: a.bin"
    assert wait_for_completion(unified, result["job_id"])["status"] == "completed"
    _stored_as_sent(original, result, source)
    missing = unified.upload_file_by_path(
        str(original.files / "missing.bin"), AMY, "By path", "OTHER"
    )
    assert missing.status_code == 400, missing.text
    outside = unified.upload_file_by_path("/etc/hostname", AMY, "By path", "OTHER")
    assert outside.status_code == 403, outside.text
    folder = unified.upload_file_by_path(
        str(original.files / "sub"), AMY, "By path", "OTHER"
    )
    assert folder.status_code == 200, folder.text
    unknown = unified.wire.post_form(
        "/api/upload/upload-path",
        [
            ("file_path", str(source)),
            ("user_email", AMY),
            ("dataset_name", "By path"),
            ("sensor", "OTHER"),
            ("dataset_identifier", "no-such"),
            ("add_to_existing", True),
        ],
    )
    _original_404(unknown)


def test_upload_path_takes_json_and_refuses_links_out(
    original: Served, unified: UnifiedWire
) -> None:
    """Rows R04, B11: ``upload-path`` also takes JSON, and ``original_filename``
    names the stored file; a symbolic link inside the allowed folder that
    points outside it is refused (403)."""
    answer = unified.wire.post_json(
        "/api/upload/upload-path",
        {
            "file_path": str(original.files / "a.bin"),
            "original_filename": "renamed.bin",
            "user_email": AMY,
            "dataset_name": "Json path",
            "sensor": "OTHER",
        },
    )
    assert answer.status_code == 200, answer.text
    result = reads(answer, UPLOAD_RESULT)
    assert result["message"] == "File path upload initiated: renamed.bin"
    assert wait_for_completion(unified, result["job_id"])["status"] == "completed"
    stored = original.stored(result["dataset_uuid"], "renamed.bin")
    assert blake3_hex(stored) == blake3_hex(original.files / "a.bin")
    link = original.files / "outside-link"
    if not link.exists():
        link.symlink_to("/etc/hostname")
    refused = unified.upload_file_by_path(str(link), AMY, "Link", "OTHER")
    assert refused.status_code == 403, refused.text


def test_upload_path_is_off_without_allowed_folders(
    locked: Served, tmp_path: Path
) -> None:
    """Rows R04, B11: a server without SCLIB_UPLOAD_PATH_ROOTS refuses every
    server path with 403 naming the setting."""
    source = _file(tmp_path, "x.bin", 10)
    token = original_token(AMY)
    headers = {"Authorization": f"Bearer {token}"}
    with UnifiedWire(locked.url, headers=headers) as client:
        answer = client.upload_file_by_path(str(source), AMY, "Off", "OTHER")
    assert answer.status_code == 403
    assert "SCLIB_UPLOAD_PATH_ROOTS" in answer.json()["detail"]


# -- async client ----------------------------------------------------------------------


def test_async_client_upload_status_and_wait(original: Served, tmp_path: Path) -> None:
    """Rows R03, M18, M19, M20: the aiohttp multipart (every text part
    ``text/plain; charset=utf-8``, no ``original_file_path``,
    ``add_to_existing`` only when true) is accepted; status and waiting work as
    for the sync client; a second file joins the first one's dataset."""
    first = _file(tmp_path, "one.txt", 700)
    second = _file(tmp_path, "two.bin", 800)
    client = AsyncUnifiedWire(original.url)
    try:
        answer = client.upload_file(first, AMY, "Async", "OTHER", folder="F")
        assert answer.status_code == 200, answer.text
        result = reads(answer, UPLOAD_RESULT)
        assert wait_for_completion(client, result["job_id"])["status"] == "completed"
        joined = client.upload_file(
            second, AMY, "Async", "OTHER",
            dataset_identifier=result["dataset_uuid"], add_to_existing=True,
        )  # fmt: skip
        assert joined.status_code == 200, joined.text
        assert joined.json()["dataset_uuid"] == result["dataset_uuid"]
    finally:
        client.close()
    _stored_as_sent(original, result, first)
    _stored_as_sent(original, joined.json(), second)


def test_async_upload_directory_works_with_sclibs_drop_in(
    original: Served, tmp_path: Path
) -> None:
    """Row M21: the original async ``upload_directory`` sends nothing (it calls
    a method that does not exist); sclib's drop-in
    ``AsyncScientistCloudUploadClient.upload_directory`` makes the one
    dataset the sync client makes, without a token on this deployment."""
    import asyncio

    from sclib.client.unified import AsyncScientistCloudUploadClient

    folder = tmp_path / "adir"
    _file(folder, "a.bin", 100)
    _file(folder, "sub/b.bin", 200)

    async def run() -> list[Any]:
        client = AsyncScientistCloudUploadClient(
            original.url, state_dir=tmp_path / "state", token=""
        )
        async with client:
            return list(
                await client.upload_directory(str(folder), AMY, "ADir", "OTHER")
            )

    results = asyncio.run(run())
    assert [r.status for r in results] == ["queued", "queued"]
    assert len({r.dataset_uuid for r in results}) == 1


# -- the job routes --------------------------------------------------------------------


def test_status_and_cancel_of_a_queued_job(idle: Served) -> None:
    """Rows R06, R07, M08, M09, B04, B06: a job that waits is ``queued`` with every
    key the client reads; cancelling it answers the original's message, and
    its status is then ``cancelled``; cancelling it again, or an unknown id,
    is the original's 404 ("Job not found or already completed"); an unknown
    id's status is 404 (the original made up a ``queued`` answer)."""
    with UnifiedWire(idle.url) as client:
        started = client.initiate_s3_upload(
            "bucket", "key.bin", "AK", "SK", AMY, "Queued", "OTHER"
        )
        assert started.status_code == 200, started.text
        job_id = reads(started, UPLOAD_RESULT)["job_id"]
        status = reads(client.get_upload_status(job_id), JOB_STATUS)
        assert status["status"] == "queued"
        assert status["progress_percentage"] == 0.0
        for key in ("bytes_uploaded", "bytes_total", "message", "error"):
            assert key in status
        cancelled = client.cancel_upload(job_id)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["message"] == f"Job {job_id} cancelled successfully"
        after = reads(client.get_upload_status(job_id), JOB_STATUS)
        assert after["status"] == "cancelled"
        _original_404(client.cancel_upload(job_id))
        _original_404(client.get_upload_status("upload_0_deadbeef"))
        _original_404(client.cancel_upload("upload_0_deadbeef"))


def test_a_cancelled_upload_leaves_nothing_behind(idle: Served, tmp_path: Path) -> None:
    """Row R07: the original Unified client uploads a file, then cancels its
    queued job: the file it put in the dataset folder goes with the job, and
    the same file can then be uploaded into that dataset again (it used to stay
    there unrecorded and make the second upload a 409)."""
    source = _file(tmp_path, "again.bin", 30_000)
    with UnifiedWire(idle.url) as client:
        first = reads(client.upload_file(source, AMY, "Again", "OTHER"), UPLOAD_RESULT)
        uuid = first["dataset_uuid"]
        assert idle.stored(uuid, "again.bin").read_bytes() == source.read_bytes()
        assert client.cancel_upload(first["job_id"]).status_code == 200
        assert not idle.stored(uuid).exists()
        second = client.upload_file(
            source, AMY, "Again", "OTHER", dataset_identifier=uuid, add_to_existing=True
        )
        assert second.status_code == 200, second.text
        assert idle.stored(uuid, "again.bin").read_bytes() == source.read_bytes()
        client.cancel_upload(reads(second, UPLOAD_RESULT)["job_id"])
    assert not idle.stored(uuid).exists()


def test_cancel_after_completion_is_not_found(
    unified: UnifiedWire, tmp_path: Path
) -> None:
    """Rows R07, B05: cancelling a job that completed is a 404 (the original
    said "cancelled successfully" while the job was in its memory and 404
    after a restart); the job stays ``completed``."""
    result = reads(
        unified.upload_file(_file(tmp_path, "c.bin", 10), AMY, "Done", "OTHER"),
        UPLOAD_RESULT,
    )
    assert wait_for_completion(unified, result["job_id"])["status"] == "completed"
    _original_404(unified.cancel_upload(result["job_id"]))
    assert unified.get_upload_status(result["job_id"]).json()["status"] == "completed"


def test_list_upload_jobs_has_the_standard_shape(
    unified: UnifiedWire, tmp_path: Path
) -> None:
    """Rows R18, M10, B06, B22: ``GET /api/upload/jobs`` with ``user_id``,
    ``limit``, ``offset`` and ``status`` answers ``{jobs, total, limit,
    offset}`` (the Unified app had no such route, 404); each job has the status
    keys; ``status`` takes the original's words (``paused`` matches nothing:
    sclib never pauses)."""
    result = reads(
        unified.upload_file(_file(tmp_path, "l.bin", 10), AMY, "List", "OTHER"),
        UPLOAD_RESULT,
    )
    wait_for_completion(unified, result["job_id"])
    answer = unified.list_upload_jobs(AMY)
    assert answer.status_code == 200
    listed = reads(answer, {"jobs": list, "total": int, "limit": int, "offset": int})
    assert (listed["limit"], listed["offset"]) == (50, 0)
    assert listed["total"] >= len(listed["jobs"]) >= 1
    for job in listed["jobs"]:
        reads(job, JOB_STATUS)
        assert job["status"] in STATUS_WORDS
    done = unified.list_upload_jobs(AMY, "completed", 5, 0).json()
    assert result["job_id"] in {j["job_id"] for j in done["jobs"]} or done["total"] > 5
    assert all(j["status"] == "completed" for j in done["jobs"])
    for word in ("queued", "uploading", "processing", "failed", "cancelled"):
        assert unified.list_upload_jobs(AMY, word).status_code == 200, word
    assert unified.list_upload_jobs(AMY, "paused").json()["jobs"] == []
    paged = unified.list_upload_jobs(AMY, None, 1, 1).json()
    assert (paged["limit"], paged["offset"], len(paged["jobs"])) == (1, 1, 1)


# -- the connection --------------------------------------------------------------------

_HEALTH = (
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"User-Agent: ScientistCloud-Upload-Client-Unified/2.0.0\r\n\r\n"
)
_IDLE = 6.0


@pytest.fixture(scope="module", autouse=True)
def kept_alive(original: Served) -> Iterator[tuple[socket.socket, float]]:
    """A connection that answered once when this module started, then idles
    while the other tests run (so the keep-alive test rarely has to wait)."""
    sock = socket.create_connection(("127.0.0.1", original.port), timeout=10)
    try:
        sock.sendall(_HEALTH)
        assert _read_response(sock).startswith(b"HTTP/1.1 200")
        yield sock, time.monotonic()
    finally:
        sock.close()


def test_idle_connections_stay_open_past_five_seconds(
    kept_alive: tuple[socket.socket, float],
) -> None:
    """Row B20: a kept-alive connection still answers after more than 6 s idle
    (the clients poll every 5 s; the original launcher kept connections open
    300 s, and uvicorn's default of 5 s broke its example script)."""
    sock, since = kept_alive
    time.sleep(max(0.0, _IDLE - (time.monotonic() - since)))
    sock.sendall(_HEALTH)
    assert _read_response(sock).startswith(b"HTTP/1.1 200")


def _read_response(sock: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length; its head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        body += chunk
    return head
