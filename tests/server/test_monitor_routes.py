"""/api/v1/monitor/... and /metrics against a real server process.

Jobs are written straight into the server's SQLite file by the test (the server
and the test share it, as a server and its workers do), as ``file_upload``
jobs that the server's worker has no handler for, so they stay as written.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sclib.jobs.queue import JobQueue
from sclib.testing.clock import ManualClock
from tests.server.live import LiveServer

pytestmark = pytest.mark.integration

ALICE, BOB, OPS = "alice@example.org", "bob@example.org", "ops@example.org"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("monitor") / "data").start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def jobs(server: LiveServer) -> dict[str, str]:
    """Alice's and Bob's failed jobs, one completed after 30 s, one pending."""
    clock = ManualClock(
        datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=100)
    )
    queue = JobQueue.open(f"sqlite:///{server.data_dir / 'sclib.db'}", clock=clock)
    ids: dict[str, str] = {}
    for who in (ALICE, BOB):
        ids[who] = queue.enqueue("file_upload", owner=who, max_attempts=1).id
        claimed = queue.claim("t", ["file_upload"])
        assert claimed is not None
        queue.fail(claimed.lease, f"RuntimeError: {who} broke it")
    ids["done"] = queue.enqueue("file_upload", owner=ALICE).id
    claimed = queue.claim("t", ["file_upload"])
    assert claimed is not None
    clock.advance(30)
    queue.complete(claimed.lease)
    ids["pending"] = queue.enqueue("file_upload", owner=ALICE).id
    queue.close()
    return ids


def _get(server: LiveServer, path: str, email: str | None, **kw: Any) -> Any:
    headers = {} if email is None else server.headers(email, admin=email == OPS)
    return httpx.get(server.url + path, headers=headers, timeout=30, **kw)


def test_overview_stale_report_are_for_admins(
    server: LiveServer, jobs: dict[str, str]
) -> None:
    """Admins get the overview (with the server's own worker live and idle, and
    the test's jobs counted), the stale list and the report; users get 403."""
    r = _get(server, "/api/v1/monitor/overview", OPS)
    assert r.status_code == 200, r.text
    o = r.json()
    assert o["by_type_status"]["file_upload"] == {
        "failed": 2,
        "completed": 1,
        "pending": 1,
    }
    assert o["health_status"]["overall"] in {"healthy", "warning"}
    assert o["live_workers"] >= 1
    assert any("upload" in w["info"].get("types", []) for w in o["workers"])
    assert _get(server, "/api/v1/monitor/stale", OPS).json() == {
        "jobs": [],
        "count": 0,
    }
    rep = _get(server, "/api/v1/monitor/report", OPS, params={"days": 1}).json()
    assert (rep["summary"]["failed"], rep["summary"]["completed"]) == (2, 1)
    assert rep["durations_by_type"]["file_upload"]["p50"] == 30.0
    bad = _get(server, "/api/v1/monitor/report", OPS, params={"days": 0})
    assert bad.status_code == 422
    for path in ("overview", "stale", "report"):
        r = _get(server, f"/api/v1/monitor/{path}", ALICE)
        assert r.status_code == 403 and r.json()["code"] == "forbidden"


def test_failed_and_job_details_are_scoped(
    server: LiveServer, jobs: dict[str, str]
) -> None:
    """A user sees only their own failed jobs and job details (another user's id
    is a 404); an admin sees all, or one owner's."""
    mine = _get(server, "/api/v1/monitor/failed", ALICE).json()
    assert [j["job_id"] for j in mine["jobs"]] == [jobs[ALICE]]
    assert mine["jobs"][0]["retry_available"] is True
    every = _get(server, "/api/v1/monitor/failed", OPS).json()
    assert {j["job_id"] for j in every["jobs"]} == {jobs[ALICE], jobs[BOB]}
    bobs = _get(server, "/api/v1/monitor/failed", OPS, params={"owner": BOB})
    assert [j["job_id"] for j in bobs.json()["jobs"]] == [jobs[BOB]]
    r = _get(server, "/api/v1/monitor/failed", ALICE, params={"owner": BOB})
    assert r.status_code == 403
    details = _get(server, f"/api/v1/monitor/jobs/{jobs[ALICE]}", ALICE).json()
    assert details["status"] == "failed"
    assert [e["kind"] for e in details["events"]] == ["created", "claimed", "failed"]
    assert _get(server, f"/api/v1/monitor/jobs/{jobs[ALICE]}", BOB).status_code == 404
    assert _get(server, f"/api/v1/monitor/jobs/{jobs[BOB]}", OPS).status_code == 200
    assert _get(server, "/api/v1/monitor/overview", None).status_code == 401


def _metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _tus_upload(server: LiveServer, length: int, first: bytes) -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    headers = {
        **server.headers(ALICE),
        "Tus-Resumable": "1.0.0",
        "Upload-Length": str(length),
        "Upload-Metadata": f"filename {b64('a.raw')},dataset_name {b64('m')},"
        f"sensor {b64('TIFF')}",
    }
    r = httpx.post(server.url + "/files/", headers=headers)
    assert r.status_code == 201, r.text
    r = httpx.patch(
        r.headers["location"],
        headers={
            **server.headers(ALICE),
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        content=first,
    )
    assert r.status_code == 204, r.text


def test_metrics_parse_and_carry_the_numbers(
    server: LiveServer, jobs: dict[str, str]
) -> None:
    """/metrics needs an admin token; its text parses with the Prometheus
    client's parser and carries job counts, the duration summary, an unfinished
    upload's received bytes, live workers and health."""
    assert _get(server, "/metrics", None).status_code == 401
    assert _get(server, "/metrics", ALICE).status_code == 403
    _tus_upload(server, 1000, b"x" * 300)
    r = _get(server, "/metrics", OPS)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    m = _metrics(r.text)
    jobs_failed = (
        "sclib_jobs",
        frozenset({("status", "failed"), ("type", "file_upload")}),
    )
    assert m[jobs_failed] == 2
    p50 = frozenset({("type", "file_upload"), ("quantile", "0.5")})
    assert m[("sclib_job_duration_seconds", p50)] == 30.0
    count = frozenset({("type", "file_upload")})
    assert m[("sclib_job_duration_seconds_count", count)] == 1
    assert m[("sclib_uploads_active", frozenset())] == 1
    assert m[("sclib_upload_bytes_received", frozenset())] == 300
    assert m[("sclib_workers_live", frozenset())] >= 1
    assert m[("sclib_health", frozenset())] in (0, 1)
    checks = {dict(k[1])["check"] for k in m if k[0] == "sclib_health_check"}
    assert checks == {"stale_jobs", "failure_rate", "queue_age", "workers"}
    ages = [v for k, v in m.items() if k[0] == "sclib_worker_heartbeat_age_seconds"]
    assert ages and all(0 <= a < 60 for a in ages)


def test_metrics_can_be_opened_by_a_setting(tmp_path: Path) -> None:
    """With SCLIB_METRICS_PUBLIC=true, /metrics answers without a token."""
    live = LiveServer(tmp_path / "data", env={"SCLIB_METRICS_PUBLIC": "true"}).start()
    try:
        r = httpx.get(live.url + "/metrics", timeout=30)
        assert r.status_code == 200
        m = _metrics(r.text)
        assert m[("sclib_uploads_active", frozenset())] == 0
    finally:
        live.stop()
