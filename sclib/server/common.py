"""Helpers every upload route shares: dataset fields with identity, body limits."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from sclib.datasets.fields import FIELD_SCHEMAS, DatasetFields, parse_fields
from sclib.errors import TooLarge
from sclib.server.auth import Identity
from sclib.server.deps import ServerState

__all__ = [
    "MAX_OFFSET",
    "MULTIPART_SLACK",
    "DatasetBody",
    "check_length",
    "known_fields",
    "resolve_fields",
    "small_body",
]

log = logging.getLogger(__name__)

MULTIPART_SLACK = 1024**2  # headers and fields around the file part
#: the largest ``offset`` a list route takes (``limit`` is at most 1,000 on
#: each): deeper pages are refused with 422, never a database error
MAX_OFFSET = 1_000_000


_FIELD_NAMES = frozenset(DatasetFields.model_fields)


def known_fields(values: Mapping[str, Any], route: str) -> dict[str, Any]:
    """The dataset fields among ``values``; the others are dropped and logged at
    debug level, as the original API ignored fields it did not use (its clients
    send some, such as ``original_file_path``)."""
    unknown = sorted(set(values) - _FIELD_NAMES)
    if unknown:
        log.debug("%s: ignoring unknown field(s) %s", route, ", ".join(unknown))
    return {k: v for k, v in values.items() if k in _FIELD_NAMES}


async def small_body(request: Request, limit: int = 1024**2) -> dict[str, Any]:
    """A small form (urlencoded or multipart, no files) or JSON object body as a
    dict; the original API's form routes took either."""
    import json

    from sclib.errors import InvalidInput

    check_length(request, limit)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form(max_files=0, max_fields=100)
        values: dict[str, Any] = {}
        for key, value in form.multi_items():
            if not isinstance(value, str):
                raise InvalidInput(f"{key}: this route takes no files")
            values[key] = value
        return values
    raw = await request.body()
    if len(raw) > limit:
        raise TooLarge(f"the request body is above the limit of {limit} bytes")
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidInput(
            "the body must be a form (application/x-www-form-urlencoded or "
            "multipart/form-data) or a JSON object"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object")
    return data


class DatasetBody(BaseModel):
    """The seed's dataset fields in a JSON body; checked by
    :func:`~sclib.datasets.fields.parse_fields` (so every route says the same).

    Keys it does not know are ignored (logged at debug level), as the original
    API ignored them."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            # adding to a dataset needs the dataset's identifier
            "if": {
                "properties": {"add_to_existing": {"const": True}},
                "required": ["add_to_existing"],
            },
            "then": {
                "required": ["dataset_identifier"],
                "properties": {"dataset_identifier": {"type": "string"}},
            },
        },
    )

    user_email: str | None = Field(
        default=None, json_schema_extra=FIELD_SCHEMAS["user_email"]
    )
    dataset_name: str = Field(json_schema_extra=FIELD_SCHEMAS["dataset_name"])
    sensor: str = Field(json_schema_extra=FIELD_SCHEMAS["sensor"])
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
        if self.model_extra:
            log.debug(
                "%s: ignoring unknown key(s) %s",
                type(self).__name__,
                ", ".join(sorted(self.model_extra)),
            )
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
