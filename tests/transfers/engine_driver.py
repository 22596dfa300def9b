"""Run one engine copy in its own process (for the crash and memory tests).

Usage: python -m tests.transfers.engine_driver SRC DEST DB CHUNK PARALLEL [DELAY]

Sessions live in the SQLite file DB, so a second run resumes the first. Prints the
result as JSON on stdout, with this process's peak RSS.
"""

from __future__ import annotations

import json
import sys

from sclib.backends.sqlite_sessions import SQLiteSessionStore
from sclib.transfers import TransferConfig, TransferEngine
from tests.transfers.engine_sources import install


def _peak_rss_kib() -> int:
    """This process image's peak RSS (VmHWM). Not getrusage(): on Linux its
    ru_maxrss keeps the peak of the parent that forked us, from before exec."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    src, dest, db, chunk, parallel = sys.argv[1:6]
    delay = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    install()
    sessions = SQLiteSessionStore(db)
    engine = TransferEngine(
        sessions=sessions,
        config=TransferConfig(chunk_size=int(chunk), parallel=int(parallel)),
    )
    options = {"delay": delay} if src.startswith("slow://") else {}
    result = engine.copy(src, dest, source_options=options)
    peak_kib = _peak_rss_kib()
    print(json.dumps([{**vars(f), "peak_rss_kib": peak_kib} for f in result.files]))
    sessions.close()


if __name__ == "__main__":
    main()
