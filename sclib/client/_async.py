"""The asyncio client: :class:`AsyncClient`, the twin of :class:`Client`.

All decisions live in :mod:`sclib.client._base` and the modules it builds on;
this module only sends requests with ``httpx.AsyncClient``, sleeps with
:func:`asyncio.sleep`, reads and hashes chunks in worker threads
(:func:`asyncio.to_thread`) and sends ``parallel`` chunks from as many tasks.
Its methods have the same names, parameters and docstrings as :class:`Client`'s;
a test keeps it so.

The standard (single-request) upload streams the file with blocking 64 KiB reads
on the event loop, as httpx does for file objects; only chunked uploads read in
threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
import threading
from collections import deque
from collections.abc import Callable, Generator, Mapping
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
from ._sync import Client
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

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient(BaseClient):
    """The asyncio twin of :class:`~sclib.client.Client` (same methods, awaited).

    >>> async with AsyncClient("http://localhost:8000") as client:  # doctest: +SKIP
    ...     result = await client.upload_file("scan.h5", sensor="HDF5")
    ...     status = await client.wait_for_completion(result.job_id)
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        parallel: int = 4,
        state_dir: str | os.PathLike[str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | str | ssl.SSLContext = True,
        retries: int = 5,
    ) -> None:
        super().__init__(
            base_url, token, parallel=parallel, state_dir=state_dir, retries=retries
        )
        options = self._http_options(timeout, verify)
        self._http = httpx.AsyncClient(transport=transport, **options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    # -- driving the shared logic ----------------------------------------------------

    async def _send(self, call: Call[T]) -> T:
        with contextlib.ExitStack() as stack:
            kwargs = call.request_kwargs(stack, asynchronous=True)
            try:
                response = await self._http.request(**kwargs)
            except httpx.TransportError as exc:
                raise call.connection_failed(self.base_url, exc) from exc
        return call.result(response)

    async def _drive(self, flow: Generator[Step, Any, T]) -> T:
        value: Any = None
        error: Exception | None = None
        try:
            while True:
                step = advance(flow, value, error)
                if isinstance(step, Done):
                    return step.value
                try:
                    value, error = await self._run(step), None
                except Exception as exc:  # handed to the flow, which decides
                    value, error = None, exc
        finally:
            flow.close()

    async def _run(self, step: Step) -> Any:
        if isinstance(step, Call):
            return await self._send(step)
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        if isinstance(step, ReadChunk):
            return await asyncio.to_thread(
                functools.partial(
                    read_chunk,
                    step.path,
                    step.chunk,
                    step.feed,
                    tree=step.tree,
                    pool=step.pool,
                )
            )
        if isinstance(step, Work):
            return await asyncio.to_thread(step.function)
        if isinstance(step, Fetch):
            return await self._fetch(step)
        return await self._transfer(step)

    async def _fetch(self, step: Fetch) -> None:
        # the body's pieces (httpx's, about 64 KiB) are written to the partial
        # file on the event loop, as a one-request upload reads its file
        call = step.call
        with contextlib.ExitStack() as stack:
            kwargs = call.request_kwargs(stack, asynchronous=True)
            try:
                async with self._http.stream(**kwargs) as response:
                    if response.status_code not in (200, 206):
                        await response.aread()
                        step.check(response)
                    step.sink.begin(response.status_code, response.headers)
                    async for data in response.aiter_bytes():
                        step.sink.write(data)
            except httpx.TransportError as exc:
                raise call.connection_failed(self.base_url, exc) from exc

    async def _transfer(self, step: Transfer) -> str:
        pending = deque(step.chunks)
        stop = threading.Event()

        async def worker() -> None:
            while not stop.is_set():
                try:
                    chunk = pending.popleft()
                except IndexError:
                    return
                await self._drive(step.send(chunk))

        hashing: asyncio.Future[str]
        if step.hasher is not None:
            hashing = asyncio.ensure_future(asyncio.to_thread(step.hasher, stop.is_set))
        else:
            hashing = asyncio.get_running_loop().create_future()
            hashing.set_result("")
        n = min(step.parallel, len(pending))
        tasks: list[asyncio.Future[Any]] = [
            hashing,
            *(asyncio.ensure_future(worker()) for _ in range(n)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            error = first_error([t.exception() for t in done if not t.cancelled()])
            if error is not None:
                raise error
            return hashing.result()
        finally:
            stop.set()
            for task in tasks[1:]:
                task.cancel()
            # the hashing thread cannot be cancelled: it sees `stop` and returns
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- uploads ---------------------------------------------------------------------

    async def upload_file(
        self, file_path: str | os.PathLike[str], **options: Unpack[UploadOptions]
    ) -> UploadResult:
        return await self._drive(self._upload_flow(file_path, options))

    async def upload_local_file(
        self, file_path: str | os.PathLike[str], **options: Unpack[UploadOptions]
    ) -> UploadResult:
        return await self._drive(self._upload_flow(file_path, options))

    async def upload_directory(
        self, path: str | os.PathLike[str], **options: Unpack[UploadOptions]
    ) -> list[UploadResult]:
        return await self._drive(self._directory_flow(path, options))

    async def initiate_google_drive_upload(
        self,
        file_id: str,
        service_account_file: str | os.PathLike[str] | None = None,
        *,
        service_account_json: str | Mapping[str, Any] | None = None,
        **options: Unpack[FieldOptions],
    ) -> UploadResult:
        call = self._req_google_drive(
            file_id, service_account_file, service_account_json, options
        )
        return await self._send(call)

    async def initiate_s3_upload(
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
        secrets = (access_key_id, secret_access_key, session_token)
        call = self._req_s3(
            bucket_name, object_key, secrets, (region, endpoint_url), options
        )
        return await self._send(call)

    async def initiate_url_upload(
        self, url: str, **options: Unpack[FieldOptions]
    ) -> UploadResult:
        return await self._send(self._req_url(url, options))

    async def get_upload_status(self, job_id: str) -> UploadStatus:
        return await self._send(self._req_status(job_id))

    async def wait_for_completion(
        self,
        job_id: str,
        timeout: float | None = None,
        poll_interval: float = 2.0,
        progress: ProgressOption = False,
        *,
        label: str | None = None,
    ) -> UploadStatus:
        return await self._drive(
            self._wait_flow(job_id, timeout, poll_interval, progress, label)
        )

    async def cancel_upload(self, job_id: str) -> CancelResult:
        return await self._send(self._req_cancel(job_id))

    async def list_upload_jobs(
        self,
        user_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> UploadJobList:
        return await self._send(self._req_upload_jobs(user_id, status, limit, offset))

    async def get_supported_sources(self) -> SupportedSources:
        return await self._send(self._req_sources())

    async def get_limits(self) -> Limits:
        return await self._send(self._req_limits())

    async def estimate_time(self, file_size: int) -> TimeEstimate:
        return await self._send(self._req_estimate(file_size))

    async def health_check(self) -> Health:
        return await self._send(self._req_health())

    # -- the large-file protocol, step by step ---------------------------------------

    async def initiate_large_upload(
        self,
        filename: str,
        file_size: int,
        chunk_size: int | None = None,
        **options: Unpack[FieldOptions],
    ) -> LargeUpload:
        return await self._send(
            self._req_large(filename, file_size, chunk_size, options)
        )

    async def upload_chunk(
        self, upload_id: str, chunk_index: int, data: bytes
    ) -> ChunkReceipt:
        return await self._send(self._req_chunk(upload_id, chunk_index, data))

    async def get_large_upload_status(self, upload_id: str) -> LargeUploadStatus:
        return await self._send(self._req_large_status(upload_id))

    async def get_missing_chunks(self, upload_id: str) -> ResumeInfo:
        return await self._send(self._req_resume(upload_id))

    async def complete_large_upload(
        self, upload_id: str, file_blake3: str | None = None
    ) -> CompleteResult:
        return await self._send(self._req_complete(upload_id, file_blake3))

    async def cancel_large_upload(self, upload_id: str) -> dict[str, Any]:
        return await self._send(self._req_large_cancel(upload_id))

    # -- the jobs API ----------------------------------------------------------------

    async def submit_job(
        self,
        job_type: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        dataset_uuid: str | None = None,
        priority: int | None = None,
    ) -> JobInfo:
        call = self._req_submit_job(job_type, parameters, dataset_uuid, priority)
        return await self._send(call)

    async def list_jobs(
        self,
        status: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> JobList:
        return await self._send(self._req_list_jobs(status, job_type, limit, offset))

    async def get_job(self, job_id: str) -> JobInfo:
        return await self._send(self._req_job(job_id))

    async def cancel_job(self, job_id: str) -> JobInfo:
        return await self._send(self._req_job(job_id, "cancel"))

    async def retry_job(self, job_id: str) -> JobInfo:
        return await self._send(self._req_job(job_id, "retry"))

    async def queue_stats(self) -> QueueStats:
        return await self._send(self._req_queue_stats())

    async def list_datasets(
        self, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> DatasetList:
        return await self._send(self._req_datasets(status, limit, offset))

    async def get_dataset(self, uuid: str) -> DatasetInfo:
        return await self._send(self._req_dataset(uuid))

    async def get_dataset_status(self, uuid: str) -> DatasetState:
        return await self._send(self._req_dataset_state(uuid))

    async def wait_for_dataset(
        self, uuid: str, timeout: float | None = None, poll_interval: float = 2.0
    ) -> DatasetState:
        return await self._drive(self._dataset_wait_flow(uuid, timeout, poll_interval))

    async def reprocess_dataset(
        self,
        uuid: str,
        *,
        sensor: str | None = None,
        output_format: str | None = None,
        conversion_params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        call = self._req_reprocess(uuid, sensor, output_format, conversion_params)
        return await self._send(call)

    async def list_downloads(
        self,
        uuid: str,
        *,
        include_outputs: bool = False,
        limit: int = 1000,
        offset: int = 0,
    ) -> DownloadList:
        return await self._send(
            self._req_downloads(uuid, include_outputs, limit, offset)
        )

    async def download_dataset(
        self,
        uuid: str,
        folder: str | os.PathLike[str],
        *,
        include_outputs: bool = False,
        outputs_dir: str = "converted",
        progress: ProgressOption = False,
        progress_callback: Callable[[float], object] | None = None,
    ) -> DownloadResult:
        flow = self._download_flow(
            uuid,
            folder,
            include_outputs=include_outputs,
            outputs_dir=outputs_dir,
            progress=progress,
            progress_callback=progress_callback,
        )
        return await self._drive(flow)


def _copy_docs() -> None:
    for name, member in vars(AsyncClient).items():
        twin = getattr(Client, name, None)
        if callable(member) and not member.__doc__ and twin is not None:
            member.__doc__ = twin.__doc__


_copy_docs()
