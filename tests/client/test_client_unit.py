"""The client's logic without a network: twins, errors, models, state, flows.

The flows run against :class:`FakeServer`, an in-memory stand-in for the server's
upload routes plugged in as an ``httpx.MockTransport``. A fake on purpose: it
injects faults the real server does not produce on demand (a 503 on the third
chunk, a connection dropped mid-chunk, a busy chunk, a crash after chunk k) and
counts every request exactly. The same flows run against the real server in
``test_client_server.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import sclib.client
from sclib.client import (
    AsyncClient,
    Client,
    ConnectionFailed,
    Limits,
    ScientistCloudUploadClient,
    ServerError,
    UploadResult,
    UploadState,
    UploadStateStore,
    UploadStatus,
    WaitTimeout,
    _base,
    _errors,
    _options,
    default_state_dir,
)
from sclib.client.state import content_key
from sclib.errors import (
    ChecksumMismatch,
    Forbidden,
    InvalidInput,
    InvalidJobState,
    JobNotFound,
    LeaseLost,
    NotFound,
    SclibError,
    TooLarge,
    Unauthorized,
    UploadBusy,
    UploadConflict,
)
from sclib.transfers.hashing import blake3_hex

KIB = 1024
_BACKOFF = _base.backoff  # the real one; flows run with no waiting

# -- the twins -----------------------------------------------------------------------


def _public(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, callable)
        if not name.startswith("_")
    }


def test_twins_expose_the_same_methods() -> None:
    """Client and AsyncClient have the same public methods (close <-> aclose)."""
    sync = set(_public(Client)) - {"close"}
    async_ = set(_public(AsyncClient)) - {"aclose"}
    assert sync == async_
    assert "close" in _public(Client)
    assert "aclose" in _public(AsyncClient)


def test_twins_have_the_same_signatures_and_docs() -> None:
    """Every twin method takes the same parameters, is awaitable, and is documented."""
    sync, async_ = _public(Client), _public(AsyncClient)
    for name in sorted(set(sync) - {"close"}):
        s, a = inspect.signature(sync[name]), inspect.signature(async_[name])
        assert [(p.name, p.kind, p.default) for p in s.parameters.values()] == [
            (p.name, p.kind, p.default) for p in a.parameters.values()
        ], name
        assert inspect.iscoroutinefunction(async_[name]), name
        assert sync[name].__doc__, name
        assert async_[name].__doc__ == sync[name].__doc__, name


def test_constructors_match() -> None:
    """Both constructors take the same arguments."""
    s = inspect.signature(Client.__init__).parameters
    a = inspect.signature(AsyncClient.__init__).parameters
    assert list(s) == list(a)
    assert {k: v.default for k, v in s.items()} == {k: v.default for k, v in a.items()}


def test_seed_name_is_the_drop_in_that_wraps_a_client(tmp_path: Path) -> None:
    """ScientistCloudUploadClient is no longer an alias of Client: it is the
    original client's drop-in, and the Client doing its work is its .client."""
    assert ScientistCloudUploadClient is not Client
    with ScientistCloudUploadClient(state_dir=tmp_path) as legacy:
        assert isinstance(legacy.client, Client)
        assert legacy.client.base_url == "http://localhost:5000"


def test_all_is_exactly_the_public_api() -> None:
    """sclib.client.__all__ names each public name once, and each exists."""
    assert len(sclib.client.__all__) == len(set(sclib.client.__all__))
    for name in sclib.client.__all__:
        assert hasattr(sclib.client, name), name


def test_import_sclib_does_not_import_the_client() -> None:
    """import sclib leaves sclib.client (and httpx) unloaded."""
    code = "import sys, sclib; print('sclib.client' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# -- errors --------------------------------------------------------------------------


def _problem(status: int, code: str | None, detail: str = "nope") -> bytes:
    body: dict[str, Any] = {"type": "about:blank", "title": "x", "status": status}
    body["detail"] = detail
    if code is not None:
        body["code"] = code
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (404, "job_not_found", JobNotFound),
        (404, "not_found", NotFound),
        (422, "invalid_input", InvalidInput),
        (401, "unauthorized", Unauthorized),
        (403, "forbidden", Forbidden),
        (409, "upload_conflict", UploadConflict),
        (423, "upload_busy", UploadBusy),
        (413, "too_large", TooLarge),
        (400, "checksum_mismatch", ChecksumMismatch),
        (409, "invalid_job_state", InvalidJobState),
        (409, "lease_lost", LeaseLost),
        (503, "server_error", ServerError),
    ],
)
def test_problem_codes_map_to_the_library_classes(
    status: int, code: str, cls: type[SclibError]
) -> None:
    """The problem's code names the exception class, whatever its constructor."""
    exc = _errors.error_from_response(status, _problem(status, code, "it broke"))
    assert type(exc) is cls
    assert "it broke" in str(exc)
    assert exc.status_code == status  # type: ignore[attr-defined]
    assert exc.code == code  # type: ignore[attr-defined]
    assert exc.problem["detail"] == "it broke"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidInput),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, UploadConflict),
        (413, TooLarge),
        (422, InvalidInput),
        (423, UploadBusy),
        (429, ServerError),
        (500, ServerError),
        (502, ServerError),
        (418, SclibError),
    ],
)
def test_status_decides_without_a_known_code(status: int, cls: type) -> None:
    """Without a code (or with one no class has), the HTTP status picks the class."""
    assert type(_errors.error_from_response(status, _problem(status, None))) is cls
    unknown = _errors.error_from_response(status, _problem(status, "no_such_thing"))
    assert type(unknown) is cls


def test_server_errors_are_retryable_and_client_errors_not() -> None:
    """5xx and 423 can be retried; 4xx about the request cannot."""
    assert _errors.error_from_response(500, b"").retryable
    assert _errors.error_from_response(423, b"").retryable
    assert not _errors.error_from_response(422, b"").retryable
    assert not _errors.error_from_response(404, b"").retryable


def test_error_text_survives_odd_bodies() -> None:
    """Plain-text bodies, FastAPI's list details and the seed's 'error' all read."""
    plain = _errors.error_from_response(502, b"Bad Gateway from the proxy")
    assert "Bad Gateway" in str(plain) and "HTTP 502" in str(plain)
    listed = json.dumps(
        {"detail": [{"loc": ["body", "sensor"], "msg": "field required"}]}
    ).encode()
    assert "sensor: field required" in str(_errors.error_from_response(422, listed))
    seed = json.dumps({"error": "Not found"}).encode()
    assert "Not found" in str(_errors.error_from_response(404, seed))


def test_context_is_attached_to_the_error() -> None:
    """A JobNotFound from the status route knows its job_id."""
    exc = _errors.error_from_response(
        404, _problem(404, "job_not_found"), context={"job_id": "j1"}
    )
    assert isinstance(exc, JobNotFound) and exc.job_id == "j1"


def test_wait_timeout_is_a_timeout_error() -> None:
    """WaitTimeout can be caught as the built-in TimeoutError, and is retryable."""
    assert issubclass(WaitTimeout, TimeoutError)
    assert WaitTimeout.retryable and ConnectionFailed.retryable


# -- models --------------------------------------------------------------------------


def test_models_read_like_the_seeds_dicts() -> None:
    """result['job_id'], .get(), 'in' and keys() work, extras included."""
    result = UploadResult.model_validate(
        {"job_id": "j1", "status": "queued", "upload_type": "standard", "x": 1}
    )
    assert result["job_id"] == result.job_id == "j1"
    assert result["x"] == 1 and result.get("x") == 1
    assert result.get("missing") is None and result.get("missing", 5) == 5
    assert "job_id" in result and "x" in result and "missing" not in result
    assert {"job_id", "status", "x"} <= set(result.keys())
    with pytest.raises(KeyError):
        result["missing"]
    assert result.to_dict()["x"] == 1


def test_status_model_knows_when_a_job_finished() -> None:
    """UploadStatus.finished is true for completed, failed and cancelled."""
    for status, finished in [("pending", False), ("running", False)] + [
        (s, True) for s in ("completed", "failed", "cancelled")
    ]:
        assert UploadStatus(job_id="j", status=status).finished is finished


def test_limits_default_to_the_seed_standard_limit() -> None:
    """A server that does not say gets the seed's 100 MB single-request limit."""
    assert Limits().standard_upload_limit == 100 * 1000**2


# -- state ---------------------------------------------------------------------------


def _state(**kw: Any) -> UploadState:
    base: dict[str, Any] = {
        "upload_id": "u1",
        "chunk_size": 4096,
        "total_chunks": 3,
        "size": 10000,
        "path": "/x",
        "server": "http://s",
        "created_at": 1.0,
    }
    return UploadState(**{**base, **kw})


def test_state_store_round_trip(tmp_path: Path) -> None:
    """Saved entries load back equal, are listed, and removal forgets them."""
    store = UploadStateStore(tmp_path / "st")
    key = "ab" * 32
    assert store.load(key) is None
    store.save(key, _state())
    assert store.load(key) == _state()
    assert list(store.keys()) == [key] and len(store) == 1
    store.save(key, _state(upload_id="u2"))
    loaded = store.load(key)
    assert loaded is not None and loaded.upload_id == "u2"
    assert [p.name for p in (tmp_path / "st").iterdir()] == [f"{key}.json"]
    store.remove(key)
    store.remove(key)
    assert store.load(key) is None and len(store) == 0


def test_state_store_ignores_damaged_entries(tmp_path: Path) -> None:
    """A truncated or foreign file is treated as no entry, not an error."""
    store = UploadStateStore(tmp_path)
    key = "cd" * 32
    (tmp_path / f"{key}.json").write_text("{not json")
    assert store.load(key) is None
    (tmp_path / f"{key}.json").write_text(json.dumps({"version": 99}))
    assert store.load(key) is None
    (tmp_path / f"{key}.json").write_text(json.dumps({"version": 1, "what": 1}))
    assert store.load(key) is None
    with pytest.raises(ValueError, match="not a state key"):
        store.load("../etc")


def test_content_key_follows_content_identity(tmp_path: Path) -> None:
    """The key changes with the server, the path, the size and the mtime."""
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 10)
    st = f.stat()
    key = content_key("http://s", f, st)
    assert key == content_key("http://s/", f, st)
    assert key != content_key("http://other", f, st)
    assert key != content_key("http://s", tmp_path / "b.bin", st)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert key != content_key("http://s", f, f.stat())
    f.write_bytes(b"x" * 11)
    assert key != content_key("http://s", f, f.stat())


def test_default_state_dir_uses_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$XDG_CACHE_HOME wins; ~/.cache otherwise."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "sclib" / "uploads"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".cache" / "sclib" / "uploads"


# -- options -------------------------------------------------------------------------


def test_dataset_fields_become_seed_form_text() -> None:
    """Bools become true/false, tags a comma list, the name defaults to the file."""
    values = _options.dataset_values(
        {"sensor": "TIFF", "convert": False, "tags": ["a", " b ", ""], "folder": None},
        "scan.tif",
    )
    assert values == {
        "dataset_name": "scan.tif",
        "sensor": "TIFF",
        "convert": False,
        "tags": ["a", "b"],
    }
    assert _options.form_fields(values) == {
        "dataset_name": "scan.tif",
        "sensor": "TIFF",
        "convert": "false",
        "tags": "a,b",
    }


def test_unknown_options_are_refused(tmp_path: Path) -> None:
    """A misspelt keyword is a TypeError, as for any Python function."""
    f = tmp_path / "a"
    f.write_bytes(b"1")
    with (
        _client(FakeServer(), tmp_path) as c,
        pytest.raises(TypeError, match="sensr"),
    ):
        c.upload_file(f, sensr="TIFF")  # type: ignore[call-arg]


def test_backoff_grows_and_is_capped() -> None:
    """Retry waits grow exponentially, with jitter, up to 8 s."""
    assert 0.125 <= _BACKOFF(1) <= 0.25
    assert 0.5 <= _BACKOFF(3) <= 1.0
    assert _BACKOFF(30) <= 8.0


# -- flows against an in-memory server ----------------------------------------------


class FakeServer:
    """The upload routes in memory; counts requests by route."""

    def __init__(self, *, standard_limit: int = 1000, chunk_size: int = 4 * KIB):
        self.standard_limit = standard_limit
        self.chunk_size = chunk_size
        self.uploads: dict[str, dict[str, Any]] = {}
        self.requests: Counter[str] = Counter()
        self.chunks_sent: list[int] = []
        self.failures: dict[tuple[str, int], list[Any]] = {}
        self.statuses: list[str] = ["running", "completed"]
        self.headers: list[httpx.Headers] = []
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        self._n = 0
        self.delay = 0.0
        self.inflight = 0
        self.max_inflight = 0

    def fail(self, route: str, index: int, *outcomes: Any) -> None:
        """Make the next requests to ``route`` (chunk ``index``) fail in turn."""
        self.failures[(route, index)] = list(outcomes)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self.delay:
                time.sleep(self.delay)
            with self._lock:
                return self._handle(request)
        finally:
            with self._lock:
                self.inflight -= 1

    def _json(self, request: httpx.Request) -> Any:
        return json.loads(request.content) if request.content else None

    def _handle(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")
        self.headers.append(request.headers)
        key = _route_key(parts)
        self.requests[key] = self.requests[key] + 1
        index = int(parts[-1]) if key == "chunk" else -1
        pending = self.failures.get((key, index))
        if pending:
            outcome = pending.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return httpx.Response(outcome, json={"detail": "injected", "code": None})
        if key == "limits":
            return httpx.Response(
                200,
                json={
                    "standard_upload_limit": self.standard_limit,
                    "chunk_size": 1,
                    # the client asks for the largest power of two below this
                    "max_chunk_size": self.chunk_size,
                },
            )
        if key == "standard":
            request.read()
            self.bodies.append(request.content)
            return httpx.Response(
                200, json={"job_id": "j-std", "status": "queued", "dataset_uuid": "d1"}
            )
        if key == "initiate":
            body = self._json(request)
            self._n += 1
            upload_id = f"up{self._n}"
            size = body["file_size"]
            chunk = body.get("chunk_size") or self.chunk_size
            total = max(1, -(-size // chunk))
            self.uploads[upload_id] = {
                "size": size,
                "chunk": chunk,
                "total": total,
                "data": {},
                "body": body,
            }
            return httpx.Response(
                200,
                json={
                    "upload_id": upload_id,
                    "chunk_size": chunk,
                    "total_chunks": total,
                },
            )
        upload = self.uploads.get(parts[4]) if len(parts) > 4 else None
        if key in ("chunk", "resume", "complete") and upload is None:
            return httpx.Response(404, json={"detail": "gone", "code": "not_found"})
        assert upload is not None or key in ("status", "import", "jobs")
        if key == "chunk":
            assert upload is not None
            data = request.content
            algo, _, digest = request.headers["x-chunk-hash"].partition(":")
            assert request.headers["content-type"] == "application/octet-stream"
            if algo != "blake3" or blake3_hex(data) != digest:
                return httpx.Response(400, json={"code": "checksum_mismatch"})
            upload["data"][index] = data
            self.chunks_sent.append(index)
            return httpx.Response(
                200,
                json={
                    "upload_id": parts[4],
                    "chunk_index": index,
                    "uploaded_chunks": len(upload["data"]),
                    "total_chunks": upload["total"],
                    "received": True,
                },
            )
        if key == "resume":
            assert upload is not None
            missing = [i for i in range(upload["total"]) if i not in upload["data"]]
            return httpx.Response(
                200,
                json={
                    "upload_id": parts[4],
                    "missing_chunks": missing,
                    "total_chunks": upload["total"],
                    "can_resume": True,
                },
            )
        if key == "complete":
            assert upload is not None
            whole = b"".join(upload["data"][i] for i in range(upload["total"]))
            sent = (self._json(request) or {}).get("file_blake3")
            if sent is not None and sent != blake3_hex(whole):
                return httpx.Response(400, json={"code": "checksum_mismatch"})
            upload["whole"] = whole
            return httpx.Response(
                200,
                json={
                    "upload_id": parts[4],
                    "job_id": "j-big",
                    "dataset_uuid": "d2",
                    "status": "pending",
                    "file_blake3": blake3_hex(whole),
                },
            )
        if key == "status":
            status = (
                self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            )
            return httpx.Response(200, json={"job_id": parts[-1], "status": status})
        if key == "import":
            self.bodies.append(request.content)
            return httpx.Response(200, json={"job_id": "j-imp", "status": "queued"})
        return httpx.Response(404, json={"detail": "no route", "code": "not_found"})


def _route_key(parts: list[str]) -> str:
    path = "/".join(parts)
    if path == "api/upload/limits":
        return "limits"
    if path in ("api/upload/upload", "api/upload/local/upload"):
        return "standard"
    if path == "api/upload/initiate":
        return "import"
    if path.startswith("api/upload/large/"):
        return {"initiate": "initiate"}.get(parts[3], parts[3])
    if path.startswith("api/upload/status/"):
        return "status"
    return path


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_base, "backoff", lambda attempt: 0.0)


def _client(
    server: FakeServer, tmp_path: Path, **kw: Any
) -> Client:  # a sync client on the fake
    return Client(
        "http://test",
        "tok",
        transport=httpx.MockTransport(server),
        state_dir=tmp_path / "state",
        **kw,
    )


def _file(tmp_path: Path, size: int, name: str = "data.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def test_small_file_goes_in_one_streamed_request(tmp_path: Path) -> None:
    """Up to the limit: one multipart request with the seed's form fields."""
    server = FakeServer(standard_limit=1000)
    f = _file(tmp_path, 900)
    seen: list[float] = []
    with _client(server, tmp_path) as c:
        result = c.upload_local_file(
            f,
            dataset_name="D",
            sensor="TIFF",
            is_public=True,
            progress_callback=seen.append,
        )
    assert result.job_id == "j-std" and result["upload_type"] == "standard"
    assert server.requests["standard"] == 1 and server.requests["initiate"] == 0
    body = server.bodies[0]
    assert f.read_bytes() in body
    assert b'name="is_public"\r\n\r\ntrue' in body
    assert b'name="dataset_name"\r\n\r\nD' in body
    assert seen[-1] == 1.0
    assert server.headers[-1]["authorization"] == "Bearer tok"


def test_large_file_goes_in_verified_chunks(tmp_path: Path) -> None:
    """Above the limit: initiate, raw BLAKE3-tagged chunks, complete with the digest."""
    server = FakeServer(standard_limit=1000, chunk_size=4 * KIB)
    f = _file(tmp_path, 10 * KIB + 5)
    seen: list[float] = []
    with _client(server, tmp_path, parallel=3) as c:
        result = c.upload_file(f, sensor="OTHER", progress_callback=seen.append)
    upload = server.uploads["up1"]
    assert upload["whole"] == f.read_bytes()
    assert sorted(server.chunks_sent) == [0, 1, 2]
    assert result.upload_type == "chunked" and result.job_id == "j-big"
    assert result.file_blake3 == blake3_hex(f.read_bytes())
    assert upload["body"]["dataset_name"] == "data.bin"
    assert seen[-1] == 1.0 and seen == sorted(seen)
    assert len(UploadStateStore(tmp_path / "state")) == 0


def test_parallel_bounds_the_chunks_in_flight(tmp_path: Path) -> None:
    """parallel=3 keeps at most three chunk requests open at once (and uses them)."""
    server = FakeServer(chunk_size=4 * KIB)
    server.delay = 0.02
    f = _file(tmp_path, 48 * KIB)
    with _client(server, tmp_path, parallel=3) as c:
        c.upload_file(f, sensor="OTHER")
    assert server.max_inflight == 3
    assert server.uploads["up1"]["whole"] == f.read_bytes()


def test_progress_bars_draw_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """progress=True draws tqdm bars for the upload and for the wait."""
    server = FakeServer(chunk_size=4 * KIB)
    f = _file(tmp_path, 12 * KIB, "bar.bin")
    with _client(server, tmp_path) as c:
        c.upload_file(f, sensor="OTHER", progress=True)
        c.upload_file(_file(tmp_path, 10, "tiny.bin"), sensor="OTHER", progress=True)
        c.wait_for_completion("j1", poll_interval=0.001, progress=True)
    err = capsys.readouterr().err
    assert "bar.bin" in err and "tiny.bin" in err and "100%" in err
    assert "j1" in err and "completed" in err


def test_chunk_size_and_forced_mode_are_honoured(tmp_path: Path) -> None:
    """chunk_size goes to the server; chunked=True overrides the size rule."""
    server = FakeServer(standard_limit=10**9)
    f = _file(tmp_path, 5 * KIB)
    with _client(server, tmp_path) as c:
        c.upload_file(f, sensor="OTHER", chunked=True, chunk_size=KIB)
    assert server.uploads["up1"]["body"]["chunk_size"] == KIB
    assert sorted(server.chunks_sent) == [0, 1, 2, 3, 4]
    assert server.requests["limits"] == 0


def test_transient_chunk_failures_are_retried(tmp_path: Path) -> None:
    """A dropped connection, a busy chunk and a 503 are retried; the upload lands."""
    server = FakeServer(chunk_size=4 * KIB)
    server.fail("chunk", 1, httpx.ConnectError("reset"), 423, 503)
    f = _file(tmp_path, 12 * KIB)
    with _client(server, tmp_path, parallel=2) as c:
        c.upload_file(f, sensor="OTHER")
    assert server.uploads["up1"]["whole"] == f.read_bytes()
    assert server.requests["chunk"] == 3 + 3


def test_a_permanent_chunk_error_stops_the_upload(tmp_path: Path) -> None:
    """A 413 is not retried: it is raised, and the state stays for a later resume."""
    server = FakeServer(chunk_size=4 * KIB)
    server.fail("chunk", 0, 413)
    f = _file(tmp_path, 12 * KIB)
    with _client(server, tmp_path, parallel=1) as c, pytest.raises(TooLarge):
        c.upload_file(f, sensor="OTHER")
    assert server.requests["complete"] == 0
    assert len(UploadStateStore(tmp_path / "state")) == 1


def test_retries_give_up_after_the_limit(tmp_path: Path) -> None:
    """A chunk that keeps failing with a retryable error ends as that error."""
    server = FakeServer(chunk_size=4 * KIB)
    server.fail("chunk", 0, *([503] * 10))
    f = _file(tmp_path, 4 * KIB)
    with _client(server, tmp_path, retries=3) as c, pytest.raises(ServerError):
        c.upload_file(f, sensor="OTHER", chunked=True)
    assert server.requests["chunk"] == 3


class _Crash(Exception):
    pass


def _crash_after(fraction: float) -> Callable[[float], None]:
    def callback(value: float) -> None:
        if value >= fraction:
            raise _Crash

    return callback


def test_rerun_resumes_and_sends_only_missing_chunks(tmp_path: Path) -> None:
    """After a crash, uploading the same file again sends just what is missing."""
    server = FakeServer(chunk_size=4 * KIB)
    f = _file(tmp_path, 40 * KIB)
    with _client(server, tmp_path, parallel=1) as c:
        with pytest.raises(_Crash):
            c.upload_file(f, sensor="OTHER", progress_callback=_crash_after(0.3))
        sent_before = len(server.chunks_sent)
        assert 0 < sent_before < 10
        seen: list[float] = []
        result = c.upload_file(f, sensor="OTHER", progress_callback=seen.append)
    assert server.requests["initiate"] == 1 and server.requests["resume"] == 1
    assert len(server.chunks_sent) == 10
    assert sorted(server.chunks_sent) == list(range(10))
    assert seen[0] == pytest.approx(sent_before / 10)
    assert server.uploads["up1"]["whole"] == f.read_bytes()
    assert result.upload_id == "up1"


def test_resume_starts_over_when_the_server_forgot(tmp_path: Path) -> None:
    """A 404 from /resume (expired, cancelled) starts a new upload."""
    server = FakeServer(chunk_size=4 * KIB)
    f = _file(tmp_path, 16 * KIB)
    with _client(server, tmp_path, parallel=1) as c:
        with pytest.raises(_Crash):
            c.upload_file(f, sensor="OTHER", progress_callback=_crash_after(0.5))
        del server.uploads["up1"]
        result = c.upload_file(f, sensor="OTHER")
    assert result.upload_id == "up2"
    assert server.uploads["up2"]["whole"] == f.read_bytes()


def test_other_dataset_fields_do_not_resume(tmp_path: Path) -> None:
    """The same file sent to another dataset is a new upload, not the old one."""
    server = FakeServer(chunk_size=4 * KIB)
    f = _file(tmp_path, 16 * KIB)
    with _client(server, tmp_path, parallel=1) as c:
        with pytest.raises(_Crash):
            c.upload_file(f, sensor="OTHER", progress_callback=_crash_after(0.5))
        result = c.upload_file(f, sensor="OTHER", dataset_name="Another")
    assert result.upload_id == "up2" and server.requests["resume"] == 0


def test_a_changed_file_is_not_resumed(tmp_path: Path) -> None:
    """New content (new mtime) gets a new upload; old chunks are never mixed in."""
    server = FakeServer(chunk_size=4 * KIB)
    f = _file(tmp_path, 16 * KIB)
    with _client(server, tmp_path, parallel=1) as c:
        with pytest.raises(_Crash):
            c.upload_file(f, sensor="OTHER", progress_callback=_crash_after(0.5))
        f.write_bytes(os.urandom(16 * KIB))
        result = c.upload_file(f, sensor="OTHER")
    assert result.upload_id == "up2"
    assert server.uploads["up2"]["whole"] == f.read_bytes()


def test_upload_directory_fills_one_dataset(tmp_path: Path) -> None:
    """The first file creates the dataset; the rest join it with their subfolder."""
    server = FakeServer(standard_limit=10**6)
    root = tmp_path / "run"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"a")
    (root / "sub" / "b.txt").write_bytes(b"b")
    (root / "sub" / "deep" / "c.txt").write_bytes(b"c")
    with _client(server, tmp_path) as c:
        results = c.upload_directory(root, sensor="OTHER")
    assert [r.job_id for r in results] == ["j-std"] * 3
    forms = [b.decode("latin-1") for b in server.bodies]
    assert 'name="dataset_name"\r\n\r\nrun' in forms[0]
    assert "relative_path" not in forms[0] and "dataset_identifier" not in forms[0]
    assert 'name="relative_path"\r\n\r\nsub\r\n' in forms[1]
    assert 'name="relative_path"\r\n\r\nsub/deep\r\n' in forms[2]
    for form in forms[1:]:
        assert 'name="dataset_identifier"\r\n\r\nd1' in form
        assert 'name="add_to_existing"\r\n\r\ntrue' in form


def test_folders_and_missing_files_are_explained(tmp_path: Path) -> None:
    """upload_file on a folder or a missing path is InvalidInput naming it."""
    with _client(FakeServer(), tmp_path) as c:
        with pytest.raises(InvalidInput, match="upload_directory"):
            c.upload_file(tmp_path, sensor="OTHER")
        with pytest.raises(InvalidInput, match="no such file"):
            c.upload_file(tmp_path / "nope", sensor="OTHER")
        (tmp_path / "empty").mkdir()
        with pytest.raises(InvalidInput, match="holds no files"):
            c.upload_directory(tmp_path / "empty", sensor="OTHER")


def test_wait_for_completion_polls_until_finished(tmp_path: Path) -> None:
    """It returns the final status, failed jobs included."""
    server = FakeServer()
    server.statuses = ["pending", "running", "failed"]
    with _client(server, tmp_path) as c:
        final = c.wait_for_completion("j1", poll_interval=0.001)
    assert final.status == "failed" and final["job_id"] == "j1"
    assert server.requests["status"] == 3


def test_wait_for_completion_times_out(tmp_path: Path) -> None:
    """A job that never finishes ends in WaitTimeout."""
    server = FakeServer()
    server.statuses = ["running"]
    with _client(server, tmp_path) as c, pytest.raises(WaitTimeout, match="running"):
        c.wait_for_completion("j1", timeout=0.05, poll_interval=0.01)


def test_transport_errors_become_connection_failed(tmp_path: Path) -> None:
    """Outside chunk uploads a dropped connection is ConnectionFailed (retryable)."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with (
        Client("http://test", transport=httpx.MockTransport(refuse)) as c,
        pytest.raises(ConnectionFailed, match="refused") as info,
    ):
        c.health_check()
    assert info.value.retryable
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_a_non_json_success_is_a_server_error(tmp_path: Path) -> None:
    """A 200 with HTML (a misconfigured proxy) is a clear ServerError."""
    transport = httpx.MockTransport(lambda r: httpx.Response(200, text="<html>"))
    with Client("http://test", transport=transport) as c, pytest.raises(ServerError):
        c.get_upload_status("j1")


def test_service_account_file_is_read_locally(tmp_path: Path) -> None:
    """The Drive import sends the file's content, never its path."""
    server = FakeServer()
    key = tmp_path / "sa.json"
    key.write_text(json.dumps({"type": "service_account", "client_email": "x@y"}))
    with _client(server, tmp_path) as c:
        c.initiate_google_drive_upload(
            "FILE1", service_account_file=key, dataset_name="D", sensor="NETCDF"
        )
        with pytest.raises(InvalidInput, match="service account"):
            c.initiate_google_drive_upload("F", service_account_file=tmp_path / "x")
    body = json.loads(server.bodies[0])
    assert body["source_type"] == "google_drive"
    assert body["source_config"] == {
        "file_id": "FILE1",
        "service_account_json": {"type": "service_account", "client_email": "x@y"},
    }
    assert str(key) not in server.bodies[0].decode()


def test_s3_and_url_imports_send_the_seed_body(tmp_path: Path) -> None:
    """S3 and URL imports post source_type/source_config plus the dataset fields."""
    server = FakeServer()
    with _client(server, tmp_path) as c:
        c.initiate_s3_upload(
            "bkt", "data/x.zip", "AK", "SK", region="eu", sensor="HDF5", convert=False
        )
        c.initiate_url_upload("https://example.org/f.zip?x=1", sensor="OTHER")
    s3, url = (json.loads(b) for b in server.bodies)
    assert s3["source_config"] == {
        "bucket_name": "bkt",
        "object_key": "data/x.zip",
        "access_key_id": "AK",
        "secret_access_key": "SK",
        "region": "eu",
    }
    assert s3["dataset_name"] == "x.zip" and s3["convert"] is False
    assert url["source_config"] == {"url": "https://example.org/f.zip?x=1"}
    assert url["dataset_name"] == "f.zip"


# -- the async twin ------------------------------------------------------------------


def test_async_client_uploads_and_resumes(tmp_path: Path) -> None:
    """AsyncClient runs the same flows: chunked upload, crash, resume, wait."""
    server = FakeServer(chunk_size=4 * KIB)
    f = _file(tmp_path, 40 * KIB)

    async def main() -> tuple[UploadResult, UploadStatus]:
        async with AsyncClient(
            "http://test",
            "tok",
            transport=httpx.MockTransport(server),
            state_dir=tmp_path / "state",
            parallel=1,
        ) as c:
            with pytest.raises(_Crash):
                await c.upload_file(
                    f, sensor="OTHER", progress_callback=_crash_after(0.3)
                )
            result = await c.upload_file(f, sensor="OTHER")
            status = await c.wait_for_completion(result.job_id, poll_interval=0.001)
            return result, status

    result, status = asyncio.run(main())
    assert status.status == "completed"
    assert server.uploads["up1"]["whole"] == f.read_bytes()
    assert len(server.chunks_sent) == 10 and server.requests["resume"] == 1
    assert result.file_blake3 == blake3_hex(f.read_bytes())


def test_async_parallel_upload_with_retries(tmp_path: Path) -> None:
    """Parallel async chunks survive transient failures, like the sync ones."""
    server = FakeServer(chunk_size=4 * KIB)
    server.fail("chunk", 2, httpx.ReadTimeout("slow"), 423)
    f = _file(tmp_path, 30 * KIB)

    async def main() -> UploadResult:
        async with AsyncClient(
            "http://test",
            transport=httpx.MockTransport(server),
            state_dir=tmp_path / "state",
            parallel=4,
        ) as c:
            return await c.upload_file(f, sensor="OTHER")

    asyncio.run(main())
    assert server.uploads["up1"]["whole"] == f.read_bytes()


# -- the command line ----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from sclib.cli import client as cli_client

    parser = argparse.ArgumentParser(prog="sclib")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_client.register(sub)
    return parser


def test_cli_parses_upload_options() -> None:
    """upload takes sizes like 64MiB and the seed's flags."""
    args = _parser().parse_args(
        ["upload", "f.bin", "--sensor", "TIFF", "--chunk-size", "64MiB", "--no-convert"]
    )
    assert args.chunk_size == 64 * 1024**2 and args.convert is False
    assert args.sensor == "TIFF" and args.path == Path("f.bin")


def test_cli_refuses_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing --sensor or a bad size is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["upload", "f.bin"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        _parser().parse_args(["upload", "f", "--sensor", "X", "--chunk-size", "lots"])
    assert "cannot read 'lots' as a size" in capsys.readouterr().err


def test_cli_reports_a_missing_path_as_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Uploading a path that does not exist exits 2 with a one-line message."""
    from sclib.cli import client as cli_client

    args = _parser().parse_args(["upload", str(tmp_path / "nope"), "--sensor", "X"])
    assert cli_client.run(args) == 2
    assert "no such file or folder" in capsys.readouterr().err
