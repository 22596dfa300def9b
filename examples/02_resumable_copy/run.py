"""Copy a folder, interrupt the copy, resume it."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from sclib.errors import TransferCancelled
from sclib.transfers import TransferConfig, TransferEngine, open_session_store
from sclib.transfers.progress import Progress, ProgressTracker


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="sclib-example-"))
    src = folder / "run_0042"
    for n in range(4):
        (src / "frames").mkdir(parents=True, exist_ok=True)
        (src / "frames" / f"frame_{n:04d}.raw").write_bytes(os.urandom(3 * 2**20))
    sessions = open_session_store(f"sqlite:///{folder}/sessions.db")
    engine = TransferEngine(
        sessions=sessions, config=TransferConfig(chunk_size=256 * 1024)
    )

    stop = threading.Event()

    class StopHalfWay:
        def on_progress(self, progress: Progress, **_: object) -> None:
            if progress.fraction > 0.5:
                stop.set()

    try:
        engine.copy(
            str(src),
            str(folder / "copy"),
            cancel=stop,
            tracker=ProgressTracker([StopHalfWay()], rate=0),
        )
    except TransferCancelled as exc:
        print("interrupted:", exc)

    result = engine.copy(str(src), str(folder / "copy"))
    for f in result.files:
        print(
            f"{f.blake3}  {f.key}  (sent {f.chunks_sent}, reused "
            f"{f.chunks_reused} of {f.chunks} chunks)"
        )
    sessions.close()


if __name__ == "__main__":
    main()
