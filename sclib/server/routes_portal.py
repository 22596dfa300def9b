"""The original portal's dataset and authentication routes.

``/api/upload/datasets/{identifier}``, ``/api/datasets``, ``/api/dataset/{id}``,
``/api/dataset/{id}/status`` and ``/api/auth/status``, answered with the original's
keys. A dataset is named the way the original named it: uuid with or without
dashes, numeric id, slug or name (:func:`~sclib.datasets.find_dataset`).

They follow sclib's access rules, not the original's open ones: a user sees their
own datasets and public ones; another user's private dataset is a 404, exactly
like one that does not exist (the original said 403, or nothing at all); admins
and trusted clients see every dataset.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sclib.datasets import Dataset, find_dataset
from sclib.datasets.records import dataset_dict
from sclib.errors import InvalidInput, NotFound
from sclib.server.auth import Identity
from sclib.server.deps import IdentityDep, ServerState, StateDep

__all__ = ["router"]

router = APIRouter(tags=["portal"])


def _document(dataset: Dataset) -> dict[str, Any]:
    """A dataset with the original ``visstoredatas`` names beside sclib's."""
    return {
        **dataset_dict(dataset),
        "id": dataset.number,
        "user_id": dataset.owner,
        "folder_uuid": dataset.folder,
        "total_size_bytes": dataset.total_size,
    }


def _user(identity: Identity, user_email: str | None, user_id: str | None) -> str:
    """Whose datasets a request asks for: the named user (one's own, or anyone's
    for an admin or a trusted client), else the caller."""
    wanted = (user_email or user_id or "").strip().lower()
    if not wanted:
        if identity.method == "trusted":
            missing = InvalidInput("Either user_id or user_email must be provided")
            missing.http_status = 400  # type: ignore[attr-defined]  # the original's
            raise missing
        return identity.email
    if wanted != identity.email and not identity.is_admin:
        from sclib.errors import Forbidden

        raise Forbidden("user_email: you may list only your own datasets")
    return wanted


def _find(state: ServerState, identity: Identity, identifier: str) -> Dataset:
    """The dataset ``identifier`` names among those the caller may see: their
    own first, then (for anyone) public ones; 404 otherwise."""
    owner = None if identity.is_admin else identity.email
    found = find_dataset(state.datasets, identifier, owner)
    if found is None and owner is not None:
        other = find_dataset(state.datasets, identifier)
        if other is not None and other.is_public:
            found = other
    if found is None:
        raise NotFound(f"Dataset not found: {identifier}")
    return found


@router.get("/api/upload/datasets/{identifier}")
def resolve_dataset(
    identifier: str, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """The dataset an identifier names, as ``dataset_identifier`` would find it."""
    found = _find(state, identity, identifier)
    return {
        "identifier": identifier,
        "resolved_uuid": found.uuid,
        "dataset": _document(found),
    }


@router.get("/api/datasets")
def user_datasets(
    user_email: str | None = None,
    user_id: str | None = None,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """A user's datasets, newest first (at most 1,000; ``/api/v1/datasets``
    pages through any number)."""
    owner = _user(identity, user_email, user_id)
    found = state.datasets.list(owner=owner, limit=1000)
    return {
        "success": True,
        "datasets": [_document(d) for d in found],
        "count": len(found),
    }


@router.get("/api/dataset/{dataset_id}")
def one_dataset(
    dataset_id: str,
    user_email: str | None = None,
    user_id: str | None = None,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """One dataset, by any of its identifiers."""
    if user_email or user_id:
        _user(identity, user_email, user_id)
    return {"success": True, "dataset": _document(_find(state, identity, dataset_id))}


@router.get("/api/dataset/{dataset_id}/status")
def one_dataset_status(
    dataset_id: str,
    user_email: str | None = None,
    user_id: str | None = None,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """A dataset's legacy status, with the progress of its newest unfinished job
    (100 once it is ``done``)."""
    if user_email or user_id:
        _user(identity, user_email, user_id)
    found = _find(state, identity, dataset_id)
    progress = 100.0 if str(found.status) == "done" else 0.0
    live = [
        j
        for j in state.queue.list(dataset_uuid=found.uuid, limit=1000)
        if j.status.value in ("pending", "running")
    ]
    if live and live[-1].progress.percentage is not None:
        progress = float(live[-1].progress.percentage)
    return {
        "success": True,
        "status": str(found.status),
        "progress": progress,
        "message": found.error_message or str(found.status),
        "uuid": found.uuid,
        "error_message": found.error_message,
    }


@router.get("/api/auth/status")
def auth_status(identity: Identity = IdentityDep) -> dict[str, Any]:
    """Who the caller is (401 without a valid token)."""
    return {
        "is_authenticated": True,
        "user_email": identity.email,
        "access_type": "direct" if identity.method not in ("trusted",) else "trusted",
        "error": None,
        "method": identity.method,
        "is_admin": identity.is_admin,
        "roles": sorted(identity.roles),
    }
