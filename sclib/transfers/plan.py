"""Chunk planning: pure functions, no I/O.

A transfer of ``size`` bytes is cut into chunks of ``chunk_size`` bytes (the last
one shorter). The chunk size is a power-of-two multiple of 1 KiB, so chunk
boundaries fall on BLAKE3 chunk boundaries. For object-store destinations it is
also at least 5 MiB (S3's minimum part size) and at least ``size / 10,000`` (S3's
maximum part count).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sclib.errors import InvalidInput

__all__ = [
    "KIB",
    "MAX_PARTS",
    "MIB",
    "MIN_OBJECT_STORE_CHUNK",
    "Chunk",
    "ChunkPlan",
    "auto_chunk_size",
    "check_chunk",
    "parse_size",
]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
MAX_PARTS = 10_000
MIN_OBJECT_STORE_CHUNK = 5 * MIB
DEFAULT_CHUNK = 8 * MIB
MAX_CHUNK = 1 * GIB


def _next_power_of_two_kib(n: int) -> int:
    """The smallest power-of-two multiple of 1 KiB that is >= ``n``."""
    size = KIB
    while size < n:
        size *= 2
    return size


def auto_chunk_size(
    size: int, *, object_store: bool = False, preferred: int = DEFAULT_CHUNK
) -> int:
    """A chunk size for ``size`` bytes: ``preferred``, raised where limits require."""
    if size < 0:
        raise InvalidInput(f"size must not be negative, got {size}")
    chunk = _next_power_of_two_kib(max(preferred, KIB))
    if object_store:
        chunk = max(chunk, _next_power_of_two_kib(MIN_OBJECT_STORE_CHUNK))
        chunk = max(chunk, _next_power_of_two_kib(-(-size // MAX_PARTS)))
    return chunk


def check_chunk_size(chunk_size: int, size: int, *, object_store: bool = False) -> int:
    """Validate an explicit chunk size; return it."""
    if chunk_size < KIB or chunk_size & (chunk_size - 1) or chunk_size > MAX_CHUNK:
        raise InvalidInput(
            f"chunk size must be a power of two between 1 KiB and 1 GiB, got "
            f"{chunk_size}"
        )
    if object_store:
        if chunk_size < MIN_OBJECT_STORE_CHUNK:
            raise InvalidInput(
                f"object-store destinations need chunks of at least 5 MiB, got "
                f"{chunk_size}"
            )
        if -(-size // chunk_size) > MAX_PARTS:
            raise InvalidInput(
                f"{size} bytes in chunks of {chunk_size} make more than {MAX_PARTS} "
                "parts; use a larger chunk size"
            )
    return chunk_size


_UNITS = {
    "": 1,
    "B": 1,
    "K": KIB,
    "KB": KIB,
    "KIB": KIB,
    "M": MIB,
    "MB": MIB,
    "MIB": MIB,
    "G": GIB,
    "GB": GIB,
    "GIB": GIB,
}


def parse_size(text: str) -> int:
    """``"8MiB"``, ``"64k"``, ``"1G"``, ``"1048576"`` -> bytes (binary units)."""
    raw = text.strip().upper().replace(" ", "")
    digits = raw.rstrip("KMGIB")
    unit = raw[len(digits) :]
    if not digits.isdigit() or unit not in _UNITS:
        raise InvalidInput(
            f"cannot read {text!r} as a size; use e.g. 8MiB, 64KiB, 1GiB or bytes"
        )
    return int(digits) * _UNITS[unit]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a transfer: ``length`` bytes at ``offset``."""

    index: int
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """The chunks of ``size`` bytes cut every ``chunk_size`` bytes.

    A 0-byte transfer has no chunks.
    """

    size: int
    chunk_size: int

    def __post_init__(self) -> None:
        if self.size < 0:
            raise InvalidInput(f"size must not be negative, got {self.size}")
        if self.chunk_size <= 0:
            raise InvalidInput(f"chunk size must be positive, got {self.chunk_size}")

    @property
    def count(self) -> int:
        return -(-self.size // self.chunk_size)

    def chunk(self, index: int) -> Chunk:
        if not 0 <= index < self.count:
            raise InvalidInput(
                f"chunk index {index} out of range: this plan has {self.count} chunks"
            )
        offset = index * self.chunk_size
        return Chunk(index, offset, min(self.chunk_size, self.size - offset))

    def __iter__(self) -> Iterator[Chunk]:
        return (self.chunk(i) for i in range(self.count))

    def pending(self, verified: Iterable[int]) -> list[Chunk]:
        """The chunks not in ``verified``, in order."""
        done = set(verified)
        return [c for c in self if c.index not in done]

    def bytes_in(self, indexes: Iterable[int]) -> int:
        """How many bytes the given chunks hold."""
        return sum(self.chunk(i).length for i in set(indexes))


def check_chunk(
    chunk: Chunk, data_length: int, size: int, chunk_size: int, what: str
) -> None:
    """Check that ``chunk`` is one of the plan's chunks and ``data`` fits it.

    Writers call this before storing anything, so a caller's mistake is an
    :class:`~sclib.errors.InvalidInput` naming ``what``, not a corrupt object.
    """
    parts = -(-size // chunk_size)
    if not 0 <= chunk.index < parts:
        raise InvalidInput(f"chunk {chunk.index} is out of range: {what} has {parts}")
    expected = min(chunk_size, size - chunk.index * chunk_size)
    if chunk.offset != chunk.index * chunk_size or chunk.length != expected:
        raise InvalidInput(
            f"chunk {chunk} does not match chunks of {chunk_size} bytes of a "
            f"{size}-byte object"
        )
    if data_length != chunk.length:
        raise InvalidInput(
            f"chunk {chunk.index} is {chunk.length} bytes but {data_length} were given"
        )
