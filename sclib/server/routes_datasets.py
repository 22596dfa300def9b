"""``/api/v1/datasets``: the caller's datasets, their files and status.

Owner-scoped like the jobs API: another user's dataset is a 404, exactly like
one that does not exist; admins see every dataset.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field

from sclib.datasets import Dataset, DatasetNotFound
from sclib.datasets.records import dataset_dict
from sclib.jobtypes import DatasetStatus
from sclib.server.auth import Identity
from sclib.server.common import MAX_OFFSET
from sclib.server.deps import IdentityDep, ServerState, StateDep, owner_filter

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])


def _visible(state: ServerState, identity: Identity, uuid: str) -> Dataset:
    dataset = state.datasets.get(uuid)
    if not state.auth.can_see(identity, dataset.owner):
        raise DatasetNotFound(uuid)
    return dataset


@router.get("")
def list_datasets(
    status: DatasetStatus | None = None,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """The caller's datasets, newest first (admins: everyone's)."""
    found = state.datasets.list(
        owner=owner_filter(identity),
        status=status.value if status is not None else None,
        limit=limit,
        offset=offset,
    )
    return {
        "datasets": [dataset_dict(d, files=False) for d in found],
        "count": len(found),
        "limit": limit,
        "offset": offset,
    }


@router.get("/{uuid}")
def get_dataset(
    uuid: str, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """One dataset with its files (path, size, BLAKE3) and its legacy status."""
    return dataset_dict(_visible(state, identity, uuid))


@router.get("/{uuid}/status")
def dataset_status(
    uuid: str, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """The dataset's legacy status string and the jobs that worked on it."""
    dataset = _visible(state, identity, uuid)
    jobs = state.queue.list(dataset_uuid=uuid, limit=1000)
    return {
        "uuid": uuid,
        "status": str(dataset.status),
        "error_message": dataset.error_message,
        "jobs": [
            {"job_id": j.id, "job_type": j.type, "status": j.status.value} for j in jobs
        ],
    }


@router.get("/{uuid}/files")
def dataset_files(
    uuid: str,
    limit: int = Query(1000, ge=1, le=100_000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """The dataset's files (path, size, BLAKE3), sorted by path, paginated."""
    dataset = _visible(state, identity, uuid)
    files = sorted(dataset.files, key=lambda f: f.path)
    page = files[offset : offset + limit]
    return {
        "uuid": uuid,
        "files": [{"path": f.path, "size": f.size, "blake3": f.blake3} for f in page],
        "count": len(page),
        "total": len(files),
        "total_size": dataset.total_size,
        "limit": limit,
        "offset": offset,
    }


_OPTIONAL_BODY = Body(None)


class ReprocessBody(BaseModel):
    """What to change for this conversion run; everything optional."""

    model_config = ConfigDict(extra="forbid")

    sensor: str | None = Field(
        default=None, description="convert as this sensor instead"
    )
    output_format: str | None = Field(default=None, description="idx or zarr")
    conversion_params: dict[str, Any] | None = Field(
        default=None,
        description="parameters for the converter, e.g. {'dataset': '/x'}",
    )


@router.post("/{uuid}/reprocess", status_code=202)
def reprocess_dataset(
    uuid: str,
    body: ReprocessBody | None = _OPTIONAL_BODY,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """Convert the dataset again (even if its output is up to date): queues a
    ``dataset_conversion`` job; 409 while one is already queued or running."""
    from sclib.pipeline.flow import Pipeline

    dataset = _visible(state, identity, uuid)
    body = body or ReprocessBody()
    pipeline = Pipeline(
        state.queue,
        state.datasets,
        state.settings.data_dir,
        output_format=state.settings.conversion_format,
    )
    result = pipeline.reprocess(
        dataset.uuid,
        sensor=body.sensor,
        output_format=body.output_format,
        conversion_params=body.conversion_params,
    )
    return {"uuid": uuid, "status": str(state.datasets.get(uuid).status), **result}
