"""Fixtures for the server tests: a real server process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
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


MOUNT = shutil.which("mount") or "/bin/mount"
UMOUNT = shutil.which("umount") or "/bin/umount"


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``folder/disk`` for one test: a real
    filesystem that fills up. Mounting needs root (CI runs as root); elsewhere
    the test skips and says why, and with ``CI_REQUIRE_TMPFS=1`` it fails."""
    mount = folder / "disk"
    mount.mkdir()
    reason = None
    if os.geteuid() != 0:
        reason = "mounting a tmpfs needs root (CI runs as root)"
    else:
        done = subprocess.run(
            [MOUNT, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            reason = f"cannot mount a tmpfs here: {done.stderr.strip()}"
    if reason is not None:
        if os.environ.get("CI_REQUIRE_TMPFS") == "1":
            pytest.fail(f"CI_REQUIRE_TMPFS=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield mount
    finally:
        subprocess.run([UMOUNT, "-l", str(mount)], check=False)
