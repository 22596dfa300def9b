"""The jobs API: ``/api/v1/jobs``.

Users see, cancel and retry their own jobs; another user's job id is a 404, as if
it did not exist. Admins (a token with the admin role) see everything.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from sclib.errors import Forbidden, InvalidInput, NotFound
from sclib.jobtypes import JobStatus, JobType
from sclib.server.auth import Identity
from sclib.server.common import MAX_OFFSET
from sclib.server.deps import (
    IdentityDep,
    ServerState,
    StateDep,
    owner_filter,
    public_job,
    visible_job,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


class SubmitJob(BaseModel):
    """``POST /api/v1/jobs``."""

    model_config = ConfigDict(extra="forbid")

    job_type: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    dataset_uuid: str | None = None
    priority: int | None = Field(default=None, ge=1, le=3)
    idempotency_key: str | None = None
    depends_on: list[str] = Field(default_factory=list)


@router.post("", status_code=201)
def submit(
    body: SubmitJob, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """Enqueue a job for the caller (``upload`` jobs come from the upload routes)."""
    if not identity.is_admin:
        if body.job_type == JobType.UPLOAD:
            raise Forbidden(
                "job_type: upload jobs are created by the /api/upload routes, not here"
            )
        if body.job_type not in state.settings.user_job_type_list():
            raise Forbidden(
                f"job_type: users may not submit {body.job_type!r} jobs here (the "
                "operator lists the ones they may in SCLIB_USER_JOB_TYPES)"
            )
    if body.dataset_uuid and not identity.is_admin:
        from sclib.datasets.records import dataset_owner

        owner = dataset_owner(state.datasets, body.dataset_uuid)
        if owner is None:  # no record (yet): judge by the dataset's jobs
            mine = state.queue.list(dataset_uuid=body.dataset_uuid, limit=1)
            owner = mine[0].owner if mine else identity.email
        if owner != identity.email:
            raise NotFound(f"no dataset {body.dataset_uuid}")
    from sclib.pipeline.upload import split_config

    if (
        body.job_type == JobType.GOOGLE_SYNC
        and not identity.is_admin
        and not split_config(body.parameters)[1]
    ):
        # else the worker's own service account (SCLIB_GDRIVE_SERVICE_ACCOUNT_FILE,
        # meant for migrated jobs) would fetch any folder it can read for anyone
        raise InvalidInput(
            "parameters: a google_sync job needs your own credentials "
            "(service_account_json or access_token)"
        )
    for dep in body.depends_on:
        visible_job(state, identity, dep)
    job = state.queue.enqueue(
        body.job_type,
        _sealed(state, body.parameters),
        dataset_uuid=body.dataset_uuid,
        owner=identity.email,
        priority=body.priority,
        idempotency_key=(
            f"{identity.email}:{body.idempotency_key}" if body.idempotency_key else None
        ),
        depends_on=body.depends_on,
    )
    return public_job(job)


def _sealed(state: ServerState, parameters: dict[str, Any]) -> dict[str, Any]:
    """``parameters`` with any credentials (``service_account_json``,
    ``access_token``, S3 keys, at the top or in an upload's ``source_config``)
    moved into ``sealed``, encrypted with the server's SECRET_KEY, so they are
    never stored or shown in plain text."""
    from sclib.pipeline.upload import split_config

    public, secret = split_config(parameters)
    inner = parameters.get("source_config")
    if isinstance(inner, dict):  # an upload's import: the worker reads it here
        inner_public, inner_secret = split_config(inner)
        both = sorted(set(secret) & set(inner_secret))
        if both:
            raise InvalidInput(
                f"parameters: {both[0]} given both at the top and in source_config"
            )
        if inner_secret:
            public["source_config"] = inner_public
            secret.update(inner_secret)
    if not secret:
        return parameters
    if "sealed" in parameters:
        raise InvalidInput("parameters: give credentials or 'sealed', not both")
    key = state.settings.secret_key
    if key is None:
        raise InvalidInput(
            "parameters carry credentials, but this server has no SECRET_KEY to "
            "seal them with; ask the operator to set one"
        )
    from sclib.secrets import SecretBox

    return {**public, "sealed": SecretBox(key.get_secret_value()).seal(secret)}


@router.get("")
def list_jobs(
    status: JobStatus | None = None,
    job_type: str | None = None,
    dataset_uuid: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    after: str | None = Query(
        None,
        min_length=1,
        max_length=64,
        description="the next page: jobs created after this job id "
        "(the previous answer's next_after); the same cost on every page",
    ),
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """The caller's jobs, oldest first (admins: everyone's). ``next_after`` names
    where the next page starts (null on the last page)."""
    found = state.queue.list(
        status=status.value if status is not None else None,
        job_type=job_type,
        dataset_uuid=dataset_uuid,
        owner=owner_filter(identity),
        limit=limit,
        offset=offset,
        after=after,
    )
    return {
        "jobs": [public_job(j) for j in found],
        "count": len(found),
        "limit": limit,
        "offset": offset,
        "next_after": found[-1].id if len(found) == limit else None,
    }


@router.get("/queue/stats")
def queue_stats(
    identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """Job counts by status and by type (counts only: no other user's data)."""
    return dict(state.queue.stats())


@router.get("/{job_id}")
def get_job(
    job_id: str, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """One job with its event history."""
    job = visible_job(state, identity, job_id)
    data = public_job(job)
    data["events"] = [
        {
            "at": e.at.isoformat(),
            "kind": e.kind,
            "worker_id": e.worker_id,
            "attempt": e.attempt,
            "message": e.message,
        }
        for e in state.queue.events(job_id)
    ]
    data["dataset_status"] = (
        str(state.queue.dataset_status(job.dataset_uuid)) if job.dataset_uuid else None
    )
    return data


@router.post("/{job_id}/cancel")
def cancel_job(
    job_id: str, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """Cancel a pending job, or ask a running one to stop (409 once finished)."""
    from sclib.pipeline.flow import after_cancel

    visible_job(state, identity, job_id)
    job = state.queue.cancel(job_id, f"cancelled by {identity.email}")
    after_cancel(state.queue, state.datasets, job, state.settings.data_dir)
    return public_job(job)


@router.post("/{job_id}/retry")
def retry_job(
    job_id: str, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """Run a failed or cancelled job again (409 otherwise)."""
    visible_job(state, identity, job_id)
    return public_job(state.queue.retry(job_id))
