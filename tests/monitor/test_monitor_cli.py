"""``sclib monitor ...`` on a real SQLite file: JSON numbers, tables, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sclib.cli import main
from sclib.jobs.queue import JobQueue
from sclib.testing.clock import ManualClock


@pytest.fixture
def backend(tmp_path: Path) -> str:
    """Forty days ago: one upload completed after 30 s, one validation failed.
    Ten minutes ago: a pending upload (nothing runs it)."""
    url = f"sqlite:///{tmp_path}/sclib.db"
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0) - timedelta(days=40))
    queue = JobQueue.open(url, clock=clock)
    queue.enqueue("upload")
    job = queue.claim("w1")
    assert job is not None
    clock.advance(30)
    queue.complete(job.lease)
    queue.enqueue("data_validation", max_attempts=1)
    job = queue.claim("w1")
    assert job is not None
    queue.fail(job.lease, "RuntimeError: disk on fire")
    clock.advance(40 * 86400 - 30 - 600)
    queue.enqueue("upload")
    queue.close()
    return url


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main(["--backend", argv[0], "monitor", *argv[1:], "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_overview_and_report_json(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """overview: counts and the pending job's ~600 s wait, warning for queue age
    and critical for no live worker; report over 7 days sees nothing finished."""
    o = _json(capsys, backend, "overview")
    assert o["by_status"]["pending"] == 1 and o["total"] == 3
    assert 600 <= o["oldest_pending_age_seconds"] < 660
    assert o["health_status"]["overall"] == "critical"
    assert o["live_workers"] == 0
    r = _json(capsys, backend, "report", "--days", "7")
    assert r["summary"]["finished"] == 0 and r["summary"]["success_rate"] is None
    assert len(r["throughput_per_day"]) == 7
    codes = {x["code"] for x in r["recommendations"]}
    assert codes == {"add_workers", "no_live_workers"}
    r = _json(capsys, backend, "report", "--days", "41")
    assert r["durations_by_type"]["upload"]["p50"] == 30.0


def test_failed_stale_and_cleanup(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """failed finds the old failure only with a window that reaches it; stale is
    empty; cleanup is a dry run until --apply, then deletes the two old jobs."""
    assert _json(capsys, backend, "failed") == []
    failed = _json(capsys, backend, "failed", "--hours", str(41 * 24))
    assert [j["error"] for j in failed] == ["RuntimeError: disk on fire"]
    assert failed[0]["retry_available"] is True
    assert _json(capsys, backend, "stale") == []
    dry = _json(capsys, backend, "cleanup", "--days", "30")
    assert (dry["applied"], dry["jobs"]["count"]) == (False, 2)
    done = _json(capsys, backend, "cleanup", "--days", "30", "--apply")
    assert (done["applied"], done["jobs"]["count"]) == (True, 2)
    assert _json(capsys, backend, "overview")["total"] == 1


def test_tables_and_usage_errors(backend: str) -> None:
    """The text forms are readable tables (run as a real `sclib` process); a bad
    --days is exit code 2 with a message naming it."""

    def sclib(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sclib", "--backend", backend, "monitor", *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )

    out = sclib("overview")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("health: CRITICAL")
    assert "queue_age" in out.stdout and "workers: 0 live" in out.stdout
    assert "TYPE" in out.stdout and "upload" in out.stdout
    out = sclib("failed", "--hours", "1000")
    assert "disk on fire" in out.stdout and "RETRY" in out.stdout
    out = sclib("cleanup")
    assert "would be deleted (run with --apply)" in out.stdout
    bad = sclib("report", "--days", "0")
    assert bad.returncode == 2 and "days must lie in 1..366" in bad.stderr
