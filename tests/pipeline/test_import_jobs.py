"""Server-side import jobs (``upload`` with source ``import``) on a real SQLite
queue run by a real worker: a URL import's progress moves while it downloads
from a slow HTTP server on 127.0.0.1, and an S3 import whose region no store
takes fails once, without retries."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sclib.datasets import DatasetStore, open_dataset_store
from sclib.jobs.queue import JobQueue
from sclib.jobs.registry import HandlerRegistry
from sclib.jobs.worker import Worker
from sclib.jobtypes import JobType
from sclib.pipeline.upload import handlers_from_settings
from sclib.settings import Settings
from tests.pipeline.pipeline_setup import OWNER
from tests.transfers.http_servers import serve

KIB = 1024


@dataclass
class Imports:
    data_dir: Path
    queue: JobQueue
    datasets: DatasetStore
    handlers: HandlerRegistry

    def enqueue(self, source_type: str, config: dict[str, str]) -> tuple[str, str]:
        """An import job of a new dataset; returns (job id, dataset uuid)."""
        dataset = uuid.uuid4().hex
        job = self.queue.enqueue(
            JobType.UPLOAD,
            {
                "source": "import",
                "source_type": source_type,
                "source_config": config,
                "dataset": {"dataset_name": "imported", "sensor": "OTHER"},
            },
            dataset_uuid=dataset,
            owner=OWNER,
        )
        return job.id, dataset


@pytest.fixture
def imports(tmp_path: Path) -> Iterator[Imports]:
    """The server's handlers over a data folder, allowed to reach loopback (the
    tests' HTTP server lives there)."""
    settings = Settings(data_dir=tmp_path, allow_private_addresses=True)
    url = settings.backend_url()
    handlers = handlers_from_settings(settings)
    queue = JobQueue.open(url, handlers=handlers)
    datasets = open_dataset_store(url)
    try:
        yield Imports(tmp_path, queue, datasets, handlers)
    finally:
        queue.close()
        datasets.close()


def test_a_url_import_job_moves_while_it_downloads(imports: Imports) -> None:
    """A 1.5 MiB URL import (one chunk) from a server that sends 32 KiB every
    20 ms, run by a worker whose heartbeat stores progress: the job's percentage,
    sampled while it runs, takes values strictly between 0 and 100 and never goes
    back; bytes_done (verified) never runs ahead of it; the file lands whole."""
    data = os.urandom(1536 * KIB)
    with serve() as http:
        http.put("/share/volume.bin", data)
        http.pace = (32 * KIB, 0.02)
        job_id, dataset = imports.enqueue("url", {"url": http.url("/share/volume.bin")})
        worker = Worker(
            imports.queue,
            imports.handlers,
            poll_interval=0.02,
            heartbeat_interval=0.05,
        )
        runner = threading.Thread(target=worker.run, kwargs={"until_idle": True})
        runner.start()
        samples: list[tuple[float, int | None, int | None]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = imports.queue.get(job_id)
            if job.finished:
                break
            progress = job.progress
            if job.status == "running" and progress.percentage is not None:
                samples.append(
                    (progress.percentage, progress.bytes_done, progress.bytes_total)
                )
            time.sleep(0.02)
        runner.join(timeout=30)
    job = imports.queue.get(job_id)
    assert job.status == "completed", job.error
    assert (imports.data_dir / "upload" / dataset / "volume.bin").read_bytes() == data
    between = [p for p, _, _ in samples if 0 < p < 100]
    assert len(between) >= 2, samples
    percentages = [p for p, _, _ in samples]
    assert percentages == sorted(percentages), samples
    for pct, done, total in samples:
        assert total == len(data)
        assert done is not None and done <= pct / 100 * total + 1


def test_an_import_with_an_invalid_region_fails_once(imports: Imports) -> None:
    """An S3 import queued with a region no store takes (as jobs queued before
    submissions were checked can be) fails at its first attempt with the field
    and the rule, is not retried (botocore's InvalidRegionError was), and its
    dataset says `upload error`."""
    job_id, dataset = imports.enqueue(
        "s3",
        {
            "bucket_name": "lab-data",
            "object_key": "run7/frame.raw",
            "region": "not a region!",
            "endpoint_url": "http://127.0.0.1:9",
        },
    )
    imports.queue.run_until_idle()
    job = imports.queue.get(job_id)
    assert job.status == "failed" and job.attempts == 1, (job.status, job.error)
    assert "source_config.region" in (job.error or "")
    assert job.error_history[-1].kind == "fatal"
    assert imports.datasets.get(dataset).status == "upload error"
