"""The four maintenance jobs as the server's worker runs them: handlers built by
handlers_from_settings from Settings, jobs queued in a real SQLite job store and
run by the queue's worker loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from blake3 import blake3

from sclib.datasets import open_dataset_store
from sclib.jobs.queue import JobQueue
from sclib.jobtypes import DatasetStatus, JobType
from sclib.pipeline.upload import handlers_from_settings
from sclib.settings import Settings
from tests.pipeline.maintenance import digests, make_dataset, sample_files


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Settings, JobQueue]]:
    roots = tmp_path / "roots"
    roots.mkdir()
    settings = Settings(
        data_dir=tmp_path / "data",
        backup_url=str(tmp_path / "backups"),
        upload_path_roots=str(roots),
        rsync_hosts="data.example.org",
    )
    (tmp_path / "data").mkdir()
    handlers = handlers_from_settings(settings)
    queue = JobQueue.open(settings.backend_url(), handlers=handlers)
    try:
        yield settings, queue
    finally:
        queue.close()


def test_the_registry_runs_all_four_maintenance_jobs(
    tmp_path: Path, setup: tuple[Settings, JobQueue]
) -> None:
    """handlers_from_settings registers data_compression, backup_creation,
    rsync_transfer and google_sync; the first three complete through the queue
    (archive BLAKE3 matches the file, the backup lands under SCLIB_BACKUP_URL, the
    rsync'ed files are recorded) and google_sync without credentials fails with a
    message saying they must be sealed."""
    settings, queue = setup
    handlers = handlers_from_settings(settings)
    for job_type in (
        JobType.DATA_COMPRESSION,
        JobType.BACKUP_CREATION,
        JobType.RSYNC_TRANSFER,
        JobType.GOOGLE_SYNC,
    ):
        assert job_type.value in handlers
    datasets = open_dataset_store(settings.backend_url())
    try:
        uuid = make_dataset(settings.data_dir, datasets, sample_files())
        pack = queue.enqueue(JobType.DATA_COMPRESSION, {}, dataset_uuid=uuid)
        backup = queue.enqueue(JobType.BACKUP_CREATION, {}, dataset_uuid=uuid)
        run = tmp_path / "roots" / "run1"
        run.mkdir()
        (run / "x.bin").write_bytes(b"x" * 5000)
        sync = queue.enqueue(
            JobType.RSYNC_TRANSFER, {"source": str(run)}, dataset_uuid=uuid
        )
        drive = queue.enqueue(
            JobType.GOOGLE_SYNC,
            {"folder_id": "abc123", "access_token": "plain"},
            dataset_uuid="b" * 32,
        )
        queue.run_until_idle()
        done = queue.get(pack.id)
        assert done.status == "completed", done.error
        archive = settings.data_dir / done.result["archive"]
        assert done.result["blake3"] == blake3(archive.read_bytes()).hexdigest()
        copied = queue.get(backup.id)
        assert copied.status == "completed", copied.error
        backed_up = digests(tmp_path / "backups" / uuid)
        assert backed_up == {f["path"]: f["blake3"] for f in copied.result["files"]}
        assert backed_up.items() <= digests(settings.data_dir / "upload" / uuid).items()
        synced = queue.get(sync.id)
        assert synced.status == "completed", synced.error
        record = datasets.get(uuid)
        assert "run1/x.bin" in {f.path for f in record.files}
        assert record.status == DatasetStatus.DONE
        failed = queue.get(drive.id)
        assert failed.status == "failed"
        assert "must be sealed" in (failed.error or "")
    finally:
        datasets.close()
