"""Hashing: BLAKE3 everywhere, SHA-256 where a protocol asks for it.

A whole-file digest is the plain BLAKE3 hash of the file's bytes, the same value
``b3sum`` prints. It is found one of two ways:

* **From the chunks' chaining values (one pass).** With the optional compiled
  module ``sclib_blake3tree`` installed (``pip install ./native/blake3tree``), each
  chunk's digest is its BLAKE3 *chaining value*: the node of BLAKE3's own tree
  that covers the chunk's bytes at its offset (chunk sizes are powers of two times
  1 KiB, so every chunk is a whole subtree). A chaining value commits to the bytes
  and to their place in the file, and :class:`ChunkTree` merges them into the
  file's hash, so the bytes are hashed once instead of twice (once per chunk, once
  in order). Such digests are written ``cv:<hex>``.
* **In order (two passes).** Without it, a chunk's digest is the plain BLAKE3 hash
  of its bytes, and chunks reach the :class:`OrderedHasher` in any order and are
  fed to the whole-file hash in file order; the engine bounds how far ahead a
  chunk may run, so the reorder buffer never holds more than the in-flight window.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import mmap
import os
import threading
from collections.abc import Callable
from typing import Any

from sclib.errors import ConfigurationError, InvalidInput, MissingDependency

__all__ = [
    "CV_HASH",
    "CV_PREFIX",
    "ChunkTree",
    "OrderedHasher",
    "TreeRecorder",
    "blake3_file",
    "blake3_hex",
    "can_check_chaining_values",
    "chunk_digest",
    "new_blake3",
    "tree_hashing",
]

CV_PREFIX = "cv:"
"""How a chunk digest that is a BLAKE3 chaining value is written: ``cv:<hex>``."""

CV_HASH = "blake3-cv"
"""The name of chaining-value chunk digests on the wire (``X-Chunk-Hash:
blake3-cv:<hex>``)."""

_TREE_MODULE = "sclib_blake3tree"
_TREE_SWITCH = "SCLIB_BLAKE3_TREE"  # "0" turns one-pass chunk hashing off


def new_blake3(*, threads: bool = True) -> Any:
    """A new BLAKE3 hasher, multi-threaded for large updates unless ``threads`` is
    false: bytes streaming in from a network arrive far slower than one core
    hashes them (3+ GB/s), and a thread pool per update would only add hand-offs
    and spinning while parallel streams already keep the cores busy."""
    try:
        from blake3 import blake3
    except ImportError as exc:  # pragma: no cover - blake3 is a core dependency
        raise MissingDependency("blake3", "all", "BLAKE3 hashing") from exc
    return blake3(max_threads=blake3.AUTO if threads else 1)


@functools.cache
def _tree_module() -> Any:
    try:
        return importlib.import_module(_TREE_MODULE)
    except ImportError:
        return None


def _require_tree() -> Any:
    tree = _tree_module()
    if tree is None:
        raise ConfigurationError(
            "one-pass chunk hashing needs the compiled module sclib_blake3tree, "
            "which is not installed; install it from sclib's source tree with: "
            "pip install ./native/blake3tree"
        )
    return tree


def can_check_chaining_values() -> bool:
    """Whether this process can compute chaining values (``sclib_blake3tree`` is
    installed), whatever ``SCLIB_BLAKE3_TREE`` says."""
    return _tree_module() is not None


def tree_hashing() -> bool:
    """Whether chunk digests are chaining values (one hash pass per byte).

    True when the compiled ``sclib_blake3tree`` module is installed, unless the
    ``SCLIB_BLAKE3_TREE`` environment variable is ``0`` (read on every call, so a
    test or a benchmark can compare both ways in one process)."""
    if os.environ.get(_TREE_SWITCH, "").strip() == "0":
        return False
    return _tree_module() is not None


def _check_tree_chunk(offset: int, chunk_size: int) -> None:
    if chunk_size < 1024 or chunk_size & (chunk_size - 1) or offset % chunk_size:
        raise InvalidInput(
            f"a chaining value needs a chunk size that is a power of two of at "
            f"least 1 KiB and an offset that is a multiple of it; got chunk size "
            f"{chunk_size} at offset {offset}"
        )


def chunk_cv(data: bytes | bytearray | memoryview, offset: int) -> bytes:
    """The BLAKE3 chaining value of ``data`` found at ``offset`` in its file.

    ``offset`` is a multiple of a power-of-two chunk size of at least 1 KiB and
    ``data`` is at most one chunk long. Needs ``sclib_blake3tree``."""
    hasher = _require_tree().SubtreeHasher(offset)
    hasher.update(data)
    return bytes(hasher.chaining_value())


def new_chunk_hasher(offset: int) -> Any:
    """A streaming hasher for the chaining value of bytes at ``offset`` (see
    :func:`chunk_cv`): ``update(data)``, then ``chaining_value()``."""
    return _require_tree().SubtreeHasher(offset)


def chunk_digest(
    data: bytes | bytearray | memoryview,
    offset: int,
    chunk_size: int,
    *,
    tree: bool,
) -> str:
    """The digest recorded for one chunk: ``cv:<hex>`` (its chaining value) with
    ``tree``, else the BLAKE3 hex digest of its bytes."""
    if tree:
        _check_tree_chunk(offset, chunk_size)
        return CV_PREFIX + chunk_cv(data, offset).hex()
    return blake3_hex(data)


def digest_matches(
    recorded: str, data: bytes | bytearray | memoryview, offset: int
) -> bool | None:
    """Whether ``data`` at ``offset`` has the ``recorded`` chunk digest (of either
    kind); ``None`` when that cannot be told here (a chaining value recorded by a
    process that had ``sclib_blake3tree``, checked by one that has not)."""
    if recorded.startswith(CV_PREFIX):
        if not can_check_chaining_values():
            return None
        return CV_PREFIX + chunk_cv(data, offset).hex() == recorded
    return blake3_hex(data) == recorded


class ChunkTree:
    """A file's BLAKE3 hash from the chaining values of its ``count`` chunks.

    Chunks are added in any order; :meth:`hexdigest` merges them the way BLAKE3's
    tree does (each left subtree holds the largest power of two of chunks that
    leaves at least one for the right). A file of one chunk has no tree to merge:
    its hash is the chunk's plain BLAKE3 hash, so callers use tree digests only
    for files of two chunks or more.
    """

    def __init__(self, count: int) -> None:
        if count < 2:
            raise InvalidInput(
                f"a chunk tree needs at least 2 chunks, got {count}; hash a file "
                "of one chunk directly"
            )
        self.count = count
        self._cvs: dict[int, bytes] = {}

    def add(self, index: int, digest: str | bytes) -> None:
        """Give chunk ``index``'s chaining value (bytes, or a ``cv:<hex>`` digest)."""
        if not 0 <= index < self.count:
            raise InvalidInput(f"chunk {index} is outside 0..{self.count - 1}")
        if isinstance(digest, str):
            if not digest.startswith(CV_PREFIX):
                raise InvalidInput(f"chunk {index}: {digest!r} is not a chaining value")
            try:
                digest = bytes.fromhex(digest[len(CV_PREFIX) :])
            except ValueError:
                raise InvalidInput(f"chunk {index}: {digest!r} is not hex") from None
        if len(digest) != 32:
            raise InvalidInput(f"chunk {index}: a chaining value is 32 bytes")
        self._cvs[index] = digest

    def missing(self) -> list[int]:
        return [i for i in range(self.count) if i not in self._cvs]

    def hexdigest(self) -> str:
        missing = self.missing()
        if missing:
            raise InvalidInput(f"chunks {missing[:10]} have no chaining value yet")
        merge = _require_tree().merge
        cvs = [self._cvs[i] for i in range(self.count)]

        def subtree(lo: int, hi: int, root: bool) -> bytes:
            if hi - lo == 1:
                return cvs[lo]
            left = 1 << ((hi - lo - 1).bit_length() - 1)
            return bytes(
                merge(
                    subtree(lo, lo + left, False),
                    subtree(lo + left, hi, False),
                    root=root,
                )
            )

        return subtree(0, self.count, True).hex()


class TreeRecorder:
    """Chaining values of the ``chunk``-byte pieces of a file that one stream of
    bytes, starting at ``start``, covers whole (a tus ``PATCH``: bytes in order
    from an offset).

    A piece the stream begins inside is skipped; a piece it ends inside is kept
    open (:meth:`close_last` finishes it when the stream ended at the file's
    end, where the last piece may be short). Whoever records the values also
    records how far the bytes reached, and keeps only the pieces below that
    (:meth:`below`). ``chunk`` is a power of two of at least 1 KiB."""

    def __init__(self, start: int, chunk: int) -> None:
        _check_tree_chunk(0, chunk)
        self.chunk = chunk
        first = -(-start // chunk) * chunk  # the first piece starting at or after
        self._skip = first - start
        self._index = first // chunk
        self._hasher: Any = None
        self._filled = 0
        #: piece index -> chaining value
        self.cvs: dict[int, bytes] = {}

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if self._skip:
            n = min(self._skip, len(view))
            view = view[n:]
            self._skip -= n
        while view:
            if self._hasher is None:
                self._hasher = new_chunk_hasher(self._index * self.chunk)
                self._filled = 0
            n = min(self.chunk - self._filled, len(view))
            self._hasher.update(view[:n])
            self._filled += n
            view = view[n:]
            if self._filled == self.chunk:
                self.cvs[self._index] = bytes(self._hasher.chaining_value())
                self._index += 1
                self._hasher = None

    def close_last(self) -> None:
        """The stream ended at the file's end: the open (short) piece is whole."""
        if self._hasher is not None and self._filled:
            self.cvs[self._index] = bytes(self._hasher.chaining_value())
            self._hasher = None

    def below(self, end: int, size: int | None) -> dict[int, bytes]:
        """The values of the pieces that end at or before ``end`` (the file's
        last piece ends at ``size``)."""
        return {
            i: cv
            for i, cv in self.cvs.items()
            if min((i + 1) * self.chunk, size if size is not None else end) <= end
        }


def blake3_hex(data: bytes | bytearray | memoryview) -> str:
    """The BLAKE3 hex digest of ``data``."""
    hasher = new_blake3()
    hasher.update(data)
    return str(hasher.hexdigest())


def blake3_file(
    path: str | os.PathLike[str],
    *,
    on_progress: Callable[[int], None] | None = None,
    block: int = 64 * 1024**2,
) -> tuple[str, int]:
    """The BLAKE3 hex digest and size of a file, read through memory maps.

    No copy into Python buffers and every core hashing: about 10 GB/s from the page
    cache on two cores, against 3-4 GB/s for a read loop. The file is mapped one
    ``block`` at a time, so the process never has more than one block of it
    mapped (resident memory stays flat for any file size). ``on_progress(bytes)``
    is called after each block.
    """
    hasher = new_blake3()
    block = max(mmap.ALLOCATIONGRANULARITY, block - block % mmap.ALLOCATIONGRANULARITY)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        for start in range(0, size, block):
            length = min(block, size - start)
            with mmap.mmap(
                fh.fileno(), length, offset=start, access=mmap.ACCESS_READ
            ) as window:
                view = memoryview(window)
                try:
                    hasher.update(view)
                finally:
                    view.release()
            if on_progress is not None:
                on_progress(start + length)
    return str(hasher.hexdigest()), size


class OrderedHasher:
    """Feeds chunks to a whole-file BLAKE3 (and optional SHA-256) in index order."""

    def __init__(self, *, sha256: bool = False, blake3: bool = True) -> None:
        self._blake3 = new_blake3() if blake3 else None
        self._sha256 = hashlib.sha256() if sha256 else None
        self._next = 0
        self._pending: dict[int, bytes | memoryview] = {}
        self._lock = threading.Lock()

    @property
    def next_index(self) -> int:
        """The index of the next chunk the hash is waiting for."""
        return self._next

    @property
    def buffered(self) -> int:
        """How many chunks wait in the reorder buffer."""
        return len(self._pending)

    def add(self, index: int, data: bytes | memoryview) -> None:
        """Give chunk ``index``; it is hashed once every chunk before it was."""
        with self._lock:
            if index < self._next or index in self._pending:
                raise InvalidInput(f"chunk {index} was already given to the hasher")
            self._pending[index] = data
            while self._next in self._pending:
                block = self._pending.pop(self._next)
                if self._blake3 is not None:
                    self._blake3.update(block)
                if self._sha256 is not None:
                    self._sha256.update(block)
                self._next += 1

    def offer(self, index: int, data: bytes | memoryview) -> bool:
        """Like :meth:`add`, but a chunk given before is ignored (``False``)."""
        try:
            self.add(index, data)
        except InvalidInput:
            return False
        return True

    def hexdigest(self) -> str:
        if self._pending:
            raise InvalidInput(
                f"chunks {sorted(self._pending)} are buffered but chunk {self._next} "
                "never came"
            )
        if self._blake3 is None:
            raise InvalidInput("this hasher was made without BLAKE3 (blake3=False)")
        return str(self._blake3.hexdigest())

    def sha256_hexdigest(self) -> str | None:
        return None if self._sha256 is None else self._sha256.hexdigest()
