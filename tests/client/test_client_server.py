"""The client against the real server: ``sclib serve`` under uvicorn on 127.0.0.1.

One server (module scope) runs with a 1 MB standard-upload limit, so a 5 MiB file
goes through the chunked protocol; tests that kill the server start their own.
Requests are counted by wrapping httpx's transport, so "only the missing chunks
were sent" is checked on the wire.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import sclib
from sclib import cli
from sclib.client import (
    AsyncClient,
    Client,
    ConnectionFailed,
    UploadResult,
    UploadStatus,
)
from sclib.errors import (
    Forbidden,
    InvalidInput,
    InvalidJobState,
    JobNotFound,
    NotFound,
    Unauthorized,
    UploadConflict,
)
from sclib.transfers.hashing import blake3_hex
from tests import hashing_modes
from tests.server.live import LiveServer, free_port

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
SERVER_ENV = {"SCLIB_STANDARD_UPLOAD_LIMIT": "1000000", "SCLIB_CHUNK_SIZE": "1048576"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module, with a 1 MB limit for single-request uploads."""
    live = LiveServer(tmp_path_factory.mktemp("srv") / "data", env=SERVER_ENV)
    live.start()
    try:
        yield live
    finally:
        live.stop()


class CountingTransport(httpx.HTTPTransport):
    """httpx's transport, counting requests by route (ids left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.chunks: list[int] = []
        self.chunk_hashes: Counter[str] = Counter()  # X-Chunk-Hash algorithms

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")
        if parts[:3] == ["api", "upload", "large"]:
            self.counts[parts[3]] += 1
            if parts[3] == "chunk":
                self.chunks.append(int(parts[5]))
                algo = request.headers["x-chunk-hash"].partition(":")[0]
                self.chunk_hashes[algo] += 1
        else:
            self.counts["/".join(parts[:3])] += 1
        return super().handle_request(request)


def _client(
    live: LiveServer, tmp_path: Path, *, token: bool = True, **kw: Any
) -> Client:
    return Client(
        live.url,
        live.token() if token else None,
        state_dir=tmp_path / "state",
        **kw,
    )


def _file(tmp_path: Path, size: int, name: str = "data.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _stored(live: LiveServer, result: UploadResult, relative: str) -> Path:
    assert result.dataset_uuid is not None
    return live.data_dir / "upload" / result.dataset_uuid / relative


def _wait(client: Client, job_id: str) -> UploadStatus:
    return client.wait_for_completion(job_id, timeout=60, poll_interval=0.1)


class _Crash(Exception):
    pass


def _crash_after(chunks: int, total: int) -> Callable[[float], None]:
    def callback(fraction: float) -> None:
        if fraction >= chunks / total - 1e-9:
            raise _Crash

    return callback


def _folder(root: Path, names: list[str]) -> Path:
    """A folder holding ``names``, 1000 random bytes each."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(os.urandom(1000))
    return root


def _crashed_folder(
    live: LiveServer, tmp_path: Path, root: Path, after: int, total: int
) -> dict[str, Any]:
    """Upload the folder ``root`` and die once ``after`` of ``total`` parts of
    its bytes went; the progress record the run left."""
    with _client(live, tmp_path) as client, pytest.raises(_Crash):
        client.upload_directory(
            root, sensor="OTHER", progress_callback=_crash_after(after, total)
        )
    (record,) = (tmp_path / "state" / "folders").glob("*.json")
    progress: dict[str, Any] = json.loads(record.read_text())
    return progress


def _crashed_upload(
    live: LiveServer, tmp_path: Path, f: Path, after: int, **fields: Any
) -> CountingTransport:
    """Upload ``f`` in 1 MiB chunks, one stream, and die after ``after`` chunks
    (the client's state stays behind); the requests it sent."""
    transport = CountingTransport()
    total = -(-f.stat().st_size // MIB)
    with (
        _client(live, tmp_path, transport=transport, parallel=1) as client,
        pytest.raises(_Crash),
    ):
        client.upload_file(
            f,
            sensor="OTHER",
            chunk_size=MIB,
            progress_callback=_crash_after(after, total),
            **fields,
        )
    return transport


# -- uploads -------------------------------------------------------------------------


def test_small_file_upload_completes(server: LiveServer, tmp_path: Path) -> None:
    """A small file goes in one request; the job completes; the bytes are stored."""
    f = _file(tmp_path, 10_000, "small.bin")
    seen: list[float] = []
    with _client(server, tmp_path) as client:
        result = client.upload_file(
            f, dataset_name="Small", sensor="OTHER", progress_callback=seen.append
        )
        assert result.upload_type == "standard" and result["job_id"]
        final = _wait(client, result.job_id)
    assert final.status == "completed" and final["status"] == "completed"
    assert seen[-1] == 1.0
    assert _stored(server, result, "small.bin").read_bytes() == f.read_bytes()


@pytest.mark.parametrize("hashing", hashing_modes.MODES)
def test_large_file_goes_in_parallel_verified_chunks(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hashing: str
) -> None:
    """5 MiB over a 1 MB limit: 1 MiB chunks, 3 in flight, BLAKE3 end to end;
    chunk digests are chaining values (one hash pass) when the client has
    sclib_blake3tree and the server offers them, plain BLAKE3 otherwise."""
    hashing_modes.use(hashing, monkeypatch)  # the client's side
    f = _file(tmp_path, 5 * MIB + 123, "big.bin")
    transport = CountingTransport()
    with _client(server, tmp_path, transport=transport) as client:
        result = client.upload_file(
            f, dataset_name="Big", sensor="OTHER", parallel=3, chunk_size=MIB
        )
        final = _wait(client, result.job_id)
    digest = blake3_hex(f.read_bytes())
    assert result.upload_type == "chunked" and result.file_blake3 == digest
    assert final.status == "completed"
    assert blake3_hex(_stored(server, result, "big.bin").read_bytes()) == digest
    assert sorted(transport.chunks) == list(range(6))
    algo = "blake3-cv" if hashing == "tree" else "blake3"
    assert transport.chunk_hashes == {algo: 6}
    assert transport.counts["initiate"] == 1 and transport.counts["complete"] == 1
    assert not list((tmp_path / "state").glob("*.json"))


@pytest.mark.parametrize(
    ("first_mode", "second_mode"),
    [("tree", "tree"), ("ordered", "ordered"), ("tree", "ordered")],
)
def test_crashed_upload_resumes_with_only_missing_chunks(
    server: LiveServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    first_mode: str,
    second_mode: str,
) -> None:
    """A client that died after 2 of 6 chunks sends the other 4, nothing more,
    and reports the file's BLAKE3: with chaining values it hashes the 2 chunks
    the server has, without it the whole file; a client that lost one-pass
    hashing between the runs finishes with plain digests."""
    hashing_modes.use(first_mode, monkeypatch)
    f = _file(tmp_path, 6 * MIB, "resume.bin")
    first = _crashed_upload(server, tmp_path, f, 2, dataset_name="Resume")
    assert sorted(first.chunks) == [0, 1]
    assert len(list((tmp_path / "state").glob("*.json"))) == 1
    hashing_modes.use(second_mode, monkeypatch)
    second = CountingTransport()
    with _client(server, tmp_path, transport=second, parallel=2) as client:
        result = client.upload_file(f, dataset_name="Resume", sensor="OTHER")
        final = _wait(client, result.job_id)
    assert sorted(second.chunks) == [2, 3, 4, 5]
    assert second.counts["resume"] == 1 and second.counts["initiate"] == 0
    assert second.chunk_hashes == {
        "blake3-cv" if second_mode == "tree" else "blake3": 4
    }
    assert final.status == "completed"
    stored = _stored(server, result, "resume.bin").read_bytes()
    assert blake3_hex(stored) == blake3_hex(f.read_bytes())
    assert result.file_blake3 == blake3_hex(stored)


def test_a_server_without_chaining_values_gets_plain_digests(tmp_path: Path) -> None:
    """A server that does not offer blake3-cv (here turned off with
    SCLIB_BLAKE3_TREE=0) gets plain BLAKE3 chunk digests from a client that could
    send chaining values, and refuses a chaining value with the list it takes."""
    hashing_modes.require_tree()
    live = LiveServer(
        tmp_path / "data", env={**SERVER_ENV, "SCLIB_BLAKE3_TREE": "0"}
    ).start()
    try:
        f = _file(tmp_path, 3 * MIB, "plain.bin")
        transport = CountingTransport()
        with _client(live, tmp_path, transport=transport) as client:
            result = client.upload_file(f, sensor="OTHER", chunk_size=MIB)
        assert transport.chunk_hashes == {"blake3": 3}
        assert result.file_blake3 == blake3_hex(f.read_bytes())
        body = httpx.post(
            f"{live.url}/api/upload/large/initiate",
            json={
                "filename": "x.bin",
                "file_size": 10,
                "dataset_name": "Plain",
                "sensor": "OTHER",
            },
            headers=live.headers(),
        ).json()
        assert body["chunk_hashes"] == ["sha256", "blake3"]
        refused = httpx.post(
            f"{live.url}/api/upload/large/chunk/{body['upload_id']}/0",
            content=b"0123456789",
            headers={
                **live.headers(),
                "Content-Type": "application/octet-stream",
                "X-Chunk-Hash": "blake3-cv:" + "ab" * 32,
            },
        )
        assert refused.status_code == 400  # the original's code for a bad chunk
        assert "'blake3:<hex>'" in refused.json()["detail"]
    finally:
        live.stop()


def test_a_resume_after_the_server_lost_chaining_values_sends_plain_digests(
    tmp_path: Path,
) -> None:
    """An upload begun with chaining values, resumed after the server restarted
    without them (SCLIB_BLAKE3_TREE=0 here), sends the rest with plain BLAKE3
    digests instead of failing on every chunk, and completes verified."""
    hashing_modes.require_tree()
    live = LiveServer(tmp_path / "data", env=SERVER_ENV).start()
    try:
        f = _file(tmp_path, 4 * MIB, "switch.bin")
        first = _crashed_upload(live, tmp_path, f, 2)
        assert first.chunk_hashes == {"blake3-cv": 2}
        live.stop()
        live.env = {**SERVER_ENV, "SCLIB_BLAKE3_TREE": "0"}
        live.start()
        second = CountingTransport()
        with _client(live, tmp_path, transport=second) as client:
            result = client.upload_file(f, sensor="OTHER")
        assert sorted(second.chunks) == [2, 3]
        assert second.chunk_hashes == {"blake3": 2}
        assert result.file_blake3 == blake3_hex(f.read_bytes())
        assert _stored(live, result, "switch.bin").read_bytes() == f.read_bytes()
    finally:
        live.stop()


def test_resume_survives_a_server_restart(tmp_path: Path) -> None:
    """Client crash, server SIGKILL and restart: the rerun still resumes."""
    live = LiveServer(tmp_path / "data", env=SERVER_ENV).start()
    try:
        f = _file(tmp_path, 4 * MIB, "restart.bin")
        _crashed_upload(live, tmp_path, f, 3)
        live.kill()
        live.start()
        transport = CountingTransport()
        with _client(live, tmp_path, transport=transport) as client:
            result = client.upload_file(f, sensor="OTHER")
            final = _wait(client, result.job_id)
        assert transport.chunks == [3]
        assert final.status == "completed"
        stored = _stored(live, result, "restart.bin").read_bytes()
        assert stored == f.read_bytes()
    finally:
        live.stop()


def test_upload_directory_builds_one_dataset(
    server: LiveServer, tmp_path: Path
) -> None:
    """Every file of a folder lands in one dataset under its subfolder."""
    root = tmp_path / "run-17"
    (root / "raw" / "a").mkdir(parents=True)
    (root / "top.txt").write_bytes(b"top")
    (root / "raw" / "one.bin").write_bytes(os.urandom(2000))
    (root / "raw" / "a" / "two.bin").write_bytes(os.urandom(3 * MIB))
    with _client(server, tmp_path) as client:
        results = client.upload_directory(root, sensor="OTHER", chunk_size=MIB)
        finals = [_wait(client, r.job_id) for r in results]
    assert [s.status for s in finals] == ["completed"] * 3
    assert len({r.dataset_uuid for r in results}) == 1
    assert [r.upload_type for r in results] == ["standard", "standard", "chunked"]
    for rel in ("top.txt", "raw/one.bin", "raw/a/two.bin"):
        assert (
            _stored(server, results[0], rel).read_bytes() == (root / rel).read_bytes()
        )


def test_interrupted_upload_directory_resumes_into_the_same_dataset(
    server: LiveServer, tmp_path: Path
) -> None:
    """A folder upload interrupted during its third file and run again adds the
    remaining files to the dataset the first run created; the finished files are
    not sent again. Once the folder is done, its progress record is gone."""
    names = ["a.bin", "b.bin", "c.bin", "sub/d.bin", "sub/e.bin"]
    root = _folder(tmp_path / "scan-42", names)
    first = _crashed_folder(server, tmp_path, root, 5, 10)
    folders = tmp_path / "state" / "folders"
    done = sorted(n for n, e in first["files"].items() if "result" in e)
    assert done == ["a.bin", "b.bin"]
    assert "result" not in first["files"]["c.bin"]  # sent when the run died
    transport = CountingTransport()
    with _client(server, tmp_path, transport=transport) as client:
        results = client.upload_directory(root, sensor="OTHER")
        finals = [_wait(client, r.job_id) for r in results]
    assert transport.counts["api/upload/upload"] == 3  # c, d, e
    assert [s.status for s in finals] == ["completed"] * 5
    assert {r.dataset_uuid for r in results} == {first["dataset_uuid"]}
    assert results[0].job_id == first["files"]["a.bin"]["result"]["job_id"]
    for name in names:
        assert _stored(server, results[0], name).read_bytes() == (
            (root / name).read_bytes()
        )
    assert not list(folders.glob("*.json"))


class LosesAnswer(CountingTransport):
    """Delivers the ``n``-th one-request upload to the server, then loses its
    answer (the connection drops after the server committed the file)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.keys: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path == "/api/upload/upload":
            self.keys.append(request.headers["idempotency-key"])
            if len(self.keys) == self.n:
                response.read()
                raise httpx.ReadError("connection reset", request=request)
        return response


def test_a_folder_file_whose_answer_was_lost_is_not_stored_twice(
    server: LiveServer, tmp_path: Path
) -> None:
    """The server stores the second file of a folder but its answer is lost: the
    run fails, and running it again sends that file once more with the same
    Idempotency-Key, gets the first answer back (same job) instead of a 409
    for a name the dataset already has, and finishes the folder."""
    names = ["a.bin", "b.bin", "c.bin"]
    root = _folder(tmp_path / "run-7", names)
    lossy = LosesAnswer(2)
    with (
        _client(server, tmp_path, transport=lossy) as client,
        pytest.raises(ConnectionFailed),
    ):
        client.upload_directory(root, sensor="OTHER")
    transport = LosesAnswer(0)
    with _client(server, tmp_path, transport=transport) as client:
        results = client.upload_directory(root, sensor="OTHER")
        finals = [_wait(client, r.job_id) for r in results]
    assert transport.keys[:1] == lossy.keys[1:]  # b again, with the same key
    assert len(transport.keys) == 2  # and c
    assert [s.status for s in finals] == ["completed"] * 3
    assert len({r.job_id for r in results}) == 3
    with _client(server, tmp_path) as client:
        dataset = client.get_dataset(results[0].dataset_uuid or "")
    assert sorted(f["path"] for f in dataset.files) == names
    for name in names:
        assert _stored(server, results[0], name).read_bytes() == (
            (root / name).read_bytes()
        )


def test_a_folder_upload_cut_inside_a_chunked_file_resumes_that_file(
    server: LiveServer, tmp_path: Path
) -> None:
    """A folder upload interrupted in the middle of its second file (a chunked
    one, after 2 of 4 chunks) resumes that file on the next run: the first file
    is not sent again, the second is neither initiated again nor re-sent whole
    (only its missing chunks), and both land in one dataset."""
    root = tmp_path / "scan-big"
    root.mkdir()
    (root / "a.bin").write_bytes(os.urandom(1000))
    (root / "b.bin").write_bytes(os.urandom(4 * MIB))
    total = 1000 + 4 * MIB
    first = CountingTransport()
    with (
        _client(server, tmp_path, transport=first, parallel=1) as client,
        pytest.raises(_Crash),
    ):
        client.upload_directory(
            root,
            sensor="OTHER",
            chunk_size=MIB,
            progress_callback=_crash_after(1000 + 2 * MIB, total),
        )
    assert sorted(first.chunks) == [0, 1]
    second = CountingTransport()
    with _client(server, tmp_path, transport=second, parallel=1) as client:
        results = client.upload_directory(root, sensor="OTHER", chunk_size=MIB)
        finals = [_wait(client, r.job_id) for r in results]
    assert second.counts["api/upload/upload"] == 0
    assert second.counts["initiate"] == 0 and second.counts["resume"] == 1
    assert sorted(second.chunks) == [2, 3]
    assert [s.status for s in finals] == ["completed"] * 2
    assert len({r.dataset_uuid for r in results}) == 1
    for name in ("a.bin", "b.bin"):
        assert _stored(server, results[0], name).read_bytes() == (
            (root / name).read_bytes()
        )


def test_a_folder_resume_whose_dataset_is_gone_starts_a_new_dataset(
    server: LiveServer, tmp_path: Path
) -> None:
    """A folder upload interrupted after two files, whose dataset was then deleted
    on the server (or is not the caller's: a state folder shared by two users),
    does not fail forever on the next run: the stale progress is dropped and the
    whole folder goes into a new dataset. A damaged progress record is ignored the
    same way (the folder is uploaded from the start)."""
    from sclib.datasets import open_dataset_store

    names = ["a.bin", "b.bin", "c.bin"]
    root = _folder(tmp_path / "scan-gone", names)
    first = _crashed_folder(server, tmp_path, root, 2, 3)
    with _client(server, tmp_path) as client:
        for entry in first["files"].values():
            if "result" in entry:  # not the file sent when the run died
                job = entry["result"]["job_id"]
                assert _wait(client, job).status == "completed"
    store = open_dataset_store(f"sqlite:///{server.data_dir / 'sclib.db'}")
    try:
        store.delete(first["dataset_uuid"])
    finally:
        store.close()
    transport = CountingTransport()
    with _client(server, tmp_path, transport=transport) as client:
        results = client.upload_directory(root, sensor="OTHER")
        finals = [_wait(client, r.job_id) for r in results]
    assert transport.counts["api/upload/upload"] == 3
    assert [s.status for s in finals] == ["completed"] * 3
    (fresh,) = {r.dataset_uuid for r in results}
    assert fresh != first["dataset_uuid"]
    for name in names:
        assert _stored(server, results[0], name).read_bytes() == (
            (root / name).read_bytes()
        )
    assert not list((tmp_path / "state" / "folders").glob("*.json"))

    damaged = _folder(tmp_path / "scan-damaged", names)
    _crashed_folder(server, tmp_path, damaged, 2, 3)
    (record,) = (tmp_path / "state" / "folders").glob("*.json")
    bad = {"version": first["version"], "dataset_uuid": 7, "files": {"a.bin": 5}}
    record.write_text(json.dumps(bad))
    with _client(server, tmp_path) as client:
        results = client.upload_directory(damaged, sensor="OTHER")
    assert len({r.dataset_uuid for r in results}) == 1
    assert not list((tmp_path / "state" / "folders").glob("*.json"))


def test_async_client_uploads_small_and_large(
    server: LiveServer, tmp_path: Path
) -> None:
    """AsyncClient: health, a standard and a chunked upload, waiting for both."""
    small = _file(tmp_path, 5000, "a-small.bin")
    big = _file(tmp_path, 3 * MIB + 1, "a-big.bin")

    async def main() -> list[tuple[UploadResult, UploadStatus]]:
        async with AsyncClient(
            server.url, server.token(), state_dir=tmp_path / "state", parallel=3
        ) as client:
            assert (await client.health_check()).status == "healthy"
            out = []
            for f in (small, big):
                result = await client.upload_file(f, sensor="OTHER", chunk_size=MIB)
                final = await client.wait_for_completion(
                    result.job_id, timeout=60, poll_interval=0.1
                )
                out.append((result, final))
            with pytest.raises(JobNotFound):
                await client.get_upload_status("no-such-job")
            return out

    (r1, s1), (r2, s2) = asyncio.run(main())
    assert (r1.upload_type, r2.upload_type) == ("standard", "chunked")
    assert s1.status == s2.status == "completed"
    assert _stored(server, r2, "a-big.bin").read_bytes() == big.read_bytes()


# -- the other routes ----------------------------------------------------------------


def test_service_routes_parse(server: LiveServer, tmp_path: Path) -> None:
    """Health, limits, sources, estimates and job listings come back typed."""
    with _client(server, tmp_path) as client:
        assert client.health_check().status == "healthy"
        limits = client.get_limits()
        assert limits.standard_upload_limit == 1_000_000
        assert limits.chunk_size == MIB
        sources = client.get_supported_sources()
        assert "TIFF" in sources.sensors and "s3" in sources["sources"]
        estimate = client.estimate_time(5 * MIB)
        assert estimate.file_size == 5 * MIB and estimate.upload_type
        result = client.upload_file(_file(tmp_path, 100), sensor="OTHER")
        _wait(client, result.job_id)
        listed = client.list_upload_jobs(limit=500)
        assert result.job_id in {j.job_id for j in listed.jobs}
        job = client.get_job(result.job_id)
        assert job.job_type == "upload" and job.status == "completed"
        assert result.job_id in {j.job_id for j in client.list_jobs(limit=500).jobs}
        assert "completed" in json.dumps(client.queue_stats().to_dict())


def test_large_protocol_step_by_step(server: LiveServer, tmp_path: Path) -> None:
    """The low-level chunk methods: status, missing chunks, idempotent complete."""
    data = os.urandom(2 * MIB + 10)
    with _client(server, tmp_path) as client:
        started = client.initiate_large_upload(
            "steps.bin", len(data), chunk_size=MIB, sensor="OTHER", dataset_name="S"
        )
        assert started.total_chunks == 3
        client.upload_chunk(started.upload_id, 2, data[2 * MIB :])
        client.upload_chunk(started.upload_id, 2, data[2 * MIB :])  # idempotent
        assert client.get_missing_chunks(started.upload_id).missing_chunks == [0, 1]
        with pytest.raises(UploadConflict):
            client.complete_large_upload(started.upload_id)
        client.upload_chunk(started.upload_id, 0, data[:MIB])
        client.upload_chunk(started.upload_id, 1, data[MIB : 2 * MIB])
        status = client.get_large_upload_status(started.upload_id)
        assert status.uploaded_chunks == [0, 1, 2]  # the original's sorted list
        assert status.progress_percentage == 100.0
        done = client.complete_large_upload(started.upload_id, blake3_hex(data))
        again = client.complete_large_upload(started.upload_id)
        assert done.job_id == again.job_id
        assert done.file_blake3 == blake3_hex(data)


# -- errors --------------------------------------------------------------------------


def test_unknown_job_is_job_not_found(server: LiveServer, tmp_path: Path) -> None:
    """The problem's code comes back as the library's own class."""
    with _client(server, tmp_path) as client:
        with pytest.raises(JobNotFound) as info:
            client.get_upload_status("0123456789abcdef")
        assert isinstance(info.value, NotFound)
        assert info.value.job_id == "0123456789abcdef"
        with pytest.raises(NotFound):
            client.get_job("0123456789abcdef")
        with pytest.raises(NotFound):
            client.get_missing_chunks("no-such-upload")


def test_missing_or_bad_token_is_unauthorized(
    server: LiveServer, tmp_path: Path
) -> None:
    """No token, or a forged one: Unauthorized (HTTP 401)."""
    f = _file(tmp_path, 100)
    with _client(server, tmp_path, token=False) as client:
        with pytest.raises(Unauthorized) as info:
            client.upload_file(f, sensor="OTHER")
        assert info.value.status_code == 401  # type: ignore[attr-defined]
    with Client(server.url, "not-a-token") as client, pytest.raises(Unauthorized):
        client.list_upload_jobs()


def test_other_users_jobs_stay_hidden(server: LiveServer, tmp_path: Path) -> None:
    """Bob cannot see Alice's job, nor list her uploads."""
    with _client(server, tmp_path) as alice:
        result = alice.upload_file(_file(tmp_path, 100), sensor="OTHER")
    with Client(server.url, server.token("bob@example.org")) as bob:
        with pytest.raises(JobNotFound):
            bob.get_upload_status(result.job_id)
        with pytest.raises(Forbidden):
            bob.list_upload_jobs(user_id="alice@example.org")


def test_bad_fields_are_invalid_input_naming_the_field(
    server: LiveServer, tmp_path: Path
) -> None:
    """An unknown sensor is a 422 InvalidInput that says 'sensor'."""
    with _client(server, tmp_path) as client:
        with pytest.raises(InvalidInput, match="sensor"):
            client.upload_file(_file(tmp_path, 100), sensor="NO-SUCH-SENSOR")
        with pytest.raises(InvalidInput, match="sensor"):
            client.upload_file(
                _file(tmp_path, 2 * MIB, "big.bin"), sensor="NO-SUCH-SENSOR"
            )


def test_cancelling_a_finished_job_is_invalid_job_state(
    server: LiveServer, tmp_path: Path
) -> None:
    """A finished job cannot be cancelled: InvalidJobState, from the error's code,
    though the legacy route answers 404 as the original did."""
    with _client(server, tmp_path) as client:
        result = client.upload_file(_file(tmp_path, 100), sensor="OTHER")
        _wait(client, result.job_id)
        with pytest.raises(InvalidJobState) as info:
            client.cancel_upload(result.job_id)
    assert info.value.status_code == 404  # type: ignore[attr-defined]


def test_unreachable_server_is_connection_failed(tmp_path: Path) -> None:
    """Nothing listening: ConnectionFailed, retryable, naming the address."""
    url = f"http://127.0.0.1:{free_port()}"
    with (
        Client(url, state_dir=tmp_path) as client,
        pytest.raises(ConnectionFailed, match=r"127\.0\.0\.1") as info,
    ):
        client.health_check()
    assert info.value.retryable


# -- the command line ----------------------------------------------------------------


def test_cli_upload_and_status(
    server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sclib upload prints the job id; sclib status --wait --json reports it done."""
    f = _file(tmp_path, 2 * MIB + 5, "cli.bin")
    token = server.token()
    base = ["--server", server.url, "--token", token]
    state = ["--state-dir", str(tmp_path / "state")]
    upload = ["upload", str(f), "--sensor", "OTHER", "--dataset", "CLI"]
    code = cli.main([*upload, "--parallel", "2", "--chunk-size", "1MiB", *base, *state])
    out = capsys.readouterr().out.strip()
    assert code == 0 and len(out.splitlines()) == 1
    job_id = out
    code = cli.main(
        ["status", job_id, "--wait", "--json", "--poll-interval", "0.1", *base]
    )
    status = json.loads(capsys.readouterr().out)
    assert code == 0 and status["status"] == "completed"
    assert status["job_id"] == job_id


def test_cli_exit_codes(
    server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1 for an unknown job or no server, 2 for a missing token."""
    assert (
        cli.main(["status", "nope", "--server", server.url, "--token", server.token()])
        == 1
    )
    assert "nope" in capsys.readouterr().err
    assert cli.main(["status", "nope", "--server", server.url]) == 2
    assert "401" in capsys.readouterr().err
    url = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["status", "j1", "--server", url]) == 1
    assert url in capsys.readouterr().err


def test_cli_uploads_a_folder_in_a_subprocess(
    server: LiveServer, tmp_path: Path
) -> None:
    """python -m sclib upload DIR --wait --json: one entry per file, all completed."""
    root = tmp_path / "folder"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    env = {
        **os.environ,
        "SCLIB_SERVER": server.url,
        "SCLIB_TOKEN": server.token(),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    out = subprocess.run(
        [
            *(sys.executable, "-m", "sclib", "upload", str(root), "--sensor", "TIFF"),
            *("--wait", "--json", "--poll-interval", "0.1"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    items = json.loads(out.stdout)
    assert [i["final_status"]["status"] for i in items] == ["completed", "completed"]
    assert len({i["dataset_uuid"] for i in items}) == 1


# -- datasets ------------------------------------------------------------------------


def test_datasets_through_both_clients(server: LiveServer, tmp_path: Path) -> None:
    """After an upload, the client lists and shows the dataset (with its file and
    BLAKE3), waits until its pipeline is through (`done`, every job finished),
    and queues a reprocess; AsyncClient sees the same; an unknown or foreign
    dataset is DatasetNotFound."""
    from blake3 import blake3

    from sclib.errors import DatasetNotFound

    f = _file(tmp_path, 20_000, "scan.bin")
    with _client(server, tmp_path) as client:
        result = client.upload_file(f, dataset_name="Scans", sensor="OTHER")
        assert result.dataset_uuid is not None
        uuid = result.dataset_uuid
        state = client.wait_for_dataset(uuid, timeout=60, poll_interval=0.1)
        assert state.ok and state.status == "done"
        assert [j["job_type"] for j in state.jobs] == ["upload"]
        shown = client.get_dataset(uuid)
        assert shown.name == "Scans" and shown.file_count == 1
        assert shown.files[0]["blake3"] == blake3(f.read_bytes()).hexdigest()
        listed = client.list_datasets(limit=1000)  # the server is shared
        assert uuid in [d.uuid for d in listed.datasets]
        again = client.reprocess_dataset(uuid)
        assert again["next"] == "done"  # OTHER: nothing to convert
        with pytest.raises(DatasetNotFound):
            client.get_dataset("f" * 32)
    bob = server.token("bob@example.org")
    with Client(server.url, bob) as other, pytest.raises(DatasetNotFound):
        other.get_dataset_status(uuid)

    async def main() -> str:
        async with AsyncClient(server.url, server.token()) as client:
            done = await client.wait_for_dataset(uuid, timeout=30, poll_interval=0.1)
            return (await client.get_dataset(uuid)).status + "/" + done.status

    assert asyncio.run(main()) == "done/done"


# -- one progress vocabulary ---------------------------------------------------------


def test_progress_takes_true_or_a_callable_everywhere(
    server: LiveServer, tmp_path: Path
) -> None:
    """``progress=`` is ``True`` (a bar) or a callable getting the fraction done,
    on uploads, waits and downloads alike; a resumed upload's bar counts the
    chunks the server already had as done but not as moved in this run."""
    f = _file(tmp_path, 3 * MIB + 5, "vocab.bin")
    sent: list[float] = []
    waited: list[float] = []
    fetched: list[float] = []
    with _client(server, tmp_path) as client:
        result = client.upload_file(
            f, dataset_name="Vocab", sensor="OTHER", progress=sent.append
        )
        final = client.wait_for_completion(
            result.job_id, 60, 0.1, progress=waited.append, label="vocab"
        )
        assert result.dataset_uuid is not None
        client.download_dataset(
            result.dataset_uuid, tmp_path / "down", progress=fetched.append
        )
    assert final.status == "completed"
    for seen in (sent, waited, fetched):
        assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    assert (tmp_path / "down" / "vocab.bin").read_bytes() == f.read_bytes()

    with _client(server, tmp_path) as client:
        with pytest.raises(InvalidInput, match="pass one"):
            client.upload_file(
                f, sensor="OTHER", progress=sent.append, progress_callback=sent.append
            )
        with pytest.raises(InvalidInput, match="progress must be True, False"):
            client.upload_file(f, sensor="OTHER", progress="yes")
        with pytest.raises(InvalidInput, match="progress must be True, False"):
            client.wait_for_completion(result.job_id, progress=3)


def test_sclib_upload_gives_a_callable_the_bytes_only(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sclib.upload's progress callable follows the bytes sent, up to 1.0, and
    never goes back (the job's progress went to it too, from 0 again)."""
    monkeypatch.setenv("SCLIB_STATE_DIR", str(tmp_path / "state"))
    f = _file(tmp_path, 300_000, "once.bin")
    seen: list[float] = []
    status = sclib.upload(
        f, server.url, token=server.token(), sensor="OTHER", progress=seen.append
    )
    assert status.status == "completed"
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)


def test_a_resumed_bar_leaves_reused_bytes_out_of_its_rate() -> None:
    """Progress.skip counts bytes that were already there: the bar reaches the
    total, and its rate covers only what moved in this run."""
    from sclib.client._steps import Progress

    fractions: list[float] = []
    progress = Progress(1000, fractions.append, bar=True, desc="resumed")
    try:
        progress.skip(900)
        progress.advance(100)
        bar = progress._bar
        assert bar.n == 1000 and bar.initial == 900
        assert progress.done == 1000 and fractions == [0.9, 1.0]
    finally:
        progress.close()
