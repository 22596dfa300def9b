"""The SDK in one short script, the way the docs show it: a custom job type in
one line, a copy with a progress bar that a second run (a new process) does not
repeat, and an upload to a server followed to the end.

    python examples/05_sdk_tour/run.py [FOLDER]

Run it twice with the same FOLDER: the second run copies nothing again.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import sclib
from sclib import HandlerRegistry, JobContext, JobQueue, TransferEngine
from sclib.client import Client
from sclib.server import serve_in_background
from sclib.settings import load_settings

handlers = HandlerRegistry()


@handlers.register("thumbnail", timeout=60, max_attempts=2)
def thumbnail(ctx: JobContext) -> dict[str, int]:
    """A job type of our own: one line above, a function here."""
    size = Path(ctx.job.parameters["path"]).stat().st_size
    ctx.report(100, message="thumbnail made")
    return {"bytes_read": size}


def main(folder: Path) -> None:
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for n in range(4):  # the same frames on every run
        frame = raw / f"frame_{n}.bin"
        if not frame.exists():
            frame.write_bytes(bytes([n]) * (3 * 2**20))

    # 1. a copy with a bar; sessions persist per user, so a new process resumes
    with TransferEngine() as engine:
        copied = engine.copy(str(raw), str(folder / "copy"), progress=True)
    sent = sum(f.chunks_sent for f in copied.files)
    reused = sum(f.chunks_reused for f in copied.files)
    print(f"copied {len(copied.files)} files: sent {sent} chunks, reused {reused}")

    # 2. the custom job type, run and waited for
    queue = JobQueue.open(f"sqlite:///{folder / 'jobs.db'}", handlers=handlers)
    job = queue.enqueue("thumbnail", {"path": str(raw / "frame_0.bin")})
    queue.run_until_idle()
    done = queue.wait(job.id, timeout=30)
    print(f"thumbnail job: {done.status.value}, result {done.result}")
    queue.close()

    # 3. an upload to a server (here one started in this process), to the end
    settings = load_settings(data_dir=folder / "server", no_auth=True)
    with serve_in_background(settings) as server:
        status = sclib.upload(
            raw / "frame_1.bin", server.url, sensor="OTHER", progress=True
        )
        print(f"upload job: {status.status}")
        with Client(server.url) as client:
            print(f"server limit: {client.get_limits().standard_upload_limit} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
