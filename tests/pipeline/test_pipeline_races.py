"""Concurrent and failing jobs of one dataset: the dataset's status never sticks
in a step that no job will finish, and a conversion never publishes output made
from files that changed while it ran. Real SQLite queue and dataset store, real
TIFF stacks converted to OpenVisus IDX, real zip archives."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import blake3
import pytest

from sclib.datasets import Dataset, DatasetFile, DatasetStore
from sclib.jobtypes import JobType
from sclib.pipeline.conversion import MARKER, converted_dir
from sclib.pipeline.flow import files_fingerprint
from tests.pipeline.pipeline_setup import OWNER, Setup

np = pytest.importorskip("numpy")
tifffile = pytest.importorskip("tifffile")
ov = pytest.importorskip("OpenVisus")


def _tiff(seed: int, shape: tuple[int, int, int] = (5, 16, 20)) -> tuple[Any, bytes]:
    array = np.random.default_rng(seed).integers(0, 60000, shape, dtype=np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return array, buf.getvalue()


def _entry(path: str, data: bytes) -> dict[str, Any]:
    return {"path": path, "size": len(data), "blake3": blake3.blake3(data).hexdigest()}


def _put(setup: Setup, uuid: str, path: str, data: bytes) -> None:
    target = setup.data_dir / "upload" / uuid / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def _upload(setup: Setup, uuid: str, files: list[dict[str, Any]], **kw: Any) -> str:
    """Queue an upload job as the server does once the bytes are committed."""
    return setup.queue.enqueue(
        JobType.UPLOAD,
        {"source": "upload", "files": files, "dataset": {"sensor": "TIFF"}},
        dataset_uuid=uuid,
        owner=OWNER,
        **kw,
    ).id


def test_a_failed_upload_does_not_leave_the_dataset_conversion_queued(
    setup: Setup,
) -> None:
    """Two uploads into one dataset; the second fails for good. The dataset must
    end in `upload error` naming the bad file, not in `conversion queued` with no
    job left to move it."""
    uuid = "a" * 32
    _, good = _tiff(1)
    _put(setup, uuid, "good.tif", good)
    _put(setup, uuid, "bad.tif", b"stored bytes")
    first = _upload(setup, uuid, [_entry("good.tif", good)])
    second = _upload(setup, uuid, [_entry("bad.tif", b"other bytes!")], max_attempts=1)
    setup.queue.run_until_idle()
    assert setup.queue.get(first).status == "completed"
    assert setup.queue.get(second).status == "failed"
    # the first finished while the second was pending: no conversion was queued
    # (with both running at once, the one queued waits on the other and is
    # cancelled when it fails); either way nothing is left to convert
    assert setup.queue.list(job_type="dataset_conversion") == []
    record = setup.datasets.get(uuid)
    assert record.status == "upload error"
    assert "bad.tif" in (record.error_message or "")


def test_reprocess_after_an_upload_error_reaches_done(setup: Setup) -> None:
    """A dataset left in `upload error` (one of its uploads failed) that the owner
    reprocesses is converted and ends `done`, passing through `retrying`, instead
    of keeping `upload error` because the table refuses `conversion queued`."""
    uuid = "b" * 32
    stack, good = _tiff(2)
    _put(setup, uuid, "good.tif", good)
    setup.datasets.create(Dataset(uuid=uuid, name="b", owner=OWNER, sensor="TIFF"))
    setup.datasets.add_files(uuid, [DatasetFile(**_entry("good.tif", good))])
    setup.datasets.set_status(uuid, "upload queued")
    setup.datasets.set_status(uuid, "upload error", "bad.tif: checksum differs")
    queued = setup.pipeline.reprocess(uuid)
    setup.queue.run_until_idle()
    job = setup.queue.get(queued["job_id"])
    assert job.status == "completed", job.error
    assert setup.datasets.get(uuid).status == "done"
    out = converted_dir(setup.data_dir, uuid) / "visus.idx"
    assert np.array_equal(ov.LoadDataset(str(out)).read(), stack)


class _LateUpload:
    """The TIFF converter, except that during its first run another upload's file
    lands in the dataset and is recorded (what a concurrent upload job does): a
    fake only for the timing, the conversion itself is the real one."""

    name = "late-upload"
    sensors = ("TIFF",)

    def __init__(self, store: DatasetStore, data_dir: Path, late: bytes) -> None:
        from sclib.pipeline.convert import converter_for

        self.inner = converter_for("TIFF")
        self.store = store
        self.data_dir = data_dir
        self.late = late
        self.runs = 0

    def convert(self, request: Any) -> Any:
        self.runs += 1
        result = self.inner.convert(request)  # type: ignore[union-attr]
        if self.runs == 1:
            uuid = request.input_dir.name
            (request.input_dir / "z_late.tif").write_bytes(self.late)
            self.store.add_files(uuid, [DatasetFile(**_entry("z_late.tif", self.late))])
        return result


def test_a_conversion_never_publishes_output_of_files_that_changed_meanwhile(
    setup: Setup,
) -> None:
    """When the dataset's files change while a conversion runs (another upload
    recorded a file), the job does not publish the stale output: the published
    marker always matches the dataset's current file listing, and the volume
    holds the late file's slices too."""
    from sclib.pipeline.convert.registry import register, unregister

    uuid = "c" * 32
    first, early = _tiff(3)
    second, late = _tiff(4)
    _put(setup, uuid, "a_early.tif", early)
    setup.datasets.create(Dataset(uuid=uuid, name="c", owner=OWNER, sensor="TIFF"))
    setup.datasets.add_files(uuid, [DatasetFile(**_entry("a_early.tif", early))])
    converter = _LateUpload(setup.datasets, setup.data_dir, late)
    register(converter, replace=True)
    try:
        queued = setup.pipeline.queue_conversion(setup.datasets.get(uuid))
        setup.queue.run_until_idle()
    finally:
        unregister("TIFF")  # the built-in applies again
    job = setup.queue.get(queued["job_id"])
    assert job.status == "completed", job.error
    out = converted_dir(setup.data_dir, uuid)
    import json

    marker = json.loads((out / MARKER).read_text())
    assert marker["inputs"] == ["a_early.tif", "z_late.tif"]
    record = setup.datasets.get(uuid)
    assert marker["fingerprint"] == files_fingerprint(
        record,
        {"sensor": "TIFF", "output_format": "idx", "options": {}},
    )
    volume = ov.LoadDataset(str(out / "visus.idx")).read()
    assert np.array_equal(volume, np.concatenate([first, second]))


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_an_archive_whose_folder_already_exists_is_not_silently_skipped(
    setup: Setup,
) -> None:
    """A dataset that already has a `scan/` folder (files uploaded earlier) gets
    `scan.zip`: the extraction must not take the existing folder for its own
    earlier output and record it without unpacking; it fails naming `scan`, the
    dataset is `unzip error`, and the files already there are untouched."""
    uuid = "d" * 32
    mine = b"notes the user uploaded"
    _put(setup, uuid, "scan/readme.txt", mine)
    archive = _zip({"frame0.raw": b"\x01" * 500, "frame1.raw": b"\x02" * 500})
    _put(setup, uuid, "scan.zip", archive)
    setup.datasets.create(Dataset(uuid=uuid, name="d", owner=OWNER, sensor="OTHER"))
    setup.datasets.add_files(uuid, [DatasetFile(**_entry("scan/readme.txt", mine))])
    job = setup.queue.enqueue(
        JobType.FILE_EXTRACTION,
        {"archive": "scan.zip"},
        dataset_uuid=uuid,
        owner=OWNER,
        max_attempts=1,
    )
    setup.queue.run_until_idle()
    done = setup.queue.get(job.id)
    assert done.status == "failed"
    assert "scan" in (done.error or "")
    record = setup.datasets.get(uuid)
    assert record.status == "unzip error"
    assert "scan" in (record.error_message or "")
    folder = setup.data_dir / "upload" / uuid / "scan"
    assert sorted(p.name for p in folder.iterdir()) == ["readme.txt"]
    assert (folder / "readme.txt").read_bytes() == mine
