"""A worker process killed with SIGKILL in the middle of a conversion.

A real ``sclib worker`` process converts a TIFF stack; as soon as its temp folder
has output in it, the process is killed. The final path must never show partial
output (it is watched the whole time), and once the lease expires a new worker
process retries the job, whose output reads back the same values as the input.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import blake3
import pytest

from sclib.datasets import Dataset, DatasetFile, open_dataset_store
from sclib.jobs.queue import JobQueue
from sclib.pipeline.conversion import MARKER, converted_dir
from sclib.pipeline.flow import Pipeline
from sclib.settings import Settings

np = pytest.importorskip("numpy")
tifffile = pytest.importorskip("tifffile")
ov = pytest.importorskip("OpenVisus")

UUID = "9" * 32


def _worker(data_dir: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SCLIB_DATA_DIR": str(data_dir),
        "SCLIB_BACKEND": url,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sclib",
                "worker",
                "--handlers",
                "sclib.pipeline:handlers_from_settings",
                "--lease-seconds",
                "2",
                "--poll-interval",
                "0.05",
                "--rescue-interval",
                "0.5",
                "--max-jobs",
                "1",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.integration
@pytest.mark.slow
def test_sigkill_during_conversion_then_retry_gives_the_same_output(
    tmp_path: Path,
) -> None:
    """SIGKILL mid-conversion: nothing at converted/<uuid> until the retried
    attempt publishes; the job completes on attempt 2 and the output equals the
    input stack."""
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir)
    url = settings.backend_url()
    stack = np.random.default_rng(7).integers(0, 4000, (96, 256, 256), np.uint16)
    folder = data_dir / "upload" / UUID
    folder.mkdir(parents=True)
    tifffile.imwrite(folder / "stack.tif", stack)
    data = (folder / "stack.tif").read_bytes()
    datasets = open_dataset_store(url)
    datasets.create(Dataset(uuid=UUID, name="crash", owner="a@b.org", sensor="TIFF"))
    datasets.add_files(
        UUID,
        [DatasetFile("stack.tif", len(data), blake3.blake3(data).hexdigest())],
    )
    queue = JobQueue.open(url)
    job_id = Pipeline(queue, datasets, data_dir).queue_conversion(datasets.get(UUID))[
        "job_id"
    ]
    final = converted_dir(data_dir, UUID)
    temp = data_dir / "tmp" / "convert" / f"{job_id}-1"
    log = tmp_path / "worker.log"

    first = _worker(data_dir, url, log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert not final.exists(), "output visible before the conversion ended"
            if temp.is_dir() and any(temp.rglob("*")):
                break
            time.sleep(0.002)
        else:
            pytest.fail(f"the conversion never started:\n{log.read_text()}")
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert queue.get(job_id).status == "running"  # its lease still holds
    assert not final.exists()

    second = _worker(data_dir, url, log)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and queue.get(job_id).status == "running":
            # a reader of the final path sees nothing or the whole output
            if final.exists():
                assert (final / MARKER).is_file(), "partial output at the final path"
            time.sleep(0.01)
        second.wait(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    job = queue.get(job_id)
    assert job.status == "completed", log.read_text()
    assert job.attempts == 2
    assert np.array_equal(ov.LoadDataset(str(final / "visus.idx")).read(), stack)
    assert datasets.get(UUID).status == "done"
    assert not temp.exists()
    queue.close()
    datasets.close()
