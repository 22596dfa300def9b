"""Write the HTTP reference (``docs/http.md``) from the app's OpenAPI schema.

``python -m sclib.server.reference > docs/http.md`` regenerates it; a test checks
that the committed page equals the generated one, so the reference cannot drift
from the routes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["render"]

_METHODS = ("get", "post", "patch", "put", "delete", "head", "options")

_INTRO = """\
# HTTP reference

Generated from the server's OpenAPI schema by `python -m sclib.server.reference`
(a test keeps this page equal to it). The live schema is at `/openapi.json` and
browsable at `/docs` on any running server.

Every route except `/`, `/health*`, the limits and `OPTIONS` needs
`Authorization: Bearer <token>` (see [auth](auth.md)). Errors are
`application/problem+json` with a stable `code` (the snake_case name of the
[error class](errors.md)); a 404 also carries the seed's
`{"error": "Not found", "detail": "404: ..."}`.

Status codes used throughout: 401 no or bad token, 403 not allowed (for example a
`user_email` that is not yours), 404 unknown or someone else's id, 409 wrong state
or offset, 413 above a size limit, 422 a bad or missing field (named in
`detail`), 423 another request is writing the same upload or chunk (retry), 460
tus checksum mismatch.
"""


def _schema_name(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref")
    if ref:
        return str(ref).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_schema_name(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {_schema_name(schema.get('items', {}))}"
    return str(schema.get("type", "any"))


def _fields(spec: dict[str, Any], name: str) -> list[str]:
    model = spec.get("components", {}).get("schemas", {}).get(name, {})
    return _inline_fields(model)


def _inline_fields(model: dict[str, Any]) -> list[str]:
    required = set(model.get("required", []))
    out = []
    for field, schema in model.get("properties", {}).items():
        mark = " (required)" if field in required else ""
        desc = schema.get("description", "")
        kind = _schema_name(schema)
        if schema.get("enum"):
            kind = "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
        elif schema.get("format") == "binary":
            kind = "file"
        out.append(f"  - `{field}`: {kind}{mark}" + (f" - {desc}" if desc else ""))
    return out


def render(spec: dict[str, Any]) -> str:
    """The Markdown page for an OpenAPI ``spec``."""
    lines = [_INTRO]
    groups: dict[str, list[str]] = {}
    for path, item in spec["paths"].items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            tag = (op.get("tags") or ["other"])[0]
            entry = [f"### `{method.upper()} {path}`", ""]
            doc = (op.get("description") or op.get("summary") or "").strip()
            if doc:
                entry += [doc, ""]
            params = [p for p in op.get("parameters", []) if p.get("in") != "header"]
            if params:
                entry.append("Parameters:")
                for p in params:
                    req = " (required)" if p.get("required") else ""
                    typ = _schema_name(p.get("schema", {}))
                    entry.append(f"  - `{p['name']}` ({p['in']}, {typ}){req}")
                entry.append("")
            body = op.get("requestBody", {}).get("content", {})
            for ctype, media in body.items():
                schema = media.get("schema", {})
                name = schema.get("title") or _schema_name(schema)
                entry.append(f"Body (`{ctype}`): `{name}`")
                if "properties" in schema:
                    entry += _inline_fields(schema)
                elif schema.get("description"):
                    entry.append(f"  - {schema['description']}")
                else:
                    entry += _fields(spec, name)
                entry.append("")
            codes = ", ".join(sorted(op.get("responses", {})))
            entry += [f"Responses: {codes}", ""]
            groups.setdefault(tag, []).extend(entry)
    for tag, entries in groups.items():
        lines += [f"## {tag}", "", *entries]
    return "\n".join(lines).rstrip() + "\n"


def _spec() -> dict[str, Any]:
    from sclib.server.app import create_app
    from sclib.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp), no_auth=True)
        app = create_app(settings, run_worker=False)
        spec: dict[str, Any] = app.openapi()
        app.state.sclib.close()
    return spec


def main() -> None:
    sys.stdout.write(render(_spec()))


if __name__ == "__main__":  # pragma: no cover
    main()
