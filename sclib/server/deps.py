"""What routes depend on: the server's state and the caller's identity.

Routers import this module, never :mod:`sclib.server.app`, which only assembles
the app (state, middleware, routers, the worker thread).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request

from sclib.datasets import DatasetStore
from sclib.errors import JobNotFound
from sclib.jobs.queue import JobQueue
from sclib.jobs.worker import Worker
from sclib.models import Job
from sclib.server.auth import Authenticator, Identity
from sclib.server.streaming import BufferBudget
from sclib.server.uploads import UploadManager
from sclib.settings import Settings
from sclib.transfers.sessions import SessionStore

__all__ = [
    "IdentityDep",
    "ServerState",
    "StateDep",
    "current_identity",
    "owner_filter",
    "public_job",
    "server_state",
    "visible_job",
]


@dataclass
class ServerState:
    """What every route needs; one per app."""

    settings: Settings
    queue: JobQueue
    sessions: SessionStore
    uploads: UploadManager
    auth: Authenticator
    datasets: DatasetStore
    worker: Worker | None = None
    buffers: BufferBudget = field(default_factory=lambda: BufferBudget(256 * 1024**2))

    def close(self) -> None:
        self.datasets.close()
        self.sessions.close()
        self.queue.close()


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.sclib
    return state


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _cross_site(request: Request) -> bool:
    """Whether a browser says the request comes from a page of another site
    (``Origin``, else ``Referer``, naming another host than the request's)."""
    from urllib.parse import urlsplit

    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return source == "null"
    return urlsplit(source).netloc.lower() != request.headers.get("host", "").lower()


def current_identity(request: Request) -> Identity:
    """The caller: a bearer token (the ``Authorization`` header, or one of the
    original portal's auth cookies), or a trusted client address; else 401."""
    state = server_state(request)
    return state.auth.authenticate_request(
        authorization=request.headers.get("authorization"),
        cookies=request.cookies,
        client=request.client.host if request.client else None,
        unsafe=request.method not in _SAFE_METHODS,
        cross_site=_cross_site(request),
    )


IdentityDep = Depends(current_identity)
StateDep = Depends(server_state)


def visible_job(state: ServerState, identity: Identity, job_id: str) -> Job:
    """The job, if the caller may see it; another user's is a 404 like a
    missing one."""
    job = state.queue.get(job_id)
    if not state.auth.can_see(identity, job.owner):
        raise JobNotFound(job_id)
    return job


def owner_filter(identity: Identity) -> str | None:
    """``None`` (everything) for admins, else the caller's own email."""
    return None if identity.is_admin else identity.email


def public_job(job: Any) -> dict[str, Any]:
    """A job as the API shows it: sealed credentials never leave the server."""
    data: dict[str, Any] = job.to_dict()
    params = dict(data.get("parameters") or {})
    if "sealed" in params:
        params["sealed"] = "***"
    data["parameters"] = params
    return data
