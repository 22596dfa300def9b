"""The original Standard app's routes (``SCLib_UploadAPI_FastAPI``) and the
server-side imports, sent exactly what ``SCLib_UploadClient`` (the legacy client)
and ``SCLib_UploadClient_FastAPI`` send, plus the Unified client's imports.

Imports go to the ``idle`` server (no worker), so nothing is ever fetched.
Every test's docstring names the ``docs/compat.md`` rows it covers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.servers import Served, original_token
from tests.compat.wire import (
    AMY,
    JOB_STATUS,
    UPLOAD_RESULT,
    UPLOAD_RESULT_NO_TYPE,
    FastAPIWire,
    LegacyWire,
    UnifiedWire,
    Wire,
    blake3_hex,
    reads,
    wait_for_completion,
)

pytestmark = pytest.mark.integration

#: A public address given literally, so nothing is looked up; the idle server
#: never fetches it.
PUBLIC_URL = "http://93.184.215.14/data/x.zip"


def _file(folder: Path, name: str, size: int) -> Path:
    path = folder / name
    path.write_bytes(os.urandom(size))
    return path


def _stored_as_sent(served: Served, answer: dict[str, Any], source: Path) -> None:
    stored = served.stored(answer["dataset_uuid"], source.name)
    assert blake3_hex(stored) == blake3_hex(source)
    assert not (served.staging / answer["upload_id"]).exists()


@pytest.fixture
def legacy(original: Served) -> Iterator[LegacyWire]:
    """``SCLib_UploadClient``'s wire, pointed at the ``original`` server."""
    with LegacyWire(original.url) as client:
        yield client


@pytest.fixture
def fastapi(original: Served) -> Iterator[FastAPIWire]:
    """``SCLib_UploadClient_FastAPI``'s wire, pointed at ``original``."""
    with FastAPIWire(original.url) as client:
        yield client


# -- service routes --------------------------------------------------------------------


def test_standard_root_and_health(fastapi: FastAPIWire) -> None:
    """Rows R01, R02, M46, M58, M59: ``GET /`` and ``GET /health`` have the
    Standard app's keys (``message``, ``version``, ``docs``, ``redoc``;
    ``status``, ``timestamp``) for the FastAPI client's ``get_api_info`` and
    ``health_check``."""
    info = reads(
        fastapi.get_api_info(),
        {"message": str, "version": str, "docs": str, "redoc": str},
    )
    assert info["message"].startswith("ScientistCloud Upload API")
    health = reads(fastapi.health_check(), {"status": str, "timestamp": str})
    assert health["status"] == "healthy"


def test_supported_sources_for_the_standard_clients(
    legacy: LegacyWire, fastapi: FastAPIWire
) -> None:
    """Rows R08, M43, M45, M55, S03: the legacy and FastAPI clients'
    ``get_supported_sources`` get ``source_types``, ``sensor_types``,
    ``required_parameters`` and ``optional_parameters`` (what
    ``SCLib_UploadClient.main`` prints)."""
    for client in (legacy, fastapi):
        sources = reads(
            client.get_supported_sources(),
            {
                "source_types": list,
                "sensor_types": list,
                "required_parameters": dict,
                "optional_parameters": dict,
            },
        )
        assert "OTHER" in sources["sensor_types"]
        assert list(sources["required_parameters"].keys())
        assert list(sources["optional_parameters"].keys())


# -- local uploads ---------------------------------------------------------------------


def test_legacy_upload_local_file(
    original: Served, legacy: LegacyWire, tmp_path: Path
) -> None:
    """Rows R17, M36, M40, M44: the legacy client's multipart (the
    requests default User-Agent, a file part without a Content-Type, ``folder``
    and ``team_uuid``) to ``/api/upload/local/upload`` gets 200 with ``job_id``,
    ``status`` "queued", ``message`` and ``estimated_duration``; the file is
    stored byte-identical; its dict-based ``wait_for_completion`` ends on
    ``completed``."""
    source = _file(tmp_path, "legacy.bin", 5000)
    answer = legacy.upload_local_file(
        source, AMY, "Legacy", "OTHER", True, False, "F", "T"
    )
    assert answer.status_code == 200, answer.text
    result = reads(answer, {**UPLOAD_RESULT_NO_TYPE, "estimated_duration": int})
    assert result["status"] == "queued"
    status = wait_for_completion(legacy, result["job_id"])
    assert status["status"] == "completed"
    assert status.get("progress_percentage", 0) == 100.0
    _stored_as_sent(original, result, source)


def test_fastapi_upload_local_file_sync_and_async(
    original: Served, fastapi: FastAPIWire, tmp_path: Path
) -> None:
    """Rows R17, M46, M47, M52, M57, M60, M61, M62: the FastAPI client's sync
    (file part ``application/octet-stream``) and async (aiohttp: text parts
    ``text/plain``) ``upload_local_file`` are accepted; status and waiting read
    the original keys; both files are stored byte-identical."""
    first = _file(tmp_path, "sync.bin", 1234)
    answer = fastapi.upload_local_file(first, AMY, "FastAPI", "OTHER")
    assert answer.status_code == 200, answer.text
    result = reads(answer, UPLOAD_RESULT_NO_TYPE)
    assert reads(fastapi.get_upload_status(result["job_id"]), JOB_STATUS)
    assert wait_for_completion(fastapi, result["job_id"])["status"] == "completed"
    _stored_as_sent(original, result, first)
    second = _file(tmp_path, "async.txt", 4321)
    with FastAPIWire(original.url, aiohttp=True) as client:
        answer = client.upload_local_file(
            second, AMY, "FastAPI async", "OTHER", folder="F"
        )
        assert answer.status_code == 200, answer.text
        result = reads(answer, UPLOAD_RESULT_NO_TYPE)
        assert wait_for_completion(client, result["job_id"])["status"] == "completed"
    _stored_as_sent(original, result, second)


def test_fastapi_upload_file_by_path_joins_a_dataset(
    original: Served, fastapi: FastAPIWire, legacy: LegacyWire, tmp_path: Path
) -> None:
    """Rows R04, M48: the FastAPI client's urlencoded ``upload-path``
    (``True``/``False``, ``dataset_identifier``, ``add_to_existing=true``) adds
    the server file to the named dataset; the answer has ``upload_type``, which
    this client's own result class cannot take (a TypeError in the client,
    against any server)."""
    first = reads(
        legacy.upload_local_file(
            _file(tmp_path, "x.bin", 10), AMY, "Path set", "OTHER"
        ),
        UPLOAD_RESULT_NO_TYPE,
    )
    answer = fastapi.upload_file_by_path(
        str(original.files / "sub" / "b.bin"), AMY, "Path set", "OTHER",
        dataset_identifier=first["dataset_uuid"], add_to_existing=True,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    result = reads(answer, UPLOAD_RESULT)
    assert result["dataset_uuid"] == first["dataset_uuid"]
    assert result["upload_type"] == "path"
    assert wait_for_completion(fastapi, result["job_id"])["status"] == "completed"
    stored = original.stored(first["dataset_uuid"], "b.bin")
    assert blake3_hex(stored) == blake3_hex(original.files / "sub" / "b.bin")


def test_estimate_upload_time(fastapi: FastAPIWire) -> None:
    """Rows R19, M56, B24: ``estimate_upload_time`` gets ``source_type``,
    ``estimated_seconds`` (int), ``estimated_minutes`` (float) and
    ``file_size_mb``, with and without a size."""
    for source, size in (("url", 10.5), ("local", None), ("google_drive", 2.0)):
        answer = fastapi.estimate_upload_time(source, size)
        assert answer.status_code == 200, answer.text
        estimate = reads(
            answer,
            {
                "source_type": str,
                "estimated_seconds": int,
                "estimated_minutes": float,
                "file_size_mb": (int, float),
            },
        )
        assert estimate["source_type"] == source
        assert estimate["file_size_mb"] == (size or 0)
        assert estimate["estimated_seconds"] > 0


# -- imports ---------------------------------------------------------------------------


@pytest.mark.parametrize("client_class", [UnifiedWire, LegacyWire, FastAPIWire])
def test_imports_of_every_client_are_queued(
    idle: Served, client_class: type[Any]
) -> None:
    """Rows R05, M04, M05, M06, M37, M38, M39, M49, M50, M51, S04, B12: each
    client's ``initiate_google_drive_upload`` (a key file named by path, inside
    SCLIB_CREDENTIALS_DIR), ``initiate_s3_upload`` and ``initiate_url_upload``
    get 200 ``queued`` with the original's ``estimated_duration`` (600, 300,
    180), ``upload_type`` "standard" and a status that answers."""
    key_file = str(idle.credentials / "service.json")
    with client_class(idle.url) as client:
        answers = {
            600: client.initiate_google_drive_upload(
                "1ABC123DEF456", key_file, AMY, "Drive", "OTHER", folder="F"
            ),
            300: client.initiate_s3_upload(
                "bucket", "data/x.h5", "AK", "SK", AMY, "S3", "OTHER", team_uuid="T"
            ),
            180: client.initiate_url_upload(PUBLIC_URL, AMY, "URL", "OTHER"),
        }
        for seconds, answer in answers.items():
            assert answer.status_code == 200, answer.text
            result = reads(answer, UPLOAD_RESULT)
            assert result["status"] == "queued"
            assert result["estimated_duration"] == seconds
            assert result["upload_type"] == "standard"
            assert result["message"].startswith("Upload job initiated for ")
            status = reads(client.get_upload_status(result["job_id"]), JOB_STATUS)
            assert status["status"] == "queued"
            assert client.cancel_upload(result["job_id"]).status_code == 200


def test_google_drive_configurations(idle: Served) -> None:
    """Rows R05, M04, M07, B12, B13: a key file named by its bare name in the
    credentials folder, and ``folder_link`` instead of ``file_id``, are
    accepted; a key file outside SCLIB_CREDENTIALS_DIR is refused (422 naming
    the setting), as are the original's OAuth configurations (``use_oauth``, or
    a ``user_email`` in ``source_config``: this server keeps no OAuth tokens)
    and a config with no file id."""
    with UnifiedWire(idle.url) as client:
        ok = [
            client.initiate_google_drive_upload(
                "1ABC123DEF456", "service.json", AMY, "Drive", "OTHER"
            ),
            client.upload_from_source(
                "google_drive",
                {
                    "folder_link": "https://drive.google.com/drive/folders/1XyZ",
                    "service_account_file": "service.json",
                },
                AMY,
                "Drive",
                "OTHER",
            ),
        ]
        for answer in ok:
            assert answer.status_code == 200, answer.text
            client.cancel_upload(answer.json()["job_id"]).raise_for_status()
        outside = client.initiate_google_drive_upload(
            "1ABC123DEF456", "/path/to/service.json", AMY, "Drive", "OTHER"
        )
        assert outside.status_code == 422
        assert "SCLIB_CREDENTIALS_DIR" in outside.json()["detail"]
        for config in (
            {
                "use_oauth": True,
                "folder_link": "https://drive.google.com/drive/folders/1",
            },
            {"file_id": "1ABC", "user_email": AMY},
            {"service_account_file": "service.json"},
        ):
            answer = client.upload_from_source(
                "google_drive", config, AMY, "D", "OTHER"
            )
            assert answer.status_code == 422, (config, answer.text)


def test_initiate_refusals(idle: Served, locked: Served) -> None:
    """Rows R05, M06, M07, B08, B10, B23: ``upload_from_source`` with ``folder`` and
    ``team_uuid`` as null works; ``local``, ``dropbox`` and ``onedrive`` are 422
    (the original: 500 "400: Unsupported source type"); a form body is 422 as
    in the original; a URL on a private address is refused (422) unless
    SCLIB_ALLOW_PRIVATE_ADDRESSES is set, as on the ``locked`` server."""
    with UnifiedWire(idle.url) as client:
        nulls = client.upload_from_source("url", {"url": PUBLIC_URL}, AMY, "U", "OTHER")
        assert nulls.status_code == 200, nulls.text
        assert reads(nulls, UPLOAD_RESULT)["status"] == "queued"
        client.cancel_upload(nulls.json()["job_id"]).raise_for_status()
        for source in ("local", "dropbox", "onedrive"):
            answer = client.upload_from_source(source, {}, AMY, "X", "OTHER")
            assert answer.status_code == 422, (source, answer.text)
        form = client.wire.post_form(
            "/api/upload/initiate",
            [("source_type", "url"), ("user_email", AMY), ("dataset_name", "X")],
        )
        assert form.status_code == 422
        private = client.initiate_url_upload(
            "http://127.0.0.1:9/x.zip", AMY, "Private", "OTHER"
        )
        assert private.status_code == 422, private.text
    headers = {"Authorization": f"Bearer {original_token(AMY)}"}
    with UnifiedWire(locked.url, headers=headers) as client:
        allowed = client.initiate_url_upload(
            "http://127.0.0.1:9/x.zip", AMY, "Private", "OTHER"
        )
        assert allowed.status_code == 200, allowed.text
        client.cancel_upload(allowed.json()["job_id"]).raise_for_status()


def test_cloud_large_import(idle: Served) -> None:
    """Rows R26, B08: ``/api/upload/cloud/large`` (always a 500 in the original)
    queues the import and answers ``job_id``, ``status`` "queued",
    ``message`` and a text ``estimated_duration``."""
    with Wire(idle.url, UnifiedWire.AGENT) as wire:
        answer = wire.post_json(
            "/api/upload/cloud/large",
            {
                "source_type": "s3",
                "source_config": {
                    "bucket_name": "bucket",
                    "object_key": "big.h5",
                    "access_key_id": "AK",
                    "secret_access_key": "SK",
                },
                "user_email": AMY,
                "dataset_name": "Cloud large",
                "sensor": "OTHER",
                "convert": True,
                "is_public": False,
            },
        )
        assert answer.status_code == 200, answer.text
        result = reads(
            answer,
            {"job_id": str, "status": str, "message": str, "estimated_duration": str},
        )
        assert result["status"] == "queued"
        assert result["estimated_duration"] == "Varies by file size and network"
        wire.post_empty(f"/api/upload/cancel/{result['job_id']}").raise_for_status()


# -- the job routes --------------------------------------------------------------------


@pytest.mark.parametrize("client_class", [LegacyWire, FastAPIWire])
def test_status_cancel_list_and_wait(idle: Served, client_class: type[Any]) -> None:
    """Rows R06, R07, R18, M40, M41, M42, M44, M52, M53, M54, M57, B06, B25: a
    queued job's status has the original keys; cancel answers the original
    message; ``wait_for_completion`` then ends on ``cancelled``; the job list
    (``user_id``, ``limit``, ``offset``) has ``jobs`` and ``total`` and
    finds it by the original status word."""
    with client_class(idle.url) as client:
        job_id = reads(
            client.initiate_s3_upload("bkt", "k", "AK", "SK", AMY, "Jobs", "OTHER"),
            UPLOAD_RESULT_NO_TYPE,
        )["job_id"]
        assert reads(client.get_upload_status(job_id), JOB_STATUS)["status"] == "queued"
        queued = client.list_upload_jobs(AMY, "queued", 1000).json()
        assert job_id in {j["job_id"] for j in queued["jobs"]}
        cancelled = client.cancel_upload(job_id)
        assert cancelled.status_code == 200
        assert cancelled.json()["message"] == f"Job {job_id} cancelled successfully"
        assert wait_for_completion(client, job_id)["status"] == "cancelled"
        listed = reads(
            client.list_upload_jobs(AMY, "cancelled", 1000, 0),
            {"jobs": list, "total": int, "limit": int, "offset": int},
        )
        assert job_id in {j["job_id"] for j in listed["jobs"]}
        assert all(j["status"] == "cancelled" for j in listed["jobs"])
