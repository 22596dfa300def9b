"""A small pipeline on the embedded queue: validate, then compress."""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from pathlib import Path

import sclib


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="sclib-example-"))
    data = folder / "scan.raw"
    data.write_bytes(os.urandom(256 * 1024))

    handlers = sclib.HandlerRegistry()

    @handlers.register("data_validation")
    def validate(ctx: sclib.JobContext) -> dict[str, object]:
        path = Path(ctx.parameters["path"])
        ctx.report(50, message=f"hashing {path.name}")
        return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}

    @handlers.register("data_compression")
    def compress(ctx: sclib.JobContext) -> dict[str, object]:
        src = Path(ctx.parameters["path"])
        dst = src.with_suffix(".raw.gz")
        tmp = dst.with_name(f".{dst.name}.attempt{ctx.attempt}")  # idempotent commit
        tmp.write_bytes(gzip.compress(src.read_bytes()))
        tmp.replace(dst)
        return {"bytes": dst.stat().st_size}

    queue = sclib.JobQueue.open(f"sqlite:///{folder}/jobs.db")
    check = queue.enqueue("data_validation", {"path": str(data)}, dataset_uuid="demo")
    pack = queue.enqueue(
        "data_compression",
        {"path": str(data)},
        dataset_uuid="demo",
        depends_on=[check.id],
    )
    sclib.Worker(queue, handlers, concurrency=2, poll_interval=0.1).run(until_idle=True)
    for job in (queue.get(check.id), queue.get(pack.id)):
        print(
            f"{job.type:<17} {job.status.value:<10} tries={job.attempts} "
            f"result={job.result}"
        )
    print("dataset status:", queue.dataset_status("demo"))
    queue.close()


if __name__ == "__main__":
    main()
