"""Dataset records kept by the upload job, and the datasets API."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import httpx
import pytest

from sclib.datasets import MemoryDatasetStore
from sclib.errors import ChecksumMismatch
from sclib.jobs.context import JobContext
from sclib.jobtypes import JobStatus
from sclib.models import Job
from sclib.pipeline.upload import UploadHandler
from tests.server.live import LiveServer
from tests.server.test_upload_routes import FIELDS, wait_job

UUID = "d" * 32


def _job(files: list[dict[str, object]], failures: int = 0) -> Job:
    return Job(
        id="0" * 32,
        type="upload",
        status=JobStatus.RUNNING,
        priority=2,
        parameters={
            "source": "upload",
            "files": files,
            "dataset": {"dataset_name": "Scan", "sensor": "TIFF", "tags": ["x"]},
        },
        dataset_uuid=UUID,
        owner="alice@example.org",
        worker_id="w",
        attempts=failures + 1,
        failures=failures,
        max_attempts=3,
    )


def test_the_upload_job_records_files_and_status(tmp_path: Path) -> None:
    """The handler creates the record if needed, adds the verified files and sets
    `done`; a file that does not verify sets `retrying` while the job will run
    again, and `upload error` with the reason on its last attempt."""
    data = os.urandom(5000)
    folder = tmp_path / "upload" / UUID
    folder.mkdir(parents=True)
    (folder / "a.tif").write_bytes(data)
    store = MemoryDatasetStore()
    handler = UploadHandler(tmp_path, datasets=store)
    good = {"path": "a.tif", "size": 5000, "blake3": blake3.blake3(data).hexdigest()}
    handler(JobContext(_job([good])))
    record = store.get(UUID)
    assert (record.name, str(record.sensor), record.status) == ("Scan", "TIFF", "done")
    assert [(f.path, f.size, f.blake3) for f in record.files] == [
        ("a.tif", 5000, good["blake3"])
    ]
    bad = {**good, "blake3": "0" * 64}
    with pytest.raises(ChecksumMismatch):
        handler(JobContext(_job([bad])))
    assert store.get(UUID).status == "retrying"
    with pytest.raises(ChecksumMismatch):
        handler(JobContext(_job([bad], failures=2)))  # the last attempt
    record = store.get(UUID)
    assert record.status == "upload error"
    assert record.error_message and "BLAKE3" in record.error_message


@pytest.mark.integration
def test_datasets_api_shows_what_was_uploaded(live_server: LiveServer) -> None:
    """After an upload, /api/v1/datasets lists the dataset; its page has the file
    with its BLAKE3 and the status `done`; another user gets 404; adding a file
    to it works for its owner."""
    u, h = live_server.url, live_server.headers()
    data = os.urandom(2000)
    r = httpx.post(
        f"{u}/api/upload/upload",
        files={"file": ("scan.tif", data)},
        data={**FIELDS, "convert": "false", "tags": "beamline,run7"},
        headers=h,
    ).json()
    assert wait_job(live_server, r["job_id"])["status"] == "completed"
    uuid = r["dataset_uuid"]
    listed = httpx.get(f"{u}/api/v1/datasets", headers=h).json()["datasets"]
    assert [d["uuid"] for d in listed] == [uuid]
    page = httpx.get(f"{u}/api/v1/datasets/{uuid}", headers=h).json()
    assert (page["name"], page["status"], page["tags"]) == (
        "Sample",
        "done",
        ["beamline", "run7"],
    )
    assert page["files"] == [
        {"path": "scan.tif", "size": 2000, "blake3": blake3.blake3(data).hexdigest()}
    ]
    status = httpx.get(f"{u}/api/v1/datasets/{uuid}/status", headers=h).json()
    assert [j["job_id"] for j in status["jobs"]] == [r["job_id"]]
    bob = live_server.headers("bob@example.org")
    assert httpx.get(f"{u}/api/v1/datasets/{uuid}", headers=bob).status_code == 404
    assert httpx.get(f"{u}/api/v1/datasets", headers=bob).json()["datasets"] == []
    more = httpx.post(
        f"{u}/api/upload/upload",
        files={"file": ("more.tif", b"m" * 10)},
        data={**FIELDS, "dataset_identifier": uuid, "add_to_existing": "true"},
        headers=h,
    ).json()
    assert wait_job(live_server, more["job_id"])["status"] == "completed"
    page = httpx.get(f"{u}/api/v1/datasets/{uuid}", headers=h).json()
    assert [f["path"] for f in page["files"]] == ["more.tif", "scan.tif"]
    assert page["total_size"] == 2010
