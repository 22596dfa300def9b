"""Drop-ins for the original ScientistCloud "Unified" upload client.

The original module ``SCLib_UploadClient_Unified`` had
``ScientistCloudUploadClient`` (requests) and ``AsyncScientistCloudUploadClient``
(aiohttp). The classes here take the same arguments, in the same order, with the
same defaults, and return the same shapes, so code written for the original
runs after changing its import:

>>> from sclib.client.unified import ScientistCloudUploadClient  # doctest: +SKIP
>>> client = ScientistCloudUploadClient("http://localhost:5000")  # doctest: +SKIP
>>> r = client.upload_file("scan.h5", "me@lab.org", "Scan", "HDF5")  # doctest: +SKIP
>>> client.wait_for_completion(r.job_id).status  # doctest: +SKIP
'completed'

Each wraps an sclib :class:`~sclib.client.Client` (``.client``), which moves
the bytes: big files go in parallel, BLAKE3-verified chunks that resume when the
same file is uploaded again, where the original sent one request. The logic the
two classes share is in :mod:`sclib.client._unified_base`; how they differ from
the original is in :class:`ScientistCloudUploadClient`'s docstring and
``docs/client.md``.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from ._async import AsyncClient
from ._sync import Client
from ._unified_base import (
    ORIGINAL_BASE_URL,
    ORIGINAL_TIMEOUT,
    Fields,
    ProgressCallback,
    UnifiedBase,
)
from .models import JobStatus, UploadResult

__all__ = [
    "AsyncScientistCloudUploadClient",
    "JobStatus",
    "ScientistCloudUploadClient",
    "UploadResult",
]

PathLike = str | os.PathLike[str]


class ScientistCloudUploadClient(UnifiedBase):
    """The original ScientistCloud "Unified" client's methods, over sclib.

    Same methods, positional arguments and defaults as the original
    ``SCLib_UploadClient_Unified.ScientistCloudUploadClient``; uploads and
    imports return an :class:`~sclib.client.UploadResult`, statuses a
    :class:`~sclib.client.models.JobStatus` (both with the original dataclasses'
    attributes, and dict access too), the other methods the server's JSON as a
    ``dict``. The keyword-only extras: ``token`` (sent as a bearer token;
    default ``$SCLIB_TOKEN``), and ``state_dir``, ``parallel``, ``retries``,
    ``verify``, ``transport`` as :class:`~sclib.client.Client` takes them.

    How it differs from the original:

    * **Errors** are sclib's, not ``requests.HTTPError``: an HTTP error answer
      raises the class of :mod:`sclib.errors` its code names (``JobNotFound``,
      ``InvalidInput``, ...; all ``SclibError``, with ``status_code``), a 5xx
      :class:`~sclib.client.ServerError`, no answer
      :class:`~sclib.client.ConnectionFailed`. ``wait_for_completion``'s timeout
      is :class:`~sclib.client.WaitTimeout`, a ``TimeoutError``. A missing local
      file or folder is still ``FileNotFoundError``; the original's
      ``ValueError``\\ s are :class:`~sclib.errors.InvalidInput`, a ``ValueError``.
    * **Big files** go in parallel, BLAKE3-verified chunks that resume where they
      stopped when the same file is uploaded again (the original sent every file
      in one request). ``progress_callback`` gets the fraction sent (0..1) as the
      bytes go, ending with 1.0; during a chunked upload it is called from worker
      threads.
    * ``timeout`` bounds each network operation (connect, each read and write),
      not a whole upload.
    * Job statuses in sclib's words (``pending``, ``running``) are given in the
      original's (``queued``, ``processing``). An unknown job id is
      ``JobNotFound`` (the original server answered ``queued``).
    * ``upload_file_by_path(..., dataset_uuid=X)`` adds the file to dataset X
      (the original sent a field no server read).
    * ``upload_directory`` keeps subfolders (each file's ``relative_path`` is its
      subfolder, as well as its ``folder``), goes through the files in name order,
      and if a file fails, the next one that arrives creates the dataset.
    * Progress and results are logged (logger ``sclib.client.unified``), not
      printed.
    * ``upload_file_by_path_async``, which always raised ``TypeError`` in the
      original, is not here: use
      :meth:`AsyncScientistCloudUploadClient.upload_file_by_path`.
    """

    client: Client

    def __init__(
        self,
        base_url: str = ORIGINAL_BASE_URL,
        timeout: float | httpx.Timeout | None = ORIGINAL_TIMEOUT,
        *,
        token: str | None = None,
        state_dir: PathLike | None = None,
        parallel: int = 4,
        retries: int = 5,
        verify: bool | str | ssl.SSLContext = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, timeout, token)
        #: the sclib client doing the work (its own methods are there too)
        self.client = Client(
            self.base_url,
            self.token,
            timeout=timeout,
            parallel=parallel,
            state_dir=state_dir,
            transport=transport,
            verify=verify,
            retries=retries,
        )

    def __enter__(self) -> ScientistCloudUploadClient:
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
        self.client.close()

    # -- uploads ---------------------------------------------------------------------

    def upload_file(
        self,
        file_path: PathLike,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        dataset_identifier: str | None = None,
        add_to_existing: bool = False,
        progress_callback: ProgressCallback | None = None,
    ) -> UploadResult:
        """Upload a local file; the job that processes it is in the result.

        Files up to the server's standard limit go in one streamed request
        (``upload_type`` ``standard``), larger ones in parallel verified chunks
        (``chunked``). ``dataset_identifier`` with ``add_to_existing=True`` adds
        the file to that dataset; with ``add_to_existing=False`` a new dataset is
        made under that identifier. ``FileNotFoundError`` if there is no such file.
        """
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        flow = self._upload_file_flow(
            file_path, fields, dataset_identifier, add_to_existing, progress_callback
        )
        return self.client._drive(flow)

    def upload_file_by_path(
        self,
        file_path: str,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        dataset_uuid: str | None = None,
        progress_callback: ProgressCallback | None = None,
    ) -> UploadResult:
        """Have the server ingest a file already on *its* disk (``file_path`` is
        a path on the server, inside a folder its operator allows); nothing is
        sent but the form. ``dataset_uuid``: add the file to that dataset."""
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        flow = self._upload_path_flow(
            file_path, fields, dataset_uuid, progress_callback
        )
        return self.client._drive(flow)

    def upload_directory(
        self,
        directory_path: PathLike,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        progress_callback: ProgressCallback | None = None,
    ) -> list[UploadResult]:
        """Upload every file under a folder into one new dataset; one result per
        file, in name order.

        The first file creates the dataset under a fresh identifier, the others
        are added to it, each with its subfolder as ``folder`` and
        ``relative_path`` (the ``folder`` argument is not used, as in the
        original). A file that fails becomes a result with ``status`` and
        ``upload_type`` ``failed``; the method does not raise for it.
        ``progress_callback`` gets the fraction of the folder's bytes sent.
        """
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        flow = self._directory_flow(directory_path, fields, progress_callback)
        return self.client._drive(flow)

    def upload_directory_from_source(
        self,
        source_type: str,
        source_config: Mapping[str, Any],
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        progress_callback: ProgressCallback | None = None,
    ) -> list[UploadResult]:
        """``local``: :meth:`upload_directory` of ``source_config['directory_path']``.
        ``google_drive`` and ``s3`` folders are not implemented (nor were they in
        the original): nothing is uploaded, a warning is logged, ``[]`` returned.
        ``url`` and other types: ``InvalidInput`` (a ``ValueError``)."""
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        flow = self._directory_source_flow(
            source_type, source_config, fields, progress_callback
        )
        return self.client._drive(flow)

    # -- server-side imports ---------------------------------------------------------

    def upload_from_source(
        self,
        source_type: str,
        source_config: Mapping[str, Any],
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        progress_callback: ProgressCallback | None = None,
    ) -> UploadResult:
        """Have the server import from ``source_type`` with ``source_config`` as
        given (``POST /api/upload/initiate``). ``progress_callback`` is not
        called, as in the original."""
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        return self.client._send(self._source_call(source_type, source_config, fields))

    def initiate_google_drive_upload(
        self,
        file_id: str,
        service_account_file: str,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
    ) -> UploadResult:
        """Have the server import a Google Drive file. ``service_account_file``
        is a path *on the server*, sent as it is (sclib's
        :meth:`Client.initiate_google_drive_upload` sends a local file's content)."""
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        call = self._google_drive_call(file_id, service_account_file, fields)
        return self.client._send(call)

    def initiate_s3_upload(
        self,
        bucket_name: str,
        object_key: str,
        access_key_id: str,
        secret_access_key: str,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
    ) -> UploadResult:
        """Have the server import an S3 object."""
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        call = self._s3_call(
            bucket_name, object_key, access_key_id, secret_access_key, fields
        )
        return self.client._send(call)

    def initiate_url_upload(
        self,
        url: str,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
    ) -> UploadResult:
        """Have the server download a URL."""
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        return self.client._send(self._url_call(url, fields))

    # -- jobs ------------------------------------------------------------------------

    def get_upload_status(self, job_id: str) -> JobStatus:
        """The status of an upload job (``JobNotFound`` if there is none)."""
        return self.client._send(self._status_call(job_id))

    def wait_for_completion(
        self, job_id: str, timeout: float = 3600, poll_interval: float = 5
    ) -> JobStatus:
        """Poll until the job is completed, failed or cancelled; its last status
        (a failed job is returned, not raised). ``WaitTimeout``, a
        ``TimeoutError``, after ``timeout`` seconds."""
        return self.client._drive(self._wait_flow(job_id, timeout, poll_interval))

    def cancel_upload(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job; the server's answer."""
        return self.client._send(self._cancel_call(job_id))

    def list_upload_jobs(
        self,
        user_email: str,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """A page of ``user_email``'s upload jobs (sent as ``user_id``)."""
        return self.client._send(self._jobs_call(user_email, status, limit, offset))

    # -- the server ------------------------------------------------------------------

    def get_supported_sources(self) -> dict[str, Any]:
        """The import sources and sensor types the server knows."""
        return self.client._send(
            self._json_call("GET", "/api/upload/supported-sources")
        )

    def get_upload_limits(self) -> dict[str, Any]:
        """The server's size limits and chunk size."""
        return self.client._send(self._json_call("GET", "/api/upload/limits"))

    def health_check(self) -> dict[str, Any]:
        """The server's health report."""
        return self.client._send(self._json_call("GET", "/health"))

    def get_api_info(self) -> dict[str, Any]:
        """What the server says about itself (``GET /``)."""
        return self.client._send(self._json_call("GET", "/"))


class AsyncScientistCloudUploadClient(UnifiedBase):
    """The asyncio twin of :class:`ScientistCloudUploadClient`: the same
    methods, arguments and answers, awaited (the original async client had
    only ``upload_file``, ``get_upload_status``, ``wait_for_completion`` and a
    broken ``upload_directory``). It wraps an :class:`~sclib.client.AsyncClient`;
    close it with ``await client.aclose()`` or ``async with``.
    """

    client: AsyncClient

    def __init__(
        self,
        base_url: str = ORIGINAL_BASE_URL,
        timeout: float | httpx.Timeout | None = ORIGINAL_TIMEOUT,
        *,
        token: str | None = None,
        state_dir: PathLike | None = None,
        parallel: int = 4,
        retries: int = 5,
        verify: bool | str | ssl.SSLContext = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, timeout, token)
        self.client = AsyncClient(
            self.base_url,
            self.token,
            timeout=timeout,
            parallel=parallel,
            state_dir=state_dir,
            transport=transport,
            verify=verify,
            retries=retries,
        )

    async def __aenter__(self) -> AsyncScientistCloudUploadClient:
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
        await self.client.aclose()

    async def upload_file(
        self,
        file_path: PathLike,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        dataset_identifier: str | None = None,
        add_to_existing: bool = False,
        progress_callback: ProgressCallback | None = None,
    ) -> UploadResult:
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        flow = self._upload_file_flow(
            file_path, fields, dataset_identifier, add_to_existing, progress_callback
        )
        return await self.client._drive(flow)

    async def upload_file_by_path(
        self,
        file_path: str,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        dataset_uuid: str | None = None,
        progress_callback: ProgressCallback | None = None,
    ) -> UploadResult:
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        flow = self._upload_path_flow(
            file_path, fields, dataset_uuid, progress_callback
        )
        return await self.client._drive(flow)

    async def upload_directory(
        self,
        directory_path: PathLike,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        progress_callback: ProgressCallback | None = None,
    ) -> list[UploadResult]:
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        flow = self._directory_flow(directory_path, fields, progress_callback)
        return await self.client._drive(flow)

    async def upload_directory_from_source(
        self,
        source_type: str,
        source_config: Mapping[str, Any],
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        progress_callback: ProgressCallback | None = None,
    ) -> list[UploadResult]:
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        flow = self._directory_source_flow(
            source_type, source_config, fields, progress_callback
        )
        return await self.client._drive(flow)

    async def upload_from_source(
        self,
        source_type: str,
        source_config: Mapping[str, Any],
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        progress_callback: ProgressCallback | None = None,
    ) -> UploadResult:
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        call = self._source_call(source_type, source_config, fields)
        return await self.client._send(call)

    async def initiate_google_drive_upload(
        self,
        file_id: str,
        service_account_file: str,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
    ) -> UploadResult:
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        call = self._google_drive_call(file_id, service_account_file, fields)
        return await self.client._send(call)

    async def initiate_s3_upload(
        self,
        bucket_name: str,
        object_key: str,
        access_key_id: str,
        secret_access_key: str,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
    ) -> UploadResult:
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        call = self._s3_call(
            bucket_name, object_key, access_key_id, secret_access_key, fields
        )
        return await self.client._send(call)

    async def initiate_url_upload(
        self,
        url: str,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
    ) -> UploadResult:
        fields = Fields(
            user_email, dataset_name, sensor, convert, is_public, folder, team_uuid
        )
        return await self.client._send(self._url_call(url, fields))

    async def get_upload_status(self, job_id: str) -> JobStatus:
        return await self.client._send(self._status_call(job_id))

    async def wait_for_completion(
        self, job_id: str, timeout: float = 3600, poll_interval: float = 5
    ) -> JobStatus:
        return await self.client._drive(self._wait_flow(job_id, timeout, poll_interval))

    async def cancel_upload(self, job_id: str) -> dict[str, Any]:
        return await self.client._send(self._cancel_call(job_id))

    async def list_upload_jobs(
        self,
        user_email: str,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        call = self._jobs_call(user_email, status, limit, offset)
        return await self.client._send(call)

    async def get_supported_sources(self) -> dict[str, Any]:
        call = self._json_call("GET", "/api/upload/supported-sources")
        return await self.client._send(call)

    async def get_upload_limits(self) -> dict[str, Any]:
        return await self.client._send(self._json_call("GET", "/api/upload/limits"))

    async def health_check(self) -> dict[str, Any]:
        return await self.client._send(self._json_call("GET", "/health"))

    async def get_api_info(self) -> dict[str, Any]:
        return await self.client._send(self._json_call("GET", "/"))


def _copy_docs() -> None:
    for name, member in vars(AsyncScientistCloudUploadClient).items():
        twin = getattr(ScientistCloudUploadClient, name, None)
        if callable(member) and not member.__doc__ and twin is not None:
            member.__doc__ = twin.__doc__


_copy_docs()
