"""The server under stress: SIGKILL mid-upload, two processes sharing one upload,
and memory while receiving a 4 GiB body."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import httpx
import pytest

from sclib.client import Client
from sclib.errors import SclibError, UploadBusy
from sclib.transfers.locks import lock_chunk
from tests.server.live import LiveServer
from tests.server.test_upload_routes import initiate, send_chunk, wait_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIB = 1024**2


class CountingTransport(httpx.HTTPTransport):
    """A real HTTP transport that counts the chunk requests it sends, by index."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: Counter[int] = Counter()
        self.acked: set[int] = set()
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        index = int(parts[-1]) if "/large/chunk/" in request.url.path else None
        if index is not None:
            with self.lock:
                self.sent[index] += 1
        response = super().handle_request(request)
        if index is not None and response.status_code == 200:
            with self.lock:
                self.acked.add(index)
        return response


def test_sigkill_mid_upload_resends_at_most_one_chunk_per_stream(
    tmp_path: Path,
) -> None:
    """While the client sends 48 chunks on 4 streams, the server is SIGKILLed and
    restarted. Running upload_file again finishes the upload; in all, at most one
    chunk per stream is sent twice, and the stored file's BLAKE3 is the source's."""
    parallel, chunk, count = 4, MIB, 48
    source = tmp_path / "volume.raw"
    source.write_bytes(os.urandom(count * chunk))
    server = LiveServer(tmp_path / "data").start()
    transport = CountingTransport()
    state = tmp_path / "client-state"
    errors: list[BaseException] = []
    try:
        client = Client(
            server.url,
            token=server.token(),
            parallel=parallel,
            state_dir=state,
            transport=transport,
            retries=1,
        )

        def first_attempt() -> None:
            try:
                client.upload_file(
                    source, sensor="OTHER", chunk_size=chunk, chunked=True
                )
            except (SclibError, httpx.HTTPError) as exc:
                errors.append(exc)

        thread = threading.Thread(target=first_attempt)
        thread.start()
        deadline = time.monotonic() + 60
        while len(transport.acked) < count // 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        server.kill()
        thread.join(timeout=60)
        client.close()
        assert errors, "the first attempt should have failed with the server gone"
        assert 0 < len(transport.acked) < count
        server.start()
        with Client(
            server.url,
            token=server.token(),
            parallel=parallel,
            state_dir=state,
            transport=transport,
        ) as again:
            result = again.upload_file(
                source, sensor="OTHER", chunk_size=chunk, chunked=True
            )
        final = wait_job(server, result.job_id)
        assert final["status"] == "completed"
        resent = sum(n - 1 for n in transport.sent.values())
        assert set(transport.sent) == set(range(count))
        assert resent <= parallel, transport.sent
        stored = server.data_dir / "upload" / result.dataset_uuid / "volume.raw"
        want = blake3.blake3(source.read_bytes()).hexdigest()
        assert blake3.blake3(stored.read_bytes()).hexdigest() == want
    finally:
        server.stop()


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two server processes on one SQLite backend and one data folder."""
    data = tmp_path / "data"
    backend = f"sqlite:///{data / 'shared.db'}"
    a = LiveServer(data, backend=backend).start()
    b = LiveServer(data, backend=backend, workers=0).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_two_servers_share_one_upload(
    two_servers: tuple[LiveServer, LiveServer],
) -> None:
    """Chunks of one upload alternate between two server processes, status and
    completion asked of either: the stored file is exact, the job runs once."""
    a, b = two_servers
    data = os.urandom(8 * 64 * 1024 + 99)
    info = initiate(a, data)
    up, size = info["upload_id"], info["chunk_size"]
    for i in range(info["total_chunks"]):
        server = (a, b)[i % 2]
        r = send_chunk(server, up, i, data[i * size : (i + 1) * size])
        assert r.status_code == 200, r.text
    status = httpx.get(f"{b.url}/api/upload/large/status/{up}", headers=b.headers())
    assert status.json()["uploaded_chunks"] == list(range(info["total_chunks"]))
    result = httpx.post(
        f"{b.url}/api/upload/large/complete/{up}", headers=b.headers()
    ).json()
    again = httpx.post(
        f"{a.url}/api/upload/large/complete/{up}", headers=a.headers()
    ).json()
    assert again == result
    final = wait_job(b, result["job_id"])  # run by a's worker, seen from b
    assert final["status"] == "completed"
    path = a.data_dir / "upload" / result["dataset_uuid"] / "cube.raw"
    assert path.read_bytes() == data
    jobs = httpx.get(f"{a.url}/api/v1/jobs", headers=a.headers()).json()["jobs"]
    uploads = [j["job_id"] for j in jobs if j["job_type"] == "upload"]
    assert uploads == [result["job_id"]]  # one upload job, run once


def test_the_same_chunk_on_two_servers_at_once_is_refused(
    two_servers: tuple[LiveServer, LiveServer],
) -> None:
    """While one server process receives chunk 0, the other refuses chunk 0 with
    423 (and takes chunk 1); the chunk lands once, intact."""
    a, b = two_servers
    chunk = os.urandom(4 * MIB)
    info = initiate(a, chunk * 2, chunk_size=4 * MIB)
    up = info["upload_id"]
    gate = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield chunk[:MIB]
        gate.wait(20)
        yield chunk[MIB:]

    outcome: dict[str, Any] = {}

    def slow_send() -> None:
        outcome["slow"] = httpx.post(
            f"{a.url}/api/upload/large/chunk/{up}/0",
            content=slow_body(),
            headers={
                **a.headers(),
                "Content-Type": "application/octet-stream",
                "X-Chunk-Hash": "blake3:" + blake3.blake3(chunk).hexdigest(),
            },
            timeout=30,
        )

    thread = threading.Thread(target=slow_send)
    thread.start()
    lock_file = a.data_dir / "tmp" / "uploads" / up / "lock"
    try:
        # wait until server a holds chunk 0 (seen through the lock itself)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                lock_chunk(lock_file, up, 0).release()
            except UploadBusy:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("server a never took chunk 0")
        busy = send_chunk(b, up, 0, chunk)
        assert busy.status_code == 423, busy.text
        assert busy.json()["code"] == "upload_busy"
        assert send_chunk(b, up, 1, chunk).status_code == 200
    finally:
        gate.set()
        thread.join(timeout=30)
    assert outcome["slow"].status_code == 200, outcome["slow"].text
    result = httpx.post(
        f"{b.url}/api/upload/large/complete/{up}", headers=b.headers()
    ).json()
    path = a.data_dir / "upload" / result["dataset_uuid"] / "cube.raw"
    assert path.read_bytes() == chunk * 2


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_server_memory_stays_flat_while_receiving_4_gib(tmp_path: Path) -> None:
    """A 4 GiB multipart upload in one request (generated on the fly, no source
    file): the server's peak RSS stays under 250 MB, the file is exact."""
    size = 4 * 1024**3
    block = os.urandom(4 * MIB)
    server = LiveServer(tmp_path / "data").start()
    try:
        assert server.process is not None
        boundary = "sclib-rss-test-boundary"
        head = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="dataset_name"\r\n\r\nbig\r\n'
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="sensor"\r\n\r\nOTHER\r\n'
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="big.raw"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        hasher = blake3.blake3()

        def body() -> Iterator[bytes]:
            yield head
            for _ in range(size // len(block)):
                hasher.update(block)
                yield block
            yield tail

        r = httpx.post(
            f"{server.url}/api/upload/upload",
            content=body(),
            headers={
                **server.headers(),
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + size + len(tail)),
            },
            timeout=600,
        )
        assert r.status_code == 200, r.text
        peak = _peak_rss_mib(server.process.pid)
        result = r.json()
        assert result["file_size"] == size
        assert result["upload_type"] == "chunked"
        assert result["file_blake3"] == hasher.hexdigest()
        assert peak < 250, f"server peak RSS {peak:.0f} MiB"
        stored = server.data_dir / "upload" / result["dataset_uuid"] / "big.raw"
        assert stored.stat().st_size == size
        stored.unlink()  # 4 GiB: do not keep it around
    finally:
        server.stop()
