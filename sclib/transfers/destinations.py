"""Destination plugins: where bytes go, and how they are committed.

A :class:`Destination` opens a :class:`DestinationWriter` for one object. The
writer receives chunks in any order and from several threads, verifies each chunk
where it landed, and finally commits the object atomically: nothing appears at
the final path or key until every chunk is written and verified.

A writer's :attr:`DestinationWriter.state` is a small JSON-ready dict (a temp file
path, an S3 multipart upload id...). The engine stores it in the transfer session
when it opens the writer, so a new process can reopen the writer with
``destination.open(..., state=saved)`` and continue where the last one stopped; on
resume it asks the writer (:meth:`DestinationWriter.missing`) which recorded chunks
the destination no longer holds, and sends those again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from sclib.errors import ConfigurationError, InvalidInput
from sclib.transfers.plan import Chunk

__all__ = ["BucketDestination", "Destination", "DestinationWriter"]


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

    def missing(self, tokens: Mapping[int, str | None]) -> list[int]:
        """Of the chunks an earlier run recorded (index -> token), those the
        destination no longer holds intact. Destinations that can read back
        (local files) return ``[]``: the engine checks those chunks by digest."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the writer holds open (it can be reopened from its state)."""

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


class BucketDestination(Destination):
    """An object store's ``scheme://bucket/prefix``: URL parsing, keys and options.

    Subclasses set :attr:`schemes` and :attr:`kind` and build their filesystem
    client in :meth:`make_filesystem` (``options`` never reach ``repr()``: only
    what :meth:`describe` chooses to show).
    """

    object_store: ClassVar[bool] = True
    #: URL schemes accepted; the first is the one reported
    schemes: ClassVar[tuple[str, ...]] = ()
    #: the store's name in messages ("S3", "GCS")
    kind: ClassVar[str] = ""

    def __init__(self, url: str, *, fs: Any | None = None, **options: Any) -> None:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in self.schemes:
            raise ConfigurationError(
                f"not a {self.kind} URL: {url!r} (use {self.schemes[0]}://bucket/prefix)"
            )
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ConfigurationError(f"no bucket in {url!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._owns_fs = fs is None
        self._shown = self.describe(options)
        self.fs = fs if fs is not None else self.make_filesystem(options)

    @abstractmethod
    def make_filesystem(self, options: Mapping[str, Any]) -> Any:
        """The client (an fsspec filesystem) for these options."""

    def describe(self, options: Mapping[str, Any]) -> str:
        """What ``repr()`` may show of the options (never credentials)."""
        return ""

    def __repr__(self) -> str:
        where = f"{self.schemes[0]}://{self.bucket}/{self.prefix}"
        extra = f", {self._shown}" if self._shown else ""
        return f"{type(self).__name__}({where!r}{extra})"

    def object_key(self, key: str) -> str:
        """The object name for relative ``key`` (the prefix itself for ``""``)."""
        joined = "/".join(p for p in (self.prefix, key.lstrip("/")) if p)
        if not joined:
            raise InvalidInput(
                f"{self.schemes[0]}://{self.bucket} is a bucket, not an object; give "
                "a key or a prefix"
            )
        return joined

    def url_for(self, key: str) -> str:
        return f"{self.schemes[0]}://{self.bucket}/{self.object_key(key)}"
