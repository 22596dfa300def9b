"""Handlers with a schedule, for the periodic job tests (importable by workers)."""

from __future__ import annotations

from typing import Any

from sclib import HandlerRegistry, JobContext

handlers = HandlerRegistry()


@handlers.periodic("tick", "* * * * * *", missed="skip")  # every second
def tick(ctx: JobContext) -> dict[str, Any]:
    """Record the tick."""
    return {"scheduled_for": ctx.parameters["scheduled_for"]}


handlers.schedule(
    "nightly-check",
    "0 3 * * *",
    "data_validation",
    {"path": "/data"},
    timezone="Europe/Berlin",
)
