"""The demo behind ``sclib demo``: an embedded queue, a few jobs, a worker.

It makes three small synthetic datasets in a data folder, then enqueues for each a
validation job (hash every byte), a compression job that depends on it, and one
backup job that fails once on purpose to show a retry with backoff. A worker with
two slots drains the queue; the results come back as rows for the CLI to print.

The handlers here are real (they read, hash, compress and copy files, and commit by
atomic rename, so a re-run after a crash is harmless) but they are demo handlers:
the pipeline's own handlers for these job types come with the dataset pipeline.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from sclib.jobs.context import JobContext
from sclib.jobs.policy import RetryPolicy
from sclib.jobs.queue import JobQueue
from sclib.jobs.registry import HandlerRegistry
from sclib.jobs.worker import Worker
from sclib.models import Job

__all__ = ["handlers", "run_demo"]

handlers = HandlerRegistry()
_CHUNK = 1 << 20


def _commit(tmp: Path, final: Path) -> None:
    """Make ``tmp`` durable, then move it into place atomically."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


@handlers.register("data_validation")
def validate(ctx: JobContext) -> dict[str, Any]:
    """Hash a file in chunks, reporting progress; the result is its SHA-256."""
    path = Path(ctx.parameters["path"])
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            ctx.check()
            digest.update(block)
            done += len(block)
            ctx.report(bytes_done=done, bytes_total=total, message=path.name)
    return {"file": path.name, "bytes": total, "sha256": digest.hexdigest()}


@handlers.register("data_compression")
def compress(ctx: JobContext) -> dict[str, Any]:
    """Gzip a file next to an attempt-scoped temp name, then rename into place."""
    src = Path(ctx.parameters["path"])
    dst = Path(ctx.parameters["output"])
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.attempt{ctx.attempt}.tmp")
    with open(src, "rb") as fin, gzip.open(tmp, "wb", compresslevel=6) as fout:
        while block := fin.read(_CHUNK):
            ctx.check()
            fout.write(block)
    _commit(tmp, dst)
    size_in, size_out = src.stat().st_size, dst.stat().st_size
    return {
        "file": dst.name,
        "bytes_in": size_in,
        "bytes_out": size_out,
        "ratio": round(size_in / max(size_out, 1), 2),
    }


@handlers.register("backup_creation")
def backup(ctx: JobContext) -> dict[str, Any]:
    """Copy a file to a backup folder; ``fail_first`` simulates a transient error."""
    if ctx.parameters.get("fail_first") and ctx.attempt == 1:
        raise ConnectionError("backup target unreachable (simulated, first try only)")
    src = Path(ctx.parameters["path"])
    dst = Path(ctx.parameters["output"])
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.attempt{ctx.attempt}.tmp")
    shutil.copyfile(src, tmp)
    _commit(tmp, dst)
    return {"file": dst.name, "bytes": dst.stat().st_size}


def _make_dataset(path: Path, rows: int, seed: int) -> None:
    """A CSV of a damped oscillation, like a small sensor time series."""
    import math

    with open(path, "w", encoding="ascii") as fh:
        fh.write("t,signal\n")
        for i in range(rows):
            t = i / 100.0
            fh.write(f"{t:.2f},{math.exp(-t / 50) * math.sin(t * (seed + 1)):.6f}\n")


def run_demo(data_dir: Path, *, datasets: int = 3, rows: int = 20_000) -> list[Job]:
    """Run the demo in ``data_dir`` (a fresh database each time); return the jobs."""
    data_dir.mkdir(parents=True, exist_ok=True)
    db = data_dir / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    inputs = data_dir / "upload"
    inputs.mkdir(exist_ok=True)
    queue = JobQueue.open(
        "sqlite:///" + str(db.resolve()),
        retry_policy=RetryPolicy(base_delay=0.5, jitter=0.2),
    )
    try:
        made: list[Job] = []
        for n in range(datasets):
            src = inputs / f"dataset_{n}.csv"
            _make_dataset(src, rows, n)
            check = queue.enqueue(
                "data_validation", {"path": str(src)}, dataset_uuid=f"demo-{n}"
            )
            pack = queue.enqueue(
                "data_compression",
                {
                    "path": str(src),
                    "output": str(data_dir / "converted" / f"{src.name}.gz"),
                },
                dataset_uuid=f"demo-{n}",
                depends_on=[check.id],
            )
            made += [check, pack]
        made.append(
            queue.enqueue(
                "backup_creation",
                {
                    "path": str(inputs / "dataset_0.csv"),
                    "output": str(data_dir / "backup" / "dataset_0.csv"),
                    "fail_first": True,
                },
                dataset_uuid="demo-0",
            )
        )
        worker = Worker(
            queue,
            handlers,
            concurrency=2,
            poll_interval=0.1,
            lease_seconds=10,
            grace_period=5,
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(queue.get(j.id).finished for j in made):
                break
            time.sleep(0.1)
        worker.stop()
        thread.join(timeout=10)
        return [queue.get(j.id) for j in made]
    finally:
        queue.close()
