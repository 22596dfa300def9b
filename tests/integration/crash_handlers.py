"""The handler the crash test's worker processes run.

Its side effect is a file ``<out>/<job id>`` holding the job's parameters. It follows
the pattern a handler needs to be idempotent under at-least-once execution: write
to an attempt-scoped temp file, make it durable, then commit with ``os.link``, which
fails if the final file already exists. So whatever happens to a worker, a job's
effect is committed at most once, and the queue's retries make it at least once.
Every start of the handler is also appended to ``<out>/executions.log`` so the test
can show that some jobs really ran more than once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from sclib import HandlerRegistry, JobContext

handlers = HandlerRegistry()


@handlers.register("data_validation")
def effect(ctx: JobContext) -> dict[str, Any]:
    out = Path(ctx.parameters["out"])
    for stale in out.glob(f".{ctx.job.id}.*.tmp"):  # left by a killed attempt
        stale.unlink(missing_ok=True)
    line = f"{ctx.job.id} {ctx.attempt} {os.getpid()}\n".encode()
    fd = os.open(out / "executions.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    time.sleep(float(ctx.parameters.get("work_seconds", 0.005)))
    final = out / ctx.job.id
    tmp = out / f".{ctx.job.id}.{ctx.attempt}.{os.getpid()}.tmp"
    payload = json.dumps({"i": ctx.parameters["i"], "attempt": ctx.attempt})
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, final)
        committed = True
    except FileExistsError:
        committed = False  # an earlier attempt committed it; do not do it again
    finally:
        tmp.unlink(missing_ok=True)
    return {"committed": committed}
