"""A real pipeline for the tests of tests/pipeline: a data folder, an SQLite queue
with the server's handlers, the dataset store beside it, and a Pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import pytest

from sclib.datasets import Dataset, DatasetFile, DatasetStore, open_dataset_store
from sclib.jobs.queue import JobQueue
from sclib.pipeline.flow import Pipeline
from sclib.pipeline.upload import handlers_from_settings
from sclib.settings import Settings

OWNER = "alice@example.org"


@dataclass
class Setup:
    data_dir: Path
    queue: JobQueue
    datasets: DatasetStore
    pipeline: Pipeline

    def add_dataset(
        self, uuid: str, files: dict[str, bytes], *, sensor: str = "TIFF", **kw: Any
    ) -> Dataset:
        """A dataset whose files are in its folder and, with their BLAKE3, in its
        record, as an upload leaves them."""
        folder = self.data_dir / "upload" / uuid
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        self.datasets.create(
            Dataset(uuid=uuid, name=uuid[:6], owner=OWNER, sensor=sensor, **kw)
        )
        entries = [
            DatasetFile(name, len(data), blake3.blake3(data).hexdigest())
            for name, data in files.items()
        ]
        self.datasets.add_files(uuid, entries)
        return self.datasets.get(uuid)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """A data folder, an SQLite queue with the server's handlers, and a pipeline."""
    settings = Settings(data_dir=tmp_path)
    url = settings.backend_url()
    queue = JobQueue.open(url, handlers=handlers_from_settings(settings))
    datasets = open_dataset_store(url)
    try:
        yield Setup(tmp_path, queue, datasets, Pipeline(queue, datasets, tmp_path))
    finally:
        queue.close()
        datasets.close()
