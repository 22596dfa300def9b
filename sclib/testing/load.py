"""Many clients uploading at once, and what the server's memory does meanwhile.

:func:`run_load` sends ``files`` one-request uploads of ``size`` bytes from each
of ``clients`` concurrent clients (``/api/upload/upload``, the seed's route),
waits until every job is finished, and reports each request's latency and the
server process's peak resident memory (``VmHWM`` in ``/proc/<pid>/status``, the
kernel's own high-water mark, so no peak is missed between samples).

``tests/server/test_load.py`` runs it in the suite with a bound on the peak;
``benchmarks/upload_load.py`` prints it at 16, 64 and 256 clients.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["LoadResult", "peak_rss", "run_load"]


@dataclass
class LoadResult:
    """What one load run measured."""

    clients: int
    files: int
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)
    peak_rss: int = 0
    seconds: float = 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0

    @property
    def p99(self) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    def summary(self) -> str:
        return (
            f"{self.clients} clients x {self.files} files: "
            f"statuses {dict(sorted(self.statuses.items()))}, "
            f"p50 {self.p50 * 1000:.0f} ms, p99 {self.p99 * 1000:.0f} ms, "
            f"peak RSS {self.peak_rss / 1024**2:.0f} MiB, {self.seconds:.1f} s"
        )


def peak_rss(pid: int) -> int:
    """The process's peak resident memory in bytes (Linux; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def _client(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    n: int,
    files: int,
    size: int,
    result: LoadResult,
) -> None:
    for i in range(files):
        body = os.urandom(size)
        started = time.perf_counter()
        r = await http.post(
            f"{url}/api/upload/upload",
            files={"file": (f"c{n}-f{i}.bin", body, "application/octet-stream")},
            data={"dataset_name": f"Load {n}", "sensor": "OTHER"},
            headers=headers,
        )
        result.latencies.append(time.perf_counter() - started)
        result.statuses[r.status_code] = result.statuses.get(r.status_code, 0) + 1
        if r.status_code == 200:
            result.jobs[r.json()["job_id"]] = "pending"


async def _run(
    url: str,
    token: str,
    clients: int,
    files: int,
    size: int,
    wait_timeout: float,
) -> LoadResult:
    result = LoadResult(clients, files)
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=600) as http:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                _client(http, url, headers, n, files, size, result)
                for n in range(clients)
            )
        )
        deadline = time.monotonic() + wait_timeout
        pending = set(result.jobs)
        while pending and time.monotonic() < deadline:
            for job in list(pending)[:200]:
                r = await http.get(f"{url}/api/v1/jobs/{job}", headers=headers)
                status = r.json().get("status", "?") if r.status_code == 200 else "?"
                if status in ("completed", "failed", "cancelled"):
                    result.jobs[job] = status
                    pending.discard(job)
            if pending:
                await asyncio.sleep(0.2)
        result.seconds = time.perf_counter() - started
    return result


def run_load(
    url: str,
    token: str,
    *,
    clients: int,
    files: int = 10,
    size: int = 100_000,
    server_pid: int | None = None,
    wait_timeout: float = 600.0,
) -> LoadResult:
    """Run the load against the server at ``url``; see the module docstring."""
    result = asyncio.run(_run(url, token, clients, files, size, wait_timeout))
    if server_pid is not None:
        result.peak_rss = peak_rss(server_pid)
    return result


def describe(result: LoadResult) -> dict[str, Any]:
    """The result as plain data, for JSON output."""
    return {
        "clients": result.clients,
        "files": result.files,
        "statuses": result.statuses,
        "p50_ms": round(result.p50 * 1000, 1),
        "p99_ms": round(result.p99 * 1000, 1),
        "peak_rss_mib": round(result.peak_rss / 1024**2, 1),
        "jobs": {
            s: list(result.jobs.values()).count(s) for s in set(result.jobs.values())
        },
        "seconds": round(result.seconds, 1),
    }
