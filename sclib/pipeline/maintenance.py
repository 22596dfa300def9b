"""The maintenance job handlers, built from the worker's settings.

:func:`maintenance_handlers` gives ``data_compression``, ``backup_creation``,
``rsync_transfer`` and ``google_sync`` their configuration (data folder, stores,
``SCLIB_BACKUP_URL``, ``SCLIB_RSYNC_HOSTS``, ``SCLIB_UPLOAD_PATH_ROOTS``,
``SCLIB_SECRET_KEY``); :func:`sclib.pipeline.upload.handlers_from_settings` adds
them to the server's registry.
"""

from __future__ import annotations

from typing import Any

from sclib.datasets import DatasetStore
from sclib.jobtypes import JobType
from sclib.pipeline.flow import Pipeline
from sclib.settings import Settings
from sclib.transfers.sessions import SessionStore

__all__ = ["maintenance_handlers"]


def maintenance_handlers(
    settings: Settings,
    datasets: DatasetStore,
    sessions: SessionStore,
    pipeline: Pipeline | None = None,
) -> dict[str, Any]:
    """job type -> handler, for the four maintenance jobs."""
    from sclib.pipeline.backup import BackupHandler
    from sclib.pipeline.compress import CompressionHandler
    from sclib.pipeline.gsync import GoogleSyncHandler
    from sclib.pipeline.rsync import RsyncHandler

    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    data = settings.data_dir
    return {
        JobType.DATA_COMPRESSION.value: CompressionHandler(data, datasets),
        JobType.BACKUP_CREATION.value: BackupHandler(
            data, datasets, sessions, default_destination=settings.backup_url
        ),
        JobType.RSYNC_TRANSFER.value: RsyncHandler(
            data,
            datasets,
            sessions,
            path_roots=settings.upload_path_root_list(),
            hosts=settings.rsync_host_list(),
            pipeline=pipeline,
        ),
        JobType.GOOGLE_SYNC.value: GoogleSyncHandler(
            data,
            datasets,
            sessions,
            secret_key=secret,
            pipeline=pipeline,
            service_account_file=settings.gdrive_service_account_file,
        ),
    }
