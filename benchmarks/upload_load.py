"""Many clients at once: server memory and latency at 16, 64 and 256 clients.

Each client sends ``--files`` (default 10) one-request uploads of 100 KB through
``/api/upload/upload`` (the seed's route); the run waits until every job is
finished. For each client count, a fresh ``sclib serve`` (SQLite, 4 worker
threads) is started and its peak resident memory read from the kernel
(``VmHWM``). The baseline is the same server's peak after start-up, measured in
the same run: the ratio says how much the load added. Target (issue 15): every
upload succeeds, every job completes, peak RSS under 300 MB at 256 clients.

    python benchmarks/upload_load.py [--clients 16,64,256] [--files 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from sclib.server.auth import Authenticator
from sclib.testing.load import describe, peak_rss, run_load

ROOT = Path(__file__).resolve().parents[1]
SECRET = "benchmark-secret-key-that-is-long-enough-0123456789"  # noqa: S105
_OPTIONS = ["--workers", "4", "--log-level", "warning"]


def _serve(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SCLIB_")},
        "SCLIB_SECRET_KEY": SECRET,
        "SCLIB_DATA_DIR": str(data),
        "SCLIB_POLL_INTERVAL": "0.2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "sclib", "serve", "--port", str(port), *_OPTIONS],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="16,64,256")
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    token = Authenticator(secret_key=SECRET).issue_token("load@example.org")
    rows = []
    for clients in (int(c) for c in args.clients.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            proc, url = _serve(Path(tmp) / "data")
            try:
                idle = peak_rss(proc.pid)
                result = run_load(
                    url,
                    token,
                    clients=clients,
                    files=args.files,
                    size=args.size,
                    server_pid=proc.pid,
                )
            finally:
                proc.terminate()
                proc.wait(60)
        row = describe(result)
        row["idle_rss_mib"] = round(idle / 1024**2, 1)
        row["peak_over_idle"] = round(result.peak_rss / idle, 2) if idle else None
        ok = (
            result.statuses == {200: clients * args.files}
            and set(result.jobs.values()) == {"completed"}
            and result.peak_rss < 300 * 1000**2
        )
        row["target_met"] = ok
        rows.append(row)
        if not args.json:
            print(
                f"{result.summary()}; idle {row['idle_rss_mib']} MiB, peak/idle "
                f"{row['peak_over_idle']}x; target "
                f"{'met' if ok else 'MISSED'} (all 200, all jobs completed, "
                "peak < 300 MB)",
                flush=True,
            )
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
