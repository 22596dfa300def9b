"""What the maintenance jobs share when they run the TransferEngine for a job.

:func:`engine_copy` runs one copy with the job's progress reported and its
cancellation, time limit and lost lease turned into an engine cancel (the engine
stops after the chunks in flight and keeps its sessions, so the next attempt
resumes). :func:`local_files` turns a copy into a local folder into the file list a
dataset record takes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sclib.errors import TransferCancelled
from sclib.jobs.context import JobContext
from sclib.transfers.engine import TransferEngine, TransferResult
from sclib.transfers.progress import Progress

__all__ = ["PART_GLOB", "JobProgress", "engine_copy", "local_files"]

#: the temp files a local destination writes beside a file until it commits
PART_GLOB = "*.sclib-part"


class JobProgress:
    """An engine subscriber: progress -> the job; a stop request -> the engine.

    Two facts, kept apart: the job's ``percentage`` follows the bytes
    *received* (counted as they arrive, see :mod:`sclib.transfers.progress`), so
    a running import moves even while its only chunk is downloading;
    ``bytes_done`` stays the bytes *verified* (written, checked and recorded:
    what a retry never sends again), so it may lag the percentage. The message
    is the file being copied.
    """

    def __init__(self, ctx: JobContext, cancel: threading.Event) -> None:
        self.ctx = ctx
        self.cancel = cancel

    def on_progress(self, progress: Progress, **_: Any) -> None:
        total = progress.bytes_total
        self.ctx.report(
            100.0 * progress.fraction_received if total else None,
            bytes_done=progress.bytes_verified,
            bytes_total=total,
            message=progress.current,
        )
        if self.ctx.should_stop:
            self.cancel.set()


def engine_copy(
    ctx: JobContext,
    engine: TransferEngine,
    source: str,
    destination: str,
    *,
    source_options: Mapping[str, Any] | None = None,
    dest_options: Mapping[str, Any] | None = None,
    exclude: Sequence[str] = (),
) -> TransferResult:
    """``engine.copy`` for a job; a stop request surfaces as the job's own error
    (:class:`~sclib.errors.JobCancelled`, ``JobTimeout``, ``LeaseLost``)."""
    ctx.check()
    cancel = threading.Event()
    try:
        result = engine.copy(
            source,
            destination,
            exclude=exclude,
            source_options=source_options,
            dest_options=dest_options,
            subscribers=[JobProgress(ctx, cancel)],
            cancel=cancel,
        )
    except TransferCancelled:
        ctx.check()  # raises the reason the job was stopped
        raise
    ctx.check()
    return result


def local_files(result: TransferResult, folder: Path) -> list[dict[str, Any]]:
    """The copied files as ``{path, size, blake3}``, paths relative to ``folder``."""
    from sclib.transfers.local import local_path

    root = folder.resolve()
    return [
        {
            "path": local_path(f.dest_url).resolve().relative_to(root).as_posix(),
            "size": f.size,
            "blake3": f.blake3,
        }
        for f in result.files
    ]
