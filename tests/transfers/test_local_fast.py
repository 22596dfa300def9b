"""The local destination's fast write path: pwrite calls of at most 8 MiB, chunks
verified through a memory map of the written range (and the pread fallback), and
each verified chunk's writeback started early when the copy syncs.

Every copy here is of a real file to a real file; the few stand-ins (a pwrite that
corrupts what it writes, an mmap the filesystem refuses) are said in each test.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

import sclib.transfers.local as local_module
from sclib.backends.sqlite_sessions import SQLiteSessionStore
from sclib.errors import ChecksumMismatch
from sclib.transfers import MemorySessionStore, TransferConfig, TransferEngine
from sclib.transfers._landed import mapped_equal
from sclib.transfers._writeback import start_writeback
from sclib.transfers.plan import KIB, MIB

ROOT = Path(__file__).resolve().parents[2]


def engine(chunk: int, **config: Any) -> TransferEngine:
    return TransferEngine(
        sessions=MemorySessionStore(),
        config=TransferConfig(chunk_size=chunk, retry_delay=0.0, **config),
    )


def spy(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[Any]:
    """Wrap ``owner.name`` so each call's first arguments are recorded; the real
    function still runs."""
    calls: list[Any] = []
    real: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


@pytest.mark.parametrize("chunk", [KIB, 64 * KIB, 8 * MIB])
def test_chunks_are_verified_through_a_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Each chunk is compared where it landed through a memory map (chunk offsets
    that are not page-aligned included); the copy is byte-identical and its digest
    is the one-shot BLAKE3."""
    size = 3 * chunk + 1234 if chunk < MIB else 9 * MIB + 17
    data = os.urandom(size)
    (tmp_path / "src.bin").write_bytes(data)
    checks = spy(monkeypatch, local_module, "mapped_equal")
    preads = spy(monkeypatch, os, "preadv")
    result = engine(chunk, parallel=3).copy(
        str(tmp_path / "src.bin"), str(tmp_path / "dst.bin")
    )
    (file,) = result.files
    assert len(checks) == file.chunks == -(-size // chunk)
    # the only preadv calls are the source's reads: no read-back of the copy
    assert len(preads) == file.chunks
    assert (tmp_path / "dst.bin").read_bytes() == data
    assert file.blake3 == blake3(data).hexdigest()


def test_large_chunks_are_written_in_8_mib_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk larger than 8 MiB reaches the file in pwrite calls of at most
    8 MiB, covering every byte once."""
    size = 32 * MIB + 5
    (tmp_path / "src.bin").write_bytes(os.urandom(size))
    real = os.pwrite
    writes: list[tuple[int, int]] = []

    def pwrite(fd: int, data: Any, offset: int) -> int:
        writes.append((offset, len(memoryview(data))))
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    engine(32 * MIB).copy(str(tmp_path / "src.bin"), str(tmp_path / "dst.bin"))
    assert max(length for _, length in writes) == 8 * MIB
    assert sum(length for _, length in writes) == size
    assert sorted(offset for offset, _ in writes) == list(range(0, size, 8 * MIB))
    assert (tmp_path / "dst.bin").stat().st_size == size


@pytest.mark.parametrize("fsync", [True, False])
def test_writeback_starts_per_verified_chunk_when_syncing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    """With fsync on, each chunk's range is queued for writeback once it was
    checked (so the fsync at commit has little left); with fsync off, never."""
    size = 3 * 64 * KIB + 7
    (tmp_path / "src.bin").write_bytes(os.urandom(size))
    started = spy(monkeypatch, local_module, "start_writeback")
    engine(64 * KIB, parallel=2).copy(
        str(tmp_path / "src.bin"),
        str(tmp_path / "dst.bin"),
        dest_options={"fsync": fsync},
    )
    ranges = sorted((call[1], call[2]) for call in started)
    if fsync:
        assert ranges == [
            (0, 64 * KIB),
            (64 * KIB, 64 * KIB),
            (128 * KIB, 64 * KIB),
            (192 * KIB, 7),
        ]
    else:
        assert ranges == []


def test_start_writeback_queues_dirty_pages(tmp_path: Path) -> None:
    """On Linux the call reaches sync_file_range and succeeds on a real file; an
    empty range starts nothing."""
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"x" * 10_000, 0)
        assert start_writeback(fd, 0, 10_000) is sys.platform.startswith("linux")
        assert start_writeback(fd, 0, 0) is False
    finally:
        os.close(fd)


def test_filesystem_without_mmap_falls_back_to_pread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where the destination cannot be memory-mapped, chunks are read back with
    pread and compared instead; the copy still completes, verified. Stand-in: no
    filesystem that refuses mmap (ENODEV) can be mounted here, so the mapping
    call raises that error."""
    data = os.urandom(5 * 64 * KIB + 3)
    (tmp_path / "src.bin").write_bytes(data)
    attempts: list[int] = []

    def refuse(fd: int, offset: int, expected: Any) -> bool:
        attempts.append(offset)
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(local_module, "mapped_equal", refuse)
    preads = spy(monkeypatch, os, "preadv")
    with caplog.at_level("INFO", logger="sclib.transfers.local"):
        result = engine(64 * KIB, parallel=1).copy(
            str(tmp_path / "src.bin"), str(tmp_path / "dst.bin")
        )
    assert len(attempts) == 1  # refused once, then the writer stops trying
    assert "verifying chunks with pread instead" in caplog.text
    # each chunk: one read of the source and one read-back of the copy
    assert len(preads) == 2 * result.files[0].chunks
    assert (tmp_path / "dst.bin").read_bytes() == data


def _corrupting_pwrite(
    monkeypatch: pytest.MonkeyPatch, target: int, times: int
) -> list[int]:
    """os.pwrite that flips one byte of whatever it writes at ``target`` (the
    first ``times`` times): a stand-in for a disk or filesystem that stores
    different bytes than it was given, which no real device here does on demand."""
    real = os.pwrite
    corrupted: list[int] = []

    def pwrite(fd: int, data: Any, offset: int) -> int:
        if offset == target and len(corrupted) < times:
            corrupted.append(offset)
            bad = bytearray(data)
            bad[7] ^= 0xFF
            return real(fd, bad, offset)
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    return corrupted


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "pread"])
def test_corruption_where_chunks_land_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mapped: bool
) -> None:
    """Bytes that land wrong are caught by the check where they landed (mapped or
    read back): a chunk corrupted once is sent again and the copy is intact; a
    chunk corrupted on every try fails the copy with ChecksumMismatch, leaves
    nothing at the final path and a session that resumes."""
    if not mapped:
        monkeypatch.setattr(local_module._LocalWriter, "mapped_check", False)
    data = os.urandom(4 * MIB + 99)
    (tmp_path / "src.bin").write_bytes(data)
    corrupted = _corrupting_pwrite(monkeypatch, target=2 * MIB, times=1)
    result = engine(MIB, max_attempts=3).copy(
        str(tmp_path / "src.bin"), str(tmp_path / "once.bin")
    )
    assert corrupted == [2 * MIB]
    assert (tmp_path / "once.bin").read_bytes() == data
    assert result.files[0].blake3 == blake3(data).hexdigest()

    monkeypatch.undo()
    if not mapped:
        monkeypatch.setattr(local_module._LocalWriter, "mapped_check", False)
    corrupted = _corrupting_pwrite(monkeypatch, target=2 * MIB, times=10**6)
    sessions = MemorySessionStore()
    eng = TransferEngine(
        sessions=sessions,
        config=TransferConfig(chunk_size=MIB, max_attempts=3, retry_delay=0.0),
    )
    with pytest.raises(ChecksumMismatch, match=r"chunk 2 of .*always\.bin"):
        eng.copy(str(tmp_path / "src.bin"), str(tmp_path / "always.bin"))
    assert len(corrupted) == 3  # every try was checked and refused
    assert not (tmp_path / "always.bin").exists()
    (session,) = sessions.list(status="active")
    assert 2 not in session.chunks
    monkeypatch.undo()
    resumed = eng.copy(str(tmp_path / "src.bin"), str(tmp_path / "always.bin"))
    assert resumed.files[0].chunks_reused == len(session.chunks)
    assert (tmp_path / "always.bin").read_bytes() == data


def test_mapped_equal_compares_exactly(tmp_path: Path) -> None:
    """mapped_equal finds a single differing byte at any offset, page-aligned or
    not, for writable and read-only buffers, and treats an empty range as equal."""
    data = bytearray(os.urandom(3 * 4096 + 100))
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, length in [(0, 4096), (1029, 5000), (4096, 8292), (12000, 388)]:
            piece = data[offset : offset + length]
            assert mapped_equal(fd, offset, memoryview(piece))  # writable
            assert mapped_equal(fd, offset, bytes(piece))  # read-only
            for where in (0, length // 2, length - 1):
                wrong = bytearray(piece)
                wrong[where] ^= 1
                assert not mapped_equal(fd, offset, memoryview(wrong))
                assert not mapped_equal(fd, offset, bytes(wrong))
        assert mapped_equal(fd, 50, b"")
    finally:
        os.close(fd)


@pytest.mark.integration
def test_sigkill_resends_only_chunks_in_flight(tmp_path: Path) -> None:
    """SIGKILL during a copy whose 4 MiB chunks are written in 1 MiB calls: every
    recorded chunk is intact in the temp file, at most ``parallel`` unrecorded
    chunks were written (wholly or in part), and the resumed copy sends again only
    the unrecorded ones, measured from the session record and the temp file; the
    result is byte-identical."""
    size, chunk, parallel = 96 * MIB, 4 * MIB, 4
    data = os.urandom(size)
    (tmp_path / "src.bin").write_bytes(data)
    db = str(tmp_path / "sessions.db")
    dest = tmp_path / "out" / "dst.bin"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def driver(delay: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.transfers.engine_driver",
                f"slow://{tmp_path}/src.bin",
                str(dest),
                db,
                str(chunk),
                str(parallel),
                delay,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    proc = driver("0.05")
    sessions = SQLiteSessionStore(db)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = sessions.list(status="active")
        if found and len(found[0].chunks) >= 6:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    (session,) = sessions.list(status="active")
    recorded = set(session.chunks)
    count = size // chunk
    assert 6 <= len(recorded) < count
    assert not dest.exists()
    temp = Path(session.state["temp"])
    on_disk = temp.read_bytes()
    for i in recorded:  # every recorded chunk is there, intact
        assert on_disk[i * chunk : (i + 1) * chunk] == data[i * chunk : (i + 1) * chunk]
    zeros = bytes(MIB)  # the temp file is sparse: unwritten pieces read as zeros
    touched = [
        i
        for i in range(count)
        if i not in recorded
        and any(
            on_disk[p : p + MIB] != zeros
            for p in range(i * chunk, (i + 1) * chunk, MIB)
        )
    ]
    assert len(touched) <= parallel  # written (in part or whole), not recorded
    resumed = driver("0")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    (result,) = json.loads(out)
    assert result["chunks_reused"] == len(recorded)
    assert result["chunks_sent"] == count - len(recorded)
    assert dest.read_bytes() == data
    assert result["blake3"] == blake3(data).hexdigest()
    assert not temp.exists()
    sessions.close()


def test_digest_of_a_fast_copy_equals_b3sum(tmp_path: Path) -> None:
    """With the default 8 MiB chunks, the whole-file digest is what b3sum prints."""
    b3sum = shutil.which("b3sum")
    if b3sum is None:
        pytest.skip("b3sum is not installed (Debian package b3sum)")
    (tmp_path / "src.bin").write_bytes(os.urandom(17 * MIB + 3))
    result = TransferEngine().copy(str(tmp_path / "src.bin"), str(tmp_path / "d.bin"))
    printed = subprocess.run(
        [b3sum, str(tmp_path / "d.bin")], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert result.files[0].blake3 == printed
