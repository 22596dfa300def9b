"""Everything :class:`Client` and :class:`AsyncClient` share, with no network I/O.

The twins differ only in how they wait: one blocks, the other awaits. So every
route is described once, as a :class:`~sclib.client._steps.Call`
(:mod:`sclib.client._requests`), and every multi-step operation (an upload, a
resume, waiting for a job) is a generator here, on :class:`BaseClient`, that
*yields* steps (:mod:`sclib.client._steps`) and receives their results.
Neither twin holds any decision of its own, so they cannot drift apart (tuspy's
lesson).

The errors the client raises are in :mod:`sclib.client._errors`; the options
its methods take in :mod:`sclib.client._options`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sclib.errors import (
    ChecksumMismatch,
    DatasetNotFound,
    InvalidInput,
    NotFound,
    SclibError,
    SourceChanged,
    UploadConflict,
)
from sclib.retry import Backoff
from sclib.transfers.hashing import CV_HASH, ChunkTree, OrderedHasher, tree_hashing
from sclib.transfers.plan import Chunk, ChunkPlan
from sclib.transfers.progress import ProgressOption

from ._download import DownloadPlan, FileProgress, PartialFile, Target
from ._errors import ConnectionFailed, ServerError, WaitTimeout
from ._options import (
    UPLOAD_KEYS,
    UploadOptions,
    check_keys,
    dataset_values,
    fields_digest,
    form_fields,
)
from ._requests import Requests
from ._steps import (
    BufferPool,
    Call,
    Fetch,
    FilePart,
    Flow,
    Progress,
    ReadChunk,
    Sleep,
    Transfer,
    Work,
    hash_chunks,
    hash_file,
    progress_for,
)
from .models import (
    CompleteResult,
    DatasetState,
    DownloadedFile,
    DownloadEntry,
    DownloadList,
    DownloadResult,
    LargeUpload,
    Limits,
    ResumeInfo,
    UploadResult,
    UploadStatus,
)
from .state import UploadState, UploadStateStore, content_key, folder_key

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TIMEOUT", "BaseClient", "backoff"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://localhost:8000"
DEFAULT_TIMEOUT = 60.0
DEFAULT_STANDARD_LIMIT = 100 * 1024**2
#: the chunk size this client asks for unless told otherwise: a power of two, so
#: each chunk is a whole BLAKE3 subtree and every byte is hashed once
DEFAULT_CHUNK_SIZE = 32 * 1024**2
#: files listed per request of a download
DOWNLOAD_PAGE = 1000


#: the most chunks a server plans for one upload
MAX_CHUNKS = 100_000


def chunk_size_for(limits: Limits, file_size: int) -> int:
    """The chunk size to ask a server for: :data:`DEFAULT_CHUNK_SIZE`, doubled
    while the file would need more than :data:`MAX_CHUNKS` chunks, and no more
    than the largest power of two the server's ``max_chunk_size`` allows."""
    most = max(limits.max_chunk_size or 2**40, 1024)
    size = DEFAULT_CHUNK_SIZE
    while -(-file_size // size) > MAX_CHUNKS and size * 2 <= most:
        size *= 2
    while size > most:
        size //= 2
    return size


_BACKOFF = Backoff(0.25, cap=8.0, jitter=0.5)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): exponential, jittered."""
    return _BACKOFF.delay(attempt)


# -- the client's logic -------------------------------------------------------------


class BaseClient(Requests):
    """Configuration and the multi-step flows (the requests are :class:`Requests`'s)."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str | None = None,
        *,
        parallel: int = 4,
        state_dir: str | os.PathLike[str] | None = None,
        retries: int = 5,
    ) -> None:
        if parallel < 1:
            raise InvalidInput(f"parallel must be at least 1, got {parallel}")
        if retries < 1:
            raise InvalidInput(f"retries must be at least 1, got {retries}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.parallel = parallel
        self.retries = retries
        self.state = UploadStateStore(state_dir)
        self._limits: Limits | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def _http_options(self, timeout: Any, verify: Any) -> dict[str, Any]:
        """What ``httpx.Client`` and ``httpx.AsyncClient`` are built with."""
        return {
            "base_url": self.base_url,
            "headers": self._headers(),
            "timeout": timeout,
            "verify": verify,
            "follow_redirects": False,
        }

    def _headers(self) -> dict[str, str]:
        from sclib.version import __version__

        headers = {"User-Agent": f"sclib/{__version__}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    # -- flows -----------------------------------------------------------------------

    def _limits_flow(self) -> Flow[Limits]:
        if self._limits is None:
            try:
                self._limits = yield self._req_limits()
            except NotFound:  # an older server without the route
                self._limits = Limits(standard_upload_limit=DEFAULT_STANDARD_LIMIT)
        return self._limits

    def _upload_flow(
        self, file_path: str | os.PathLike[str], options: UploadOptions
    ) -> Flow[UploadResult]:
        check_keys(options, UPLOAD_KEYS, "upload_file")
        path = os.path.abspath(file_path)
        size = _regular_file(path).st_size
        progress = progress_for(
            size,
            options.get("progress"),
            options.get("progress_callback"),
            desc=os.path.basename(path),
        )
        try:
            return (yield from self._file_flow(path, options, progress))
        finally:
            progress.close()

    def _file_flow(
        self,
        path: str,
        options: UploadOptions,
        progress: Progress,
        attempt: str | None = None,
    ) -> Flow[UploadResult]:
        """One file, in one request or in chunks. ``attempt`` names this try at
        a one-request upload (``Idempotency-Key``): a folder upload run again
        after an interruption sends the same one, so a file whose answer was
        lost is not stored twice."""
        st = _regular_file(path)
        chunked = options.get("chunked")
        if chunked is None:
            limits = yield from self._limits_flow()
            chunked = st.st_size > limits.standard_upload_limit
        if chunked and st.st_size > 0:
            return (yield from self._chunked_flow(path, st, options, progress))
        filename = os.path.basename(path)
        values = dataset_values(options, filename)
        start = progress.done
        result: UploadResult = yield Call(
            "POST",
            "/api/upload/upload",
            UploadResult.model_validate,
            data=form_fields(values),
            headers={"Idempotency-Key": attempt} if attempt else None,
            upload=FilePart("file", path, filename, progress),
        )
        progress.advance(start + st.st_size - progress.done)
        return result

    def _chunked_flow(
        self,
        path: str,
        st: os.stat_result,
        options: UploadOptions,
        progress: Progress,
    ) -> Flow[UploadResult]:
        filename = os.path.basename(path)
        size = st.st_size
        values = dataset_values(options, filename)
        digest = fields_digest(values)
        parallel = options.get("parallel") or self.parallel
        if parallel < 1:
            raise InvalidInput(f"parallel must be at least 1, got {parallel}")
        key = content_key(self.base_url, path, st)
        saved = self.state.load(key)
        missing: list[int] | None = None
        if saved is not None and saved.fields == digest and saved.size == size:
            info = yield from self._missing_flow(saved)
            if info is None:
                self.state.remove(key)
            else:
                missing = list(info.missing_chunks)
                if info.chunk_hashes is not None and (
                    saved.chunk_hash not in info.chunk_hashes
                ):
                    # the server stopped taking chaining values (restarted
                    # without sclib_blake3tree): plain digests for the rest
                    saved = dataclasses.replace(saved, chunk_hash="blake3")
                    self.state.save(key, saved)
        if saved is None or missing is None:
            chunk_size = options.get("chunk_size")
            if chunk_size is None:
                # named, not left to the server: a server hands clients that
                # name none the original protocol's 100 MiB
                limits = yield from self._limits_flow()
                chunk_size = chunk_size_for(limits, size)
            started: LargeUpload = yield self._req_large_initiate(
                filename, size, values, chunk_size
            )
            saved = UploadState(
                upload_id=started.upload_id,
                chunk_size=started.chunk_size,
                total_chunks=started.total_chunks,
                size=size,
                path=path,
                server=self.base_url,
                fields=digest,
                chunk_hash=(
                    CV_HASH
                    if CV_HASH in started.chunk_hashes and tree_hashing()
                    else "blake3"
                ),
            )
            _check_plan(saved)
            self.state.save(key, saved)
            missing = list(range(saved.total_chunks))
        plan = ChunkPlan(size, saved.chunk_size)
        chunks = [plan.chunk(i) for i in sorted(set(missing))]
        progress.skip(size - sum(c.length for c in chunks))
        upload_id = saved.upload_id
        tree: ChunkTree | None = None
        feed: OrderedHasher | None = None
        pool: BufferPool | None = None
        hasher: Callable[[Callable[[], bool]], str] | None = None
        aligned = saved.chunk_size & (saved.chunk_size - 1) == 0  # whole subtrees
        if (
            saved.chunk_hash == CV_HASH
            and aligned
            and plan.count > 1
            and tree_hashing()
        ):
            # one hash pass: each chunk's chaining value is both its digest and a
            # piece of the file's; the chunks the server already has (a resumed
            # upload) are read once more for theirs
            tree = ChunkTree(plan.count)
            pool = BufferPool()
            sending = {c.index for c in chunks}
            held = [plan.chunk(i) for i in range(plan.count) if i not in sending]
            if held:
                hasher = functools.partial(hash_chunks, path, held, tree)
        elif len(chunks) == plan.count:
            # a fresh upload reads every chunk anyway: they feed the whole-file
            # digest in order
            feed = OrderedHasher()
        else:  # a resumed one reads the file once more for it
            hasher = functools.partial(hash_file, path, size)
        file_blake3: str = yield Transfer(
            path,
            size,
            chunks,
            parallel,
            lambda chunk: self._chunk_flow(
                upload_id, path, chunk, progress, feed, tree, pool
            ),
            hasher,
        )
        if tree is not None:
            file_blake3 = tree.hexdigest()
        elif feed is not None:
            file_blake3 = feed.hexdigest()
        now = os.stat(path)
        if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            self.state.remove(key)
            raise SourceChanged(
                f"{path} changed during the upload; it was not completed"
            )
        try:
            done: CompleteResult = yield self._req_complete(upload_id, file_blake3)
        except (NotFound, ChecksumMismatch):
            self.state.remove(key)  # gone, or not what was sent: start over next time
            raise
        self.state.remove(key)
        return UploadResult(
            job_id=done.job_id,
            status=done.status,
            upload_type="chunked",
            dataset_uuid=done.dataset_uuid,
            message=done.message,
            upload_id=upload_id,
            file_blake3=done.file_blake3 or file_blake3,
        )

    def _missing_flow(self, saved: UploadState) -> Flow[ResumeInfo | None]:
        """What the server says of the upload (the chunks it still lacks), or
        ``None`` if it cannot resume."""
        try:
            info: ResumeInfo = yield self._req_resume(saved.upload_id)
        except (NotFound, UploadConflict):
            return None
        if info.total_chunks != saved.total_chunks:
            return None
        if not info.can_resume and info.missing_chunks:
            return None
        return info

    def _chunk_flow(
        self,
        upload_id: str,
        path: str,
        chunk: Chunk,
        progress: Progress,
        feed: OrderedHasher | None = None,
        tree: ChunkTree | None = None,
        pool: BufferPool | None = None,
    ) -> Flow[None]:
        """Send one chunk, retrying what a retry can fix with backoff. With
        ``tree``, the chunk's digest is its chaining value, added to ``tree`` once
        the server took it."""
        data: memoryview | None = None
        digest = ""
        attempt = 0
        try:
            while True:
                if data is None:
                    data, digest = yield ReadChunk(
                        path, chunk, feed, tree is not None, pool
                    )
                try:
                    yield self._req_chunk(upload_id, chunk.index, data, digest)
                except SclibError as exc:
                    attempt += 1
                    if not exc.retryable or attempt >= self.retries:
                        raise
                    if isinstance(exc, ChecksumMismatch):
                        # read it again: the bytes may have been wrong here
                        _give_back(data, pool)
                        data = None
                    yield Sleep(backoff(attempt))
                    continue
                if tree is not None:
                    tree.add(chunk.index, digest)
                progress.advance(chunk.length)
                return
        finally:
            _give_back(data, pool)

    def _directory_flow(
        self, path: str | os.PathLike[str], options: UploadOptions
    ) -> Flow[list[UploadResult]]:
        check_keys(options, UPLOAD_KEYS, "upload_directory")
        root = Path(os.path.abspath(path))
        if not root.is_dir():
            raise InvalidInput(f"{root} is not a folder")
        files = list(_walk(root))
        if not files:
            raise InvalidInput(f"{root} holds no files")
        base = (options.get("relative_path") or "").strip("/")
        dataset = options.get("dataset_identifier")
        common: UploadOptions = {**options}
        common["dataset_name"] = options.get("dataset_name") or root.name
        # what this folder's earlier, interrupted run of the same call finished
        ledger_key = folder_key(
            self.base_url, root, fields_digest(dataset_values(common, root.name))
        )
        ledger = self.state.load_folder(ledger_key) or {"files": {}}
        if not dataset and ledger.get("dataset_uuid"):
            try:  # the dataset the interrupted run made may be gone since
                yield self._req_dataset(ledger["dataset_uuid"])
            except DatasetNotFound:
                log.warning(
                    "%s: dataset %s of the interrupted upload is gone (or not "
                    "yours); uploading the folder into a new dataset",
                    root,
                    ledger["dataset_uuid"],
                )
                ledger = {"files": {}}
                self.state.remove_folder(ledger_key)
        dataset = dataset or ledger.get("dataset_uuid")
        total = sum(p.stat().st_size for p, _ in files)
        progress = progress_for(
            total,
            options.get("progress"),
            options.get("progress_callback"),
            desc=root.name,
        )
        results: list[UploadResult] = []
        try:
            for file, rel in files:
                name = file.relative_to(root).as_posix()
                key = content_key(self.base_url, file, file.stat())
                done = _finished(ledger["files"].get(name), key)
                if done is not None:  # sent by the interrupted run: not again
                    results.append(done)
                    progress.skip(file.stat().st_size)
                    dataset = dataset or done.dataset_uuid
                    continue
                one: UploadOptions = {**common}
                one["relative_path"] = "/".join(p for p in (base, rel) if p) or None
                if dataset:
                    one["dataset_identifier"] = dataset
                    one["add_to_existing"] = True
                # recorded before the request: if its answer is lost, the next
                # run sends the file with the same Idempotency-Key
                entry = ledger["files"].get(name)
                attempt = (
                    entry.get("attempt")
                    if isinstance(entry, dict) and entry.get("key") == key
                    else None
                ) or uuid.uuid4().hex
                ledger["files"][name] = {"key": key, "attempt": attempt}
                self.state.save_folder(ledger_key, ledger)
                result = yield from self._file_flow(str(file), one, progress, attempt)
                results.append(result)
                dataset = dataset or result.dataset_uuid
                ledger["dataset_uuid"] = dataset
                ledger["files"][name] = {
                    "key": key,
                    "result": result.model_dump(mode="json"),
                }
                self.state.save_folder(ledger_key, ledger)
        finally:
            progress.close()
        self.state.remove_folder(ledger_key)  # the whole folder is uploaded
        return results

    def _wait_flow(
        self,
        job_id: str,
        timeout: float | None,
        poll_interval: float,
        progress: ProgressOption,
        label: str | None = None,
    ) -> Flow[UploadStatus]:
        if poll_interval <= 0:
            raise InvalidInput(f"poll_interval must be positive, got {poll_interval}")
        deadline = None if timeout is None else time.monotonic() + timeout
        bar: Any = None
        callback: Callable[[float], object] | None = None
        if callable(progress) and not isinstance(progress, bool):
            callback = progress
        elif progress not in (None, False, True):
            raise InvalidInput(
                f"progress must be True, False or a callable taking the fraction "
                f"done (0..1), got {progress!r}"
            )
        elif progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=100.0, desc=label or job_id, unit="%", bar_format=_PERCENT_BAR
            )
        try:
            while True:
                status: UploadStatus = yield self._req_status(job_id)
                percent = min(100.0, max(0.0, status.progress_percentage))
                if bar is not None:
                    bar.n = percent
                    bar.set_postfix_str(status.status, refresh=True)
                if callback is not None:
                    callback(percent / 100)
                if status.finished:
                    return status
                wait = poll_interval
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise WaitTimeout(
                            f"job {job_id} is still {status.status} after {timeout} s"
                        )
                    wait = min(wait, left)
                yield Sleep(wait)
        finally:
            if bar is not None:
                bar.close()

    def _dataset_wait_flow(
        self, uuid: str, timeout: float | None, poll_interval: float
    ) -> Flow[DatasetState]:
        if poll_interval <= 0:
            raise InvalidInput(f"poll_interval must be positive, got {poll_interval}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state: DatasetState = yield self._req_dataset_state(uuid)
            if state.settled:
                return state
            wait = poll_interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(
                        f"dataset {uuid} is still {state.status} after {timeout} s"
                    )
                wait = min(wait, left)
            yield Sleep(wait)

    # -- downloads -------------------------------------------------------------------

    def _download_flow(
        self,
        uuid: str,
        folder: str | os.PathLike[str],
        *,
        include_outputs: bool,
        outputs_dir: str,
        progress: ProgressOption,
        progress_callback: Callable[[float], object] | None,
    ) -> Flow[DownloadResult]:
        """Every listed file of the dataset into ``folder``; see
        :mod:`sclib.client._download`."""
        plan = DownloadPlan(folder, outputs_dir)
        entries: list[DownloadEntry] = []
        name = ""
        while True:
            page: DownloadList = yield self._req_downloads(
                uuid, include_outputs, DOWNLOAD_PAGE, len(entries)
            )
            name = page.name
            entries.extend(page.files)
            if not page.files or len(entries) >= page.total:
                break
        targets = plan.targets(entries)  # every path checked before any write
        plan.root.mkdir(parents=True, exist_ok=True)
        total = sum(e.size for e in entries)
        bar = progress_for(total, progress, progress_callback, desc=name or uuid)
        done: list[DownloadedFile] = []
        try:
            for target in targets:
                one = yield from self._download_file_flow(uuid, plan, target, bar)
                done.append(one)
        finally:
            bar.close()
        yield Work(plan.finish)
        return DownloadResult(
            uuid=uuid,
            name=name,
            folder=str(plan.root),
            files=done,
            total_size=total,
            fetched_bytes=sum(f.fetched_bytes for f in done),
        )

    def _download_file_flow(
        self, uuid: str, plan: DownloadPlan, target: Target, bar: Progress
    ) -> Flow[DownloadedFile]:
        """One file: kept if already there and intact, else fetched into its
        partial copy (continued where an earlier run stopped), verified, and
        renamed into place. Broken connections are retried with backoff; a
        BLAKE3 mismatch of a continued copy once more from the start."""
        entry = target.entry
        local = str(plan.path(target))
        result = DownloadedFile(
            path=entry.path,
            kind=entry.kind,
            size=entry.size,
            blake3=entry.blake3,
            local_path=local,
        )
        held = FileProgress(bar.advance)
        if (yield Work(functools.partial(plan.intact, target))):
            held.set(entry.size)
            return result.model_copy(update={"skipped": True})
        partial = plan.partial(target)
        attempt = 0
        fetched = 0
        first = True
        while True:
            sink: PartialFile = yield Work(
                functools.partial(
                    PartialFile.open, partial, entry.size, entry.blake3, held
                )
            )
            continued = sink.offset > 0
            if first and continued:
                result = result.model_copy(update={"resumed_from": sink.offset})
            first = False
            try:
                if not sink.complete:
                    call = self._req_fetch(
                        uuid, entry.kind, entry.path, sink.request_headers()
                    )
                    yield Fetch(call, sink)
                    if not sink.complete:
                        raise ConnectionFailed(
                            f"the answer for {entry.path} ended at byte "
                            f"{sink.offset} of {entry.size}"
                        )
                yield Work(functools.partial(sink.settle, plan, target))
            except SclibError as exc:
                fetched += sink.received
                sink.close()
                attempt += 1
                if isinstance(exc, ChecksumMismatch) and not continued:
                    raise  # fetched whole just now: the server's copy is bad
                if not exc.retryable or attempt >= self.retries:
                    raise
                yield Sleep(backoff(attempt))
                continue
            except BaseException:
                sink.close()
                raise
            fetched += sink.received
            return result.model_copy(update={"fetched_bytes": fetched})


_PERCENT_BAR = "{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}"


def _regular_file(path: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {path}") from None
    if os.path.isdir(path):
        raise InvalidInput(f"{path} is a folder; use upload_directory()")
    return st


def _give_back(data: memoryview | None, pool: BufferPool | None) -> None:
    """Return a chunk's buffer to the pool it came from (if any)."""
    if data is not None and pool is not None:
        buf = data.obj
        assert isinstance(buf, bytearray)
        pool.give(buf)


def _check_plan(saved: UploadState) -> None:
    expected = max(1, ChunkPlan(saved.size, saved.chunk_size).count)
    if saved.chunk_size <= 0 or saved.total_chunks != expected:
        raise ServerError(
            f"the server planned {saved.total_chunks} chunks of {saved.chunk_size} "
            f"bytes for {saved.size} bytes; expected {expected}"
        )


def _finished(entry: Any, key: str) -> UploadResult | None:
    """The result a folder's earlier run recorded for a file, if the file is
    still the one it sent (same content key) and the record is readable."""
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    try:
        return UploadResult.model_validate(entry.get("result"))
    except ValueError:  # pydantic's ValidationError: a damaged record
        return None


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    """Every regular file under ``root`` with its folder relative to ``root``."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        rel = Path(folder).relative_to(root).as_posix()
        for name in sorted(files):
            path = Path(folder, name)
            if path.is_file():
                yield path, "" if rel == "." else rel
