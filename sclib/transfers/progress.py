"""Progress of a transfer, and the subscribers that hear about it.

Four byte counts, because they are different facts:

* ``bytes_received``: arrived from the source, counted as they arrive, not once a
  whole chunk is in (a read that fails half-way takes its bytes back: they will
  arrive again), plus the bytes an earlier run verified that are found intact
  where they landed (they need not arrive again). A transfer that is receiving
  moves this count while a chunk is in flight, so a single-chunk download does
  not sit at 0 % until it is over;
* ``bytes_read``: read from the source, whole chunks;
* ``bytes_durable``: written to the destination (it survives this process dying);
* ``bytes_verified``: written *and* read back or checked to be identical, with its
  BLAKE3 digest recorded in the session. Only these bytes are never sent again
  after an interruption.

``bytes_received`` is never a promise about the destination: only
``bytes_verified`` is, and :attr:`Progress.fraction` counts only those.

Sources report bytes as they arrive by calling :func:`received` from the thread
that runs their ``read``/``read_into`` (:func:`receiver` hands the callback to
code that runs elsewhere, such as an event loop); the engine sets the callback
for each read with :func:`receiving`. A source that never calls it still counts:
its bytes are received at once when its read returns.

A subscriber is any object with some of ``on_queued(**kw)``, ``on_progress(**kw)``
and ``on_done(**kw)``; missing methods are skipped. :class:`TqdmSubscriber` draws a
progress bar (``tqdm.auto``: a widget in notebooks, text elsewhere).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "CallbackSubscriber",
    "Progress",
    "ProgressTracker",
    "TqdmSubscriber",
    "received",
    "receiver",
    "receiving",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot of a transfer's progress."""

    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_received: int = 0  # as they arrive (see the module)
    bytes_read: int = 0
    bytes_durable: int = 0
    bytes_verified: int = 0
    bytes_reused: int = 0  # verified in an earlier run, not sent again
    current: str = ""

    @property
    def fraction(self) -> float:
        """Verified bytes as a fraction of all bytes (1.0 for an empty transfer)."""
        return 1.0 if not self.bytes_total else self.bytes_verified / self.bytes_total

    @property
    def fraction_received(self) -> float:
        """Received bytes as a fraction of all bytes (1.0 for an empty transfer);
        at least :attr:`fraction`, and at most 1.0."""
        if not self.bytes_total:
            return 1.0
        at_hand = max(self.bytes_received, self.bytes_verified)
        return min(1.0, at_hand / self.bytes_total)


_local = threading.local()


def received(count: int) -> None:
    """Count ``count`` bytes that just arrived from the source, for the read this
    thread runs (nothing outside a :func:`receiving` block)."""
    callback = getattr(_local, "callback", None)
    if callback is not None and count:
        callback(count)


def receiver() -> Callable[[int], None] | None:
    """The callback :func:`received` calls in this thread, to hand to code that
    runs in another thread (an event loop) for the same read; or None."""
    callback: Callable[[int], None] | None = getattr(_local, "callback", None)
    return callback


@contextlib.contextmanager
def receiving(callback: Callable[[int], None]) -> Iterator[None]:
    """Have :func:`received` in this thread call ``callback`` inside the block."""
    before = getattr(_local, "callback", None)
    _local.callback = callback
    try:
        yield
    finally:
        _local.callback = before


class ProgressTracker:
    """Thread-safe counters that notify subscribers (at most ``rate`` times/s)."""

    def __init__(self, subscribers: Iterable[Any] = (), *, rate: float = 10.0) -> None:
        self._subscribers = list(subscribers)
        self._lock = threading.Lock()
        self._state = Progress()
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._last = 0.0

    @property
    def snapshot(self) -> Progress:
        with self._lock:
            return self._state

    def _emit(self, method: str, **kwargs: Any) -> None:
        for sub in self._subscribers:
            fn = getattr(sub, method, None)
            if fn is None:
                continue
            try:
                fn(**kwargs)
            except Exception:  # a broken progress bar must not break a transfer
                log.exception("progress subscriber %r failed in %s", sub, method)

    def queued(self, files: int, size: int) -> None:
        with self._lock:
            self._state = replace(
                self._state,
                files_total=self._state.files_total + files,
                bytes_total=self._state.bytes_total + size,
            )
            state = self._state
        self._emit("on_queued", progress=state)

    def add(
        self, *, force: bool = False, current: str | None = None, **deltas: int
    ) -> None:
        with self._lock:
            changes: dict[str, Any] = {
                k: getattr(self._state, k) + v for k, v in deltas.items()
            }
            if current is not None:
                changes["current"] = current
            self._state = replace(self._state, **changes)
            state = self._state
            now = time.monotonic()
            due = force or now - self._last >= self._interval
            if due:
                self._last = now
        if due:
            self._emit("on_progress", progress=state)

    def done(self, **kwargs: Any) -> None:
        self._emit("on_progress", progress=self.snapshot)
        self._emit("on_done", progress=self.snapshot, **kwargs)


class CallbackSubscriber:
    """Calls ``fn(fraction)`` with the verified fraction (the seed's
    ``progress_callback=lambda p: ...``)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def on_progress(self, progress: Progress, **_: Any) -> None:
        self.fn(progress.fraction)


class TqdmSubscriber:
    """A tqdm progress bar over verified bytes (``tqdm.auto``)."""

    def __init__(self, desc: str = "sclib", **tqdm_options: Any) -> None:
        self.desc = desc
        self.options = tqdm_options
        self.bar: Any = None

    def _bar(self, total: int) -> Any:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=self.desc,
                **self.options,
            )
        return self.bar

    def on_queued(self, progress: Progress, **_: Any) -> None:
        bar = self._bar(progress.bytes_total)
        bar.total = progress.bytes_total
        bar.refresh()

    def on_progress(self, progress: Progress, **_: Any) -> None:
        bar = self._bar(progress.bytes_total)
        bar.n = progress.bytes_verified
        bar.set_postfix(
            files=f"{progress.files_done}/{progress.files_total}", refresh=False
        )
        bar.refresh()

    def on_done(self, **_: Any) -> None:
        if self.bar is not None:
            self.bar.close()
