"""The handler the MongoDB multi-process test's worker processes run.

Its side effect is a marker document in MongoDB: ``effects`` gets one document
whose ``_id`` is the job id, inserted with the store's write concern. It follows
the pattern the guarantees ask of a handler under at-least-once execution for a
database effect (an insert keyed by the job id): a second attempt of the same
job finds the marker (DuplicateKeyError) and commits nothing, so a job's effect
is committed at most once, and the queue's retries make it at least once.

It also declares a periodic job (``mongo_tick``, every second, missed ticks all
enqueued) that every worker process schedules.

Every start and end of the effect handler is also appended to ``<out>/executions.log``
(``start|end job_id attempt pid monotonic_time``), so the test can show that some
jobs ran more than once, that no attempt ran twice and that no two executions of
one job overlapped.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from sclib import HandlerRegistry, JobContext

handlers = HandlerRegistry()

EFFECT = "mongo_effect"

_clients: dict[str, Any] = {}
_lock = threading.Lock()


def _client(url: str) -> Any:
    """One pymongo client per URL and process (clients are thread-safe)."""
    import pymongo

    with _lock:
        if url not in _clients:
            _clients[url] = pymongo.MongoClient(
                url, tz_aware=True, serverSelectionTimeoutMS=10_000
            )
        return _clients[url]


def _log(ctx: JobContext, kind: str) -> None:
    """One line, appended in one write (O_APPEND: lines of processes never mix)."""
    line = f"{kind} {ctx.job.id} {ctx.attempt} {os.getpid()} {time.monotonic()}\n"
    fd = os.open(
        Path(ctx.parameters["out"]) / "executions.log",
        os.O_WRONLY | os.O_APPEND | os.O_CREAT,
        0o644,
    )
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@handlers.register(EFFECT, timeout=120)
def effect(ctx: JobContext) -> dict[str, Any]:
    """Insert the job's marker into ``effects`` once, whatever the attempts."""
    from pymongo.errors import DuplicateKeyError
    from pymongo.write_concern import WriteConcern

    params = ctx.parameters
    _log(ctx, "start")
    time.sleep(float(params.get("work_seconds", 0.01)))
    ctx.check()
    effects = _client(params["mongo_url"])[params["database"]].get_collection(
        "effects", write_concern=WriteConcern(w="majority", j=True)
    )
    try:
        effects.insert_one(
            {
                "_id": ctx.job.id,
                "i": params["i"],
                "attempt": ctx.attempt,
                "pid": os.getpid(),
            }
        )
        committed = True
    except DuplicateKeyError:
        committed = False  # an earlier attempt committed it; do not do it again
    # a little more work after the commit, so that some kills land between the
    # commit and the completion (the next attempt must then commit nothing)
    time.sleep(float(params.get("after_seconds", 0.0)))
    _log(ctx, "end")
    return {"committed": committed, "attempt": ctx.attempt}


TICK = "mongo_tick"


@handlers.register(TICK)
def tick(ctx: JobContext) -> dict[str, Any]:
    """A periodic job: every worker process checks the schedule; one job per
    tick must exist however many of them do."""
    return {"scheduled_for": ctx.parameters["scheduled_for"]}


# every second; the kills can leave no worker started for a second or two, and
# "all" has the next worker to start enqueue the ticks missed meanwhile
handlers.schedule(TICK, "* * * * * *", TICK, missed="all", max_catchup=30)
