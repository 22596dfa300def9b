"""/api/v1/jobs against a real server: who may submit what, and owner scoping."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.live import SECRET, LiveServer

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server whose users may submit data_compression jobs, with no worker, so
    that submitted jobs stay pending while the test looks at them."""
    live = LiveServer(
        tmp_path / "data", env={"SCLIB_USER_JOB_TYPES": "data_compression"}, workers=0
    ).start()
    try:
        yield live
    finally:
        live.stop()


def test_submit_get_list_cancel_retry(server: LiveServer) -> None:
    """A user submits an allowed job type, sees it (with its events), lists only
    their own, cancels it and retries it; another user sees none of it."""
    u, alice, bob = server.url, server.headers(), server.headers("bob@example.org")
    r = httpx.post(
        f"{u}/api/v1/jobs",
        json={"job_type": "data_compression", "parameters": {"n": 1}, "priority": 1},
        headers=alice,
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert (job["owner"], job["status"], job["priority"]) == (
        "alice@example.org",
        "pending",
        1,
    )
    jid = job["job_id"]
    shown = httpx.get(f"{u}/api/v1/jobs/{jid}", headers=alice).json()
    assert [e["kind"] for e in shown["events"]] == ["created"]
    assert httpx.get(f"{u}/api/v1/jobs/{jid}", headers=bob).status_code == 404
    assert httpx.get(f"{u}/api/v1/jobs", headers=bob).json()["jobs"] == []
    mine = httpx.get(f"{u}/api/v1/jobs", params={"status": "pending"}, headers=alice)
    assert [j["job_id"] for j in mine.json()["jobs"]] == [jid]
    assert httpx.post(f"{u}/api/v1/jobs/{jid}/cancel", headers=bob).status_code == 404
    cancelled = httpx.post(f"{u}/api/v1/jobs/{jid}/cancel", headers=alice).json()
    assert cancelled["status"] == "cancelled"
    again = httpx.post(f"{u}/api/v1/jobs/{jid}/retry", headers=alice).json()
    assert again["status"] == "pending"
    stats = httpx.get(f"{u}/api/v1/jobs/queue/stats", headers=bob).json()
    assert stats["by_type"] == {"data_compression": 1}


def test_job_lists_page_by_key(server: LiveServer) -> None:
    """GET /api/v1/jobs answers next_after while a page is full; passing it
    back gives the next page, the caller's jobs only; a bad after is 422."""
    u, alice = server.url, server.headers()
    ids = [
        httpx.post(
            f"{u}/api/v1/jobs",
            json={"job_type": "data_compression", "parameters": {"n": n}},
            headers=alice,
        ).json()["job_id"]
        for n in range(5)
    ]
    httpx.post(
        f"{u}/api/v1/jobs",
        json={"job_type": "data_compression"},
        headers=server.headers("bob@example.org"),
    )
    seen, after = [], None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if after is not None:
            params["after"] = after
        body = httpx.get(f"{u}/api/v1/jobs", params=params, headers=alice).json()
        seen += [j["job_id"] for j in body["jobs"]]
        after = body["next_after"]
        if after is None:
            break
    assert seen == ids
    bad = httpx.get(f"{u}/api/v1/jobs", params={"after": ""}, headers=alice)
    assert bad.status_code == 422 and "after" in bad.text


def test_users_submit_only_listed_job_types(server: LiveServer) -> None:
    """Unlisted types and upload jobs are 403 for users; admins may submit any;
    an unknown type or a bad priority is 422."""
    u, alice = server.url, server.headers()
    admin = server.headers("ops@example.org", admin=True)
    for job_type in ("dataset_conversion", "upload"):
        r = httpx.post(f"{u}/api/v1/jobs", json={"job_type": job_type}, headers=alice)
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "forbidden"
    r = httpx.post(
        f"{u}/api/v1/jobs", json={"job_type": "dataset_conversion"}, headers=admin
    )
    assert r.status_code == 201
    r = httpx.post(f"{u}/api/v1/jobs", json={"job_type": "nope"}, headers=admin)
    assert r.status_code == 422 and "nope" in r.json()["detail"]
    r = httpx.post(
        f"{u}/api/v1/jobs",
        json={"job_type": "data_compression", "priority": 7},
        headers=alice,
    )
    assert r.status_code == 422 and "priority" in r.json()["detail"]


def test_idempotency_keys_are_per_user(server: LiveServer) -> None:
    """The same idempotency key from one user returns the same job; from another
    user it is a different job (keys are not shared across users)."""
    u = server.url
    body = {"job_type": "data_compression", "idempotency_key": "nightly-1"}
    a1 = httpx.post(f"{u}/api/v1/jobs", json=body, headers=server.headers()).json()
    a2 = httpx.post(f"{u}/api/v1/jobs", json=body, headers=server.headers()).json()
    b1 = httpx.post(
        f"{u}/api/v1/jobs", json=body, headers=server.headers("bob@example.org")
    ).json()
    assert a1["job_id"] == a2["job_id"] != b1["job_id"]


def test_json_bodies_are_capped_before_auth(server: LiveServer) -> None:
    """A huge JSON body is refused with 413 before it is read, token or not."""
    r = httpx.post(
        f"{server.url}/api/v1/jobs",
        content=b"[" + b"1," * (2 * 1024**2) + b"1]",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["code"] == "too_large"


def test_credentials_in_job_parameters_are_sealed(tmp_path: Path) -> None:
    """Credentials given in a submitted job's parameters (a google_sync job's
    service-account key) are stored sealed: neither the job's page nor the job
    store holds them in plain text, and a worker with the SECRET_KEY opens them."""
    from sclib.jobs.queue import JobQueue
    from sclib.secrets import SecretBox

    live = LiveServer(
        tmp_path / "data", env={"SCLIB_USER_JOB_TYPES": "google_sync"}, workers=0
    ).start()
    try:
        key = '{"type": "service_account", "private_key": "-----BEGIN xyz"}'
        r = httpx.post(
            f"{live.url}/api/v1/jobs",
            json={
                "job_type": "google_sync",
                "parameters": {"folder_id": "abc", "service_account_json": key},
            },
            headers=live.headers(),
        )
        assert r.status_code == 201, r.text
        shown = httpx.get(
            f"{live.url}/api/v1/jobs/{r.json()['job_id']}", headers=live.headers()
        ).text
        assert "BEGIN xyz" not in shown
        queue = JobQueue.open(f"sqlite:///{live.data_dir / 'sclib.db'}")
        stored = queue.get(r.json()["job_id"]).parameters
        queue.close()
        assert set(stored) == {"folder_id", "sealed"}
        assert "BEGIN xyz" not in str(stored)
        opened = SecretBox(SECRET).open(stored["sealed"])
        assert opened == {"service_account_json": key}
    finally:
        live.stop()


def test_cancelling_a_pending_upload_tells_its_dataset(server: LiveServer) -> None:
    """An upload job cancelled before a worker took it (this server runs none)
    leaves its dataset `upload error` with the reason, not `upload queued` for
    ever; through the seed's cancel route and through the jobs API."""
    u, alice = server.url, server.headers()
    uuids = []
    for route in ("/api/upload/cancel/{}", "/api/v1/jobs/{}/cancel"):
        r = httpx.post(
            f"{u}/api/upload/upload",
            files={"file": ("a.bin", b"x" * 100)},
            data={"dataset_name": "d", "sensor": "OTHER"},
            headers=alice,
        ).json()
        gone = httpx.post(f"{u}{route.format(r['job_id'])}", headers=alice)
        assert gone.status_code == 200, gone.text
        uuids.append(r["dataset_uuid"])
    for uuid in uuids:
        page = httpx.get(f"{u}/api/v1/datasets/{uuid}", headers=alice).json()
        assert page["status"] == "upload error"
        assert "cancelled by" in page["error_message"]


def test_credentials_inside_source_config_are_sealed(tmp_path: Path) -> None:
    """An `upload` job submitted through the jobs API (by an admin: users go
    through the upload routes) carries its import's credentials inside
    `source_config` (where the worker reads them): they are
    sealed too, the stored `source_config` keeps only the public part, and the
    sealed value opens to exactly the credentials."""
    from sclib.jobs.queue import JobQueue
    from sclib.secrets import SecretBox

    live = LiveServer(
        tmp_path / "data", env={"SCLIB_USER_JOB_TYPES": "upload"}, workers=0
    ).start()
    try:
        config = {
            "url": "s3://bucket/key",
            "access_key_id": "AKIAEXAMPLE",
            "secret_access_key": "very-secret-value",
        }
        r = httpx.post(
            f"{live.url}/api/v1/jobs",
            json={
                "job_type": "upload",
                "parameters": {
                    "source": "import",
                    "source_type": "s3",
                    "source_config": config,
                },
            },
            headers=live.headers(admin=True),
        )
        assert r.status_code == 201, r.text
        queue = JobQueue.open(f"sqlite:///{live.data_dir / 'sclib.db'}")
        stored = queue.get(r.json()["job_id"]).parameters
        queue.close()
        assert "very-secret-value" not in str(stored)
        assert "AKIAEXAMPLE" not in str(stored)
        assert stored["source_config"] == {"url": "s3://bucket/key"}
        assert SecretBox(SECRET).open(stored["sealed"]) == {
            "access_key_id": "AKIAEXAMPLE",
            "secret_access_key": "very-secret-value",
        }
    finally:
        live.stop()


def test_users_google_sync_jobs_must_bring_credentials(tmp_path: Path) -> None:
    """A user's google_sync job without credentials of its own is refused (422,
    naming what to give) and nothing is queued: the worker's service account
    (SCLIB_GDRIVE_SERVICE_ACCOUNT_FILE) is for operators' and migrated jobs, not a
    way for any user to fetch whatever folder that account can read. An admin's
    job without credentials is taken."""
    from sclib.jobs.queue import JobQueue

    live = LiveServer(
        tmp_path / "data", env={"SCLIB_USER_JOB_TYPES": "google_sync"}, workers=0
    ).start()
    try:
        body = {"job_type": "google_sync", "parameters": {"folder_id": "a" * 20}}
        url = f"{live.url}/api/v1/jobs"
        r = httpx.post(url, json=body, headers=live.headers())
        assert r.status_code == 422, r.text
        assert "service_account_json or access_token" in r.json()["detail"]
        queue = JobQueue.open(f"sqlite:///{live.data_dir / 'sclib.db'}")
        assert queue.list() == []
        queue.close()
        r = httpx.post(url, json=body, headers=live.headers(admin=True))
        assert r.status_code == 201, r.text
    finally:
        live.stop()


def test_a_cancelled_upload_leaves_nothing_and_can_be_sent_again(
    server: LiveServer, tmp_path: Path
) -> None:
    """An upload whose job is cancelled before it ran (the original clients'
    cancel_upload) takes back the file it committed into the dataset folder,
    and the folder it made; the same file then uploads into the same dataset
    (it used to stay there unrecorded, and the second upload was a 409)."""
    u, alice = server.url, server.headers()
    data = os.urandom(50_000)
    form = {"user_email": "alice@example.org", "dataset_name": "C", "sensor": "OTHER"}
    first = httpx.post(
        f"{u}/api/upload/upload",
        data={**form, "relative_path": "raw/day1"},
        files={"file": ("scan.bin", data)},
        headers=alice,
    ).json()
    uuid = first["dataset_uuid"]
    folder = server.data_dir / "upload" / uuid
    assert (folder / "raw" / "day1" / "scan.bin").read_bytes() == data
    cancelled = httpx.post(f"{u}/api/upload/cancel/{first['job_id']}", headers=alice)
    assert cancelled.status_code == 200, cancelled.text
    assert not folder.exists()
    again = httpx.post(
        f"{u}/api/upload/upload",
        data={
            **form,
            "relative_path": "raw/day1",
            "dataset_identifier": uuid,
            "add_to_existing": "true",
        },
        files={"file": ("scan.bin", data)},
        headers=alice,
    )
    assert again.status_code == 200, again.text
    assert (folder / "raw" / "day1" / "scan.bin").read_bytes() == data
    assert not list((server.data_dir / "tmp" / "uploads").iterdir())
