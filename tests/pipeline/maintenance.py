"""Helpers for the maintenance-job tests: a real SQLite dataset store, a dataset
folder with files of known bytes, and a JobContext for a job of a given type."""

from __future__ import annotations

import os
import uuid as _uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blake3 import blake3

from sclib.datasets import Dataset, DatasetFile, DatasetStore, open_dataset_store
from sclib.jobs.context import JobContext
from sclib.jobtypes import DatasetStatus, JobStatus
from sclib.models import Job

OWNER = "alice@example.org"


def sqlite_datasets(tmp_path: Path) -> DatasetStore:
    """A dataset store in a real SQLite file under ``tmp_path``."""
    return open_dataset_store(f"sqlite:///{tmp_path / 'datasets.db'}")


def make_dataset(
    data_dir: Path,
    store: DatasetStore,
    files: Mapping[str, bytes],
    *,
    name: str = "Scan Set",
    status: DatasetStatus = DatasetStatus.DONE,
    sensor: str = "OTHER",
) -> str:
    """A dataset with ``files`` written under ``<data>/upload/<uuid>/`` and recorded
    (path, size, BLAKE3); its status is walked to ``status`` through the table."""
    record = store.create(Dataset(name=name, owner=OWNER, sensor=sensor))
    folder = data_dir / "upload" / record.uuid
    for path, body in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    store.add_files(
        record.uuid,
        [DatasetFile(p, len(b), blake3(b).hexdigest()) for p, b in files.items()],
    )
    if status is not DatasetStatus.SUBMITTED:
        if status is not DatasetStatus.DONE:
            store.set_status(record.uuid, DatasetStatus.DONE)
        store.set_status(record.uuid, status)
    return record.uuid


def sample_files(seed: int = 1) -> dict[str, bytes]:
    """A few files: compressible text, random bytes, an empty file, a nested one."""
    rnd = os.urandom(300_000) if seed else b""
    return {
        "readme.txt": b"scan notes\n" * 5000,
        "raw/frame_000.raw": rnd,
        "raw/sub/empty.dat": b"",
        "meta/params.json": b'{"exposure": 0.25, "gain": 4}',
    }


def job_context(
    job_type: str,
    dataset_uuid: str | None,
    parameters: Mapping[str, Any] | None = None,
    *,
    job_id: str | None = None,
    attempt: int = 1,
) -> JobContext:
    """A JobContext for a running job, as a worker would hand it to a handler."""
    job = Job(
        id=job_id or _uuid.uuid4().hex,
        type=job_type,
        status=JobStatus.RUNNING,
        priority=2,
        parameters=dict(parameters or {}),
        dataset_uuid=dataset_uuid,
        owner=OWNER,
        worker_id="w-test",
        attempts=attempt,
    )
    return JobContext(job)


def digests(folder: Path) -> dict[str, str]:
    """relative path -> BLAKE3 of every file under ``folder``."""
    return {
        p.relative_to(folder).as_posix(): blake3(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
