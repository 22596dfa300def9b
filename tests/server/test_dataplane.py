"""The upload data plane (``sclib.server.dataplane``) under a real uvicorn server on
127.0.0.1, with both event loops uvicorn runs (asyncio and uvloop).

The server runs in this process (uvicorn in a thread, the configuration ``sclib
serve`` uses), so a test can count the bodies that went through
:meth:`DirectBody.pump` rather than through ASGI. Raw sockets check what HTTP
clients do that httpx does not show: pipelined requests, ``Expect:
100-continue``, a body the server answers before reading, a body in small
pieces. The tus and chunk protocols themselves are tested against ``sclib
serve`` in ``test_tus.py`` and by the clients' tests; those run the data plane
too, as it is on by default.
"""

from __future__ import annotations

import base64
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from blake3 import blake3

from sclib.server.dataplane import DirectBody, _read_head
from sclib.settings import Settings
from tests.pagecache import cached_fraction, direct_writes_bypass_cache

pytestmark = pytest.mark.integration

MiB = 1024**2
OCTET = "application/offset+octet-stream"
TUS = {"Tus-Resumable": "1.0.0"}


@dataclass
class Plane:
    url: str
    port: int
    data_dir: Path
    pumped: list[int]


#: bytes each DirectBody held, read off the socket, when pump() began
BUFFERED_AT_PUMP: list[int] = []


@pytest.fixture
def plane_settings() -> dict[str, object]:
    """Settings of the ``plane`` server beyond its data folder (a test overrides
    this by parametrizing it)."""
    return {}


@pytest.fixture(params=["asyncio", "uvloop"])
def plane(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    plane_settings: dict[str, object],
) -> Iterator[Plane]:
    """A server with the data plane on, on one event loop; ``pumped`` lists the
    length of every body read directly."""
    import uvicorn

    from sclib.server.app import create_app
    from sclib.server.http import uvicorn_config

    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    pumped: list[int] = []
    original = DirectBody.pump

    async def counting(self: DirectBody, sink: object) -> bool:
        pumped.append(self.length)
        BUFFERED_AT_PUMP.append(sum(n for _, n in self._ready))
        return await original(self, sink)  # type: ignore[arg-type]

    monkeypatch.setattr(DirectBody, "pump", counting)
    settings = Settings(
        data_dir=tmp_path / "data",
        no_auth=True,
        **plane_settings,  # type: ignore[arg-type]
    )
    app = create_app(settings, run_worker=False)
    config = uvicorn_config(
        app, settings, host="127.0.0.1", port=0, loop=request.param, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "no server"
        time.sleep(0.01)
    port = int(server.servers[0].sockets[0].getsockname()[1])
    try:
        yield Plane(f"http://127.0.0.1:{port}", port, settings.data_dir, pumped)
    finally:
        server.should_exit = True
        thread.join(30)


def _meta(filename: str) -> str:
    values = {"filename": filename, "dataset_name": "plane", "sensor": "OTHER"}
    return ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items()
    )


def create(plane: Plane, length: int, filename: str = "scan.raw") -> str:
    r = httpx.post(
        plane.url + "/files/",
        headers={
            **TUS,
            "Upload-Length": str(length),
            "Upload-Metadata": _meta(filename),
        },
    )
    assert r.status_code == 201, r.text
    return str(httpx.URL(r.headers["location"]).path)


def stored(plane: Plane, dataset_uuid: str, filename: str = "scan.raw") -> bytes:
    return (plane.data_dir / "upload" / dataset_uuid / filename).read_bytes()


def head_bytes(method: str, path: str, port: int, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in {**TUS, **headers}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def patch_head(plane: Plane, path: str, offset: int, length: int, **more: str) -> bytes:
    return head_bytes(
        "PATCH",
        path,
        plane.port,
        **{
            "Upload-Offset": str(offset),
            "Content-Type": OCTET,
            "Content-Length": str(length),
            **more,
        },
    )


def read_response(
    sock: socket.socket, pending: bytearray
) -> tuple[int, dict[str, str]]:
    """One response (status, headers) off ``sock``; its body is skipped, bytes of
    the next response stay in ``pending``."""
    while b"\r\n\r\n" not in pending:
        got = sock.recv(65536)
        assert got, f"connection closed; had {bytes(pending)!r}"
        pending += got
    end = pending.index(b"\r\n\r\n")
    lines = bytes(pending[:end]).decode().split("\r\n")
    del pending[: end + 4]
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(pending) < length:
        got = sock.recv(65536)
        assert got
        pending += got
    del pending[:length]
    return status, headers


def test_patch_bodies_skip_asgi_and_land_whole(plane: Plane) -> None:
    data = os.urandom(5 * MiB + 123)
    path = create(plane, len(data))
    first = 3 * MiB + 7
    with httpx.Client(base_url=plane.url, headers=TUS, timeout=30) as http:
        r = http.patch(
            path,
            content=data[:first],
            headers={"Upload-Offset": "0", "Content-Type": OCTET},
        )
        assert r.status_code == 204, r.text
        assert r.headers["upload-offset"] == str(first)
        assert http.head(path).headers["upload-offset"] == str(first)
        r = http.patch(
            path,
            content=data[first:],
            headers={"Upload-Offset": str(first), "Content-Type": OCTET},
        )
        assert r.status_code == 204, r.text
    assert plane.pumped == [first, len(data) - first]
    assert blake3(stored(plane, r.headers["x-dataset-uuid"])).digest() == (
        blake3(data).digest()
    )


@pytest.mark.parametrize(
    "plane_settings", [{"direct_io": True}, {}], ids=["direct", "default"]
)
def test_patch_bodies_bypass_the_page_cache_when_asked(
    plane: Plane, plane_settings: dict[str, object]
) -> None:
    """The plane's buffers are page-aligned, so with ``SCLIB_DIRECT_IO=true`` a
    PATCH from an aligned offset is written past the page cache (``O_DIRECT``):
    none of the stored file's pages is cached after it; by default they all
    are."""
    why = direct_writes_bypass_cache(plane.data_dir)
    if why is not None:
        pytest.skip(why)
    data = os.urandom(8 * MiB)
    # half the upload: the staging file as the PATCH left it (completing a file
    # this small reads it back to hash it, and that fills the cache)
    path = create(plane, 2 * len(data))
    r = httpx.patch(
        plane.url + path,
        content=data,
        headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTET},
        timeout=30,
    )
    assert r.status_code == 204, r.text
    assert plane.pumped == [len(data)]
    upload_id = path.rstrip("/").rsplit("/")[-1]
    file = plane.data_dir / "tmp" / "uploads" / upload_id / "data"
    cached = cached_fraction(file, len(data))
    if plane_settings.get("direct_io"):
        assert cached < 0.01
    else:
        assert cached == 1.0
    with open(file, "rb") as f:
        assert f.read(len(data)) == data


def test_the_sclib_client_chunks_go_through_the_plane(
    plane: Plane, tmp_path: Path
) -> None:
    from sclib.client import Client

    source = tmp_path / "big.bin"
    data = os.urandom(3 * MiB + 5)
    source.write_bytes(data)
    with Client(plane.url) as client:
        result = client.upload_file(
            source, dataset_name="plane", sensor="OTHER", chunked=True, chunk_size=MiB
        )
    assert sorted(plane.pumped) == sorted([MiB, MiB, MiB, 5])
    assert stored(plane, result.dataset_uuid, "big.bin") == data


def test_pipelined_requests_on_one_connection(plane: Plane) -> None:
    """A PATCH, its body and a HEAD in one write: the body's bytes end exactly
    where the next request begins."""
    data = os.urandom(MiB + 1)
    path = create(plane, len(data) + 10)
    with socket.create_connection(("127.0.0.1", plane.port)) as sock:
        sock.sendall(
            patch_head(plane, path, 0, len(data))
            + data
            + head_bytes("HEAD", path, plane.port)
        )
        pending = bytearray()
        assert read_response(sock, pending)[0] == 204
        status, headers = read_response(sock, pending)
    assert status == 200
    assert headers["upload-offset"] == str(len(data))
    assert plane.pumped == [len(data)]


def test_a_pipelined_body_waits_on_the_wire(plane: Plane) -> None:
    """A PATCH sent before the previous answer came: its body stays in the
    network until its route reads it, whoever resumes the connection meanwhile
    (found in review: on uvloop all 128 MiB of such a body were read into
    memory first)."""
    small = os.urandom(1000)
    big = os.urandom(48 * MiB)
    first = create(plane, len(small), "a.raw")
    second = create(plane, len(big), "b.raw")
    BUFFERED_AT_PUMP.clear()
    with socket.create_connection(("127.0.0.1", plane.port)) as sock:
        sock.sendall(
            patch_head(plane, first, 0, len(small))
            + small
            + patch_head(plane, second, 0, len(big))
        )
        sender = threading.Thread(target=sock.sendall, args=(big,))
        sender.start()
        pending = bytearray()
        assert read_response(sock, pending)[0] == 204
        status, headers = read_response(sock, pending)
        sender.join()
    assert status == 204
    assert stored(plane, headers["x-dataset-uuid"], "b.raw") == big
    assert len(BUFFERED_AT_PUMP) == 2
    assert BUFFERED_AT_PUMP[1] <= 1 * MiB, BUFFERED_AT_PUMP


def test_a_refused_head_takes_no_body(plane: Plane) -> None:
    """A PATCH whose head is refused (431: too many fields) right after another
    PATCH on the connection: its body never reaches the first request (found in
    review: it was stored as the first upload's bytes)."""
    path = create(plane, 10, "a.raw")
    other = create(plane, 10, "b.raw")
    many = {f"X-Filler-{i}": "x" for i in range(120)}
    with socket.create_connection(("127.0.0.1", plane.port)) as sock:
        sock.sendall(
            patch_head(plane, path, 0, 10)
            + b"A" * 10
            + patch_head(plane, other, 0, 10, **many)
            + b"B" * 10
        )
        while sock.recv(65536):  # the answers, then the server closes (431)
            pass
    # the first PATCH may or may not have run before the connection closed
    deadline = time.monotonic() + 5
    while True:
        r = httpx.head(plane.url + path, headers=TUS)
        if r.headers["upload-offset"] == "10" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if r.headers["upload-offset"] == "10":
        assert stored(plane, r.headers["x-dataset-uuid"], "a.raw") == b"A" * 10
    else:
        assert r.headers["upload-offset"] == "0"
    assert httpx.head(plane.url + other, headers=TUS).headers["upload-offset"] == "0"


def test_an_unread_body_is_dropped_and_the_connection_kept(plane: Plane) -> None:
    """A PATCH at the wrong offset is answered (409) before its body is read; the
    body is read and dropped, and the next request on the connection works."""
    path = create(plane, 8 * MiB)
    body = os.urandom(4 * MiB)
    with socket.create_connection(("127.0.0.1", plane.port)) as sock:
        sock.sendall(patch_head(plane, path, 5, len(body)))
        pending = bytearray()
        status, _ = read_response(sock, pending)  # answered before the body
        assert status == 409
        sock.sendall(body)
        sock.sendall(patch_head(plane, path, 0, 10) + body[:10])
        status, headers = read_response(sock, pending)
    assert status == 204
    assert headers["upload-offset"] == "10"
    assert plane.pumped == [10]


def test_expect_100_continue(plane: Plane) -> None:
    data = os.urandom(300_000)
    path = create(plane, len(data))
    with socket.create_connection(("127.0.0.1", plane.port)) as sock:
        sock.settimeout(10)
        sock.sendall(patch_head(plane, path, 0, len(data), Expect="100-continue"))
        pending = bytearray()
        assert read_response(sock, pending)[0] == 100
        sock.sendall(data)
        status, headers = read_response(sock, pending)
    assert status == 204
    assert stored(plane, headers["x-dataset-uuid"]) == data


def test_a_body_in_small_pieces(plane: Plane) -> None:
    """The first bytes come with the head, the rest in pieces of every size."""
    data = os.urandom(2 * MiB + 3)
    path = create(plane, len(data))
    with socket.create_connection(("127.0.0.1", plane.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(patch_head(plane, path, 0, len(data)) + data[:5])
        pos = 5
        for size in (1, 2, 1000, 65_536, 7, 1_000_000):
            sock.sendall(data[pos : pos + size])
            pos += size
            time.sleep(0.01)
        sock.sendall(data[pos:])
        status, headers = read_response(sock, bytearray())
    assert status == 204
    assert stored(plane, headers["x-dataset-uuid"]) == data


def test_a_client_gone_mid_body_keeps_what_arrived(plane: Plane) -> None:
    path = create(plane, 4 * MiB)
    part = os.urandom(MiB)
    with socket.create_connection(("127.0.0.1", plane.port)) as sock:
        sock.sendall(patch_head(plane, path, 0, 4 * MiB) + part)
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while True:
        r = httpx.head(plane.url + path, headers=TUS)
        if r.headers.get("upload-offset") == str(MiB) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.headers["upload-offset"] == str(MiB)
    # and the upload goes on from there, on the plane
    rest = os.urandom(3 * MiB)
    r = httpx.patch(
        plane.url + path,
        content=rest,
        headers={**TUS, "Upload-Offset": str(MiB), "Content-Type": OCTET},
    )
    assert r.status_code == 204, r.text
    assert stored(plane, r.headers["x-dataset-uuid"]) == part + rest


# -- the dispatch, without a server -------------------------------------------------


def _head(first: str, *fields: str) -> bytes:
    return ("\r\n".join([first, "Host: x", *fields]) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("head", "direct"),
    [
        (_head("PATCH /files/abc HTTP/1.1", "Content-Length: 5"), True),
        (_head("PATCH /files/abc/ HTTP/1.1", "content-length:5"), True),
        (_head("PATCH /files/abc?x=1 HTTP/1.1", "Content-Length: 5"), True),
        (_head("PATCH /files/abc HTTP/1.1", "Content-Length: 0"), False),
        (_head("PATCH /files/abc HTTP/1.1"), False),
        (_head("PATCH /files/a/b HTTP/1.1", "Content-Length: 5"), False),
        (_head("PUT /files/abc HTTP/1.1", "Content-Length: 5"), False),
        (
            _head(
                "POST /files/abc HTTP/1.1",
                "X-HTTP-Method-Override: PATCH",
                "Content-Length: 5",
            ),
            True,
        ),
        (_head("POST /files/ HTTP/1.1", "Content-Length: 5"), False),
        (
            _head(
                "POST /api/upload/large/chunk/u1/0 HTTP/1.1",
                "Content-Type: application/octet-stream",
                "Content-Length: 5",
            ),
            True,
        ),
        (
            _head(
                "POST /api/upload/large/chunk/u1/0 HTTP/1.1",
                "Content-Type: multipart/form-data; boundary=x",
                "Content-Length: 5",
            ),
            False,
        ),
        (_head("POST /api/upload/upload HTTP/1.1", "Content-Length: 5"), False),
        (  # two Content-Types: the app may read the other one
            _head(
                "POST /api/upload/large/chunk/u1/0 HTTP/1.1",
                "Content-Type: multipart/form-data; boundary=x",
                "Content-Type: application/octet-stream",
                "Content-Length: 5",
            ),
            False,
        ),
    ],
)
def test_which_bodies_are_read_directly(head: bytes, direct: bool) -> None:
    info = _read_head(head)
    assert info.direct is direct
    assert not info.passthrough


@pytest.mark.parametrize(
    "head",
    [
        _head("PATCH /files/abc HTTP/1.1", "Transfer-Encoding: chunked"),
        _head("PATCH /files/abc HTTP/1.1", "Content-Length: 5", "Content-Length: 6"),
        _head("PATCH /files/abc HTTP/1.1", "Content-Length: -5"),
        _head("PATCH /files/abc HTTP/1.1", "Content-Length: 5", " folded"),
        _head("GET /chat HTTP/1.1", "Upgrade: websocket"),
        _head("PATCH /files/abc"),
        _head("PATCH /files/abc HTTP/1.1", "Content-Length: 99999999999999999999999"),
        b"PATCH /files/abc HTTP/1.1\nContent-Length: 5\n\n",
    ],
)
def test_unusual_heads_are_left_to_the_parser(head: bytes) -> None:
    """A body of unknown length, a head the parser would refuse, an upgrade: the
    parser reads the rest of the connection, as without the plane."""
    assert _read_head(head).passthrough


def test_the_plane_can_be_turned_off(tmp_path: Path) -> None:
    pytest.importorskip("httptools")
    from sclib.server.http import uvicorn_config

    on = uvicorn_config(object(), Settings(data_dir=tmp_path))
    off = uvicorn_config(object(), Settings(data_dir=tmp_path, data_plane=False))
    assert on.http.__name__.startswith("DataPlane")  # type: ignore[union-attr]
    assert not off.http.__name__.startswith("DataPlane")  # type: ignore[union-attr]


def test_tus_completion_reads_back_only_pieces_no_patch_covered(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PATCHes record the chaining values of the 8 MiB pieces they cover
    whole; completion merges them into the file's BLAKE3 and reads back only the
    two pieces the PATCH boundaries cut (not the whole file)."""
    from sclib.transfers import receive_commit
    from tests.hashing_modes import require_tree

    require_tree()
    whole_reads: list[object] = []
    merged: list[dict[str, str] | None] = []
    hash_file = receive_commit.hash_file
    tree_digest = receive_commit.ReceiverCommit._tus_tree_digest

    def counting_hash_file(*args: object, **kw: object) -> dict[str, str]:
        whole_reads.append(args)
        return hash_file(*args, **kw)  # type: ignore[arg-type]

    def watching(self: object, *args: object) -> dict[str, str] | None:
        found = tree_digest(self, *args)  # type: ignore[arg-type]
        merged.append(found)
        return found

    monkeypatch.setattr(receive_commit, "hash_file", counting_hash_file)
    monkeypatch.setattr(receive_commit.ReceiverCommit, "_tus_tree_digest", watching)
    data = os.urandom(20 * MiB + 5)
    path = create(plane, len(data))
    cuts = [0, 5 * MiB, 17 * MiB + 1, len(data)]
    with httpx.Client(base_url=plane.url, headers=TUS, timeout=60) as http:
        for start, end in itertools.pairwise(cuts):
            r = http.patch(
                path,
                content=data[start:end],
                headers={"Upload-Offset": str(start), "Content-Type": OCTET},
            )
            assert r.status_code == 204, r.text
    assert merged == [{"blake3": blake3(data).hexdigest()}]
    assert whole_reads == []
    assert stored(plane, r.headers["x-dataset-uuid"]) == data
