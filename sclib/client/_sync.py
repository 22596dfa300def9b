"""The blocking client: :class:`Client`.

All decisions live in :mod:`sclib.client._base` and the modules it builds on;
this module only sends requests with ``httpx.Client``, sleeps with
:func:`time.sleep` and sends chunks from a thread pool.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from sclib.transfers.progress import ProgressOption

from ._base import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, BaseClient
from ._options import FieldOptions, UploadOptions
from ._steps import (
    Call,
    Done,
    Fetch,
    ReadChunk,
    Sleep,
    Step,
    Transfer,
    Work,
    advance,
    first_error,
    read_chunk,
)
from .models import (
    CancelResult,
    ChunkReceipt,
    CompleteResult,
    DatasetInfo,
    DatasetList,
    DatasetState,
    DownloadList,
    DownloadResult,
    Health,
    JobInfo,
    JobList,
    LargeUpload,
    LargeUploadStatus,
    Limits,
    QueueStats,
    ResumeInfo,
    SupportedSources,
    TimeEstimate,
    UploadJobList,
    UploadResult,
    UploadStatus,
)

__all__ = ["Client"]

T = TypeVar("T")


class Client(BaseClient):
    """A client of an sclib (or ScientistCloud) server.

    ``token`` is sent as ``Authorization: Bearer <token>``. ``parallel`` chunks
    are in flight at once during a chunked upload (memory is about ``parallel x
    chunk_size``); ``retries`` is how often one chunk is tried. Unfinished chunked
    uploads are remembered in ``state_dir`` (default ``~/.cache/sclib/uploads``)
    so that uploading the same file again resumes them. ``transport`` replaces
    httpx's network transport (tests pass ``httpx.MockTransport``).

    >>> with Client("http://localhost:8000", token="...") as client:  # doctest: +SKIP
    ...     result = client.upload_file("scan.h5", dataset_name="Scan", sensor="HDF5")
    ...     client.wait_for_completion(result.job_id).status
    'completed'
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        parallel: int = 4,
        state_dir: str | os.PathLike[str] | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: bool | str | ssl.SSLContext = True,
        retries: int = 5,
    ) -> None:
        super().__init__(
            base_url, token, parallel=parallel, state_dir=state_dir, retries=retries
        )
        options = self._http_options(timeout, verify)
        self._http = httpx.Client(transport=transport, **options)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    # -- driving the shared logic ----------------------------------------------------

    def _send(self, call: Call[T]) -> T:
        with contextlib.ExitStack() as stack:
            kwargs = call.request_kwargs(stack, asynchronous=False)
            try:
                response = self._http.request(**kwargs)
            except httpx.TransportError as exc:
                raise call.connection_failed(self.base_url, exc) from exc
        return call.result(response)

    def _drive(self, flow: Generator[Step, Any, T]) -> T:
        value: Any = None
        error: Exception | None = None
        try:
            while True:
                step = advance(flow, value, error)
                if isinstance(step, Done):
                    return step.value
                try:
                    value, error = self._run(step), None
                except Exception as exc:  # handed to the flow, which decides
                    value, error = None, exc
        finally:
            flow.close()

    def _run(self, step: Step) -> Any:
        if isinstance(step, Call):
            return self._send(step)
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        if isinstance(step, ReadChunk):
            return read_chunk(
                step.path, step.chunk, step.feed, tree=step.tree, pool=step.pool
            )
        if isinstance(step, Work):
            return step.function()
        if isinstance(step, Fetch):
            return self._fetch(step)
        return self._transfer(step)

    def _fetch(self, step: Fetch) -> None:
        call = step.call
        with contextlib.ExitStack() as stack:
            kwargs = call.request_kwargs(stack, asynchronous=False)
            try:
                with self._http.stream(**kwargs) as response:
                    if response.status_code not in (200, 206):
                        response.read()
                        step.check(response)
                    step.sink.begin(response.status_code, response.headers)
                    for data in response.iter_bytes():
                        step.sink.write(data)
            except httpx.TransportError as exc:
                raise call.connection_failed(self.base_url, exc) from exc

    def _transfer(self, step: Transfer) -> str:
        pending = deque(step.chunks)
        stop = threading.Event()

        def worker() -> None:
            while not stop.is_set():
                try:
                    chunk = pending.popleft()
                except IndexError:
                    return
                self._drive(step.send(chunk))

        n = min(step.parallel, len(pending))
        with ThreadPoolExecutor(n + 1, thread_name_prefix="sclib-upload") as pool:
            try:
                hashing: Future[str] = (
                    pool.submit(step.hasher, stop.is_set)
                    if step.hasher is not None
                    else _done("")
                )
                futures: list[Future[Any]] = [hashing]
                futures += [pool.submit(worker) for _ in range(n)]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                error = first_error([f.exception() for f in done])
                if error is not None:
                    raise error
            finally:
                stop.set()
        return hashing.result()

    # -- uploads ---------------------------------------------------------------------

    def upload_file(
        self, file_path: str | os.PathLike[str], **options: Unpack[UploadOptions]
    ) -> UploadResult:
        """Upload one local file; the job that processes it is in the result.

        Files up to the server's ``standard_upload_limit`` go in one streamed
        request; larger ones in parallel, BLAKE3-verified chunks that resume
        where they stopped when the same file is uploaded again. Options:
        :class:`~sclib.client.UploadOptions` (``dataset_name``, ``sensor``,
        ``progress_callback``, ``progress``, ``parallel``, ``chunk_size``...).
        """
        return self._drive(self._upload_flow(file_path, options))

    def upload_local_file(
        self, file_path: str | os.PathLike[str], **options: Unpack[UploadOptions]
    ) -> UploadResult:
        """The seed's name for :meth:`upload_file`."""
        return self._drive(self._upload_flow(file_path, options))

    def upload_directory(
        self, path: str | os.PathLike[str], **options: Unpack[UploadOptions]
    ) -> list[UploadResult]:
        """Upload every file under a folder into one dataset, keeping subfolders.

        The first file creates the dataset (named after the folder unless
        ``dataset_name`` says otherwise); the others are added to it with
        ``relative_path`` set to their subfolder. One result per file, in order.
        Run again after an interruption, the same call adds the remaining files
        to the same dataset and does not send the finished ones again.
        """
        return self._drive(self._directory_flow(path, options))

    def initiate_google_drive_upload(
        self,
        file_id: str,
        service_account_file: str | os.PathLike[str] | None = None,
        *,
        service_account_json: str | Mapping[str, Any] | None = None,
        **options: Unpack[FieldOptions],
    ) -> UploadResult:
        """Have the server import a Google Drive file.

        ``service_account_file`` is read *here* and its content sent; the server
        never reads a path it was given.
        """
        call = self._req_google_drive(
            file_id, service_account_file, service_account_json, options
        )
        return self._send(call)

    def initiate_s3_upload(
        self,
        bucket_name: str,
        object_key: str,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        *,
        session_token: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        **options: Unpack[FieldOptions],
    ) -> UploadResult:
        """Have the server import an S3 object (or an S3-compatible store's)."""
        secrets = (access_key_id, secret_access_key, session_token)
        call = self._req_s3(
            bucket_name, object_key, secrets, (region, endpoint_url), options
        )
        return self._send(call)

    def initiate_url_upload(
        self, url: str, **options: Unpack[FieldOptions]
    ) -> UploadResult:
        """Have the server download an http(s) URL."""
        return self._send(self._req_url(url, options))

    def get_upload_status(self, job_id: str) -> UploadStatus:
        """The status of an upload job (:class:`~sclib.errors.JobNotFound` if none)."""
        return self._send(self._req_status(job_id))

    def wait_for_completion(
        self,
        job_id: str,
        timeout: float | None = None,
        poll_interval: float = 2.0,
        progress: ProgressOption = False,
        *,
        label: str | None = None,
    ) -> UploadStatus:
        """Poll until the job is completed, failed or cancelled; its final status.

        A failed job is returned, not raised: look at ``status.status``.
        :class:`~sclib.client.WaitTimeout` after ``timeout`` seconds.
        """
        return self._drive(
            self._wait_flow(job_id, timeout, poll_interval, progress, label)
        )

    def cancel_upload(self, job_id: str) -> CancelResult:
        """Ask the server to cancel an upload job."""
        return self._send(self._req_cancel(job_id))

    def list_upload_jobs(
        self,
        user_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> UploadJobList:
        """A page of upload jobs, newest first."""
        return self._send(self._req_upload_jobs(user_id, status, limit, offset))

    def get_supported_sources(self) -> SupportedSources:
        """The import sources and sensor types the server knows."""
        return self._send(self._req_sources())

    def get_limits(self) -> Limits:
        """The server's size limits."""
        return self._send(self._req_limits())

    def estimate_time(self, file_size: int) -> TimeEstimate:
        """The server's guess of how long ``file_size`` bytes take."""
        return self._send(self._req_estimate(file_size))

    def health_check(self) -> Health:
        """The server's health report."""
        return self._send(self._req_health())

    # -- the large-file protocol, step by step ---------------------------------------

    def initiate_large_upload(
        self,
        filename: str,
        file_size: int,
        chunk_size: int | None = None,
        **options: Unpack[FieldOptions],
    ) -> LargeUpload:
        """Start a chunked upload by hand (``upload_file`` does it for you)."""
        return self._send(self._req_large(filename, file_size, chunk_size, options))

    def upload_chunk(
        self, upload_id: str, chunk_index: int, data: bytes
    ) -> ChunkReceipt:
        """Send one chunk (0-based index) with its BLAKE3 digest."""
        return self._send(self._req_chunk(upload_id, chunk_index, data))

    def get_large_upload_status(self, upload_id: str) -> LargeUploadStatus:
        """How many chunks of a chunked upload arrived."""
        return self._send(self._req_large_status(upload_id))

    def get_missing_chunks(self, upload_id: str) -> ResumeInfo:
        """The chunks a chunked upload still needs."""
        return self._send(self._req_resume(upload_id))

    def complete_large_upload(
        self, upload_id: str, file_blake3: str | None = None
    ) -> CompleteResult:
        """Finish a chunked upload; the server checks ``file_blake3`` if given."""
        return self._send(self._req_complete(upload_id, file_blake3))

    def cancel_large_upload(self, upload_id: str) -> dict[str, Any]:
        """Abandon a chunked upload; the server deletes its bytes."""
        return self._send(self._req_large_cancel(upload_id))

    # -- the jobs API ----------------------------------------------------------------

    def submit_job(
        self,
        job_type: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        dataset_uuid: str | None = None,
        priority: int | None = None,
    ) -> JobInfo:
        """Queue a job of ``job_type`` on the server."""
        call = self._req_submit_job(job_type, parameters, dataset_uuid, priority)
        return self._send(call)

    def list_jobs(
        self,
        status: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> JobList:
        """A page of the queue's jobs."""
        return self._send(self._req_list_jobs(status, job_type, limit, offset))

    def get_job(self, job_id: str) -> JobInfo:
        """One job of the queue."""
        return self._send(self._req_job(job_id))

    def cancel_job(self, job_id: str) -> JobInfo:
        """Cancel a job (a running one stops at its next check)."""
        return self._send(self._req_job(job_id, "cancel"))

    def retry_job(self, job_id: str) -> JobInfo:
        """Run a failed or cancelled job again."""
        return self._send(self._req_job(job_id, "retry"))

    def queue_stats(self) -> QueueStats:
        """Counts of the queue's jobs by status and type."""
        return self._send(self._req_queue_stats())

    # -- the datasets API ------------------------------------------------------------

    def list_datasets(
        self, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> DatasetList:
        """A page of your datasets, newest first (without their files)."""
        return self._send(self._req_datasets(status, limit, offset))

    def get_dataset(self, uuid: str) -> DatasetInfo:
        """One dataset with its files (path, size, BLAKE3) and legacy status."""
        return self._send(self._req_dataset(uuid))

    def get_dataset_status(self, uuid: str) -> DatasetState:
        """A dataset's legacy status and the jobs that worked on it."""
        return self._send(self._req_dataset_state(uuid))

    def wait_for_dataset(
        self, uuid: str, timeout: float | None = None, poll_interval: float = 2.0
    ) -> DatasetState:
        """Poll until the dataset's pipeline is through (``done`` or an error
        status, every job finished); its final state. An error status is returned,
        not raised: look at ``state.ok`` and ``state.error_message``.
        :class:`~sclib.client.WaitTimeout` after ``timeout`` seconds."""
        return self._drive(self._dataset_wait_flow(uuid, timeout, poll_interval))

    def reprocess_dataset(
        self,
        uuid: str,
        *,
        sensor: str | None = None,
        output_format: str | None = None,
        conversion_params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Convert the dataset again (``output_format``: ``idx`` or ``zarr``)."""
        call = self._req_reprocess(uuid, sensor, output_format, conversion_params)
        return self._send(call)

    # -- downloads -------------------------------------------------------------------

    def list_downloads(
        self,
        uuid: str,
        *,
        include_outputs: bool = False,
        limit: int = 1000,
        offset: int = 0,
    ) -> DownloadList:
        """A page of the files you may download of a dataset (path, size, BLAKE3,
        kind): its own, then, with ``include_outputs``, its converted output's."""
        return self._send(self._req_downloads(uuid, include_outputs, limit, offset))

    def download_dataset(
        self,
        uuid: str,
        folder: str | os.PathLike[str],
        *,
        include_outputs: bool = False,
        outputs_dir: str = "converted",
        progress: ProgressOption = False,
        progress_callback: Callable[[float], object] | None = None,
    ) -> DownloadResult:
        """Download every file of a dataset into ``folder``, verified.

        Files keep their paths below ``folder``; with ``include_outputs`` the
        converted output goes below ``folder/<outputs_dir>``. Each file is
        checked against its BLAKE3 before it is put in place (a mismatch raises
        :class:`~sclib.errors.ChecksumMismatch` and leaves no bad file); files
        already there with the right digest are not fetched again. An
        interrupted download (a dropped connection, the process killed) leaves
        its partial copy in ``folder/.sclib-download``; calling this again
        continues it with a range request. Paths the server lists are checked
        first: one that would land outside ``folder`` stops the download before
        anything is written. ``progress`` shows a tqdm bar; ``progress_callback``
        gets the fraction done.
        """
        flow = self._download_flow(
            uuid,
            folder,
            include_outputs=include_outputs,
            outputs_dir=outputs_dir,
            progress=progress,
            progress_callback=progress_callback,
        )
        return self._drive(flow)


def _done(value: str) -> Future[str]:
    future: Future[str] = Future()
    future.set_result(value)
    return future
