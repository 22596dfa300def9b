"""The drop-ins for the original ScientistCloud "Unified" client.

``ScientistCloudUploadClient`` and ``AsyncScientistCloudUploadClient`` must take
the original client's arguments (``SCLib_UploadClient_Unified``; CI has no copy of
it, so its signatures are written down here as data), send its requests and
return its shapes. The wire format is checked against ``httpx.MockTransport``;
the behaviour against a real sclib server on 127.0.0.1, in this process, without
tokens as the original server had none.

Some server tests need the legacy routes to answer as the original server did
(``dataset_identifier`` with ``add_to_existing=false`` creating that dataset,
urlencoded ``upload-path``, ``service_account_file``, the original's keys on the
info routes); their docstrings say so.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from sclib.client import (
    AsyncScientistCloudUploadClient,
    Client,
    ScientistCloudUploadClient,
    UploadResult,
    WaitTimeout,
)
from sclib.client.models import JobStatus
from sclib.errors import InvalidInput, JobNotFound, Unauthorized

MIB = 1024 * 1024
EMAIL = "alice@example.org"
REQUIRED = inspect.Parameter.empty

# -- the original signatures, as data ------------------------------------------------

#: The original fields every upload method takes after its own first arguments.
_FIELDS: tuple[tuple[str, Any], ...] = (
    ("user_email", REQUIRED),
    ("dataset_name", REQUIRED),
    ("sensor", REQUIRED),
    ("convert", True),
    ("is_public", False),
    ("folder", None),
    ("team_uuid", None),
)

#: SCLib_UploadClient_Unified.ScientistCloudUploadClient: each public method's
#: parameters after ``self``, in order, with their defaults.
ORIGINAL: dict[str, tuple[tuple[str, Any], ...]] = {
    "__init__": (("base_url", "http://localhost:5000"), ("timeout", 300)),
    "upload_file": (
        ("file_path", REQUIRED),
        *_FIELDS,
        ("dataset_identifier", None),
        ("add_to_existing", False),
        ("progress_callback", None),
    ),
    "upload_file_by_path": (
        ("file_path", REQUIRED),
        *_FIELDS,
        ("dataset_uuid", None),
        ("progress_callback", None),
    ),
    "initiate_google_drive_upload": (
        ("file_id", REQUIRED),
        ("service_account_file", REQUIRED),
        *_FIELDS,
    ),
    "initiate_s3_upload": (
        ("bucket_name", REQUIRED),
        ("object_key", REQUIRED),
        ("access_key_id", REQUIRED),
        ("secret_access_key", REQUIRED),
        *_FIELDS,
    ),
    "initiate_url_upload": (("url", REQUIRED), *_FIELDS),
    "upload_from_source": (
        ("source_type", REQUIRED),
        ("source_config", REQUIRED),
        *_FIELDS,
        ("progress_callback", None),
    ),
    "get_upload_status": (("job_id", REQUIRED),),
    "cancel_upload": (("job_id", REQUIRED),),
    "list_upload_jobs": (
        ("user_email", REQUIRED),
        ("status", None),
        ("limit", 50),
        ("offset", 0),
    ),
    "get_supported_sources": (),
    "get_upload_limits": (),
    "wait_for_completion": (
        ("job_id", REQUIRED),
        ("timeout", 3600),
        ("poll_interval", 5),
    ),
    "health_check": (),
    "get_api_info": (),
    "upload_directory": (
        ("directory_path", REQUIRED),
        *_FIELDS,
        ("progress_callback", None),
    ),
    "upload_directory_from_source": (
        ("source_type", REQUIRED),
        ("source_config", REQUIRED),
        *_FIELDS,
        ("progress_callback", None),
    ),
}

#: The original AsyncScientistCloudUploadClient's methods (same parameters as
#: the sync client's).
ORIGINAL_ASYNC = (
    "__init__",
    "upload_file",
    "get_upload_status",
    "wait_for_completion",
    "upload_directory",
)

#: The original dataclasses' fields.
UPLOAD_RESULT_FIELDS = (
    "job_id",
    "status",
    "message",
    "upload_type",
    "estimated_duration",
)
JOB_STATUS_FIELDS = (
    "job_id",
    "status",
    "progress_percentage",
    "bytes_uploaded",
    "bytes_total",
    "message",
    "error",
    "created_at",
    "updated_at",
)

TWINS = [ScientistCloudUploadClient, AsyncScientistCloudUploadClient]


def _check_signature(
    cls: type, name: str, original: tuple[tuple[str, Any], ...]
) -> None:
    params = list(inspect.signature(getattr(cls, name)).parameters.values())[1:]
    head = params[: len(original)]
    assert [(p.name, p.default) for p in head] == list(original), (cls, name)
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in head), (cls, name)
    for extra in params[len(original) :]:  # sclib's additions: keyword-only, optional
        assert extra.kind is extra.KEYWORD_ONLY, (cls, name, extra.name)
        assert extra.default is not REQUIRED, (cls, name, extra.name)


@pytest.mark.parametrize("cls", TWINS, ids=lambda c: c.__name__)
def test_every_original_method_takes_the_original_arguments(cls: type) -> None:
    """Both drop-ins have every method of the original sync client, whose first
    parameters are the original's (names, order, defaults, passable by position);
    anything sclib adds is keyword-only with a default."""
    for name, original in ORIGINAL.items():
        _check_signature(cls, name, original)


def test_the_async_drop_in_covers_the_original_async_client() -> None:
    """The original async client's methods are there, with its parameters, and
    are coroutines (except the constructor)."""
    for name in ORIGINAL_ASYNC:
        _check_signature(AsyncScientistCloudUploadClient, name, ORIGINAL[name])
        if name != "__init__":
            method = getattr(AsyncScientistCloudUploadClient, name)
            assert inspect.iscoroutinefunction(method), name


def _public(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, callable)
        if not name.startswith("_")
    }


def test_twins_expose_the_same_methods_and_signatures() -> None:
    """The two drop-ins have the same public methods (close <-> aclose), the
    same parameters (constructor included), documented, the async ones awaitable."""
    sync, async_ = (
        _public(ScientistCloudUploadClient),
        _public(AsyncScientistCloudUploadClient),
    )
    assert set(sync) - {"close"} == set(async_) - {"aclose"}
    for name in sorted([*set(sync) - {"close"}, "__init__"]):
        s = inspect.signature(getattr(ScientistCloudUploadClient, name))
        a = inspect.signature(getattr(AsyncScientistCloudUploadClient, name))
        assert [(p.name, p.kind, p.default) for p in s.parameters.values()] == [
            (p.name, p.kind, p.default) for p in a.parameters.values()
        ], name
        if name != "__init__":
            assert inspect.iscoroutinefunction(async_[name]), name
            assert sync[name].__doc__, name
            assert async_[name].__doc__ == sync[name].__doc__, name


def test_results_have_the_original_attributes() -> None:
    """UploadResult and JobStatus carry the original dataclasses' attributes (and
    dict access); an int estimated_duration stays an int, timestamps stay text."""
    result = UploadResult.model_validate(
        {
            "job_id": "j",
            "status": "queued",
            "message": "m",
            "upload_type": "standard",
            "estimated_duration": 60,
        }
    )
    for name in UPLOAD_RESULT_FIELDS:
        assert hasattr(result, name) and name in result
    assert result.estimated_duration == 60
    assert isinstance(result.estimated_duration, int)
    status = JobStatus.model_validate(
        {
            "job_id": "j",
            "status": "uploading",
            "progress_percentage": 12.5,
            "created_at": "2026-12-07T10:27:01.082462Z",
            "current_file": "a.bin",
        }
    )
    for name in JOB_STATUS_FIELDS:
        assert hasattr(status, name) and name in status
    assert status.created_at == "2026-12-07T10:27:01.082462Z"
    assert status["current_file"] == "a.bin"  # extra keys are kept
    assert not status.finished


# -- the wire, against a recording transport -----------------------------------------


class Recorder:
    """An httpx MockTransport handler: records each request, answers like the
    original server (``status`` as given)."""

    def __init__(self, status: str = "queued") -> None:
        self.requests: list[httpx.Request] = []
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/api/upload/limits":
            return httpx.Response(
                200, json={"standard_upload_limit": 10 * MIB, "path": path}
            )
        if path.startswith("/api/upload/status/"):
            return httpx.Response(
                200,
                json={
                    "job_id": path.rsplit("/", 1)[1],
                    "status": self.status,
                    "progress_percentage": 0.0,
                },
            )
        if request.method == "POST" and path != "/api/upload/cancel/j1":
            return httpx.Response(
                200,
                json={
                    "job_id": "j1",
                    "status": "pending",
                    "message": "ok",
                    "upload_type": "standard",
                    "estimated_duration": 60,
                },
            )
        return httpx.Response(200, json={"path": path})

    def last(self) -> httpx.Request:
        return self.requests[-1]


def _mocked(
    tmp_path: Path, recorder: Recorder, **kw: Any
) -> ScientistCloudUploadClient:
    return ScientistCloudUploadClient(
        "http://sc.test/",
        transport=httpx.MockTransport(recorder),
        state_dir=tmp_path / "state",
        **kw,
    )


def _json(request: httpx.Request) -> Any:
    return json.loads(request.content)


def test_imports_send_the_original_json(tmp_path: Path) -> None:
    """initiate_* send the original JSON to /api/upload/initiate (an unset folder
    or team_uuid left out; the service account file a server path, as is);
    upload_from_source sends every key, null when unset, and its config as is."""
    rec = Recorder()
    with _mocked(tmp_path, rec) as client:
        base = {
            "user_email": EMAIL,
            "dataset_name": "D",
            "sensor": "OTHER",
            "convert": True,
            "is_public": False,
        }
        client.initiate_google_drive_upload("F1", "/srv/sa.json", EMAIL, "D", "OTHER")
        assert rec.last().url.path == "/api/upload/initiate"
        assert _json(rec.last()) == {
            "source_type": "google_drive",
            "source_config": {"file_id": "F1", "service_account_file": "/srv/sa.json"},
            **base,
        }
        client.initiate_s3_upload(
            "b", "k/x.h5", "AK", "SK", EMAIL, "D", "OTHER", False, True, "f", "t"
        )
        assert _json(rec.last()) == {
            "source_type": "s3",
            "source_config": {
                "bucket_name": "b",
                "object_key": "k/x.h5",
                "access_key_id": "AK",
                "secret_access_key": "SK",
            },
            **base,
            "convert": False,
            "is_public": True,
            "folder": "f",
            "team_uuid": "t",
        }
        client.initiate_url_upload("https://x.test/a.h5", EMAIL, "D", "OTHER")
        assert _json(rec.last()) == {
            "source_type": "url",
            "source_config": {"url": "https://x.test/a.h5"},
            **base,
        }
        config = {"use_oauth": True, "folder_link": "https://drive.test/x"}
        result = client.upload_from_source("google_drive", config, EMAIL, "D", "OTHER")
        assert _json(rec.last()) == {
            "source_type": "google_drive",
            "source_config": config,
            **base,
            "folder": None,
            "team_uuid": None,
        }
    assert isinstance(result, UploadResult)
    assert (result.job_id, result.status, result.upload_type) == (
        "j1",
        "queued",
        "standard",
    )
    assert result.estimated_duration == 60


def test_upload_by_path_sends_an_urlencoded_form(tmp_path: Path) -> None:
    """upload_file_by_path posts a urlencoded form (no file) to
    /api/upload/upload-path; dataset_uuid becomes dataset_identifier with
    add_to_existing; the callback hears 1.0 once the server answered."""
    rec = Recorder()
    seen: list[float] = []
    with _mocked(tmp_path, rec) as client:
        result = client.upload_file_by_path(
            "/srv/data/a.h5",
            EMAIL,
            "D",
            "HDF5",
            True,
            False,
            "runs",
            None,
            "ds1",
            seen.append,
        )
    request = rec.last()
    assert request.url.path == "/api/upload/upload-path"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    assert form == {
        "file_path": "/srv/data/a.h5",
        "user_email": EMAIL,
        "dataset_name": "D",
        "sensor": "HDF5",
        "convert": "true",
        "is_public": "false",
        "folder": "runs",
        "dataset_identifier": "ds1",
        "add_to_existing": "true",
    }
    assert result.status == "queued" and seen == [1.0]


def test_upload_file_sends_the_original_fields(tmp_path: Path) -> None:
    """upload_file streams a multipart form to /api/upload/upload with the
    original fields (add_to_existing always, folder/team_uuid/dataset_identifier
    only when set) and reports progress ending at 1.0."""
    path = tmp_path / "a.bin"
    path.write_bytes(os.urandom(3000))
    rec = Recorder()
    seen: list[float] = []
    with _mocked(tmp_path, rec) as client:
        result = client.upload_file(
            path,
            EMAIL,
            "D",
            "OTHER",
            True,
            False,
            "",
            "team1",
            None,
            False,
            seen.append,
        )
    request = rec.last()
    assert request.url.path == "/api/upload/upload"
    body = request.content
    for name, value in [
        ("user_email", EMAIL),
        ("dataset_name", "D"),
        ("sensor", "OTHER"),
        ("convert", "true"),
        ("is_public", "false"),
        ("team_uuid", "team1"),
        ("add_to_existing", "false"),
    ]:
        assert f'name="{name}"\r\n\r\n{value}\r\n'.encode() in body, name
    for absent in ("folder", "dataset_identifier", "original_file_path"):
        assert f'name="{absent}"'.encode() not in body, absent
    assert b'filename="a.bin"' in body
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    assert result.status == "queued"  # sclib's "pending", in the original's word


def test_job_routes_send_the_original_requests(tmp_path: Path) -> None:
    """Status, cancel, job list and the four info routes go where the original
    sent them; the raw-JSON ones return plain dicts."""
    rec = Recorder(status="processing")
    with _mocked(tmp_path, rec) as client:
        status = client.get_upload_status("j 1")
        assert rec.last().url.raw_path == b"/api/upload/status/j%201"
        assert isinstance(status, JobStatus) and status.status == "processing"
        cancelled = client.cancel_upload("j1")
        assert (rec.last().method, rec.last().url.path) == (
            "POST",
            "/api/upload/cancel/j1",
        )
        listed = client.list_upload_jobs(EMAIL, "completed", 5, 10)
        assert rec.last().url.path == "/api/upload/jobs"
        assert dict(rec.last().url.params) == {
            "user_id": EMAIL,
            "status": "completed",
            "limit": "5",
            "offset": "10",
        }
        client.list_upload_jobs(EMAIL)
        assert dict(rec.last().url.params) == {
            "user_id": EMAIL,
            "limit": "50",
            "offset": "0",
        }
        answers = [
            client.get_supported_sources(),
            client.get_upload_limits(),
            client.health_check(),
            client.get_api_info(),
        ]
    assert [a["path"] for a in answers] == [
        "/api/upload/supported-sources",
        "/api/upload/limits",
        "/health",
        "/",
    ]
    assert all(type(a) is dict for a in [cancelled, listed, *answers])


def test_token_is_sent_when_given_or_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Authorization header by default (as the original); token= or
    $SCLIB_TOKEN sends it as a bearer token."""
    monkeypatch.delenv("SCLIB_TOKEN", raising=False)
    rec = Recorder()
    with _mocked(tmp_path, rec) as client:
        client.health_check()
    assert "authorization" not in rec.last().headers
    with _mocked(tmp_path, rec, token="t1") as client:  # noqa: S106
        client.health_check()
    assert rec.last().headers["authorization"] == "Bearer t1"
    monkeypatch.setenv("SCLIB_TOKEN", "t2")
    with _mocked(tmp_path, rec) as client:
        client.health_check()
    assert rec.last().headers["authorization"] == "Bearer t2"


def test_wait_for_completion_times_out_with_a_timeout_error(tmp_path: Path) -> None:
    """A job that stays 'uploading' makes wait_for_completion raise WaitTimeout,
    a TimeoutError, after `timeout` seconds; a terminal status is returned."""
    rec = Recorder(status="uploading")
    with _mocked(tmp_path, rec) as client:
        with pytest.raises(TimeoutError) as info:
            client.wait_for_completion("j9", 0.2, 0.05)
        assert isinstance(info.value, WaitTimeout)
        assert len(rec.requests) >= 2
        for word in ("completed", "failed", "cancelled"):
            rec.status = word
            assert client.wait_for_completion("j9", 1, 0.05).status == word


def test_local_paths_fail_like_the_original(tmp_path: Path) -> None:
    """A missing file or folder is FileNotFoundError, a file given as a folder
    or an empty folder a ValueError, all before any request."""
    rec = Recorder()
    (tmp_path / "empty").mkdir()
    (tmp_path / "f.txt").write_text("x")
    with _mocked(tmp_path, rec) as client:
        with pytest.raises(FileNotFoundError):
            client.upload_file(tmp_path / "nope", EMAIL, "D", "OTHER")
        with pytest.raises(FileNotFoundError):
            client.upload_directory(tmp_path / "nope", EMAIL, "D", "OTHER")
        with pytest.raises(ValueError, match="not a directory"):
            client.upload_directory(tmp_path / "f.txt", EMAIL, "D", "OTHER")
        with pytest.raises(ValueError, match="No files"):
            client.upload_directory(tmp_path / "empty", EMAIL, "D", "OTHER")
    assert rec.requests == []


def test_directory_from_source_dispatches_like_the_original(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """google_drive and s3 folders upload nothing and say so in the log; url,
    unknown types and local without directory_path are ValueErrors."""
    rec = Recorder()
    with _mocked(tmp_path, rec) as client, caplog.at_level(logging.WARNING):
        for source in ("google_drive", "s3"):
            assert (
                client.upload_directory_from_source(
                    source, {"folder_id": "x"}, EMAIL, "D", "OTHER"
                )
                == []
            )
        for source, config, why in [
            ("url", {"url": "https://x"}, "URL directory upload"),
            ("ftp", {}, "not supported for source type: ftp"),
            ("local", {}, "'directory_path' must be provided"),
        ]:
            with pytest.raises(ValueError, match=why):
                client.upload_directory_from_source(source, config, EMAIL, "D", "OTHER")
    assert rec.requests == []
    assert "google_drive folder uploads are not implemented" in caplog.text
    assert "s3 folder uploads are not implemented" in caplog.text


# -- against a real server -----------------------------------------------------------


@dataclass
class Served:
    """A server in a background thread and the folder its upload-path route
    may read."""

    background: Any
    files: Path

    @property
    def url(self) -> str:
        return str(self.background.url)

    def stop(self) -> None:
        self.background.stop()


SECRET = "unified-test-secret-key-long-enough-0123456789"  # noqa: S105


def _serve(root: Path, *, run_worker: bool = True, no_auth: bool = True) -> Served:
    from sclib.server import serve_in_background
    from sclib.settings import load_settings

    files = root / "server-files"
    files.mkdir(parents=True, exist_ok=True)
    keys = root / "credentials"  # the operator's folder of service account keys
    keys.mkdir(parents=True, exist_ok=True)
    (keys / "service.json").write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "reader@project.iam.gserviceaccount.com",
                "private_key": "not a real key",
            }
        )
    )
    settings = load_settings(
        credentials_dir=keys,
        data_dir=root / "data",
        no_auth=no_auth,
        standard_upload_limit=1_000_000,  # above 1 MB: chunks of 1 MiB
        chunk_size=MIB,
        upload_path_roots=str(files),
        allow_private_addresses=True,  # URL imports from this 127.0.0.1 server
        secret_key=SECRET,
    )
    return Served(serve_in_background(settings, run_worker=run_worker), files)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """An sclib server with a worker and no tokens (like the original server)."""
    live = _serve(tmp_path_factory.mktemp("unified"))
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """An sclib server without a worker: imports stay queued, nothing is fetched."""
    live = _serve(tmp_path_factory.mktemp("idle"), run_worker=False)
    try:
        yield live
    finally:
        live.stop()


def _legacy(server: Served, tmp_path: Path, **kw: Any) -> ScientistCloudUploadClient:
    return ScientistCloudUploadClient(server.url, state_dir=tmp_path / "state", **kw)


def _file(tmp_path: Path, size: int, name: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def _files_of(client: ScientistCloudUploadClient, dataset_uuid: str) -> dict[str, int]:
    """The dataset's files (path inside it -> size), from sclib's datasets API."""
    info = client.client.get_dataset(dataset_uuid)
    return {f["path"]: f["size"] for f in info.files}


def _same_id(a: str | None, b: str) -> bool:
    """Two dataset ids are the same, dashes or not."""
    assert a is not None
    try:
        return uuid.UUID(a) == uuid.UUID(b)
    except ValueError:
        return a == b


def _completed(client: ScientistCloudUploadClient, job_id: str) -> JobStatus:
    status = client.wait_for_completion(job_id, 60, 0.1)
    assert status.status == "completed", status
    return status


@pytest.mark.integration
def test_upload_file_small_and_big_positionally(server: Served, tmp_path: Path) -> None:
    """The original positional call uploads a small file in one request and a
    5 MiB one in verified chunks; progress ends at 1.0; the jobs complete and
    the dataset holds the bytes."""
    small = _file(tmp_path, 20_000, "small.bin")
    big = _file(tmp_path, 5 * MIB + 123, "big.bin")
    seen: list[float] = []
    with _legacy(server, tmp_path) as client:
        one = client.upload_file(str(small), EMAIL, "Small", "OTHER")
        two = client.upload_file(
            big,
            EMAIL,
            "Big",
            "OTHER",
            False,
            False,
            None,
            None,
            None,
            False,
            seen.append,
        )
        assert (one.upload_type, two.upload_type) == ("standard", "chunked")
        for result in (one, two):
            assert result.job_id and result.message
            assert result.status in ("queued", "uploading", "processing", "completed")
            status = _completed(client, result.job_id)
            assert status.job_id == result.job_id
            assert isinstance(status.created_at, str)
        assert seen[-1] == 1.0 and seen == sorted(seen)
        assert two.dataset_uuid is not None
        assert _files_of(client, two.dataset_uuid) == {"big.bin": big.stat().st_size}


@pytest.mark.integration
def test_upload_file_adds_to_an_existing_dataset(
    server: Served, tmp_path: Path
) -> None:
    """dataset_identifier with add_to_existing=True puts the file into that
    dataset."""
    a, b = _file(tmp_path, 1000, "a.bin"), _file(tmp_path, 2000, "b.bin")
    with _legacy(server, tmp_path) as client:
        first = client.upload_file(a, EMAIL, "Pair", "OTHER")
        assert first.dataset_uuid is not None
        second = client.upload_file(
            b,
            EMAIL,
            "Pair",
            "OTHER",
            dataset_identifier=first.dataset_uuid,
            add_to_existing=True,
        )
        assert second.dataset_uuid == first.dataset_uuid
        _completed(client, first.job_id)
        _completed(client, second.job_id)
        assert _files_of(client, first.dataset_uuid) == {"a.bin": 1000, "b.bin": 2000}


@pytest.mark.integration
def test_dataset_identifier_creates_the_dataset(server: Served, tmp_path: Path) -> None:
    """(Needs the server change.) A new dataset_identifier with
    add_to_existing=False makes a dataset with that identifier, for a small and
    a chunked file; add_to_existing=True then adds to it."""
    small, big = _file(tmp_path, 1000, "s.bin"), _file(tmp_path, 3 * MIB, "b.bin")
    with _legacy(server, tmp_path) as client:
        for path in (small, big):
            ident = str(uuid.uuid4())
            made = client.upload_file(
                path, EMAIL, "Mine", "OTHER", dataset_identifier=ident
            )
            assert _same_id(made.dataset_uuid, ident)
            more = client.upload_file(
                _file(tmp_path, 10, "more.txt"),
                EMAIL,
                "Mine",
                "OTHER",
                dataset_identifier=ident,
                add_to_existing=True,
            )
            assert more.dataset_uuid == made.dataset_uuid
            _completed(client, made.job_id)
            _completed(client, more.job_id)


def _tree(root: Path) -> dict[str, int]:
    files = {"top.bin": 1500, "sub/a.bin": 2 * MIB, "sub/deeper/b.txt": 0}
    for name, size in files.items():
        _file(root, size, name)
    return files


@pytest.mark.integration
def test_upload_directory_makes_one_dataset(server: Served, tmp_path: Path) -> None:
    """(Needs the server change.) A folder goes into one new dataset, keeping its
    subfolders; each file is a result; progress ends at 1.0."""
    files = _tree(tmp_path / "run")
    seen: list[float] = []
    with _legacy(server, tmp_path) as client:
        results = client.upload_directory(
            tmp_path / "run", EMAIL, "Run", "OTHER", progress_callback=seen.append
        )
        assert [r.status for r in results].count("failed") == 0, results
        assert len(results) == 3
        assert len({r.dataset_uuid for r in results}) == 1
        for result in results:
            _completed(client, result.job_id)
        dataset = results[0].dataset_uuid
        assert dataset is not None
        assert _files_of(client, dataset) == files
    assert seen[-1] == 1.0 and seen == sorted(seen)


@pytest.mark.integration
def test_a_failed_file_of_a_folder_is_a_result(server: Served, tmp_path: Path) -> None:
    """(Needs the server change.) A file the server refuses (a backslash in its
    name) is a 'failed' result with no job; the next file creates the dataset and
    the rest join it."""
    root = tmp_path / "run"
    _file(root, 10, "0\\bad.txt")
    _file(root, 10, "a.txt")
    _file(root, 10, "b.txt")
    with _legacy(server, tmp_path) as client:
        bad, a, b = client.upload_directory(root, EMAIL, "Run", "OTHER")
    assert (bad.job_id, bad.status, bad.upload_type) == ("", "failed", "failed")
    assert bad.message is not None and "0\\bad.txt" in bad.message
    assert a.status != "failed" and b.status != "failed"
    assert a.dataset_uuid == b.dataset_uuid is not None


@pytest.mark.integration
def test_upload_directory_never_raises_for_failed_files(
    server: Served, tmp_path: Path
) -> None:
    """Every file refused (an unknown sensor): failed results, no exception."""
    root = tmp_path / "run"
    _tree(root)
    with _legacy(server, tmp_path) as client:
        results = client.upload_directory(root, EMAIL, "Run", "NOT-A-SENSOR")
    assert [(r.status, r.upload_type, r.job_id) for r in results] == [
        ("failed", "failed", "")
    ] * 3


@pytest.mark.integration
def test_upload_directory_from_local_source(server: Served, tmp_path: Path) -> None:
    """(Needs the server change.) upload_directory_from_source('local') uploads
    source_config['directory_path'] as upload_directory does."""
    files = _tree(tmp_path / "run")
    with _legacy(server, tmp_path) as client:
        results = client.upload_directory_from_source(
            "local", {"directory_path": str(tmp_path / "run")}, EMAIL, "Run", "OTHER"
        )
        assert len(results) == 3 and all(r.status != "failed" for r in results)
        for result in results:
            _completed(client, result.job_id)
        assert results[0].dataset_uuid is not None
        assert _files_of(client, results[0].dataset_uuid) == files


@pytest.mark.integration
def test_upload_file_by_path(server: Served, tmp_path: Path) -> None:
    """(Needs the server change.) A file already on the server is ingested from
    its path (urlencoded form); with dataset_uuid it joins that dataset."""
    root = server.files
    first = _file(root, 3000, f"{uuid.uuid4().hex}/one.bin")
    second = _file(first.parent, 4000, "two.bin")
    with _legacy(server, tmp_path) as client:
        made = client.upload_file_by_path(str(first), EMAIL, "Here", "OTHER")
        assert made.job_id and made.upload_type
        _completed(client, made.job_id)
        assert made.dataset_uuid is not None
        more = client.upload_file_by_path(
            str(second), EMAIL, "Here", "OTHER", dataset_uuid=made.dataset_uuid
        )
        _completed(client, more.job_id)
        assert _files_of(client, made.dataset_uuid) == {
            "one.bin": 3000,
            "two.bin": 4000,
        }


@pytest.mark.integration
def test_url_import_completes(server: Served, tmp_path: Path) -> None:
    """initiate_url_upload queues an import the server's worker completes."""
    with _legacy(server, tmp_path) as client:
        result = client.initiate_url_upload(
            f"{server.url}/api/upload/limits", EMAIL, "Limits", "OTHER"
        )
        assert result.status == "queued" and result.job_id
        assert isinstance(client.get_upload_status(result.job_id), JobStatus)
        _completed(client, result.job_id)


@pytest.mark.integration
def test_imports_status_cancel_and_list(idle_server: Served, tmp_path: Path) -> None:
    """On a server without a worker: S3 imports (both ways) are queued, their
    status is 'queued', waiting times out with a TimeoutError, cancelling answers
    a dict and the job ends 'cancelled'; the user's job list holds them."""
    with _legacy(idle_server, tmp_path) as client:
        s3 = client.initiate_s3_upload(
            "bucket", "a/b.h5", "AK", "SK", EMAIL, "S3", "HDF5"
        )
        config = {
            "bucket_name": "bucket",
            "object_key": "c.h5",
            "access_key_id": "AK",
            "secret_access_key": "SK",
        }
        other = client.upload_from_source("s3", config, EMAIL, "S3 again", "HDF5")
        for result in (s3, other):
            assert result.status == "queued"
            status = client.get_upload_status(result.job_id)
            assert (status.job_id, status.status) == (result.job_id, "queued")
            assert status.progress_percentage == 0.0
        with pytest.raises(TimeoutError):
            client.wait_for_completion(s3.job_id, 0.3, 0.1)
        answer = client.cancel_upload(s3.job_id)
        assert type(answer) is dict
        assert client.wait_for_completion(s3.job_id, 5, 0.1).status == "cancelled"
        listed = client.list_upload_jobs(EMAIL)
        assert type(listed) is dict
        ids = {job["job_id"] for job in listed["jobs"]}
        assert {s3.job_id, other.job_id} <= ids


@pytest.mark.integration
def test_google_drive_import_with_a_server_path(
    idle_server: Served, tmp_path: Path
) -> None:
    """A service account file named by its path on the server is accepted when
    it lies in the operator's credentials folder (SCLIB_CREDENTIALS_DIR), as the
    original deployment kept its keys; any other path is refused, naming the
    setting."""
    keys = idle_server.files.parent / "credentials"
    with _legacy(idle_server, tmp_path) as client:
        for name in ("service.json", str(keys / "service.json")):
            result = client.initiate_google_drive_upload(
                "1ABC123DEF456", name, EMAIL, "Drive", "OTHER"
            )
            assert result.status == "queued"
        for outside in ("/path/to/service.json", "../credentials/../x.json"):
            with pytest.raises(InvalidInput, match="SCLIB_CREDENTIALS_DIR"):
                client.initiate_google_drive_upload(
                    "1ABC123DEF456", outside, EMAIL, "Drive", "OTHER"
                )


@pytest.mark.integration
def test_info_routes_answer_dicts(server: Served, tmp_path: Path) -> None:
    """health_check, get_api_info, get_upload_limits and get_supported_sources
    return the server's JSON as dicts; an unknown job is JobNotFound."""
    with _legacy(server, tmp_path) as client:
        health = client.health_check()
        answers = [
            health,
            client.get_api_info(),
            client.get_upload_limits(),
            client.get_supported_sources(),
        ]
        assert all(type(a) is dict and a for a in answers)
        assert health["status"] == "healthy"
        with pytest.raises(JobNotFound):
            client.get_upload_status("no-such-job")


@pytest.mark.integration
def test_info_routes_have_the_original_keys(server: Served, tmp_path: Path) -> None:
    """(Needs the server change.) The keys the original's example scripts read:
    health, limits, supported sources, API info; estimated_duration an int."""
    with _legacy(server, tmp_path) as client:
        health = client.health_check()
        for key in (
            "status",
            "upload_type",
            "large_file_threshold_mb",
            "max_file_size_tb",
        ):
            assert key in health, key
        limits = client.get_upload_limits()
        for key in ("chunk_size_bytes", "chunk_size_mb", "max_file_size_bytes"):
            assert key in limits, key
        sources = client.get_supported_sources()
        for key in ("source_types", "sensor_types", "required_parameters"):
            assert key in sources, key
        assert "optional_parameters" in sources
        assert {"message", "version"} <= set(client.get_api_info())
        result = client.upload_file(_file(tmp_path, 100, "x.bin"), EMAIL, "X", "OTHER")
        assert isinstance(result.estimated_duration, int)


@pytest.mark.integration
def test_token_reaches_a_server_with_authentication(tmp_path: Path) -> None:
    """Against a server that wants tokens, token= is sent and works; without one
    the answer is Unauthorized."""
    from sclib.server.auth import Authenticator

    live = _serve(tmp_path / "auth", no_auth=False, run_worker=False)
    try:
        token = Authenticator(secret_key=SECRET).issue_token(EMAIL)
        f = _file(tmp_path, 100, "x.bin")
        with _legacy(live, tmp_path, token=token) as client:
            result = client.upload_file(f, EMAIL, "X", "OTHER")
            assert client.get_upload_status(result.job_id).status == "queued"
        with _legacy(live, tmp_path, token="") as client, pytest.raises(Unauthorized):
            client.upload_file(f, EMAIL, "X", "OTHER")
    finally:
        live.stop()


def _run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coro_fn())


@pytest.mark.integration
def test_async_twin_uploads_and_waits(server: Served, tmp_path: Path) -> None:
    """The async drop-in uploads a small and a chunked file positionally, reads
    their status and waits for them; a refused folder gives failed results."""
    small = _file(tmp_path, 5000, "s.bin")
    big = _file(tmp_path, 3 * MIB, "b.bin")
    _tree(tmp_path / "run")

    async def main() -> tuple[list[str], list[str], list[str]]:
        async with AsyncScientistCloudUploadClient(
            server.url, state_dir=tmp_path / "state"
        ) as client:
            results = [
                await client.upload_file(small, EMAIL, "S", "OTHER"),
                await client.upload_file(str(big), EMAIL, "B", "OTHER", False),
            ]
            statuses = [await client.get_upload_status(r.job_id) for r in results]
            assert all(isinstance(s, JobStatus) for s in statuses)
            done = [
                await client.wait_for_completion(r.job_id, 60, 0.1) for r in results
            ]
            failed = await client.upload_directory(tmp_path / "run", EMAIL, "R", "NOPE")
            assert (await client.health_check())["status"] == "healthy"
            return (
                [r.upload_type for r in results],
                [s.status for s in done],
                [r.status for r in failed],
            )

    types, done, failed = _run(main)
    assert types == ["standard", "chunked"]
    assert done == ["completed", "completed"]
    assert failed == ["failed"] * 3


@pytest.mark.integration
def test_async_upload_directory(server: Served, tmp_path: Path) -> None:
    """(Needs the server change.) The async drop-in's upload_directory works (the
    original's always failed) and makes one dataset."""
    files = _tree(tmp_path / "run")

    async def main() -> list[UploadResult]:
        async with AsyncScientistCloudUploadClient(
            server.url, state_dir=tmp_path / "state"
        ) as client:
            results = await client.upload_directory(
                tmp_path / "run", EMAIL, "R", "OTHER"
            )
            for r in results:
                await client.wait_for_completion(r.job_id, 60, 0.1)
            return results

    results = _run(main)
    assert all(r.status != "failed" for r in results), results
    with _legacy(server, tmp_path) as client:
        assert results[0].dataset_uuid is not None
        assert _files_of(client, results[0].dataset_uuid) == files


def test_wrapped_client_is_sclibs(tmp_path: Path) -> None:
    """The drop-ins keep the original defaults and hand them to the sclib
    client they wrap (its own methods stay reachable as .client)."""
    with ScientistCloudUploadClient(state_dir=tmp_path) as client:
        assert (client.base_url, client.timeout) == ("http://localhost:5000", 300)
        assert isinstance(client.client, Client)
        assert client.client._http.timeout.read == 300
    with pytest.raises(InvalidInput):
        ScientistCloudUploadClient(state_dir=tmp_path, parallel=0)
