"""Helpers the benchmark scripts share: test files, the machine, summaries.

Imported by ``transfer.py`` and ``upload.py`` (run as scripts, this folder is on
``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import blake3

import sclib

__all__ = [
    "BLOCK",
    "GIB",
    "MB",
    "MIB",
    "check_copy",
    "file_blake3",
    "filesystem_of",
    "free_port",
    "log",
    "make_random_file",
    "mem_available_gib",
    "read_through",
    "recycle_page_cache",
    "sclib_source_state",
    "started",
    "stop",
    "stop_all",
    "summarize",
    "verdict",
]

MIB = 1024 * 1024
GIB = 1024 * MIB
MB = 1_000_000  # throughput is in MB/s = 10^6 bytes per second
BLOCK = 64 * MIB  # generating, warming and hashing files go this many bytes at a time


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def filesystem_of(path: str) -> dict[str, str]:
    """The mount point, type and device that ``path`` lives on (from /proc/mounts)."""
    real = os.path.realpath(path)
    best = {"mount_point": "?", "type": "?", "device": "?"}
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return best
    length = -1
    for fields in mounts:
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) > length:
            length = len(point)
            best = {"mount_point": point, "type": fields[2], "device": fields[0]}
    return best


def make_random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes (os.urandom, no holes), fsync; return the BLAKE3."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(BLOCK, left))
            f.write(block)
            hasher.update(block)
            left -= len(block)
        f.flush()
        os.fsync(f.fileno())
    return str(hasher.hexdigest())


def read_through(path: Path) -> float:
    """Read ``path`` front to back (into the page cache); return the seconds taken."""
    buf = bytearray(BLOCK)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - start


def recycle_page_cache(folder: Path, size: int) -> float:
    """Write and delete a scratch file of ``size`` + 64 MiB in ``folder``, right
    before a timed run, so the run writes into memory the guest still holds.

    On a VM whose balloon driver reports free memory to its host (virtio free page
    reporting, on here), pages freed more than about 2 s earlier go back to the
    host, and touching them again costs a host page fault each: writing 2 GiB into
    the page cache took 3.4-4.5 s when the previous 2 GiB file had been deleted
    6 s before, against 0.4 s right after the delete (measured on this project's
    2-core VM). How long a contender waited after the previous run's cleanup (a
    ``sync``, reading the source) decided which it got, which made ratios swing
    by 2x between runs. Deleting a dirty file drops its pages without writing
    them, so this costs no disk I/O; it runs before every contender alike and is
    not timed. Returns the seconds it took.
    """
    piece = bytes(8 * MIB)
    scratch = folder / ".bench-recycle"
    start = time.perf_counter()
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for offset in range(0, size + 64 * MIB, len(piece)):
            os.pwrite(fd, piece, offset)
    finally:
        os.close(fd)
        scratch.unlink()
    return time.perf_counter() - start


def empty_folder(folder: Path) -> None:
    """Delete everything inside ``folder`` (it stays)."""
    folder.mkdir(parents=True, exist_ok=True)
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                child.unlink()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used (its threads included)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def file_blake3(path: Path) -> str:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            hasher.update(view[:n])
    return str(hasher.hexdigest())


def check_copy(path: Path, size: int, digest: str, who: str) -> None:
    if not path.is_file() or path.stat().st_size != size:
        raise RuntimeError(f"{who}: {path} is missing or has the wrong size")
    if file_blake3(path) != digest:
        raise RuntimeError(f"{who}: {path} differs from the source")


def sclib_source_state() -> str:
    """The commit sclib's checkout is at, and whether sclib/ has local changes."""
    git = shutil.which("git")
    root = Path(sclib.__file__).resolve().parent.parent
    if git is None or not (root / ".git").exists():
        return "not a git checkout"
    try:
        head = subprocess.run(
            [git, "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout.decode()
        dirty = subprocess.run(
            [git, "-C", str(root), "status", "--porcelain", "--", "sclib"],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    state = f"commit {head.strip()}"
    return state + (" + uncommitted changes in sclib/" if dirty.strip() else "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_argv(port: int | str) -> list[str]:
    """``sclib serve`` as the upload benchmarks run it: this Python, 127.0.0.1,
    no job workers, no auth, quiet."""
    return [
        sys.executable, "-m", "sclib", "serve", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "0", "--no-auth", "--log-level", "warning",
    ]  # fmt: skip


def mem_available_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def summarize(seconds: list[float], size: int) -> dict[str, Any]:
    median = statistics.median(seconds)
    return {
        "runs": len(seconds),
        "seconds": seconds,
        "median_seconds": median,
        "mb_per_s": size / median / MB,
        "best_mb_per_s": size / min(seconds) / MB,
        "worst_mb_per_s": size / max(seconds) / MB,
    }


def verdict(ratio: float, target: float) -> str:
    return "meets" if ratio >= target else "MISSES"


#: Every child process a benchmark started, so it can end them all on exit.
_children: list[subprocess.Popen[bytes]] = []


def started(proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Remember ``proc`` for :func:`stop_all`; returns it."""
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Terminate ``proc`` (kill it if it does not exit in ``timeout`` s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def stop_all() -> None:
    """End every process :func:`started` remembered."""
    for proc in _children:
        with contextlib.suppress(Exception):  # best effort at exit
            stop(proc)
