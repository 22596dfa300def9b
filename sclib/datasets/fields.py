"""The dataset fields every upload route takes (path rules: :mod:`sclib.paths`).

The seed's routes all carry the same form or JSON fields (``user_email``,
``dataset_name``, ``sensor``, ``convert``, ...). :class:`DatasetFields` validates
them once, whatever the route, so a bad value gets the same 422 everywhere, naming
the field.

Paths from users (``filename``, ``relative_path``) are *rejected*, not silently
repaired, when they could leave the dataset's folder: an absolute path, a ``..``
component, a backslash (a Windows separator that a later tool may honour), a NUL or
another control character. What passes is a clean relative POSIX path whose parts
are all ordinary names; joined under the dataset folder it cannot escape it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sclib.errors import InvalidInput
from sclib.jobtypes import SensorType
from sclib.paths import CONTROL_CHARS as _CONTROL
from sclib.paths import safe_filename, safe_join, safe_relative_path

__all__ = [
    "BOOL_TEXT",
    "FIELD_SCHEMAS",
    "DatasetFields",
    "looks_like_email",
    "parse_bool",
    "parse_fields",
    "safe_filename",
    "safe_join",
    "safe_relative_path",
]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_MAX_NAME = 255
_MAX_PATH = 1024


def _any_case(text: str) -> str:
    """A regular expression matching ``text`` in any case, ``_`` for a space."""
    out = []
    for ch in text:
        if ch.isalpha():
            out.append(f"[{ch.lower()}{ch.upper()}]")
        elif ch == " ":
            out.append("[ _]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


#: what the JSON Schema of the dataset fields says, so that the API's document
#: describes the values the server takes (schemathesis checks both ways)
FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "dataset_name": {
        "type": "string",
        "maxLength": _MAX_NAME,
        "pattern": r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$",
    },
    "sensor": {
        "type": "string",
        "pattern": r"^\s*(?:"
        + "|".join(_any_case(s.value) for s in SensorType)
        + r")\s*$",
        "description": "one of "
        + ", ".join(s.value for s in SensorType)
        + " (any case)",
    },
    "user_email": {"type": "string", "pattern": r"^\s*([^@\s]+@[^@\s]+)?\s*$"},
}
#: booleans sent as form text
BOOL_TEXT = {
    "type": "string",
    "pattern": "^\\s*("
    + "|".join(
        _any_case(w) for w in ("true", "false", "yes", "no", "on", "off", "1", "0")
    )
    + ")?\\s*$",
}


def looks_like_email(value: str) -> bool:
    return bool(_EMAIL.match(value))


def parse_bool(value: object, field: str) -> bool:
    """Form fields arrive as text: ``true/false``, ``1/0``, ``yes/no``, ``on/off``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off", ""):
            return False
    raise InvalidInput(f"{field} must be true or false, got {value!r}")


class DatasetFields(BaseModel):
    """The dataset fields of an upload or import (the seed's names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_email: str | None = Field(
        default=None,
        description="owner; must be the caller's own unless the token is an admin's",
    )
    dataset_name: str = Field(min_length=1, max_length=_MAX_NAME)
    sensor: SensorType = Field(description="how the dataset is converted")
    convert: bool = Field(default=True, description="true/false")
    is_public: bool = Field(default=False, description="true/false")
    is_public_downloadable: bool = Field(default=False, description="true/false")
    folder: str | None = Field(
        default=None, max_length=_MAX_PATH, description="the portal's folder label"
    )
    relative_path: str = Field(
        default="", description="subfolder inside the dataset (no '..', relative)"
    )
    team_uuid: str | None = Field(default=None, max_length=_MAX_NAME)
    tags: tuple[str, ...] = ()
    dataset_identifier: str | None = Field(
        default=None,
        max_length=_MAX_NAME,
        description="with add_to_existing: the dataset to add to (uuid with or "
        "without dashes, numeric id, slug or name); without: the new dataset's "
        "identifier (a uuid, or letters, digits, '.', '_' and '-')",
    )
    add_to_existing: bool = Field(
        default=False, description="true: add to dataset_identifier"
    )

    @field_validator("user_email", "folder", "team_uuid", "dataset_identifier")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        return value or None

    @field_validator("user_email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError(f"{value!r} is not an email address")
        return value.lower() if value else value

    @field_validator("dataset_name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value or _CONTROL.search(value):
            raise ValueError("must be a non-empty name without control characters")
        return value

    @field_validator("sensor", mode="before")
    @classmethod
    def _sensor(cls, value: object) -> SensorType:
        try:
            return SensorType.parse(value)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None

    @field_validator(
        "convert", "is_public", "is_public_downloadable", "add_to_existing",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _bool(cls, value: object) -> bool:
        try:
            return parse_bool(value, "value")
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None

    @field_validator("relative_path", mode="before")
    @classmethod
    def _relative(cls, value: object) -> str:
        if value is None:
            return ""
        try:
            return safe_relative_path(value, "relative_path")  # type: ignore[arg-type]
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: object) -> tuple[str, ...]:
        if value is None or value == "":
            return ()
        if isinstance(value, str):
            items = value.split(",")
        elif isinstance(value, list | tuple):
            items = [str(v) for v in value]
        else:
            raise ValueError("must be a list of strings or comma-separated text")
        tags = tuple(dict.fromkeys(t.strip() for t in items if t.strip()))
        if any(len(t) > _MAX_NAME or _CONTROL.search(t) for t in tags):
            raise ValueError("a tag is too long or contains a control character")
        return tags

    @field_validator("dataset_identifier")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise ValueError("must not contain control characters")
        return value

    def to_parameters(self) -> dict[str, Any]:
        """The fields as JSON job parameters."""
        data = self.model_dump(mode="json")
        data["tags"] = list(self.tags)
        return data


def parse_fields(values: Mapping[str, Any]) -> DatasetFields:
    """Validate ``values``; :class:`InvalidInput` naming each bad or missing field."""
    try:
        return DatasetFields.model_validate(dict(values))
    except ValidationError as exc:
        raise InvalidInput(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "missing":
            problems.append(f"{field}: field required")
        elif err["type"] == "extra_forbidden":
            problems.append(f"{field}: unknown field")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{field}: {msg}")
    return "; ".join(problems)
