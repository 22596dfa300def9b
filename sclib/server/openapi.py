"""The OpenAPI document, made to tell the truth about every answer.

FastAPI documents what a route returns when it succeeds, and a 422 in its own
shape. sclib answers every error as ``application/problem+json`` (RFC 9457, see
:mod:`.problems`), with statuses that depend on the route: this module adds
them. Every operation documents the problem answers it can give; the routes that
need no token say so (``security: []``); the others name the bearer scheme; the
tus routes declare the headers they read (``Tus-Resumable`` first). Schemathesis
runs against this document in CI (``tests/server/test_schema.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

__all__ = ["install_openapi"]

PROBLEM = {
    "type": "object",
    "title": "Problem",
    "description": "An error (RFC 9457): what went wrong, with a stable code.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "the sclib error, snake_case"},
        "error": {"type": "string", "description": "404s: the seed's 'Not found'"},
    },
}

_DESCRIPTIONS = {
    400: "Bad request (the original API's code for a bad chunk or a missing one)",
    401: "No token, or one that does not verify",
    403: "Authenticated, but not allowed",
    404: "No such thing, or not the caller's",
    405: "Method not allowed",
    409: "The thing is not in a state that allows this",
    412: "A tus request without 'Tus-Resumable: 1.0.0'",
    413: "A body, chunk or file above a limit",
    415: "A body of the wrong media type",
    422: "A value is wrong; the detail names the field",
    423: "Another request is writing the same upload or chunk",
    429: "A per-user limit is reached",
    431: "The request's head is above a limit",
    460: "tus checksum mismatch",
    500: "Internal error",
    501: "A feature this server was installed without",
    502: "A source the server reads from failed",
    503: "The backend is unreachable; retry later",
    507: "The disk cannot hold it now; retry once space is freed",
}

#: every operation can answer these
_COMMON = (400, 401, 403, 404, 422, 429, 431, 500, 503)
#: and these too where bytes arrive or state changes
_WRITES = (409, 413, 423, 507)
_TUS = (409, 412, 413, 415, 423, 460, 507)

#: (method, path) that need no token
_PUBLIC = {
    ("get", "/"),
    ("get", "/health"),
    ("get", "/health/large-files"),
    ("options", "/files/"),
    ("options", "/files/{upload_id}"),
    ("get", "/ui/"),
    ("get", "/ui"),
    ("get", "/api/upload/supported-sources"),
    ("get", "/api/upload/limits"),
    ("get", "/api/upload/large/limits"),
    ("get", "/api/upload/estimate-time"),
}

_TUS_HEADERS: Mapping[str, list[dict[str, Any]]] = {
    "post": [
        {
            "name": "Upload-Length",
            "in": "header",
            "required": False,
            "description": "the upload's length (or Upload-Defer-Length: 1)",
            "schema": {"type": "string", "pattern": "^[0-9]{1,15}$"},
        },
        {
            "name": "Upload-Defer-Length",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "enum": ["1"]},
        },
        {
            "name": "Upload-Metadata",
            "in": "header",
            "required": False,
            "description": "comma-separated 'key base64value' pairs: filename, "
            "dataset_name, sensor, ... (the dataset fields)",
            "schema": {"type": "string"},
        },
        {
            "name": "Upload-Concat",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
        },
    ],
    "patch": [
        {
            "name": "Upload-Offset",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]{1,15}$"},
        },
        {
            "name": "Upload-Checksum",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
        },
    ],
}

_TUS_RESUMABLE = {
    "name": "Tus-Resumable",
    "in": "header",
    "required": True,
    "description": "the tus version; every request but OPTIONS carries it",
    "schema": {"type": "string", "enum": ["1.0.0"]},
}


def _problem_response(status: int) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS.get(status, "Error"),
        "content": {
            "application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"}
            }
        },
    }


def _patch(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM
    components["schemas"].pop("HTTPValidationError", None)
    components["schemas"].pop("ValidationError", None)
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "a token (docs/auth.md); or a trusted client address",
        }
    }
    schema["security"] = [{"bearer": []}]
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or method == "parameters":
                continue
            tus = path.startswith("/files")
            codes = set(_COMMON)
            if method in ("post", "put", "patch", "delete"):
                codes |= set(_WRITES)
            if tus:
                codes |= set(_TUS)
                if method != "options":
                    params = operation.setdefault("parameters", [])
                    params.insert(0, dict(_TUS_RESUMABLE))
                    params.extend(dict(p) for p in _TUS_HEADERS.get(method, []))
            responses = operation.setdefault("responses", {})
            for code in sorted(codes):
                responses[str(code)] = _problem_response(code)
            if (method, path) in _PUBLIC:
                operation["security"] = []
    return schema


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` the document with every answer (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _patch(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
