"""What of a file the kernel holds in its page cache (Linux ``mincore``), for the
tests of writes that bypass it (``O_DIRECT``)."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from pathlib import Path

__all__ = ["cached_fraction", "direct_writes_bypass_cache"]


def cached_fraction(path: Path, length: int | None = None) -> float:
    """The share of the pages of ``path`` (of its first ``length`` bytes) that
    are in the page cache (0.0 to 1.0)."""
    size = path.stat().st_size if length is None else length
    if size == 0:
        return 0.0
    page = mmap.PAGESIZE
    pages = -(-size // page)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    vec = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as f:
        # a private, writable mapping, so that ctypes can take its address; no
        # page of it is touched, so mincore reports the file's page cache
        mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
        try:
            address = ctypes.c_char.from_buffer(mapped)
            try:
                if libc.mincore(ctypes.addressof(address), size, vec) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                del address
        finally:
            mapped.close()
    return sum(b & 1 for b in vec) / pages


def direct_writes_bypass_cache(folder: Path) -> str | None:
    """``None`` when an ``O_DIRECT`` write to a file in ``folder`` leaves its
    pages out of the page cache; else why not (tmpfs keeps every page in
    memory; some filesystems refuse ``O_DIRECT``)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "O_DIRECT"):
        return "O_DIRECT is a Linux feature"
    probe = folder / ".direct-probe"
    buf = mmap.mmap(-1, 1024**2)
    buf.write(os.urandom(1024**2))
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT)
    except OSError as exc:
        return f"this filesystem refuses O_DIRECT ({exc})"
    try:
        os.pwrite(fd, buf, 0)
    except OSError as exc:
        return f"this filesystem refuses O_DIRECT writes ({exc})"
    finally:
        os.close(fd)
        buf.close()
    try:
        if cached_fraction(probe) > 0.5:
            return "this filesystem keeps O_DIRECT writes in memory (tmpfs?)"
    finally:
        probe.unlink()
    return None
