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
``bytes_verified`` is, and :attr:`TransferProgress.fraction` counts only those.

Sources report bytes as they arrive by calling :func:`received` from the thread
that runs their ``read``/``read_into`` (:func:`receiver` hands the callback to
code that runs elsewhere, such as an event loop); the engine sets the callback
for each read with :func:`receiving`. A source that never calls it still counts:
its bytes are received at once when its read returns.

Everywhere in sclib (the engine, the client, ``sclib.upload``, the CLI) progress
is asked for the same way: ``progress=True`` draws a bar, a callable gets the
verified fraction (0..1), and ``subscribers`` are the advanced form: objects with
``on_progress(progress=...)`` and, if they like, ``on_queued(progress=...)`` and
``on_done(progress=..., result=... | error=...)`` (:class:`ProgressSubscriber`).
:class:`TqdmSubscriber` draws the bar (``tqdm.auto``: a widget in notebooks with
the ``notebook`` extra, text elsewhere); its rate counts only the bytes moved in
this run, not those an earlier run already verified.

``TransferProgress`` is the progress of a transfer; a job's progress is
:class:`sclib.JobProgress` (``sclib.Progress``). ``Progress`` here is an alias
kept for code written before the rename.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeAlias, runtime_checkable

__all__ = [
    "CallbackSubscriber",
    "Progress",
    "ProgressOption",
    "ProgressSubscriber",
    "ProgressTracker",
    "TqdmSubscriber",
    "TransferProgress",
    "progress_subscribers",
    "received",
    "receiver",
    "receiving",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TransferProgress:
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


#: the name this class had before job and transfer progress got distinct names
Progress = TransferProgress


@runtime_checkable
class ProgressSubscriber(Protocol):
    """What the engine calls with each :class:`TransferProgress` snapshot (at
    most ``rate`` times a second, and always at the end). A subscriber may also
    define ``on_queued(*, progress, **kw)`` (the totals are known) and
    ``on_done(*, progress, result=None, error=None, **kw)``; the engine skips
    what a subscriber lacks, and logs (never raises) what a subscriber raises."""

    def on_progress(self, *, progress: TransferProgress, **kw: Any) -> None: ...


#: ``progress=``: ``True`` for a bar, a callable for the verified fraction (0..1)
ProgressOption: TypeAlias = bool | Callable[[float], object] | None


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

    def __init__(
        self, subscribers: Iterable[ProgressSubscriber] = (), *, rate: float = 10.0
    ) -> None:
        self._subscribers = list(subscribers)
        self._lock = threading.Lock()
        self._state = TransferProgress()
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._last = 0.0

    @property
    def snapshot(self) -> TransferProgress:
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
    ``progress_callback=lambda p: ...``), never twice with the same value."""

    def __init__(self, fn: Callable[[float], object]) -> None:
        self.fn = fn
        self._last: float | None = None

    def on_progress(self, *, progress: TransferProgress, **_: Any) -> None:
        fraction = progress.fraction
        if fraction != self._last:
            self._last = fraction
            self.fn(fraction)


def progress_subscribers(
    progress: ProgressOption,
    subscribers: Iterable[ProgressSubscriber] = (),
    *,
    label: str = "sclib",
) -> list[ProgressSubscriber]:
    """The subscribers ``progress=`` asks for, then ``subscribers``: a
    :class:`TqdmSubscriber` labelled ``label`` for ``True``, a
    :class:`CallbackSubscriber` for a callable, nothing for ``False``/``None``."""
    found: list[ProgressSubscriber] = []
    if progress is True:
        found.append(TqdmSubscriber(label))
    elif callable(progress):
        found.append(CallbackSubscriber(progress))
    elif progress not in (False, None):
        raise TypeError(
            f"progress must be True, False or a callable taking the fraction "
            f"done, got {progress!r}"
        )
    found.extend(subscribers)
    return found


class TqdmSubscriber:
    """A tqdm progress bar over verified bytes (``tqdm.auto``), labelled
    ``desc``. Its rate and time left count only the bytes this run moved: bytes
    an earlier run verified (``bytes_reused``) are the bar's starting point."""

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

    def on_queued(self, *, progress: TransferProgress, **_: Any) -> None:
        bar = self._bar(progress.bytes_total)
        bar.total = progress.bytes_total
        bar.refresh()

    def on_progress(self, *, progress: TransferProgress, **_: Any) -> None:
        bar = self._bar(progress.bytes_total)
        # tqdm's average rate is (n - initial) / elapsed: reused bytes start it
        bar.initial = progress.bytes_reused
        bar.n = progress.bytes_verified
        bar.set_postfix(
            files=f"{progress.files_done}/{progress.files_total}", refresh=False
        )
        bar.refresh()

    def on_done(self, **_: Any) -> None:
        if self.bar is not None:
            self.bar.close()
