"""The engine in real processes: SIGKILL mid-copy, and peak memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from blake3 import blake3

from sclib.backends.sqlite_sessions import SQLiteSessionStore
from sclib.transfers.plan import MIB

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def driver(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.transfers.engine_driver", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkilled_copy_resends_only_chunks_in_flight(tmp_path: Path) -> None:
    """Kill the copying process with SIGKILL; the resumed copy re-sends at most the
    chunks that were in flight, measured from the session record and the temp file."""
    size, chunk, parallel = 64 * MIB, MIB, 4
    data = os.urandom(size)
    (tmp_path / "src.bin").write_bytes(data)
    db = str(tmp_path / "sessions.db")
    dest = tmp_path / "out" / "dst.bin"
    proc = driver(
        f"slow://{tmp_path}/src.bin", str(dest), db, str(chunk), str(parallel), "0.03"
    )
    sessions = SQLiteSessionStore(db)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = sessions.list(status="active")
        if found and len(found[0].chunks) >= 12:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    (session,) = sessions.list(status="active")
    recorded = set(session.chunks)
    assert 12 <= len(recorded) < size // chunk
    assert not dest.exists()
    # chunks that reached the temp file but not the session: those were in flight
    temp = Path(session.state["temp"])
    on_disk = temp.read_bytes()
    in_flight = [
        i
        for i in range(size // chunk)
        if i not in recorded
        and on_disk[i * chunk : (i + 1) * chunk] == data[i * chunk : (i + 1) * chunk]
    ]
    assert len(in_flight) <= parallel
    resumed = driver(
        str(f"slow://{tmp_path}/src.bin"), str(dest), db, str(chunk), str(parallel), "0"
    )
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    (result,) = json.loads(out)
    assert result["chunks_reused"] == len(recorded)
    assert result["chunks_sent"] == size // chunk - len(recorded)
    resent = len(in_flight)  # written before the kill, sent again after it
    assert resent <= parallel
    assert dest.read_bytes() == data
    assert result["blake3"] == blake3(data).hexdigest()
    assert not temp.exists()
    sessions.close()


@pytest.mark.slow
def test_peak_memory_copying_2_gib(tmp_path: Path) -> None:
    """Copying 2 GiB keeps the process under 200 MB plus its chunk buffers."""
    src = tmp_path / "big.bin"
    with open(src, "wb") as fh:  # sparse: reads return zeros, still 2 GiB of I/O
        fh.truncate(2 * 1024 * MIB)
    chunk, parallel = 8 * MIB, 4
    proc = driver(
        str(src),
        str(tmp_path / "copy.bin"),
        str(tmp_path / "s.db"),
        str(chunk),
        str(parallel),
    )
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    (result,) = json.loads(out)
    peak = result["peak_rss_kib"] * 1024
    budget = 200 * MIB + 2 * parallel * chunk
    print(f"\npeak RSS {peak / MIB:.0f} MiB (budget {budget / MIB:.0f} MiB)")
    assert peak < budget
    assert (tmp_path / "copy.bin").stat().st_size == 2 * 1024 * MIB
    zeros, expected = bytes(chunk), blake3(max_threads=blake3.AUTO)
    for _ in range(2 * 1024 * MIB // chunk):
        expected.update(zeros)
    assert result["blake3"] == expected.hexdigest()
