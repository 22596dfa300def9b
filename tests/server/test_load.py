"""Memory stays bounded when many clients upload at once.

Each request used to take an 8 MiB batch buffer, zero-filled and so resident,
however small its body: 64 clients sending 100 KB files held the server at about
350 MB. Buffers are now sized to the body (its Content-Length) and the bytes all
requests buffer at once are capped (SCLIB_MAX_BUFFERED_BYTES). 64 concurrent
clients here, each sending three 100 KB files through the seed's one-request
route: every upload succeeds, every job completes, and the server's peak
resident memory (the kernel's VmHWM) stays under 300 MB.
``benchmarks/upload_load.py`` measures 16, 64 and 256 clients.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sclib.testing.load import run_load
from tests.server.live import LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_many_clients_leave_memory_bounded(tmp_path: Path) -> None:
    """64 concurrent clients x 3 files of 100 KB: all 200, all jobs completed,
    peak server RSS under 300 MB."""
    server = LiveServer(tmp_path / "data", workers=4).start()
    try:
        assert server.process is not None
        result = run_load(
            server.url,
            server.token(),
            clients=64,
            files=3,
            server_pid=server.process.pid,
            wait_timeout=300,
        )
    finally:
        server.stop()
    print(result.summary())
    assert result.statuses == {200: 192}
    assert set(result.jobs.values()) == {"completed"}
    assert 0 < result.peak_rss < 300 * 1024**2
