"""TransferEngine: chunked, parallel, resumable, BLAKE3-verified copies.

``engine.copy(source_url, dest_url)`` copies one object, or every object under a
folder or prefix (filtered by ``include`` / ``exclude`` globs on the relative path),
from any registered source to a local folder or an object store.

For each object:

1. A session is looked up by (source URL, destination URL). If an active one
   exists, the transfer resumes: the source must still have the recorded size and
   identity (else :class:`~sclib.errors.SourceChanged`, unless ``restart=True``),
   and the destination writer is reopened from its saved state.
2. Chunks flow through a window of ``parallel`` tasks, in index order. A task reads
   its chunk from the source (sources without ranges, and those that serve
   consecutive chunks best from one request, such as S3, are read by the caller's
   thread in order instead), hashes it with BLAKE3, writes it, has the writer
   check it landed, and records it in the session (progress counts its bytes as
   they arrive, then once verified: see :mod:`sclib.transfers.progress`). Chunks
   verified by an earlier run are not sent again: they are read back and their
   digest checked (a lost write after an OS crash is found here and sent again).
3. The whole-file BLAKE3 (the value ``b3sum`` prints) is merged from the chunks'
   chaining values when ``sclib_blake3tree`` is installed (one hash pass; see
   :mod:`sclib.transfers.hashing`), else computed from the chunks in order as they
   complete; memory stays within about ``parallel`` chunks either way.
4. The writer commits atomically; the session is marked completed.

A failure keeps the session active, so running the same copy again resumes it.
"""

from __future__ import annotations

import fnmatch
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

from sclib.errors import (
    InvalidInput,
    SclibError,
    SourceChanged,
    TransferCancelled,
    UnsupportedScheme,
)
from sclib.retry import Backoff, RetryCancelled, retry_call
from sclib.transfers.destinations import Destination, DestinationWriter
from sclib.transfers.hashing import (
    CV_PREFIX,
    ChunkTree,
    OrderedHasher,
    chunk_digest,
    digest_matches,
    tree_hashing,
)
from sclib.transfers.plan import (
    Chunk,
    ChunkPlan,
    auto_chunk_size,
    check_chunk_size,
)
from sclib.transfers.progress import (
    ProgressOption,
    ProgressSubscriber,
    ProgressTracker,
    TransferProgress,
    progress_subscribers,
    receiving,
)
from sclib.transfers.sessions import (
    COMPLETED,
    ChunkRecord,
    SessionStore,
    TransferSession,
    new_session,
    session_key,
)
from sclib.transfers.sources import Source, SourceObject, open_source, scheme_of

__all__ = [
    "FileResult",
    "SerialExecutor",
    "TransferConfig",
    "TransferEngine",
    "TransferFuture",
    "TransferResult",
    "open_destination",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class TransferConfig:
    """Every knob of the engine, explained once.

    :param parallel: chunks in flight per object. The engine reuses
        ``parallel + 1`` chunk buffers, so memory is about that many chunks: with
        the defaults, 5 x 8 MiB = 40 MiB (object-store writers may copy a chunk
        while sending it).
    :param chunk_size: bytes per chunk, a power of two >= 1 KiB; ``None`` picks
        8 MiB, raised for object stores to >= 5 MiB and >= size / 10,000.
    :param max_attempts: tries per chunk for retryable errors (network, a chunk
        that did not land intact) before the transfer fails (resumably).
    :param retry_delay: first backoff in seconds; doubles on each try.
    :param sha256: also compute the whole-file SHA-256 (for protocols that ask).
    :param executor: ``"threads"`` (default) or ``"serial"``, which runs every chunk
        in the calling thread, for debugging; results are identical.
    """

    parallel: int = 4
    chunk_size: int | None = None
    max_attempts: int = 5
    retry_delay: float = 0.5
    sha256: bool = False
    executor: Literal["threads", "serial"] = "threads"

    def __post_init__(self) -> None:
        if self.chunk_size is not None:
            if isinstance(self.chunk_size, bool) or not isinstance(
                self.chunk_size, int
            ):
                raise InvalidInput(
                    f"chunk_size must be an int (bytes) or None, got "
                    f"{self.chunk_size!r}; parse_size('8MiB') reads a size"
                )
            check_chunk_size(self.chunk_size, 0)
        if self.retry_delay < 0:
            raise InvalidInput(f"retry_delay must be >= 0, got {self.retry_delay}")
        if self.parallel < 1:
            raise InvalidInput(f"parallel must be >= 1, got {self.parallel}")
        if self.max_attempts < 1:
            raise InvalidInput(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.executor not in ("threads", "serial"):
            raise InvalidInput(
                f"executor must be 'threads' or 'serial', got {self.executor!r}"
            )


@dataclass(frozen=True)
class FileResult:
    """One copied object."""

    key: str
    source_url: str
    dest_url: str
    size: int
    blake3: str
    sha256: str | None
    chunks: int
    chunks_sent: int
    chunks_reused: int
    session_id: str


@dataclass(frozen=True)
class TransferResult:
    """A finished copy: its files, and how long it took."""

    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


class SerialExecutor(Executor):
    """Runs each task at once in the caller's thread (debugging, tests)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def open_destination(url: str, **options: Any) -> Destination:
    """A :class:`Destination` for ``url``: a local path, ``s3://`` or ``gs://``."""
    scheme = scheme_of(url)
    if scheme in ("file", "local"):
        from sclib.transfers.local import LocalDestination, local_path

        unknown = set(options) - {"fsync"}
        if unknown:
            raise InvalidInput(
                f"local destinations take only the option 'fsync', got "
                f"{', '.join(sorted(unknown))}"
            )
        return LocalDestination(local_path(url), fsync=bool(options.get("fsync", True)))
    if scheme in ("s3", "s3a"):
        from sclib.transfers.s3 import S3Destination

        return S3Destination(url, **options)
    if scheme in ("gs", "gcs"):
        from sclib.transfers.gcs import GCSDestination

        return GCSDestination(url, **options)
    raise UnsupportedScheme(
        f"no destination plugin for {scheme!r} URLs; destinations can be a local "
        "path, s3://bucket/prefix or gs://bucket/prefix"
    )


class TransferFuture:
    """A copy running in the background (from :meth:`TransferEngine.submit`)."""

    def __init__(self, tracker: ProgressTracker, cancel: threading.Event) -> None:
        self._future: Future[TransferResult] = Future()
        self._tracker = tracker
        self._cancel = cancel

    @property
    def progress(self) -> TransferProgress:
        return self._tracker.snapshot

    def result(self, timeout: float | None = None) -> TransferResult:
        return self._future.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._future.exception(timeout)

    def done(self) -> bool:
        return self._future.done()

    def cancel(self) -> bool:
        """Stop after the chunks in flight; the session stays, so it can resume."""
        self._cancel.set()
        return not self._future.done()


class TransferEngine:
    """Copies objects between sources and destinations; see the module docstring.

    :param sessions: where resumable state lives. By default a SQLite file in the
        per-user state folder (:func:`sclib.transfers.sessions.default_session_store`),
        so a copy interrupted in one process resumes in any later one, and a copy
        run again skips the files it already finished.
        ``MemorySessionStore()`` keeps state in this process only.
    :param config: the engine's knobs (:class:`TransferConfig`).

    Use it as a context manager (or call :meth:`close`) to close a session store
    it opened itself; a store you pass in stays yours to close.
    """

    def __init__(
        self,
        *,
        sessions: SessionStore | None = None,
        config: TransferConfig | None = None,
    ) -> None:
        if config is not None and not isinstance(config, TransferConfig):
            raise InvalidInput(
                f"config must be a TransferConfig, got {type(config).__name__}"
            )
        if sessions is not None and not isinstance(sessions, SessionStore):
            raise InvalidInput(
                f"sessions must be a SessionStore, got {type(sessions).__name__}"
            )
        self._owns_sessions = sessions is None
        if sessions is None:
            from sclib.transfers.sessions import default_session_store

            sessions = default_session_store()
        self.sessions = sessions
        self.config = config or TransferConfig()

    def close(self) -> None:
        """Close the session store if the engine opened it."""
        if self._owns_sessions:
            self.sessions.close()

    def __enter__(self) -> TransferEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API ------------------------------------------------------------------

    def copy(
        self,
        source: str,
        destination: str,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        source_options: Mapping[str, Any] | None = None,
        dest_options: Mapping[str, Any] | None = None,
        progress: ProgressOption = False,
        subscribers: Iterable[ProgressSubscriber] = (),
        restart: bool = False,
        cancel: threading.Event | None = None,
        tracker: ProgressTracker | None = None,
    ) -> TransferResult:
        """Copy ``source`` to ``destination``; blocks until done. See the module doc.

        A single object goes to ``destination`` itself, or into it if it ends with
        ``/`` or is an existing local folder. A folder or prefix is copied under
        ``destination`` with the same relative paths.

        ``progress=True`` draws a bar (a widget in notebooks); a callable gets the
        verified fraction (0..1), as everywhere in sclib; ``subscribers`` hear
        every :class:`~sclib.transfers.progress.TransferProgress` snapshot.
        """
        started = time.monotonic()
        tracker = tracker or ProgressTracker(
            progress_subscribers(progress, subscribers, label=_label(source))
        )
        cancel = cancel or threading.Event()
        src = open_source(source, **dict(source_options or {}))
        try:
            dst = open_destination(destination, **dict(dest_options or {}))
        except BaseException:
            src.close()
            raise
        try:
            objects = self._select(src.walk(source), include, exclude)
            if len(objects) == 1 and objects[0].key == "":
                objects = [_renamed(objects[0], _single_key(objects[0], destination))]
            tracker.queued(len(objects), sum(o.size for o in objects))
            files = []
            for obj in objects:
                files.append(self._copy_object(src, dst, obj, tracker, cancel, restart))
                tracker.add(files_done=1, force=True)
            result = TransferResult(files, time.monotonic() - started)
        except BaseException as exc:
            tracker.done(error=exc)
            raise
        finally:
            src.close()
            dst.close()
        tracker.done(result=result)
        return result

    def submit(
        self,
        source: str,
        destination: str,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        source_options: Mapping[str, Any] | None = None,
        dest_options: Mapping[str, Any] | None = None,
        progress: ProgressOption = False,
        subscribers: Iterable[ProgressSubscriber] = (),
        restart: bool = False,
    ) -> TransferFuture:
        """Start :meth:`copy` in a background thread; returns a future (with the
        same arguments, and :meth:`TransferFuture.cancel`)."""
        tracker = ProgressTracker(
            progress_subscribers(progress, subscribers, label=_label(source))
        )
        cancel = threading.Event()
        future = TransferFuture(tracker, cancel)

        def run() -> None:
            try:
                result = self.copy(
                    source,
                    destination,
                    include=include,
                    exclude=exclude,
                    source_options=source_options,
                    dest_options=dest_options,
                    restart=restart,
                    cancel=cancel,
                    tracker=tracker,
                )
            except BaseException as exc:
                future._future.set_exception(exc)
            else:
                future._future.set_result(result)

        future._future.set_running_or_notify_cancel()
        threading.Thread(target=run, daemon=True, name="sclib-transfer").start()
        return future

    # -- one object ------------------------------------------------------------------

    @staticmethod
    def _select(
        objects: Iterable[SourceObject], include: Sequence[str], exclude: Sequence[str]
    ) -> list[SourceObject]:
        def keep(obj: SourceObject) -> bool:
            name = obj.key or _object_name(obj)  # a single object: its file name
            if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
                return False
            return not any(fnmatch.fnmatchcase(name, p) for p in exclude)

        return [o for o in objects if keep(o)]

    def _session(
        self,
        dst: Destination,
        obj: SourceObject,
        dest_url: str,
        restart: bool,
    ) -> tuple[TransferSession, DestinationWriter]:
        key = session_key(obj.url, dest_url)
        old = self.sessions.find_active(key)
        if old is not None and not restart:
            if old.size != obj.size or dict(old.identity) != dict(obj.identity):
                raise SourceChanged(
                    f"{obj.url} changed since this transfer started (size "
                    f"{old.size} -> {obj.size}, identity {dict(old.identity)} -> "
                    f"{dict(obj.identity)}); resuming would mix two versions. Start "
                    "over with restart=True (sclib copy --restart)"
                )
            writer = dst.open(obj.key, obj.size, old.chunk_size, old.state)
            if not writer.state.get("resumed"):
                if old.chunks:
                    self.sessions.forget_chunks(old.id, list(old.chunks))
                log.info(
                    "resuming %s: the destination lost its partial data; "
                    "sending everything again",
                    obj.url,
                )
            session = self.sessions.update(old.id, state=writer.state)
            return session, writer
        if old is not None:  # restart: drop the old partial data
            try:
                dst.open(obj.key, old.size, old.chunk_size, old.state).abort()
            except SclibError as exc:
                log.warning(
                    "could not clean up the old transfer of %s: %s", obj.url, exc
                )
            self.sessions.update(old.id, status="cancelled", error="restarted")
        if self.config.chunk_size is None:
            chunk_size = auto_chunk_size(obj.size, object_store=dst.object_store)
        else:
            chunk_size = check_chunk_size(
                self.config.chunk_size, obj.size, object_store=dst.object_store
            )
        writer = dst.open(obj.key, obj.size, chunk_size, None)
        try:
            session = self.sessions.create(
                new_session(
                    obj.url, dest_url, obj.size, chunk_size, obj.identity, writer.state
                )
            )
        except BaseException:
            writer.abort()  # no session points at it: nobody could resume it
            raise
        return session, writer

    def _retry(
        self, what: str, fn: Callable[[], T], cancel: threading.Event | None = None
    ) -> T:
        try:
            return retry_call(
                fn,
                attempts=self.config.max_attempts,
                backoff=Backoff(self.config.retry_delay),
                what=what,
                log=log,
                wait=None if cancel is None else cancel.wait,
            )
        except RetryCancelled as exc:
            raise TransferCancelled(str(exc)) from exc.__cause__

    def _copy_object(
        self,
        src: Source,
        dst: Destination,
        obj: SourceObject,
        tracker: ProgressTracker,
        cancel: threading.Event,
        restart: bool,
    ) -> FileResult:
        dest_url = dst.url_for(obj.key)
        if not restart:
            done = self._already_copied(dst, obj, dest_url)
            if done is not None:
                tracker.add(
                    bytes_received=obj.size,
                    bytes_durable=obj.size,
                    bytes_verified=obj.size,
                    bytes_reused=obj.size,
                )
                return done
        session, writer = self._session(dst, obj, dest_url, restart)
        try:
            return self._transfer(
                src, dst, obj, tracker, cancel, session, writer, dest_url
            )
        finally:
            writer.close()

    def _already_copied(
        self, dst: Destination, obj: SourceObject, dest_url: str
    ) -> FileResult | None:
        """The result of an earlier copy of this very version, if it is still at
        the destination: a re-run after an interruption skips finished files."""
        done = self.sessions.find(session_key(obj.url, dest_url), COMPLETED)
        if (
            done is None
            or done.digest is None
            or done.size != obj.size
            or dict(done.identity) != dict(obj.identity)
            or not obj.identity
            or not dst.exists(obj.key)
        ):
            return None
        chunks = ChunkPlan(obj.size, done.chunk_size).count
        log.info("%s is already at %s (copied earlier); skipping", obj.url, dest_url)
        return FileResult(
            key=obj.key,
            source_url=obj.url,
            dest_url=dest_url,
            size=obj.size,
            blake3=done.digest,
            sha256=done.sha256,
            chunks=chunks,
            chunks_sent=0,
            chunks_reused=chunks,
            session_id=done.id,
        )

    def _transfer(
        self,
        src: Source,
        dst: Destination,
        obj: SourceObject,
        tracker: ProgressTracker,
        cancel: threading.Event,
        session: TransferSession,
        writer: DestinationWriter,
        dest_url: str,
    ) -> FileResult:
        verified = dict(self.sessions.get(session.id).chunks)
        if verified:
            # object stores cannot read parts back: ask which recorded ones are gone
            stale = self._retry(
                f"checking the partial upload of {dest_url}",
                lambda: writer.missing({i: r.token for i, r in verified.items()}),
                cancel,
            )
            if stale:
                log.warning(
                    "%s no longer holds %d recorded chunk(s); sending them again",
                    dest_url,
                    len(stale),
                )
                self.sessions.forget_chunks(session.id, stale)
                for index in stale:
                    verified.pop(index, None)
        plan = ChunkPlan(obj.size, session.chunk_size)
        # one hash pass when chunk digests are chaining values: the file's BLAKE3
        # is merged from them; else the bytes are hashed again, in order
        tree = ChunkTree(plan.count) if plan.count > 1 and tree_hashing() else None
        hasher = (
            OrderedHasher(sha256=self.config.sha256, blake3=tree is None)
            if tree is None or self.config.sha256
            else None
        )
        ranged = src.supports_ranges(obj)
        # read here, in order, from one stream: sources without ranges, and
        # sources that serve consecutive chunks best from one request
        in_order = not ranged or src.reads_in_order(obj)
        # chunks an earlier run verified are checked where they landed; a writer
        # that cannot read them back (object stores) has them read from the source
        reads_back = type(writer).read_back is not DestinationWriter.read_back
        tokens: dict[int, str | None] = {}
        sent = reused = 0
        tracker.add(current=obj.key or dest_url)

        # a few reusable chunk buffers: memory stays at parallel x chunk size
        # instead of churning one fresh allocation per chunk
        pool: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(self.config.parallel + 1):
            pool.put(bytearray(min(session.chunk_size, max(obj.size, 1))))

        def read_once(chunk: Chunk, view: memoryview) -> int:
            """One try at reading a chunk, counting its bytes as they arrive (the
            source calls ``received``); a failed try takes them back."""
            got = 0

            def arrived(count: int) -> None:
                nonlocal got
                got += count
                tracker.add(bytes_received=count)

            try:
                with receiving(arrived):
                    n = src.read_into(obj, chunk.offset, view)
            except BaseException:
                if got:
                    tracker.add(bytes_received=-got)  # they will arrive again
                raise
            if n != got:  # a source that reports no pieces, or not all of them
                tracker.add(bytes_received=n - got)
            return n

        def read(chunk: Chunk, buf: bytearray) -> memoryview:
            view = memoryview(buf)[: chunk.length]
            n = self._retry(
                f"reading chunk {chunk.index} of {obj.url}",
                lambda: read_once(chunk, view),
                cancel,
            )
            if n != chunk.length:
                raise SourceChanged(
                    f"{obj.url}: chunk {chunk.index} has {n} bytes, expected "
                    f"{chunk.length}; the source changed"
                )
            tracker.add(bytes_read=n)
            return view

        def send(chunk: Chunk, data: memoryview) -> str:
            digest = chunk_digest(
                data, chunk.offset, session.chunk_size, tree=tree is not None
            )
            payload: bytes | memoryview = bytes(data) if dst.object_store else data
            token = self._retry(
                f"writing chunk {chunk.index} to {dest_url}",
                lambda: writer.write_chunk(chunk, payload),
                cancel,
            )
            tracker.add(bytes_durable=len(data))
            self._retry(
                f"recording chunk {chunk.index} of {dest_url}",
                lambda: self.sessions.record_chunk(
                    session.id, chunk.index, ChunkRecord(digest, token)
                ),
                cancel,
            )
            tokens[chunk.index] = token
            tracker.add(bytes_verified=len(data))
            return digest

        Done = tuple[Chunk, memoryview, bool, bytearray, str]

        def task(chunk: Chunk, buf: bytearray, preread: bool) -> Done:
            """Send a chunk, or re-check one an earlier run verified.

            With ``preread``, ``buf`` already holds the source bytes (sequential
            sources are read by the caller, in order); otherwise the task reads
            its own range into ``buf``.
            """
            if cancel.is_set():
                raise TransferCancelled(f"transfer of {obj.url} cancelled")
            data = memoryview(buf)[: chunk.length] if preread else None
            record = verified.get(chunk.index)
            if record is not None:
                changed = SourceChanged(
                    f"{obj.url} is not the version this transfer started with (chunk "
                    f"{chunk.index} differs); start over with restart=True"
                )
                if (
                    data is not None
                    and digest_matches(record.digest, data, chunk.offset) is False
                ):
                    raise changed  # the source bytes are at hand: compare them
                if not obj.identity and data is None:
                    # a source that cannot name its version: compare the bytes
                    data = read(chunk, buf)
                    if digest_matches(record.digest, data, chunk.offset) is False:
                        raise changed
                back = self._retry(
                    f"reading back chunk {chunk.index} of {dest_url}",
                    lambda: writer.read_back(chunk),
                    cancel,
                )
                landed: bytes | memoryview
                if back is not None:
                    landed = back
                else:  # the destination cannot read back: use the source
                    if data is None:
                        data = read(chunk, buf)
                    landed = data
                same = digest_matches(record.digest, landed, chunk.offset)
                if same:
                    tokens[chunk.index] = record.token
                    n = len(landed)
                    tracker.add(
                        bytes_durable=n,
                        bytes_verified=n,
                        bytes_reused=n,
                        # at hand without arriving again (read back where it
                        # landed), unless it was read from the source just now
                        bytes_received=n if data is None else 0,
                    )
                    digest = record.digest
                    if tree is not None and not digest.startswith(CV_PREFIX):
                        # recorded by a run that hashed chunks on their own
                        digest = chunk_digest(
                            landed, chunk.offset, session.chunk_size, tree=True
                        )
                    return chunk, memoryview(landed), False, buf, digest
                log.warning(
                    "chunk %d of %s %s; sending it again",
                    chunk.index,
                    dest_url,
                    "no longer matches its recorded digest"
                    if same is False
                    else "was recorded as a BLAKE3 chaining value, which this "
                    "process cannot check (sclib_blake3tree is not installed)",
                )
                self.sessions.forget_chunks(session.id, [chunk.index])
            data = data if data is not None else read(chunk, buf)
            return chunk, data, True, buf, send(chunk, data)

        executor: Executor = (
            SerialExecutor()
            if self.config.executor == "serial"
            else ThreadPoolExecutor(
                self.config.parallel, thread_name_prefix="sclib-chunk"
            )
        )
        window: deque[Future[Done]] = deque()
        error: BaseException | None = None

        def settle_oldest() -> None:
            nonlocal sent, reused, error
            future = window.popleft()
            try:
                chunk, data, was_sent, buf, digest = future.result()
            except BaseException as exc:
                error = error or exc
                return
            if error is None:
                if tree is not None:
                    tree.add(chunk.index, digest)
                if hasher is not None:
                    # futures settle in index order, so the hash consumes the
                    # bytes now and the buffer can go back to the pool
                    assert hasher.next_index == chunk.index
                    hasher.add(chunk.index, data)
            pool.put(buf)
            sent += was_sent
            reused += not was_sent

        try:
            for chunk in plan:
                if error is not None or cancel.is_set():
                    break
                buf = pool.get()
                # a ranged source need not read chunks an earlier run verified
                # when the task can check those where they landed
                preread = in_order and (
                    not ranged
                    or chunk.index not in verified
                    or not obj.identity
                    or not reads_back
                )
                if preread:
                    try:
                        read(chunk, buf)
                    except BaseException as exc:
                        error = exc
                        pool.put(buf)
                        break
                window.append(executor.submit(task, chunk, buf, preread))
                while len(window) >= self.config.parallel or (
                    window and window[0].done()
                ):
                    settle_oldest()
            while window:
                settle_oldest()
        finally:
            executor.shutdown(wait=True)
        if error is None and cancel.is_set():
            error = TransferCancelled(
                f"transfer of {obj.url} cancelled; run the same copy again to resume"
            )
        if error is not None:
            self.sessions.update(session.id, error=str(error))
            raise error
        if tree is not None:
            digest = tree.hexdigest()
        else:
            assert hasher is not None
            digest = hasher.hexdigest()
        sha256 = hasher.sha256_hexdigest() if hasher is not None else None
        self._retry(f"committing {dest_url}", lambda: writer.commit(tokens), cancel)
        self.sessions.update(
            session.id,
            status=COMPLETED,
            error="",  # an earlier interruption is no longer the session's state
            digest=digest,
            sha256=sha256,
        )
        log.info(
            "copied %s -> %s (%d bytes, %d chunks sent, %d reused, blake3 %s)",
            obj.url,
            dest_url,
            obj.size,
            sent,
            reused,
            digest,
        )
        return FileResult(
            key=obj.key,
            source_url=obj.url,
            dest_url=dest_url,
            size=obj.size,
            blake3=digest,
            sha256=sha256,
            chunks=plan.count,
            chunks_sent=sent,
            chunks_reused=reused,
            session_id=session.id,
        )


def _label(url: str) -> str:
    """A progress bar's label for a copy of ``url``: its file or folder name
    (never a query string or credentials)."""
    path = urlsplit(url).path if "://" in url else url
    name = unquote(PurePosixPath(path.rstrip("/")).name)
    return name or urlsplit(url).netloc.rpartition("@")[2] or "copy"


def _object_name(obj: SourceObject) -> str:
    """The file name of an object copied on its own."""
    if obj.name:
        return obj.name
    path = urlsplit(obj.url).path if "://" in obj.url else obj.url
    name = unquote(PurePosixPath(path.rstrip("/")).name)
    return name if name not in ("", ".", "..") else "download"


def _single_key(obj: SourceObject, destination: str) -> str:
    """Where a single copied object goes, relative to the destination."""
    name = _object_name(obj)
    if destination.endswith("/"):
        return name
    if scheme_of(destination) in ("file", "local"):
        from sclib.transfers.local import local_path

        if local_path(destination).is_dir():
            return name
    return ""


def _renamed(obj: SourceObject, key: str) -> SourceObject:
    return SourceObject(
        obj.url, key, obj.size, obj.identity, obj.content_type, obj.name
    )
