"""--log-format json on real `sclib worker` and `sclib serve` processes: every
line is one JSON object, and a job's lines say which job, dataset and user."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sclib import JobQueue

ROOT = Path(__file__).resolve().parents[2]


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCLIB_DATA_DIR": str(tmp_path),
        **extra,
    }


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line parsed; fails on a line that is not JSON."""
    found = []
    for line in text.splitlines():
        if line.strip():
            found.append(json.loads(line))
    return found


def test_worker_lines_carry_the_job(tmp_path: Path) -> None:
    """A handler's own log line has the job's id, type, dataset and owner, and
    the fields it passed with extra=; the worker's lines are JSON too."""
    with JobQueue.open(f"sqlite:///{tmp_path}/sclib.db") as queue:
        job = queue.enqueue(
            "data_validation",
            {"path": "scan.tif"},
            dataset_uuid="4f9c0d2e-0000-4000-8000-000000000001",
            owner="amy@example.org",
        )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sclib",
            "worker",
            "--until-idle",
            "--handlers",
            "tests.cli.log_handlers:handlers",
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env_for(tmp_path),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stderr)
    mine = [r for r in lines if r["logger"] == "lab.handlers"]
    assert len(mine) == 1
    assert mine[0]["message"] == "checked scan.tif"
    assert mine[0]["job_id"] == job.id
    assert mine[0]["job_type"] == "data_validation"
    assert mine[0]["dataset"] == "4f9c0d2e-0000-4000-8000-000000000001"
    assert mine[0]["user"] == "amy@example.org"
    assert mine[0]["frames"] == 12
    assert mine[0]["level"] == "INFO"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", mine[0]["ts"])
    stopped = [r for r in lines if "stopped" in r["message"]]
    assert stopped and "job_id" not in stopped[0]


def test_the_setting_works_and_a_bad_value_is_refused(tmp_path: Path) -> None:
    """SCLIB_LOG_FORMAT=json does what the flag does; another value is a usage
    error naming the setting."""
    base = [
        sys.executable,
        "-m",
        "sclib",
        "worker",
        "--until-idle",
        "--handlers",
        "tests.cli.log_handlers:handlers",
    ]
    done = subprocess.run(
        base,
        capture_output=True,
        text=True,
        timeout=120,
        env=env_for(tmp_path, SCLIB_LOG_FORMAT="json"),
    )
    assert done.returncode == 0, done.stderr
    assert json_lines(done.stderr)
    bad = subprocess.run(
        base,
        capture_output=True,
        text=True,
        timeout=120,
        env=env_for(tmp_path, SCLIB_LOG_FORMAT="xml"),
    )
    assert bad.returncode == 2
    assert "SCLIB_LOG_FORMAT must be 'text' or 'json'" in bad.stderr


@pytest.mark.integration
def test_serve_logs_requests_as_json(tmp_path: Path) -> None:
    """`sclib serve --log-format json`: the start line and uvicorn's access
    lines are JSON objects; an access line has method, path and status."""
    pytest.importorskip("uvicorn")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sclib",
            "serve",
            "--no-auth",
            "--port",
            "0",
            "--workers",
            "0",
            "--log-format",
            "json",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env_for(tmp_path),
    )
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            found = re.search(
                r"serving on (http://\S+?)[ ,]", json.loads(line)["message"]
            )
            url = found.group(1) if found else None
        assert url, "".join(seen)
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
    lines = json_lines("".join(seen) + rest)
    access = [r for r in lines if r["logger"] == "uvicorn.access"]
    assert any(
        r["method"] == "GET" and r["path"] == "/health" and r["status"] == 200
        for r in access
    ), access
