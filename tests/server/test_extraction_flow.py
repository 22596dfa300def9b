"""An uploaded archive is unpacked in its dataset by a file_extraction job."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import blake3
import httpx
import pytest

from sclib.datasets import MemoryDatasetStore
from sclib.errors import InvalidInput
from sclib.jobs.context import JobContext
from sclib.jobtypes import JobStatus
from sclib.models import Job
from sclib.pipeline.jobs import ExtractionHandler, extraction_folder
from tests.server.live import LiveServer
from tests.server.test_upload_routes import FIELDS

UUID = "e" * 32


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _job(archive: str, attempt: int = 1) -> Job:
    return Job(
        id="1" * 32,
        type="file_extraction",
        status=JobStatus.RUNNING,
        priority=2,
        parameters={"archive": archive},
        dataset_uuid=UUID,
        owner="alice@example.org",
        worker_id="w",
        attempts=attempt,
    )


def test_extraction_folder_names() -> None:
    """scan.zip unpacks to scan/, a.tar.gz to a/, and odd names to <name>.contents."""
    assert extraction_folder("scan.zip") == "scan"
    assert extraction_folder("raw/run.tar.gz") == "raw/run"
    assert extraction_folder("x.TGZ") == "x"
    assert extraction_folder("blob") == "blob.contents"


def test_extraction_job_unpacks_records_and_is_idempotent(tmp_path: Path) -> None:
    """The job unpacks into <name>/ at once, records each file with its BLAKE3 and
    sets the dataset done; a retry after a crash between the rename and the
    recording records the same files without unpacking twice, and no note is
    left in tmp/. An unsafe archive sets `unzip error`."""
    folder = tmp_path / "upload" / UUID
    folder.mkdir(parents=True)
    entries = {"frames/f0.raw": os.urandom(3000), "meta.json": b"{}"}
    (folder / "scan.zip").write_bytes(_zip(entries))
    store = MemoryDatasetStore()
    from sclib.datasets import Dataset

    store.create(
        Dataset(uuid=UUID, name="Scan", owner="alice@example.org", sensor="OTHER")
    )
    store.set_status(UUID, "upload queued")
    store.set_status(UUID, "uploading")
    handler = ExtractionHandler(tmp_path, store)
    real_add = store.add_files

    def crash(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("worker died after the rename")

    store.add_files = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="after the rename"):
        handler(JobContext(_job("scan.zip")))
    store.add_files = real_add  # type: ignore[method-assign]
    assert (folder / "scan" / "meta.json").is_file()
    first: dict[str, Any] = handler(JobContext(_job("scan.zip", attempt=2)))
    want = {
        f"scan/{name}": blake3.blake3(data).hexdigest()
        for name, data in entries.items()
    }
    assert {f["path"]: f["blake3"] for f in first["files"]} == want
    assert (folder / "scan" / "frames" / "f0.raw").read_bytes() == entries[
        "frames/f0.raw"
    ]
    record = store.get(UUID)
    assert record.status == "done"
    assert {f.path for f in record.files} == set(want)
    assert not list((tmp_path / "tmp" / "extract").iterdir())
    (folder / "evil.zip").write_bytes(_zip({"../../escape.txt": b"x"}))
    with pytest.raises(InvalidInput, match="escape"):
        handler(JobContext(_job("evil.zip")))
    assert store.get(UUID).status == "unzip error"
    assert not (tmp_path / "escape.txt").exists()
    assert not (folder / "evil").exists()


@pytest.mark.integration
def test_an_uploaded_zip_is_unpacked_in_its_dataset(live_server: LiveServer) -> None:
    """Uploading a zip queues its extraction after the upload job; the dataset
    ends `done` with the archive and every unpacked file, each with its BLAKE3."""
    entries = {"a.txt": b"alpha", "sub/b.bin": os.urandom(5000)}
    r = httpx.post(
        f"{live_server.url}/api/upload/upload",
        files={"file": ("bundle.zip", _zip(entries))},
        data={**FIELDS, "sensor": "OTHER"},  # nothing to convert: ends `done`
        headers=live_server.headers(),
    ).json()
    uuid = r["dataset_uuid"]
    deadline = time.monotonic() + 30
    page: dict[str, Any] = {}
    while time.monotonic() < deadline:
        page = httpx.get(
            f"{live_server.url}/api/v1/datasets/{uuid}", headers=live_server.headers()
        ).json()
        if page.get("status") in ("done", "unzip error") and len(page["files"]) == 3:
            break
        time.sleep(0.1)
    assert page["status"] == "done", page
    paths = {f["path"]: f["blake3"] for f in page["files"]}
    assert set(paths) == {"bundle.zip", "bundle/a.txt", "bundle/sub/b.bin"}
    assert paths["bundle/sub/b.bin"] == blake3.blake3(entries["sub/b.bin"]).hexdigest()
    stored = live_server.data_dir / "upload" / uuid / "bundle" / "a.txt"
    assert stored.read_bytes() == b"alpha"
    jobs = httpx.get(
        f"{live_server.url}/api/v1/datasets/{uuid}/status",
        headers=live_server.headers(),
    ).json()["jobs"]
    assert sorted(j["job_type"] for j in jobs) == ["file_extraction", "upload"]
    assert {j["status"] for j in jobs} == {"completed"}
