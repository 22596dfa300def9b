"""Migrated uploads (`upload` jobs with source `legacy`) whose folder holds names
the dataset record cannot take: a real SQLite queue and dataset store, real files
in the data folder, the server's own handlers."""

from __future__ import annotations

import os

import pytest

from sclib.datasets import Dataset
from sclib.jobtypes import JobType
from tests.pipeline.pipeline_setup import OWNER, Setup


@pytest.mark.parametrize(
    ("name", "said"),
    [
        (b"back\\slash.bin", "backslash"),
        (b"line\nbreak.bin", "control character"),
        (b"latin1-\xe9t\xe9.bin", "not valid UTF-8"),
    ],
)
def test_an_unrecordable_name_fails_the_migrated_upload_naming_it(
    setup: Setup, name: bytes, said: str
) -> None:
    """A file whose name a dataset record cannot hold (a backslash, a control
    character, bytes that are not UTF-8) fails the migrated upload at once with
    an error naming the file, the dataset moves to `upload error` with that
    message (not left `uploading`), and no file is recorded."""
    uuid = "2" * 32
    folder = setup.data_dir / "upload" / uuid
    folder.mkdir(parents=True)
    (folder / "fine.bin").write_bytes(b"fine")
    fd = os.open(os.fsencode(folder) + b"/" + name, os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    setup.datasets.create(Dataset(uuid=uuid, name="old", owner=OWNER, sensor="OTHER"))
    setup.datasets.set_status(uuid, "uploading")
    job = setup.queue.enqueue(
        JobType.UPLOAD,
        {"source": "legacy"},
        dataset_uuid=uuid,
        owner=OWNER,
        max_attempts=2,
    )
    setup.queue.run_until_idle()
    failed = setup.queue.get(job.id)
    assert failed.status == "failed" and failed.attempts == 1
    assert said in (failed.error or "")
    assert "fine.bin" not in (failed.error or "")
    state = setup.datasets.get(uuid)
    assert state.status == "upload error"
    assert said in (state.error_message or "")
    assert state.files == ()
