"""``download_dataset`` against real servers on 127.0.0.1.

The sclib server is a real ``sclib serve`` (``LiveServer``). Interruptions are
real too: a transport that delivers the first N bytes of a body and then breaks
the connection (httpx raises a transport error, as for a dropped link), and a
download process killed with SIGKILL mid-file. The hostile server is a small
``http.server`` on 127.0.0.1 that lists paths meant to escape the folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import blake3
import httpx
import pytest

from sclib.client import AsyncClient, Client, ConnectionFailed, ServerError
from sclib.errors import (
    ChecksumMismatch,
    DatasetNotFound,
    InvalidInput,
    SourceChanged,
)
from tests.server.live import LiveServer
from tests.server.test_downloads import make_dataset

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
STATE = ".sclib-download"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One sclib server (with its worker) for the module."""
    live = LiveServer(tmp_path_factory.mktemp("client-downloads") / "data").start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def dataset(server: LiveServer) -> tuple[str, dict[str, bytes]]:
    """Alice's dataset: a 3 MiB file, files in subfolders, an empty file and a
    name that needs quoting."""
    files = {
        "big.bin": os.urandom(3 * MIB + 123),
        "a/b/c.txt": b"c" * 5000,
        "a/d.txt": b"d" * 10,
        "empty.dat": b"",
        "odd name #1%.bin": os.urandom(700),
    }
    return make_dataset(server, files, name="client downloads"), files


def _b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# -- transports that record requests and break connections -----------------------------


class _Cut(httpx.SyncByteStream):
    """A response body that breaks (a transport error, as a dropped link
    gives) once ``budget`` bytes of it were delivered."""

    def __init__(self, inner: httpx.SyncByteStream, budget: int) -> None:
        self.inner = inner
        self.budget = budget

    def __iter__(self) -> Iterator[bytes]:
        for data in self.inner:
            if len(data) >= self.budget:
                yield data[: self.budget]
                raise httpx.RemoteProtocolError("connection cut by the test")
            self.budget -= len(data)
            yield data

    def close(self) -> None:
        self.inner.close()


class _Counted(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, seen: dict[str, Any]) -> None:
        self.inner = inner
        self.seen = seen

    def __iter__(self) -> Iterator[bytes]:
        for data in self.inner:
            self.seen["bytes"] += len(data)
            yield data

    def close(self) -> None:
        self.inner.close()


class Wire(httpx.HTTPTransport):
    """httpx's transport, recording each file request (path, Range, If-Range,
    status, body bytes received); with ``cut=(name, n)``, the first answer for
    the file ``name`` breaks after ``n`` bytes of its body."""

    def __init__(self, cut: tuple[str, int] | None = None) -> None:
        super().__init__()
        self.cut = cut
        self.files: list[dict[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if "/files/" not in request.url.path and "/outputs/" not in request.url.path:
            return response
        path = request.url.path.split("/files/", 1)[-1].split("/outputs/", 1)[-1]
        seen: dict[str, Any] = {
            "path": path,
            "range": request.headers.get("range"),
            "if_range": request.headers.get("if-range"),
            "status": response.status_code,
            "bytes": 0,
        }
        self.files.append(seen)
        stream = response.stream
        assert isinstance(stream, httpx.SyncByteStream)
        if self.cut is not None and self.cut[0] == path:
            stream = _Cut(stream, self.cut[1])
            self.cut = None
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Counted(stream, seen),
            extensions=response.extensions,
        )


class _AsyncCut(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, budget: int) -> None:
        self.inner = inner
        self.budget = budget

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for data in self.inner:
            if len(data) >= self.budget:
                yield data[: self.budget]
                raise httpx.RemoteProtocolError("connection cut by the test")
            self.budget -= len(data)
            yield data

    async def aclose(self) -> None:
        await self.inner.aclose()


class AsyncWire(httpx.AsyncHTTPTransport):
    """The asyncio twin of :class:`Wire` (records the big file's requests)."""

    def __init__(self, cut: int | None = None) -> None:
        super().__init__()
        self.cut = cut
        self.files: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if not request.url.path.endswith("/files/big.bin"):
            return response
        self.files.append(
            {"range": request.headers.get("range"), "status": response.status_code}
        )
        if self.cut is None:
            return response
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        budget, self.cut = self.cut, None
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_AsyncCut(stream, budget),
            extensions=response.extensions,
        )


def _client(server: LiveServer, who: str = "alice@example.org", **kw: Any) -> Client:
    return Client(server.url, server.token(who), **kw)


def _part(folder: Path, data: bytes) -> Path:
    return folder / STATE / f"{_b3(data)}.part"


# -- whole downloads -------------------------------------------------------------------


def test_download_dataset_writes_every_file_verified(
    server: LiveServer, dataset: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    """Every file lands at its path, byte for byte; the result lists them with
    their BLAKE3; progress reaches 1.0; no partial copies are left; a second
    run fetches nothing (every file is already there and verified)."""
    uuid, files = dataset
    folder = tmp_path / "out"
    fractions: list[float] = []
    with _client(server) as client:
        result = client.download_dataset(
            uuid, folder, progress_callback=fractions.append
        )
        assert _tree(folder) == files
        assert not (folder / STATE).exists()
        assert result.uuid == uuid and result.name == "client downloads"
        assert result.folder == str(folder)
        assert result.total_size == sum(len(d) for d in files.values())
        assert result.fetched_bytes == result.total_size
        assert {f.path: f.blake3 for f in result.files} == {
            p: _b3(d) for p, d in files.items()
        }
        assert all(f.local_path == str(folder / f.path) for f in result.files)
        assert fractions[-1] == 1.0 and fractions == sorted(fractions)

        again = client.download_dataset(uuid, folder)
    assert again.fetched_bytes == 0
    assert all(f.skipped for f in again.files)
    assert _tree(folder) == files


def test_a_file_changed_locally_is_fetched_again(
    server: LiveServer, dataset: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    """A file in the folder that differs from the dataset's (same size, other
    bytes) is replaced by the server's; the others are kept."""
    uuid, files = dataset
    folder = tmp_path / "out"
    wire = Wire()
    with _client(server) as client:
        client.download_dataset(uuid, folder)
        (folder / "a" / "d.txt").write_bytes(b"x" * 10)
        with _client(server, transport=wire) as again:
            result = again.download_dataset(uuid, folder)
    assert _tree(folder) == files
    assert [r["path"] for r in wire.files] == ["a/d.txt"]
    assert result.fetched_bytes == 10


def test_include_outputs_puts_the_converted_output_beside_the_files(
    server: LiveServer, tmp_path: Path
) -> None:
    """With include_outputs the published output goes below 'converted/' (or
    the outputs_dir given), verified like the files; without, it is left out;
    an outputs_dir that is not a clean relative folder is refused."""
    uuid = make_dataset(server, {"in.bin": b"input"}, name="with output")
    published = server.data_dir / "converted" / uuid
    (published / "data").mkdir(parents=True)
    (published / "visus.idx").write_bytes(b"idx header")
    (published / "data" / "0000.bin").write_bytes(os.urandom(5000))
    (published / ".sclib-conversion.json").write_text("{}")
    with _client(server) as client:
        plain = client.download_dataset(uuid, tmp_path / "plain")
        assert [f.kind for f in plain.files] == ["file"]
        full = client.download_dataset(uuid, tmp_path / "full", include_outputs=True)
        client.download_dataset(
            uuid, tmp_path / "other", include_outputs=True, outputs_dir="idx/out"
        )
        for bad in ("../up", "/abs", ".sclib-download", ""):
            with pytest.raises(InvalidInput):
                client.download_dataset(
                    uuid, tmp_path / "bad", include_outputs=True, outputs_dir=bad
                )
    outputs = {
        "visus.idx": b"idx header",
        "data/0000.bin": (published / "data" / "0000.bin").read_bytes(),
    }
    assert _tree(tmp_path / "plain") == {"in.bin": b"input"}
    assert _tree(tmp_path / "full") == {
        "in.bin": b"input",
        **{f"converted/{k}": v for k, v in outputs.items()},
    }
    assert [(f.kind, f.path) for f in full.files] == [
        ("file", "in.bin"),
        ("output", "data/0000.bin"),
        ("output", "visus.idx"),
    ]
    assert _tree(tmp_path / "other") == {
        "in.bin": b"input",
        **{f"idx/out/{k}": v for k, v in outputs.items()},
    }
    assert not (tmp_path / "bad").exists()


# -- who may download ------------------------------------------------------------------


def test_others_private_dataset_is_not_found_public_downloadable_is_fetched(
    server: LiveServer, dataset: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    """Bob's client gets DatasetNotFound for Alice's private dataset (nothing is
    written); her is_public_downloadable dataset downloads for him."""
    private, _files = dataset
    public = make_dataset(server, {"open.txt": b"for everyone"}, public=True)
    with _client(server, "bob@example.org") as bob:
        with pytest.raises(DatasetNotFound):
            bob.download_dataset(private, tmp_path / "private")
        assert not (tmp_path / "private").exists()
        listing = bob.list_downloads(public)
        assert listing.is_public_downloadable
        assert [f.path for f in listing.files] == ["open.txt"]
        bob.download_dataset(public, tmp_path / "public")
    assert _tree(tmp_path / "public") == {"open.txt": b"for everyone"}


# -- interruptions ---------------------------------------------------------------------


def test_a_cut_connection_leaves_a_partial_copy_the_next_run_continues(
    server: LiveServer, dataset: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    """The connection breaks after 1 MiB of the big file and the client gives
    up (retries=1); the partial copy holds exactly what arrived. The next run
    asks for the rest only (Range from that length, If-Range with the file's
    ETag), receives size minus that many bytes, and the folder is byte-identical
    to the dataset."""
    uuid, files = dataset
    big = files["big.bin"]
    folder = tmp_path / "out"
    cut = Wire(cut=("big.bin", MIB))
    with (
        _client(server, transport=cut, retries=1) as client,
        pytest.raises(ConnectionFailed),
    ):
        client.download_dataset(uuid, folder)
    assert [r["path"] for r in cut.files][-1] == "big.bin"
    part = _part(folder, big)
    held = part.stat().st_size
    assert held == MIB
    assert part.read_bytes() == big[:held]
    assert not (folder / "big.bin").exists()  # never a partial file in place

    wire = Wire()
    with _client(server, transport=wire) as client:
        result = client.download_dataset(uuid, folder)
    assert _tree(folder) == files
    (request,) = [r for r in wire.files if r["path"] == "big.bin"]
    assert request["range"] == f"bytes={held}-"
    assert request["if_range"] == f'"{_b3(big)}"'
    assert request["status"] == 206
    assert request["bytes"] == len(big) - held
    entry = next(f for f in result.files if f.path == "big.bin")
    assert entry.resumed_from == held
    assert entry.fetched_bytes == len(big) - held
    assert not (folder / STATE).exists()


def test_a_cut_inside_one_run_is_retried_from_where_it_broke(
    server: LiveServer, dataset: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    """With retries left, a broken connection is retried at once from the
    partial copy's length: two requests for the big file, the second a range,
    and no byte fetched twice."""
    uuid, files = dataset
    wire = Wire(cut=("big.bin", 2 * MIB))
    with _client(server, transport=wire, retries=3) as client:
        result = client.download_dataset(uuid, tmp_path / "out", include_outputs=True)
    assert _tree(tmp_path / "out") == files
    ranges = [(r["path"], r["range"]) for r in wire.files]
    assert ranges[:3] == [("a/b/c.txt", None), ("a/d.txt", None), ("big.bin", None)]
    assert ranges[3] == ("big.bin", f"bytes={2 * MIB}-")
    assert result.fetched_bytes == result.total_size


def test_async_client_continues_a_cut_download(
    server: LiveServer, dataset: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    """AsyncClient: a cut download (retries=1) leaves its partial copy; the
    next run sends a range from its length and ends byte-identical."""
    uuid, files = dataset
    folder = tmp_path / "out"

    async def run(transport: AsyncWire, retries: int) -> Any:
        async with AsyncClient(
            server.url, server.token(), transport=transport, retries=retries
        ) as client:
            return await client.download_dataset(uuid, folder)

    cut = AsyncWire(cut=MIB // 2)
    with pytest.raises(ConnectionFailed):
        asyncio.run(run(cut, 1))
    first = cut.files[0]
    assert first["range"] is None
    partials = list((folder / STATE).glob("*.part"))
    assert len(partials) == 1
    held = partials[0].stat().st_size
    assert held == MIB // 2
    wire = AsyncWire()
    result = asyncio.run(run(wire, 3))
    assert _tree(folder) == files
    assert wire.files[0] == {"range": f"bytes={held}-", "status": 206}
    # the files before big.bin came in the first run: kept, not fetched again
    assert [f.path for f in result.files if f.skipped] == ["a/b/c.txt", "a/d.txt"]
    assert result.fetched_bytes == len(files["big.bin"]) - held + 700


_KILLED_RUN = """
import sys, time
import httpx
from sclib.client import Client

class Stall(httpx.SyncByteStream):
    def __init__(self, inner):
        self.inner = inner
    def __iter__(self):
        sent = 0
        for data in self.inner:
            yield data
            sent += len(data)
            if sent >= int(sys.argv[4]):
                time.sleep(3600)  # hangs here until killed

class Transport(httpx.HTTPTransport):
    def handle_request(self, request):
        response = super().handle_request(request)
        if request.url.path.endswith("/big.bin"):
            return httpx.Response(
                response.status_code, headers=response.headers,
                stream=Stall(response.stream), extensions=response.extensions,
            )
        return response

with Client(sys.argv[1], sys.argv[2], transport=Transport()) as client:
    client.download_dataset(sys.argv[3], sys.argv[5])
"""


@pytest.mark.slow
def test_a_killed_download_process_is_continued_by_the_next_run(
    server: LiveServer, dataset: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    """A download process is SIGKILLed in the middle of the big file; the next
    run (another process's client) continues the partial copy it left with a
    range request and the result is byte-identical."""
    uuid, files = dataset
    big = files["big.bin"]
    folder = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [server.url, server.token(), uuid, str(MIB + 4096), str(folder)]
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    part = _part(folder, big)
    try:
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size >= MIB):
            assert process.poll() is None, process.communicate()[0].decode()
            assert time.monotonic() < deadline, "the download never got going"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    held = part.stat().st_size
    assert MIB <= held < len(big)

    wire = Wire()
    with _client(server, transport=wire) as client:
        result = client.download_dataset(uuid, folder)
    assert _tree(folder) == files
    (request,) = [r for r in wire.files if r["path"] == "big.bin"]
    assert request["range"] == f"bytes={held}-" and request["status"] == 206
    assert request["bytes"] == len(big) - held
    assert next(f for f in result.files if f.path == "big.bin").resumed_from == held


# -- verification ----------------------------------------------------------------------


def test_a_damaged_partial_copy_is_refused_and_fetched_again_whole(
    server: LiveServer, dataset: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    """A partial copy whose bytes are wrong (the disk, or an earlier bug): the
    continued file's BLAKE3 does not match, so it is deleted and the file is
    fetched again from the start; the result is right."""
    uuid, files = dataset
    big = files["big.bin"]
    folder = tmp_path / "out"
    part = _part(folder, big)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)  # the right length to continue, wrong bytes
    wire = Wire()
    with _client(server, transport=wire) as client:
        client.download_dataset(uuid, folder)
    assert _tree(folder) == files
    big_requests = [r["range"] for r in wire.files if r["path"] == "big.bin"]
    assert big_requests == ["bytes=1000-", None]


def test_a_file_whose_blake3_differs_is_refused_and_removed(
    server: LiveServer, tmp_path: Path
) -> None:
    """The server's stored bytes changed behind its record (same size): the
    download raises ChecksumMismatch naming the file, and neither the file nor
    its partial copy is left in the folder."""
    uuid = make_dataset(server, {"rot.bin": b"r" * 4000, "fine.bin": b"f" * 10})
    stored = server.data_dir / "upload" / uuid / "rot.bin"
    stored.write_bytes(b"R" * 4000)
    folder = tmp_path / "out"
    with _client(server) as client, pytest.raises(ChecksumMismatch, match=r"rot\.bin"):
        client.download_dataset(uuid, folder)
    assert _tree(folder) == {"fine.bin": b"f" * 10}


# -- a hostile server ------------------------------------------------------------------


class _Hostile(BaseHTTPRequestHandler):
    """Lists ``self.server.listing`` and answers every file with
    ``self.server.body`` (and its Content-Range, when asked)."""

    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if "/downloads" in self.path:
            body = json.dumps(self.server.listing).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            self.server.fetched.append(self.path)
            body = self.server.body
            self.send_response(self.server.status)
            for name, value in self.server.headers.items():
                self.send_header(name, value)
        if self.server.send_length or "/downloads" in self.path:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hostile() -> Iterator[Any]:
    """A server on 127.0.0.1 that answers whatever the test sets."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    httpd.daemon_threads = True
    httpd.fetched = []  # type: ignore[attr-defined]
    httpd.status = 200  # type: ignore[attr-defined]
    httpd.headers = {}  # type: ignore[attr-defined]
    httpd.body = b""  # type: ignore[attr-defined]
    httpd.send_length = True  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def _listing(*entries: tuple[str, bytes, str]) -> dict[str, Any]:
    files = [
        {"path": p, "size": len(d), "blake3": _b3(d), "kind": k} for p, d, k in entries
    ]
    return {"uuid": "u1", "name": "evil", "files": files, "total": len(files)}


def test_a_hostile_listing_writes_nothing_anywhere(
    hostile: Any, tmp_path: Path
) -> None:
    """Paths that would leave the folder ('..', absolute, backslashes), land in
    the partial-copy folder, or clash with each other stop the download before
    any request for a file and before anything is written."""
    folder = tmp_path / "box" / "out"
    url = f"http://127.0.0.1:{hostile.server_address[1]}"
    cases = [
        [("../escape.txt", b"x", "file")],
        [("a/../../escape.txt", b"x", "file")],
        [("/tmp/escape.txt", b"x", "file")],
        [("..\\escape.txt", b"x", "file")],
        [("ok/./x.txt", b"x", "file")],
        [("ok//x.txt", b"x", "file")],
        [("x\x00.txt", b"x", "file")],
        [("../escape.txt", b"x", "output")],
        [(f"{STATE}/{_b3(b'x')}.part", b"x", "file")],
        [("same.txt", b"x", "file"), ("same.txt", b"y", "file")],
        [("converted/a.txt", b"x", "file"), ("a.txt", b"y", "output")],
        [("dir", b"x", "file"), ("dir/inner.txt", b"y", "file")],
    ]
    with Client(url, "token") as client:
        for entries in cases:
            hostile.listing = _listing(*entries)
            with pytest.raises(ServerError, match="nothing was downloaded"):
                client.download_dataset("u1", folder, include_outputs=True)
    assert hostile.fetched == []
    assert _tree(tmp_path) == {}


def test_a_link_in_the_folder_is_never_written_through(
    hostile: Any, tmp_path: Path
) -> None:
    """A symbolic link already in the download folder (to a folder outside it,
    or at a file's own path) is refused: nothing is written outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"keep")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "sub").symlink_to(outside, target_is_directory=True)
    (folder / "file.txt").symlink_to(outside / "keep.txt")
    url = f"http://127.0.0.1:{hostile.server_address[1]}"
    hostile.body = b"evil"
    with Client(url, "token") as client:
        for path in ("sub/x.txt", "file.txt", "sub/keep.txt"):
            hostile.listing = _listing((path, b"evil", "file"))
            with pytest.raises(InvalidInput, match="symbolic link"):
                client.download_dataset("u1", folder)
    assert _tree(outside) == {"keep.txt": b"keep"}
    assert hostile.fetched == []


def test_a_server_that_sends_more_or_other_bytes_is_refused(
    hostile: Any, tmp_path: Path
) -> None:
    """A body longer than listed, a Content-Range other than the one asked
    for, another ETag, or bytes whose BLAKE3 differs: refused, and no file (nor
    partial copy) is left."""
    url = f"http://127.0.0.1:{hostile.server_address[1]}"
    folder = tmp_path / "out"
    data = b"good bytes"
    hostile.listing = _listing(("f.bin", data, "file"))
    with Client(url, "token", retries=1) as client:
        hostile.send_length = False  # the body ends when the connection does
        hostile.body = data + b"and more"
        with pytest.raises(ServerError, match="more than"):
            client.download_dataset("u1", folder)
        hostile.send_length = True
        hostile.body = b"evil bytes"  # the listed length, other bytes
        with pytest.raises(ChecksumMismatch):
            client.download_dataset("u1", folder)
        hostile.body = data
        hostile.headers = {"ETag": '"' + "0" * 64 + '"'}
        with pytest.raises(SourceChanged):
            client.download_dataset("u1", folder)
        # a partial copy to continue, and a server answering another range
        part = folder / STATE / f"{_b3(data)}.part"
        part.write_bytes(data[:4])
        hostile.status = 206
        hostile.headers = {"Content-Range": f"bytes 0-9/{len(data)}"}
        with pytest.raises(ServerError, match="Content-Range"):
            client.download_dataset("u1", folder)
        assert not part.exists()
    assert [p for p in _tree(folder) if not p.startswith(STATE)] == []
