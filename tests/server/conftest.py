"""Fixtures for the server tests: a real server process on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.live import LiveServer


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """``sclib serve`` with one in-process worker, HS256 auth, its own data."""
    server = LiveServer(tmp_path / "data").start()
    try:
        yield server
    finally:
        server.stop()
