"""The whole pipeline through the real server: a zip of TIFF slices is uploaded,
unpacked, converted to OpenVisus IDX, and the dataset ends `done`."""

from __future__ import annotations

import io
import time
import zipfile
from typing import Any

import httpx
import pytest

from tests.server.live import LiveServer

np = pytest.importorskip("numpy")
tifffile = pytest.importorskip("tifffile")
ov = pytest.importorskip("OpenVisus")

FINAL = ("done", "conversion error", "unzip error", "upload error")


def _slices_zip(stack: Any) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, plane in enumerate(stack):
            page = io.BytesIO()
            tifffile.imwrite(page, plane)
            zf.writestr(f"slice{i}.tif", page.getvalue())  # slice10 after slice9
    return buf.getvalue()


def _wait(server: LiveServer, uuid: str, statuses: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    page: dict[str, Any] = {}
    while time.monotonic() < deadline:
        page = httpx.get(
            f"{server.url}/api/v1/datasets/{uuid}/status", headers=server.headers()
        ).json()
        jobs = page.get("jobs", [])
        settled = jobs and all(
            j["status"] in ("completed", "failed", "cancelled") for j in jobs
        )
        if page.get("status") in statuses and settled:
            return page
        time.sleep(0.1)
    raise AssertionError(f"dataset {uuid} did not settle: {page}")


@pytest.mark.integration
def test_zip_of_tiffs_is_unpacked_converted_and_reads_back(
    live_server: LiveServer,
) -> None:
    """upload -> file_extraction -> dataset_conversion -> `done`; the published
    visus.idx holds the slices in name order (slice2 before slice10), value for
    value; reprocessing converts again and keeps them."""
    stack = np.random.default_rng(3).integers(0, 65535, (12, 20, 30), np.uint16)
    r = httpx.post(
        f"{live_server.url}/api/upload/upload",
        files={"file": ("scan.zip", _slices_zip(stack))},
        data={"dataset_name": "Scan", "sensor": "TIFF", "convert": "true"},
        headers=live_server.headers(),
    )
    assert r.status_code == 200, r.text
    uuid = r.json()["dataset_uuid"]
    page = _wait(live_server, uuid, FINAL)
    assert page["status"] == "done", page
    kinds = sorted(j["job_type"] for j in page["jobs"])
    assert kinds == ["dataset_conversion", "file_extraction", "upload"]
    idx = live_server.data_dir / "converted" / uuid / "visus.idx"
    assert np.array_equal(ov.LoadDataset(str(idx)).read(), stack)

    files = httpx.get(
        f"{live_server.url}/api/v1/datasets/{uuid}/files",
        params={"limit": 2},
        headers=live_server.headers(),
    ).json()
    assert files["total"] == 13 and files["count"] == 2
    assert [f["path"] for f in files["files"]] == ["scan.zip", "scan/slice0.tif"]

    again = httpx.post(
        f"{live_server.url}/api/v1/datasets/{uuid}/reprocess",
        json={"output_format": "idx"},
        headers=live_server.headers(),
    )
    assert again.status_code == 202, again.text
    assert again.json()["next"] == "dataset_conversion"
    page = _wait(live_server, uuid, FINAL)
    assert page["status"] == "done"
    assert len([j for j in page["jobs"] if j["job_type"] == "dataset_conversion"]) == 2
    assert np.array_equal(ov.LoadDataset(str(idx)).read(), stack)
    other = httpx.post(
        f"{live_server.url}/api/v1/datasets/{uuid}/reprocess",
        json={"output_format": "png"},
        headers=live_server.headers(),
    )
    assert other.status_code == 422 and "output_format" in other.text
    hidden = httpx.post(
        f"{live_server.url}/api/v1/datasets/{uuid}/reprocess",
        headers=live_server.headers("mallory@example.org"),
    )
    assert hidden.status_code == 404


@pytest.mark.integration
def test_wrong_format_and_other_sensor_through_the_server(
    live_server: LiveServer,
) -> None:
    """A text file uploaded as a TIFF dataset ends `conversion error` with a
    message naming it; the same bytes as sensor OTHER end `done`."""
    bad = httpx.post(
        f"{live_server.url}/api/upload/upload",
        files={"file": ("notes.tif", b"just some text, not an image")},
        data={"dataset_name": "Bad", "sensor": "TIFF"},
        headers=live_server.headers(),
    ).json()
    page = _wait(live_server, bad["dataset_uuid"], FINAL)
    assert page["status"] == "conversion error"
    assert "notes.tif" in page["error_message"]
    other = httpx.post(
        f"{live_server.url}/api/upload/upload",
        files={"file": ("notes.tif", b"just some text, not an image")},
        data={"dataset_name": "Other", "sensor": "OTHER"},
        headers=live_server.headers(),
    ).json()
    page = _wait(live_server, other["dataset_uuid"], FINAL)
    assert page["status"] == "done"
    assert [j["job_type"] for j in page["jobs"]] == ["upload"]
