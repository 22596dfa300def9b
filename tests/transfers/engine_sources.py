"""Test sources for the engine tests: local files that fail or crawl on purpose.

``flaky:///path`` (source option ``fail_after=N``) reads like a local file but
raises a non-retryable error on the (N+1)-th read; ``slow:///path`` (``delay=S``)
sleeps S seconds per read; ``transient:///path`` (``errors=N``) fails each chunk's
first N reads with a retryable error. They wrap the real LocalSource, so every
byte still comes from a real file.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sclib.errors import SourceError
from sclib.transfers.local import LocalSource
from sclib.transfers.sources import SourceObject, register


class Interrupted(SourceError):
    """A simulated crash of the source; not worth retrying."""

    retryable = False


def _path(url: str) -> str:
    return url.split("://", 1)[1]


class _Wrapped(LocalSource):
    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options
        self.reads = 0
        self.lock = threading.Lock()

    def stat(self, url: str) -> SourceObject:
        return super().stat(_path(url))

    def walk(self, url: str):  # type: ignore[no-untyped-def]
        return super().walk(_path(url))

    def before_read(self, offset: int) -> None:
        """The misbehaviour; runs before every read of the real file."""

    def read_into(self, obj: SourceObject, offset: int, buf: memoryview) -> int:
        self.before_read(offset)
        return super().read_into(obj, offset, buf)


class FlakySource(_Wrapped):
    def before_read(self, offset: int) -> None:
        with self.lock:
            self.reads += 1
            if self.reads > int(self.options.get("fail_after", 10**9)):
                raise Interrupted(f"simulated interruption at read {self.reads}")


class SlowSource(_Wrapped):
    def before_read(self, offset: int) -> None:
        time.sleep(float(self.options.get("delay", 0.01)))


class TransientSource(_Wrapped):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.failures: dict[int, int] = {}

    def before_read(self, offset: int) -> None:
        with self.lock:
            seen = self.failures.get(offset, 0)
            self.failures[offset] = seen + 1
        if seen < int(self.options.get("errors", 1)):
            raise SourceError(f"simulated network error at offset {offset}")


def install() -> None:
    register("flaky", FlakySource)
    register("slow", SlowSource)
    register("transient", TransientSource)
