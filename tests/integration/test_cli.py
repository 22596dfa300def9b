"""The sclib command, run as a real subprocess against a real SQLite file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sclib import JobQueue

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def sclib(
    tmp_path: Path,
    *args: str,
    check_code: int | None = 0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCLIB_DATA_DIR": str(tmp_path),
        **(env or {}),
    }
    full_env.pop("MONGO_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "sclib", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )
    if check_code is not None:
        assert done.returncode == check_code, done.stderr
    return done


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def test_submit_list_show_cancel_retry_stats(tmp_path: Path) -> None:
    """The jobs commands work end to end and speak JSON with --json."""
    job = as_json(
        sclib(
            tmp_path,
            "jobs",
            "submit",
            "data_validation",
            "--param",
            "path=/data/x.tif",
            "--param",
            "n=3",
            "--dataset",
            "d1",
            "--priority",
            "1",
            "--json",
        )
    )
    assert job["parameters"] == {"path": "/data/x.tif", "n": 3}
    assert job["status"] == "pending" and job["priority"] == 1
    listed = as_json(sclib(tmp_path, "jobs", "list", "--status", "pending", "--json"))
    assert [j["job_id"] for j in listed] == [job["job_id"]]
    text = sclib(tmp_path, "jobs", "list").stdout
    assert job["job_id"] in text and "data_validation" in text
    cancelled = as_json(sclib(tmp_path, "jobs", "cancel", job["job_id"], "--json"))
    assert cancelled["status"] == "cancelled"
    shown = as_json(sclib(tmp_path, "jobs", "show", job["job_id"], "--json"))
    assert [e["kind"] for e in shown["events"]] == ["created", "cancelled"]
    assert shown["dataset_status"] == "submitted"  # validation does not move it
    again = as_json(sclib(tmp_path, "jobs", "retry", job["job_id"], "--json"))
    assert again["status"] == "pending"
    stats = as_json(sclib(tmp_path, "jobs", "stats", "--json"))
    assert stats["by_status"]["pending"] == 1 and stats["total"] == 1
    assert "TOTAL" in sclib(tmp_path, "jobs", "stats").stdout


def test_errors_have_messages_and_exit_codes(tmp_path: Path) -> None:
    """Unknown ids exit 1, bad usage and configuration exit 2; one clear line each."""
    job = as_json(sclib(tmp_path, "jobs", "submit", "upload", "--json"))
    missing = sclib(tmp_path, "jobs", "show", "nope", check_code=1)
    assert missing.stderr.strip() == "sclib: error: no job with id 'nope'"
    sclib(tmp_path, "jobs", "cancel", job["job_id"])
    again = sclib(tmp_path, "jobs", "cancel", job["job_id"], check_code=1)
    assert "already cancelled" in again.stderr
    bad_type = sclib(tmp_path, "jobs", "submit", "teleport", check_code=2)
    assert "unknown job type 'teleport'" in bad_type.stderr
    bad_url = sclib(tmp_path, "--backend", "jobs.db", "jobs", "list", check_code=2)
    assert "malformed backend URL 'jobs.db'" in bad_url.stderr
    bad_param = sclib(
        tmp_path, "jobs", "submit", "upload", "--param", "novalue", check_code=2
    )
    assert "KEY=VALUE" in bad_param.stderr
    no_handlers = sclib(tmp_path, "worker", "--until-idle", check_code=2)
    assert "no handlers to run" in no_handlers.stderr
    bad_env = sclib(
        tmp_path, "jobs", "list", check_code=2, env={"SCLIB_WORKER_CONCURRENCY": "zero"}
    )
    assert "invalid sclib settings" in bad_env.stderr
    assert "Traceback" not in bad_env.stderr + no_handlers.stderr
    negative = sclib(tmp_path, "worker", "--rescue-interval", "-1", check_code=2)
    assert "--rescue-interval must not be negative" in negative.stderr
    zero = sclib(
        tmp_path,
        "worker",
        "--handlers",
        "sclib.demo:handlers",
        "--concurrency",
        "0",
        check_code=2,
    )
    assert "concurrency must be >= 1" in zero.stderr
    assert (
        "at least 1" in sclib(tmp_path, "demo", "--datasets", "0", check_code=2).stderr
    )


def test_json_piped_into_a_closed_reader_is_not_an_error(tmp_path: Path) -> None:
    """`sclib jobs list --json | head -c 10` ends quietly, without a traceback."""
    queue = JobQueue.open(f"sqlite:///{tmp_path}/sclib.db")
    for i in range(500):
        queue.enqueue("upload", {"i": i, "padding": "x" * 200})
    queue.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCLIB_DATA_DIR": str(tmp_path)}
    env.pop("MONGO_URL", None)
    done = subprocess.run(
        [
            "/bin/bash",
            "-c",
            f"{sys.executable} -m sclib jobs list --json --limit 500 | head -c 10",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.stdout == "[\n  {\n    "
    assert done.stderr == ""


def test_worker_command_drains_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`sclib worker` runs jobs; SIGTERM stops it cleanly with exit code 0."""
    ids = [
        as_json(
            sclib(
                tmp_path,
                "jobs",
                "submit",
                "data_validation",
                "--param",
                f"path={tmp_path / 'f.bin'}",
                "--json",
            )
        )["job_id"]
        for _ in range(3)
    ]
    (tmp_path / "f.bin").write_bytes(os.urandom(100_000))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCLIB_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sclib",
            "worker",
            "--handlers",
            "sclib.demo:handlers",
            "--poll-interval",
            "0.05",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stats = as_json(sclib(tmp_path, "jobs", "stats", "--json"))
            if stats["by_status"]["completed"] == 3:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped" in err
    for job_id in ids:
        shown = as_json(sclib(tmp_path, "jobs", "show", job_id, "--json"))
        assert shown["status"] == "completed"
        assert shown["result"]["bytes"] == 100_000


def test_demo_runs_on_the_embedded_default(tmp_path: Path) -> None:
    """`sclib demo` completes every demo job, including one retried after an error."""
    out = sclib(tmp_path, "demo", "--json")
    jobs = as_json(out)
    assert {j["status"] for j in jobs} == {"completed"}
    backup = next(j for j in jobs if j["job_type"] == "backup_creation")
    assert backup["attempts"] == 2
    assert "simulated" in backup["error_history"][0]["error"]
    assert (tmp_path / "converted" / "dataset_0.csv.gz").exists()


def test_server_demo_uploads_a_dataset_end_to_end(tmp_path: Path) -> None:
    """`sclib demo --server` starts the server with a worker, uploads the sample
    folder (one file in chunks), and every job reaches completed; the stored
    files are byte-identical to the sample."""
    out = sclib(tmp_path, "demo", "--server")
    assert "uploaded (chunked)" in out.stdout
    lines = [line for line in out.stdout.splitlines() if line.startswith("job ")]
    finals = {line.split(":")[0]: line for line in lines}
    assert len(finals) == 4
    assert all(line.endswith("completed 100%") for line in finals.values())
    root = tmp_path / "demo-server"
    (dataset,) = (root / "data" / "upload").iterdir()
    sample = root / "sample"
    for path in sample.rglob("*"):
        if path.is_file():
            stored = dataset / path.relative_to(sample)
            assert stored.read_bytes() == path.read_bytes()


def test_serve_refuses_unsafe_configurations(tmp_path: Path) -> None:
    """`sclib serve` will not run without a way to verify tokens, nor with
    --no-auth on a non-loopback address: exit 2 with a message saying why."""
    out = sclib(tmp_path, "serve", "--port", "1", check_code=2)
    assert "SCLIB_SECRET_KEY" in out.stderr
    out = sclib(
        tmp_path,
        "serve",
        "--no-auth",
        "--host",
        "0.0.0.0",
        "--port",
        "1",
        check_code=2,
    )
    assert "loopback" in out.stderr


def test_uploads_expire_reports_then_applies(tmp_path: Path) -> None:
    """`sclib uploads expire` lists abandoned uploads; `--apply` removes them."""
    from sclib.datasets.fields import parse_fields
    from sclib.jobs.queue import JobQueue
    from sclib.server.uploads import LARGE, UploadManager
    from sclib.transfers.sessions import open_session_store

    url = f"sqlite:///{tmp_path / 'sclib.db'}"
    manager = UploadManager(open_session_store(url), JobQueue.open(url), tmp_path)
    upload = manager.create(
        protocol=LARGE,
        owner="alice@example.org",
        filename="f.bin",
        size=10,
        fields=parse_fields({"dataset_name": "d", "sensor": "IDX"}),
        dataset_uuid="a" * 32,
    )
    time.sleep(0.5)
    env = {"SCLIB_UPLOAD_EXPIRY_HOURS": "0.0001"}  # 0.36 s
    report = as_json(sclib(tmp_path, "uploads", "expire", "--json", env=env))
    assert report["applied"] is False
    assert [u["upload_id"] for u in report["uploads"]] == [upload.id]
    assert manager.staging_dir(upload.id).exists()
    done = sclib(tmp_path, "uploads", "expire", "--apply", env=env)
    assert "1 abandoned upload(s) removed" in done.stdout
    assert not manager.staging_dir(upload.id).exists()
    assert manager.get(upload.id).status == "cancelled"


def test_datasets_list_and_show(tmp_path: Path) -> None:
    """`sclib datasets list/show` read the dataset records of the backend; an
    unknown uuid exits 1 with a message."""
    from sclib.datasets import Dataset, DatasetFile, open_dataset_store

    store = open_dataset_store(f"sqlite:///{tmp_path / 'sclib.db'}")
    made = store.create(Dataset(name="Run 7", owner="alice@example.org", sensor="TIFF"))
    store.add_files(made.uuid, [DatasetFile("a/b.tif", 10, "ab" * 32)])
    store.close()
    listed = as_json(sclib(tmp_path, "datasets", "list", "--json"))
    assert [(d["uuid"], d["file_count"]) for d in listed] == [(made.uuid, 1)]
    shown = sclib(tmp_path, "datasets", "show", made.uuid).stdout
    assert "Run 7" in shown and "a/b.tif" in shown and "ab" * 32 in shown
    missing = sclib(tmp_path, "datasets", "show", "f" * 32, check_code=1)
    assert "no dataset" in missing.stderr


def test_copy_command_verifies_and_explains_errors(tmp_path: Path) -> None:
    """`sclib copy` prints the BLAKE3 of what landed; bad input gets one line."""
    from blake3 import blake3

    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "scan.raw").write_bytes(data)
    out = as_json(
        sclib(
            tmp_path,
            "copy",
            str(tmp_path / "scan.raw"),
            str(tmp_path / "dest") + "/",
            "--chunk-size",
            "1MiB",
            "--json",
        )
    )
    (file,) = out["files"]
    assert file["blake3"] == blake3(data).hexdigest()
    assert (tmp_path / "dest" / "scan.raw").read_bytes() == data
    missing = sclib(
        tmp_path, "copy", str(tmp_path / "nope.raw"), str(tmp_path / "d"), check_code=1
    )
    assert "does not exist" in missing.stderr
    bad = sclib(
        tmp_path, "copy", str(tmp_path / "scan.raw"), "ftp2://x/y", check_code=2
    )
    assert "no destination plugin for 'ftp2'" in bad.stderr
    size = sclib(
        tmp_path,
        "copy",
        str(tmp_path / "scan.raw"),
        str(tmp_path / "e"),
        "--chunk-size",
        "3MiB",
        check_code=2,
    )
    assert "power of two" in size.stderr
