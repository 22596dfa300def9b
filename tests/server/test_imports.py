"""Server-side imports (``/api/upload/initiate``) from a real loopback HTTP server
and moto's S3 server, through a real ``sclib serve`` process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import httpx
import pytest

from tests.server.live import LiveServer
from tests.server.test_upload_routes import wait_job
from tests.transfers.cloud_servers import (
    S3_KEY,
    S3_REGION,
    S3_SECRET,
    cloud_env,
    moto_server,
    s3_client,
)
from tests.transfers.http_servers import serve

pytestmark = pytest.mark.integration

FIELDS = {"dataset_name": "Imported", "sensor": "HDF5", "convert": False}


IMPORT_ENV = {
    "SCLIB_ALLOW_PRIVATE_ADDRESSES": "true",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


@pytest.fixture
def import_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server allowed to reach loopback sources (as the tests' sources live
    there), with the environment the S3 client needs for a plain-HTTP endpoint."""
    server = LiveServer(tmp_path / "data", env=IMPORT_ENV)
    with cloud_env():
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def s3_import(tmp_path: Path) -> Iterator[tuple[LiveServer, str]]:
    """moto's S3 on loopback, and a server that lets users import from it."""
    with cloud_env(), moto_server() as endpoint:
        env = {**IMPORT_ENV, "SCLIB_IMPORT_ENDPOINTS": endpoint}
        server = LiveServer(tmp_path / "data", env=env).start()
        try:
            yield server, endpoint
        finally:
            server.stop()


def initiate(server: LiveServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/upload/initiate", json=body, headers=server.headers()
    )


def test_url_import_lands_verified(import_server: LiveServer) -> None:
    """A URL import downloads with ranged GETs into the dataset folder; the job's
    result names the file with its BLAKE3."""
    data = os.urandom(3 * 1024**2 + 17)
    with serve() as http:
        http.put("/share/volume.h5", data)
        r = initiate(
            import_server,
            {
                "source_type": "url",
                "source_config": {"url": http.url("/share/volume.h5")},
                **FIELDS,
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["upload_type"] == "standard"  # the original said so
        assert body["source_type"] == "url"
        final = wait_job(import_server, body["job_id"])
    assert final["status"] == "completed", final
    path = import_server.data_dir / "upload" / body["dataset_uuid"] / "volume.h5"
    assert (
        blake3.blake3(path.read_bytes()).hexdigest() == blake3.blake3(data).hexdigest()
    )
    assert final["bytes_total"] == len(data)


def test_url_import_to_a_private_address_is_refused_by_default(
    live_server: LiveServer,
) -> None:
    """Without SCLIB_ALLOW_PRIVATE_ADDRESSES, loopback and metadata addresses are
    refused at submission with a 422 that says why; no job is created."""
    for url in ("http://127.0.0.1:9/x", "http://169.254.169.254/latest/meta-data"):
        r = initiate(
            live_server, {"source_type": "url", "source_config": {"url": url}, **FIELDS}
        )
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "blocked_address"
    jobs = httpx.get(
        f"{live_server.url}/api/v1/jobs", headers=live_server.headers()
    ).json()
    assert jobs["jobs"] == []


def test_s3_import_seals_credentials(s3_import: tuple[LiveServer, str]) -> None:
    """An S3 import with the seed's access_key_id/secret_access_key completes; the
    secret is in no API answer and not in the database file in plain text."""
    server, endpoint = s3_import
    data = os.urandom(2 * 1024**2)
    client = s3_client(endpoint)
    client.create_bucket(Bucket="lab")
    client.put_object(Bucket="lab", Key="runs/run1.h5", Body=data)
    config = {
        "bucket_name": "lab",
        "object_key": "runs/run1.h5",
        "access_key_id": S3_KEY,
        "secret_access_key": S3_SECRET,
        "region": S3_REGION,
        "endpoint_url": endpoint,
    }
    r = initiate(server, {"source_type": "s3", "source_config": config, **FIELDS})
    assert r.status_code == 200, r.text
    body = r.json()
    final = wait_job(server, body["job_id"], timeout=60)
    assert final["status"] == "completed", final
    path = server.data_dir / "upload" / body["dataset_uuid"] / "run1.h5"
    assert path.read_bytes() == data
    job = httpx.get(
        f"{server.url}/api/v1/jobs/{body['job_id']}", headers=server.headers()
    ).text
    assert S3_SECRET not in job and S3_KEY not in job
    assert '"sealed":"***"' in job.replace(" ", "")
    for db in server.data_dir.glob("sclib.db*"):
        raw = db.read_bytes()
        assert S3_SECRET.encode() not in raw and S3_KEY.encode() not in raw


def test_unlisted_endpoints_are_refused_to_users(
    s3_import: tuple[LiveServer, str],
) -> None:
    """endpoint_url points the server's S3 client anywhere (an SSRF door): users
    may name only the operator's SCLIB_IMPORT_ENDPOINTS; admins any."""
    server, endpoint = s3_import
    config = {"bucket_name": "bkt", "endpoint_url": "http://127.0.0.1:9"}
    r = initiate(server, {"source_type": "s3", "source_config": config, **FIELDS})
    assert r.status_code == 403, r.text
    assert "SCLIB_IMPORT_ENDPOINTS" in r.json()["detail"]
    listed = {"bucket_name": "bkt", "endpoint_url": endpoint + "/"}
    r = initiate(server, {"source_type": "s3", "source_config": listed, **FIELDS})
    assert r.status_code == 200, r.text
    r = httpx.post(
        f"{server.url}/api/upload/initiate",
        json={"source_type": "s3", "source_config": config, **FIELDS},
        headers=server.headers("ops@example.org", admin=True),
    )
    assert r.status_code == 200, r.text


def test_url_credentials_are_sealed_too(import_server: LiveServer) -> None:
    """A pre-signed URL (a query string) or user:password in a URL is a
    credential: stored sealed, shown without it, and still used for the download."""
    data = os.urandom(100_000)
    with serve() as http:
        http.put("/signed/file.bin", data)
        url = http.url("/signed/file.bin") + "?X-Amz-Signature=topsecretsig"
        r = initiate(
            import_server,
            {"source_type": "url", "source_config": {"url": url}, **FIELDS},
        )
        assert r.status_code == 200, r.text
        final = wait_job(import_server, r.json()["job_id"])
        assert final["status"] == "completed", final
        assert any("topsecretsig" in q.path for q in http.seen("GET"))
    job = httpx.get(
        f"{import_server.url}/api/v1/jobs/{r.json()['job_id']}",
        headers=import_server.headers(),
    ).text
    assert "topsecretsig" not in job
    for db in import_server.data_dir.glob("sclib.db*"):
        assert b"topsecretsig" not in db.read_bytes()


def test_import_specs_never_borrow_the_servers_credentials() -> None:
    """Without the user's credentials, S3 and GCS imports are anonymous (not the
    server's own identity); Drive needs credentials; a service-account key may
    only name Google's token endpoint."""
    from sclib.errors import InvalidInput
    from sclib.pipeline.upload import import_spec, split_config

    assert import_spec("s3", {"bucket_name": "bkt"}).options["anon"] is True
    assert import_spec("gcs", {"bucket_name": "bkt"}).options["token"] == "anon"  # noqa: S105
    with_keys = import_spec(
        "s3", {"bucket_name": "bkt", "access_key_id": "k", "secret_access_key": "s"}
    )
    assert "anon" not in with_keys.options
    with pytest.raises(InvalidInput, match=r"needs access_token .*service_account"):
        import_spec("google_drive", {"file_id": "abc"})
    evil = {"type": "service_account", "token_uri": "http://169.254.169.254/"}
    with pytest.raises(InvalidInput, match="token_uri"):
        import_spec("google_drive", {"file_id": "a", "service_account_json": evil})
    public, secret = split_config({"url": "https://u:p@h.example/x?sig=1"})
    assert public == {"url": "https://h.example/x"}
    assert secret == {"url": "https://u:p@h.example/x?sig=1"}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"source_type": "ftp", "source_config": {}}, ["source_type", "ftp"]),
        ({"source_type": "s3", "source_config": {}}, ["bucket_name"]),
        (
            {
                "source_type": "google_drive",
                "source_config": {
                    "file_id": "abc",
                    "service_account_file": "/etc/passwd",
                },
            },
            ["service_account_file"],
        ),
        (
            {"source_type": "url", "source_config": {"url": "file:///etc/passwd"}},
            ["http"],
        ),
        (
            {"source_type": "s3", "source_config": {"bucket_name": "bkt", "colour": 1}},
            ["colour"],
        ),
        (
            {
                "source_type": "s3",
                "source_config": {"bucket_name": "bkt", "region": "not a region!"},
            },
            ["source_config.region", "letters, digits and '-'"],
        ),
        (
            {
                "source_type": "s3",
                "source_config": {"bucket_name": "bkt", "region": "mars-north-1"},
            },
            ["source_config.region", "AWS region"],
        ),
        (
            {"source_type": "s3", "source_config": {"bucket_name": "Bad_Bucket"}},
            ["source_config.bucket_name", "S3 bucket naming rules", "lower-case"],
        ),
        (
            {"source_type": "gcs", "source_config": {"bucket_name": "goog-data"}},
            ["source_config.bucket_name", "begin with 'goog'"],
        ),
        (
            {
                "source_type": "s3",
                "source_config": {
                    "bucket_name": "bkt",
                    "endpoint_url": "ftp://127.0.0.1:21",
                },
            },
            ["source_config.endpoint_url", "http://"],
        ),
    ],
)
def test_bad_import_requests_are_422(
    live_server: LiveServer, body: dict[str, Any], words: list[str]
) -> None:
    """Unknown sources, missing or unknown config keys, server paths, non-HTTP
    URLs, and S3/GCS bucket names, regions and endpoint URLs no store takes are
    refused before anything is queued, naming the field and the rule."""
    r = initiate(live_server, {**body, **FIELDS})
    assert r.status_code == 422, r.text
    for word in words:
        assert word in r.json()["detail"]
    jobs = httpx.get(
        f"{live_server.url}/api/v1/jobs", headers=live_server.headers()
    ).json()
    assert jobs["jobs"] == []


def test_server_path_upload_is_off_by_default(live_server: LiveServer) -> None:
    """The seed's path-based upload read any file on the server; here it is off
    unless folders are allowed: 403 saying how to turn it on."""
    r = httpx.post(
        f"{live_server.url}/api/upload/upload-path",
        json={"file_path": "/etc/passwd", **FIELDS},
        headers=live_server.headers(),
    )
    assert r.status_code == 403, r.text
    assert "SCLIB_UPLOAD_PATH_ROOTS" in r.json()["detail"]


def test_server_path_upload_stays_inside_allowed_folders(tmp_path: Path) -> None:
    """With an allowed folder, a file inside it is ingested and verified; paths
    outside it (403), relative or missing paths (400, as the original answered a
    missing file), and a symlink leading out are refused."""
    allowed = tmp_path / "instrument"
    (allowed / "run7").mkdir(parents=True)
    data = os.urandom(300_000)
    (allowed / "run7" / "frame.raw").write_bytes(data)
    (allowed / "escape").symlink_to("/etc")
    server = LiveServer(
        tmp_path / "data", env={"SCLIB_UPLOAD_PATH_ROOTS": str(allowed)}
    ).start()
    try:
        url, h = f"{server.url}/api/upload/upload-path", server.headers()
        for bad, status in (
            ("/etc/passwd", 403),
            (str(allowed / "escape" / "passwd"), 403),
            (str(allowed / ".." / "data"), 403),
            ("run7/frame.raw", 400),
            (str(allowed / "missing.raw"), 400),
        ):
            r = httpx.post(url, json={"file_path": bad, **FIELDS}, headers=h)
            assert r.status_code == status, (bad, r.text)
        r = httpx.post(
            url,
            json={"file_path": str(allowed / "run7" / "frame.raw"), **FIELDS},
            headers=h,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert wait_job(server, body["job_id"])["status"] == "completed"
        stored = server.data_dir / "upload" / body["dataset_uuid"] / "frame.raw"
        assert stored.read_bytes() == data
    finally:
        server.stop()
