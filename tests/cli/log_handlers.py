"""A handler that logs, for the JSON log tests (importable by a worker process)."""

from __future__ import annotations

import logging
from typing import Any

from sclib import HandlerRegistry, JobContext

handlers = HandlerRegistry()
log = logging.getLogger("lab.handlers")


@handlers.register("data_validation")
def check(ctx: JobContext) -> dict[str, Any]:
    """Log one line from inside the job, with an extra field."""
    log.info("checked %s", ctx.parameters["path"], extra={"frames": 12})
    return {"ok": True}
