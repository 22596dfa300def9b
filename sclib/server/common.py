"""Helpers every upload route shares: dataset fields with identity, body limits."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request

from sclib.errors import TooLarge
from sclib.server.app import ServerState
from sclib.server.auth import Identity
from sclib.server.fields import DatasetFields, parse_fields

__all__ = ["MULTIPART_SLACK", "DatasetBody", "check_length", "resolve_fields"]

MULTIPART_SLACK = 1024**2  # headers and fields around the file part


class DatasetBody(BaseModel):
    """The seed's dataset fields in a JSON body; checked by
    :func:`~sclib.server.fields.parse_fields` (so every route says the same)."""

    model_config = ConfigDict(extra="forbid")

    user_email: str | None = None
    dataset_name: str
    sensor: str
    convert: bool = True
    is_public: bool = False
    is_public_downloadable: bool = False
    folder: str | None = None
    relative_path: str | None = None
    team_uuid: str | None = None
    tags: list[str] | str | None = None
    dataset_identifier: str | None = None
    add_to_existing: bool = False

    def dataset_values(self) -> dict[str, Any]:
        """The dataset fields alone, for :func:`resolve_fields`."""
        return self.model_dump(include=set(DatasetBody.model_fields))


def resolve_fields(
    state: ServerState, identity: Identity, values: dict[str, Any]
) -> tuple[DatasetFields, str, str]:
    """Validated fields, the owner, and the dataset uuid."""
    fields = parse_fields(values)
    owner = state.auth.check_user_email(identity, fields.user_email)
    dataset_uuid = state.uploads.resolve_dataset(fields, owner, identity.is_admin)
    return fields, owner, dataset_uuid


def check_length(request: Request, limit: int) -> None:
    raw = request.headers.get("content-length")
    if raw is not None and raw.isdigit() and int(raw) > limit:
        raise TooLarge(f"the request body ({raw} bytes) is above the limit of {limit}")
