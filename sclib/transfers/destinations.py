"""Destination plugins: where bytes go, and how they are committed.

A :class:`Destination` opens a :class:`DestinationWriter` for one object. The
writer receives chunks in any order and from several threads, verifies each chunk
where it landed, and finally commits the object atomically: nothing appears at
the final path or key until every chunk is written and verified.

A writer's :attr:`DestinationWriter.state` is a small JSON-ready dict (a temp file
path, an S3 multipart upload id...). The engine stores it in the transfer session
after every chunk, so a new process can reopen the writer with
``destination.open(..., state=saved)`` and continue where the last one stopped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from sclib.transfers.plan import Chunk

__all__ = ["Destination", "DestinationWriter"]


class DestinationWriter(ABC):
    """Writes one object. Thread-safe for :meth:`write_chunk` on distinct chunks."""

    #: JSON-ready state a new process needs to resume this writer
    state: dict[str, Any]

    @abstractmethod
    def write_chunk(self, chunk: Chunk, data: bytes | memoryview) -> str | None:
        """Store ``data`` as ``chunk`` and check it landed intact.

        Returns a token to keep with the chunk (an S3 part's ETag), or ``None``.
        Raises :class:`~sclib.errors.ChecksumMismatch` if what landed differs from
        ``data`` and :class:`~sclib.errors.DestinationError` if writing failed.
        """

    def read_back(self, chunk: Chunk) -> bytes | None:
        """The bytes stored for ``chunk`` before commit, or ``None`` if this kind of
        destination cannot read them back (then the engine re-reads the source)."""
        return None

    @abstractmethod
    def commit(self, tokens: Mapping[int, str | None]) -> None:
        """Make the object visible at its final location, atomically."""

    @abstractmethod
    def abort(self) -> None:
        """Drop everything written so far (temp file, multipart upload)."""


class Destination(ABC):
    """A folder or bucket prefix that objects are copied into."""

    #: chunks must follow object-store rules (>= 5 MiB, <= 10,000 parts)
    object_store: ClassVar[bool] = False

    @abstractmethod
    def url_for(self, key: str) -> str:
        """The final URL of the object with relative ``key`` ("" = the root itself)."""

    @abstractmethod
    def open(
        self,
        key: str,
        size: int,
        chunk_size: int,
        state: Mapping[str, Any] | None = None,
    ) -> DestinationWriter:
        """A writer for ``key``, new, or resumed from a saved ``state``.

        A saved state that no longer matches what is on the destination (the temp
        file is gone, the upload id expired) gives a fresh writer, with
        ``state["resumed"]`` false, so the engine knows to send everything again.
        """

    def exists(self, key: str) -> bool:
        """Whether a committed object is at ``key``."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
