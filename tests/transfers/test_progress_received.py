"""Bytes received are counted as they arrive, apart from bytes verified: a slow
download from a real HTTP server on 127.0.0.1 moves while its only chunk is in
flight; a read that fails half-way gives its bytes back; a resumed copy counts
the chunks it finds intact; an S3 copy from moto counts each byte once."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sclib.errors import SourceError
from sclib.transfers.engine import TransferConfig, TransferEngine
from sclib.transfers.local import LocalSource
from sclib.transfers.progress import Progress, received
from sclib.transfers.sessions import MemorySessionStore
from sclib.transfers.sources import SourceObject, register
from tests.transfers.engine_sources import Interrupted, install
from tests.transfers.http_servers import serve

install()

KIB = 1024
MIB = 1024 * KIB


class Recorder:
    """A subscriber keeping every snapshot it hears."""

    def __init__(self) -> None:
        self.seen: list[Progress] = []
        self.lock = threading.Lock()

    def on_progress(self, progress: Progress, **_: Any) -> None:
        with self.lock:
            self.seen.append(progress)


def _check_counts(seen: list[Progress]) -> None:
    """Received never exceeds the total nor trails what is verified."""
    for p in seen:
        assert 0 <= p.bytes_received <= p.bytes_total, p
        assert p.bytes_verified <= p.bytes_received, p
        assert p.fraction <= p.fraction_received <= 1.0, p


@pytest.mark.parametrize("ranges", [True, False], ids=["ranged", "streamed"])
def test_a_slow_download_moves_while_its_only_chunk_arrives(
    tmp_path: Path, ranges: bool
) -> None:
    """A 1 MiB file sent 32 KiB at a time (one 8 MiB chunk): while it downloads,
    bytes received lie strictly between 0 and the size with nothing verified
    yet; at the end received, read and verified all equal the size. The same for
    a server that ignores Range (one streamed GET)."""
    data = os.urandom(MIB)
    with serve(ranges=ranges) as http:
        http.put("/slow/volume.bin", data)
        http.pace = (32 * KIB, 0.02)
        recorder = Recorder()
        future = TransferEngine().submit(
            http.url("/slow/volume.bin"),
            str(tmp_path) + "/",
            source_options={"allow_private": True},
            subscribers=[recorder],
        )
        samples = []
        while not future.done():
            samples.append(future.progress)
            time.sleep(0.01)
        result = future.result()
    assert (tmp_path / "volume.bin").read_bytes() == data
    assert result.files[0].chunks == 1
    moving = [
        p for p in samples if 0 < p.bytes_received < len(data) and not p.bytes_verified
    ]
    assert len(moving) >= 3, [p.bytes_received for p in samples]
    assert len({p.bytes_received for p in moving}) >= 3  # it moves, not one jump
    last = recorder.seen[-1]
    assert last.bytes_received == last.bytes_read == last.bytes_verified == len(data)
    _check_counts(samples + recorder.seen)


class HalfwaySource(LocalSource):
    """A local file whose every chunk's first read reports half of its bytes as
    arrived, then fails (a connection cut mid-chunk); the second read works."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.tries: dict[int, int] = {}
        self.lock = threading.Lock()

    def stat(self, url: str) -> SourceObject:
        return super().stat(url.split("://", 1)[1])

    def walk(self, url: str):  # type: ignore[no-untyped-def]
        return super().walk(url.split("://", 1)[1])

    def read_into(self, obj: SourceObject, offset: int, buf: memoryview) -> int:
        with self.lock:
            tries = self.tries[offset] = self.tries.get(offset, 0) + 1
        if tries == 1:
            received(len(buf) // 2)
            raise SourceError(f"simulated cut at offset {offset}")
        n = super().read_into(obj, offset, buf)
        received(n)
        return n


register("halfway", HalfwaySource)


def test_a_read_that_fails_halfway_gives_its_bytes_back(tmp_path: Path) -> None:
    """Bytes a failed read had reported are taken back (they arrive again with
    the retry): received never exceeds the size and ends equal to it."""
    src = tmp_path / "src.bin"
    data = os.urandom(64 * KIB + 5)
    src.write_bytes(data)
    recorder = Recorder()
    config = TransferConfig(chunk_size=16 * KIB, retry_delay=0.0, parallel=2)
    TransferEngine(config=config).copy(
        f"halfway://{src}", str(tmp_path / "dst.bin"), subscribers=[recorder]
    )
    assert (tmp_path / "dst.bin").read_bytes() == data
    last = recorder.seen[-1]
    assert last.bytes_received == last.bytes_verified == len(data)
    _check_counts(recorder.seen)


def test_a_resumed_copy_counts_what_it_finds_intact_as_received(
    tmp_path: Path,
) -> None:
    """A copy interrupted after some chunks, run again, reads back the chunks it
    had verified (not from the source): they count as received, so received
    ends at the size, not short of it and not above it."""
    src = tmp_path / "src.bin"
    data = os.urandom(256 * KIB)
    src.write_bytes(data)
    sessions = MemorySessionStore()
    config = TransferConfig(chunk_size=16 * KIB, executor="serial")
    with pytest.raises(Interrupted):
        TransferEngine(sessions=sessions, config=config).copy(
            f"flaky://{src}",
            str(tmp_path / "dst.bin"),
            source_options={"fail_after": 6},
        )
    recorder = Recorder()
    result = TransferEngine(sessions=sessions, config=config).copy(
        f"flaky://{src}", str(tmp_path / "dst.bin"), subscribers=[recorder]
    )
    assert (tmp_path / "dst.bin").read_bytes() == data
    assert result.files[0].chunks_reused >= 5
    last = recorder.seen[-1]
    assert last.bytes_reused > 0
    assert last.bytes_received == last.bytes_verified == len(data)
    _check_counts(recorder.seen)


@pytest.mark.integration
def test_an_s3_copy_counts_each_byte_once(tmp_path: Path) -> None:
    """An object read from moto's S3 in order (one GET for several chunks, its
    pieces counted on s3fs's event loop) ends with received equal to its size."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    from tests.transfers.cloud_servers import (
        cloud_env,
        moto_server,
        s3_client,
        s3_options,
    )

    data = os.urandom(3 * MIB + 7)
    with cloud_env(), moto_server() as endpoint:
        client = s3_client(endpoint)
        client.create_bucket(Bucket="progress-test")
        client.put_object(Bucket="progress-test", Key="v.bin", Body=data)
        recorder = Recorder()
        TransferEngine(config=TransferConfig(chunk_size=MIB)).copy(
            "s3://progress-test/v.bin",
            str(tmp_path / "v.bin"),
            source_options=s3_options(endpoint),
            subscribers=[recorder],
        )
    assert (tmp_path / "v.bin").read_bytes() == data
    last = recorder.seen[-1]
    assert last.bytes_received == last.bytes_verified == len(data)
    _check_counts(recorder.seen)
