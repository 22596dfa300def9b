"""Request bodies streamed to a sink in batches, through pooled buffers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from sclib.errors import InvalidInput
from sclib.server import streaming


class Collect:
    """A sink that keeps what it was given (copied: the batch buffer is reused)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.data = bytearray()
        self.fail_at = fail_at

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.fail_at is not None and len(self.data) + len(data) > self.fail_at:
            raise OSError("disk full")
        self.data += data


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def test_batches_reuse_one_buffer_across_requests() -> None:
    """Two bodies in a row are written byte for byte, and the second request
    takes the buffer the first gave back instead of allocating one."""
    streaming._free.clear()
    first, second = os.urandom(300_000), os.urandom(250_000)
    a, b = Collect(), Collect()
    assert asyncio.run(streaming.pump(pieces(first, 7_000), a, batch=64 * 1024)) == (
        len(first)
    )
    assert len(streaming._free) == 1
    kept = streaming._free[0]
    assert asyncio.run(streaming.pump(pieces(second, 65_536), b, batch=64 * 1024))
    assert (bytes(a.data), bytes(b.data)) == (first, second)
    assert streaming._free == [kept] and streaming._free[0] is kept


def test_a_failed_body_gives_its_buffer_back() -> None:
    """A sink that fails, or a multipart body that is malformed, still returns
    its batch buffer to the pool (nothing is left borrowed)."""
    streaming._free.clear()
    with pytest.raises(OSError, match="disk full"):
        asyncio.run(
            streaming.pump(
                pieces(os.urandom(200_000), 10_000),
                Collect(fail_at=70_000),
                batch=64 * 1024,
            )
        )
    assert len(streaming._free) == 1

    async def open_sink(filename: str | None, fields: dict[str, str]) -> Collect:
        return Collect()

    with pytest.raises(InvalidInput):
        asyncio.run(
            streaming.receive_multipart(
                pieces(b"--xyz\r\nnot a header line at all", 8),
                "multipart/form-data; boundary=xyz",
                "file",
                open_sink,
                batch=64 * 1024,
            )
        )
    assert len(streaming._free) == 1  # taken and given back again


def test_the_pool_keeps_a_bounded_number_of_buffers() -> None:
    """Buffers given back beyond the pool's size are dropped, not hoarded."""
    streaming._free.clear()
    batches = [streaming._Batch(1024) for _ in range(streaming._KEEP + 3)]
    for batch in batches:
        batch.release()
        batch.release()  # a second release does nothing
    assert len(streaming._free) == streaming._KEEP


def test_a_cancelled_flush_waits_for_its_write() -> None:
    """Cancelling a request while its batch is being written (plain asyncio
    cancellation, as at a server's shutdown) lets the write finish before the
    cancellation goes on, so the buffer never goes back to the pool while a
    thread still reads it."""
    import threading
    import time

    streaming._free.clear()
    started, finished = threading.Event(), threading.Event()
    seen: list[bytes] = []

    class Slow:
        def write(self, data: bytes | bytearray | memoryview) -> None:
            started.set()
            time.sleep(0.3)
            seen.append(bytes(data[:4]))
            finished.set()

    async def run() -> None:
        task = asyncio.ensure_future(
            streaming.pump(pieces(b"AAAA" * 1000, 4000), Slow(), batch=1024)
        )
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the cancelled pump returned only after the write it was waiting on
        assert finished.is_set()

    asyncio.run(run())
    assert seen == [b"AAAA"]
    assert len(streaming._free) == 1  # given back, after the write
