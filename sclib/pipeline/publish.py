"""Publishing a finished folder at its final path, all at once.

A step writes its output into a temp folder on the same file system, makes it
durable (:func:`fsync_tree`), then :func:`publish_dir` puts it at the final path
in one atomic operation: a reader sees the old folder or the new one, never a
half-written one and never both mixed. On Linux an existing folder is swapped
with ``renameat2(RENAME_EXCHANGE)``; where that call is missing the old folder is
first moved aside, so the final path is briefly absent (still never partial).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
from pathlib import Path
from uuid import uuid4

__all__ = ["fsync_tree", "publish_dir"]

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (and ``root`` itself)."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(folder)


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically; ``False`` if the system cannot."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    call = getattr(libc, "renameat2", None)
    if call is None:
        return False
    result = call(
        _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False  # the kernel or the file system cannot exchange
    raise OSError(err, os.strerror(err), str(b))


def publish_dir(temp: Path, final: Path) -> None:
    """Move folder ``temp`` to ``final`` atomically, replacing what is there.

    Both must be on the same file system. The replaced folder is deleted.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(temp, final)  # atomic when nothing (or an empty folder) is there
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    else:
        _fsync_dir(final.parent)
        return
    if _exchange(temp, final):
        old = temp  # after the swap, temp holds the previous folder
    else:
        old = final.with_name(f".{final.name}.old-{uuid4().hex[:8]}")
        os.rename(final, old)
        os.rename(temp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    log.debug("published %s (replaced the previous folder)", final)
