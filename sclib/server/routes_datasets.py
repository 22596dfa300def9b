"""``/api/v1/datasets``: the caller's datasets, their files and status.

Owner-scoped like the jobs API: another user's dataset is a 404, exactly like
one that does not exist; admins see every dataset.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from sclib.datasets import Dataset, DatasetNotFound
from sclib.datasets.records import dataset_dict
from sclib.server.app import IdentityDep, ServerState, StateDep, owner_filter
from sclib.server.auth import Identity

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])


def _visible(state: ServerState, identity: Identity, uuid: str) -> Dataset:
    dataset = state.datasets.get(uuid)
    if not state.auth.can_see(identity, dataset.owner):
        raise DatasetNotFound(uuid)
    return dataset


@router.get("")
def list_datasets(
    status: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """The caller's datasets, newest first (admins: everyone's)."""
    found = state.datasets.list(
        owner=owner_filter(identity), status=status, limit=limit, offset=offset
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
