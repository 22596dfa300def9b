"""The options of uploads and imports, and how their dataset fields are sent.

:class:`DatasetOptions` < :class:`FieldOptions` < :class:`UploadOptions` are the
keyword arguments the client's methods take (typed with ``Unpack``);
:func:`dataset_values` turns them into the fields sent as JSON, and
:func:`form_fields` into multipart form text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

__all__ = [
    "FIELD_KEYS",
    "UPLOAD_KEYS",
    "DatasetOptions",
    "FieldOptions",
    "UploadOptions",
    "check_keys",
    "dataset_values",
    "fields_digest",
    "form_fields",
]


class DatasetOptions(TypedDict, total=False):
    """The dataset fields every upload and import takes (the seed's names)."""

    user_email: str | None
    dataset_name: str | None
    sensor: str | None
    convert: bool
    is_public: bool
    is_public_downloadable: bool
    folder: str | None
    team_uuid: str | None


class FieldOptions(DatasetOptions, total=False):
    """The dataset fields of an upload: where in which dataset the file goes."""

    relative_path: str | None
    tags: str | Sequence[str] | None
    dataset_identifier: str | None
    add_to_existing: bool


class UploadOptions(FieldOptions, total=False):
    """What :meth:`Client.upload_file` takes besides the path.

    ``dataset_name`` defaults to the file (or folder) name. ``progress_callback``
    gets the fraction done (0..1), from worker threads in :class:`Client`;
    ``progress=True`` draws a tqdm bar. ``parallel`` and ``chunk_size`` tune
    chunked uploads (memory is about ``parallel x chunk_size``); ``chunked``
    forces (True) or forbids (False) the chunked protocol instead of choosing by
    the server's ``standard_upload_limit``.
    """

    progress_callback: Callable[[float], object] | None
    progress: bool | Callable[[float], object] | None
    parallel: int | None
    chunk_size: int | None
    chunked: bool | None


FIELD_KEYS = tuple(FieldOptions.__annotations__)
UPLOAD_KEYS = tuple(UploadOptions.__annotations__)


def check_keys(options: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword argument(s): {unknown}")


def dataset_values(options: Mapping[str, Any], default_name: str) -> dict[str, Any]:
    """The dataset fields to send, typed (bools as bools, tags as a list)."""
    values: dict[str, Any] = {}
    for key in FIELD_KEYS:
        value = options.get(key)
        if key == "dataset_name" and not value:
            value = default_name
        if value is None:
            continue
        if key == "tags":
            items = value.split(",") if isinstance(value, str) else value
            value = [str(t).strip() for t in items if str(t).strip()]
        values[key] = value
    return values


def form_fields(values: Mapping[str, Any]) -> dict[str, str]:
    """Dataset fields as multipart form text."""
    form: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            form[key] = "true" if value else "false"
        elif isinstance(value, list):
            form[key] = ",".join(value)
        else:
            form[key] = str(value)
    return form


def fields_digest(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
