"""A process of claiming threads for the lease concurrency test.

Usage: ``python -m tests.integration.claimers DB_URL THREADS OUT_JSON SEED``

Each thread claims jobs until none is left and, for each claim, at random either
completes it, releases it, or fails it (retried at once). Before giving a job back
it checks that the lease is still live (a heartbeat must succeed); after giving it
back it checks that the old lease is dead (a second write must raise LeaseLost).
Every claim, and any unexpected LeaseLost, is written to OUT_JSON.
"""

from __future__ import annotations

import json
import random
import sys
import threading
from typing import Any

from sclib import JobQueue, LeaseLost, RetryPolicy


def main() -> None:
    url, threads, out, seed = (
        sys.argv[1],
        int(sys.argv[2]),
        sys.argv[3],
        int(sys.argv[4]),
    )
    queue = JobQueue.open(url, retry_policy=RetryPolicy(base_delay=0.0, jitter=0.0))
    claims: list[dict[str, Any]] = []
    problems: list[str] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        rng = random.Random(seed * 100 + n)
        worker = f"p{seed}-t{n}"
        while True:
            job = queue.claim(worker, lease_seconds=60)
            if job is None:
                return
            lease = job.lease
            action = rng.choice(["complete", "complete", "release", "fail"])
            try:
                queue.heartbeat(lease, lease_seconds=60)
                if action == "complete":
                    queue.complete(lease, {"by": worker, "attempt": lease.attempt})
                elif action == "release":
                    queue.release(lease, "test release")
                else:
                    queue.fail(lease, "test failure")
            except LeaseLost as exc:
                with lock:
                    problems.append(f"live lease refused: {exc}")
            try:
                queue.heartbeat(lease, lease_seconds=60)
                with lock:
                    problems.append(f"dead lease accepted: {lease}")
            except LeaseLost:
                pass
            with lock:
                claims.append(
                    {
                        "job": lease.job_id,
                        "attempt": lease.attempt,
                        "worker": worker,
                        "action": action,
                    }
                )

    pool = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    queue.close()
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"claims": claims, "problems": problems}, fh)


if __name__ == "__main__":
    main()
