"""The reference server: ``create_app(settings)``.

One app serves the seed's upload routes (``/api/upload/...``), the large-file chunk
protocol, tus 1.0 at ``/files/``, and the jobs API (``/api/v1/jobs``). Everything
it knows lives in the backend (jobs, upload sessions) and the data folder (bytes),
so several server processes can share them and any of them can continue any
upload. With ``run_worker`` it also runs a worker thread that executes jobs, which
is what ``sclib serve`` does by default: one command, a working system.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from datetime import timedelta

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from sclib.backends import open_store
from sclib.datasets import open_dataset_store
from sclib.jobs.queue import JobQueue
from sclib.jobs.registry import HandlerRegistry
from sclib.jobs.worker import Worker
from sclib.pipeline.upload import handlers_from_settings
from sclib.server.auth import Authenticator, validate_settings
from sclib.server.deps import (
    ServerState,
    current_identity,
    server_state,
    visible_job,
)
from sclib.server.problems import install_handlers
from sclib.server.streaming import BufferBudget
from sclib.server.uploads import UploadManager
from sclib.settings import Settings, load_settings, parse_reserve
from sclib.transfers.sessions import open_session_store
from sclib.version import __version__

__all__ = [
    "ServerState",
    "create_app",
    "current_identity",
    "server_state",
    "visible_job",
]

log = logging.getLogger(__name__)

TUS_HEADERS = [
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "X-Job-Id",
    "X-Dataset-Uuid",
]


def _run_worker(worker: Worker) -> None:
    try:
        worker.run()
    except Exception:  # the server keeps answering; /health reports the worker
        log.exception("the in-process worker stopped with an error")


def create_app(
    settings: Settings | None = None,
    *,
    run_worker: bool = True,
    handlers: HandlerRegistry | None = None,
) -> FastAPI:
    """The FastAPI app over ``settings`` (default: the environment).

    :param run_worker: run a worker thread in the server process (``sclib serve``
        does unless ``--workers 0``); without it, run ``sclib worker`` elsewhere.
    :param handlers: job handlers for that worker (default: the upload handler).
    """
    settings = settings or load_settings()
    validate_settings(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.backend_url()
    queue = JobQueue(
        open_store(url, **settings.store_options(url)),
        max_crashes=settings.max_crashes,
    )
    sessions = open_session_store(url, **settings.session_store_options(url))
    datasets = open_dataset_store(url, **settings.session_store_options(url))
    uploads = UploadManager(
        sessions,
        queue,
        settings.data_dir,
        chunk_size=settings.chunk_size,
        max_chunk_size=settings.max_chunk_size,
        max_upload_size=settings.max_upload_size,
        expiry=timedelta(hours=settings.upload_expiry_hours),
        datasets=datasets,
        disk_reserve=parse_reserve(settings.disk_reserve),
        max_open_uploads=settings.max_open_uploads,
        max_staged_bytes=settings.max_staged_bytes,
        direct_io=settings.direct_io,
    )
    state = ServerState(
        settings,
        queue,
        sessions,
        uploads,
        Authenticator.from_settings(settings),
        datasets,
        buffers=BufferBudget(settings.max_buffered_bytes),
    )
    if state.auth.trusted_networks and not settings.no_auth:
        log.warning(
            "trusted clients on (SCLIB_TRUSTED_CLIENTS): requests from %s need no "
            "token and act for the user they name in user_email",
            ", ".join(str(n) for n in state.auth.trusted_networks),
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread = None
        if run_worker and settings.worker_concurrency > 0:
            registry = handlers or handlers_from_settings(settings)
            state.worker = Worker(
                queue,
                registry,
                concurrency=settings.worker_concurrency,
                lease_seconds=settings.lease_seconds,
                poll_interval=min(settings.poll_interval, 0.5),
                grace_period=settings.grace_period,
                keep_finished=settings.keep_finished,
            )
            thread = threading.Thread(
                target=_run_worker,
                args=(state.worker,),
                daemon=True,
                name="sclib-worker",
            )
            thread.start()
        sweeper = asyncio.create_task(_sweep(state))
        try:
            yield
        finally:
            sweeper.cancel()
            if state.worker is not None and thread is not None:
                state.worker.stop()
                await asyncio.to_thread(thread.join, settings.grace_period + 5)
            state.close()

    app = FastAPI(
        title="sclib",
        version=__version__,
        description=(
            "Upload datasets (one request, resumable chunks, or tus 1.0), import "
            "them from S3, GCS, Google Drive or URLs, and follow their jobs."
        ),
        lifespan=lifespan,
    )
    from sclib.server.openapi import install_openapi

    install_openapi(app)
    app.state.sclib = state
    install_handlers(app)
    from sclib.server.tus import TusMiddleware

    app.add_middleware(TusMiddleware)  # inside CORS: only paths under /files
    from sclib.server.limits import BodyLimitMiddleware

    app.add_middleware(BodyLimitMiddleware)  # JSON bodies: at most 1 MiB
    origins = settings.cors_origin_list()
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PATCH", "HEAD", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=TUS_HEADERS,
            allow_credentials=False,
            max_age=600,
        )

    from sclib.server import (
        routes_datasets,
        routes_jobs,
        routes_large,
        routes_portal,
        routes_upload,
        tus,
    )

    app.include_router(routes_upload.router)
    app.include_router(routes_large.router)
    app.include_router(routes_portal.router)
    app.include_router(routes_jobs.router)
    app.include_router(routes_datasets.router)
    from sclib.server import routes_downloads

    app.include_router(routes_downloads.router)
    from sclib.server import routes_monitor

    app.include_router(routes_monitor.router)
    app.include_router(routes_monitor.metrics_router)
    app.include_router(tus.router)
    from sclib.server import ui

    app.include_router(ui.router)  # the status page at /ui (static, public)
    return app


async def _sweep(state: ServerState) -> None:
    """Expire abandoned uploads now and then (every tenth of the expiry time)."""
    period = max(60.0, state.settings.upload_expiry_hours * 360)
    while True:
        await asyncio.sleep(period)
        try:
            expired = await asyncio.to_thread(state.uploads.expire, dry_run=False)
        except Exception:
            log.exception("expiring abandoned uploads failed; trying again later")
            continue
        if expired:
            log.info("expired %d abandoned upload(s)", len(expired))
