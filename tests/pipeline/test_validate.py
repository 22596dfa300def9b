"""The data_validation job: a scrub of a dataset's files against their records."""

from __future__ import annotations

import os
from pathlib import Path

import blake3

from sclib.datasets import Dataset, DatasetFile, MemoryDatasetStore
from sclib.jobs.context import JobContext
from sclib.jobtypes import JobStatus
from sclib.models import Job
from sclib.pipeline.validate import ValidationHandler

UUID = "f" * 32


def _ctx() -> JobContext:
    job = Job(
        id="2" * 32,
        type="data_validation",
        status=JobStatus.RUNNING,
        priority=2,
        dataset_uuid=UUID,
        owner="alice@example.org",
        worker_id="w",
        attempts=1,
    )
    return JobContext(job)


def test_scrub_reports_missing_and_corrupted_files(tmp_path: Path) -> None:
    """Intact files pass; a flipped byte and a deleted file are reported by path,
    and the dataset keeps its status with an error message naming them."""
    folder = tmp_path / "upload" / UUID
    (folder / "sub").mkdir(parents=True)
    data = {name: os.urandom(4096) for name in ("a.raw", "sub/b.raw", "c.raw")}
    for name, body in data.items():
        (folder / name).write_bytes(body)
    store = MemoryDatasetStore()
    store.create(Dataset(uuid=UUID, name="D", owner="alice@example.org", sensor="IDX"))
    store.add_files(
        UUID,
        [DatasetFile(n, len(b), blake3.blake3(b).hexdigest()) for n, b in data.items()],
    )
    handler = ValidationHandler(tmp_path, store)
    clean = handler(_ctx())
    assert (clean["ok"], clean["checked"], clean["corrupted"]) == (True, 3, [])
    assert store.get(UUID).error_message is None
    with open(folder / "sub" / "b.raw", "r+b") as f:
        f.seek(100)
        f.write(bytes([data["sub/b.raw"][100] ^ 1]))
    (folder / "c.raw").unlink()
    report = handler(_ctx())
    assert report["ok"] is False
    assert report["corrupted"] == ["sub/b.raw"]
    assert report["missing"] == ["c.raw"]
    record = store.get(UUID)
    assert record.status == "submitted"
    assert record.error_message is not None
    assert "sub/b.raw" in record.error_message and "c.raw" in record.error_message
