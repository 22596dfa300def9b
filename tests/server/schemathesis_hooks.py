"""Schemathesis hooks for tests/server/test_schema.py (loaded through the
``SCHEMATHESIS_HOOKS`` variable): the tus body media type, which Schemathesis
does not know, is sent as the bytes drawn for it."""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.transport.serialization import serialize_binary


@schemathesis.serializer("application/offset+octet-stream")
def _tus_body(ctx: schemathesis.SerializationContext, value: Any) -> dict[str, Any]:
    return {"data": serialize_binary(value)}
