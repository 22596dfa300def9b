"""Handlers used by the worker tests; module-level so process mode can import them."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sclib import HandlerRegistry, JobContext
from sclib.errors import ConfigurationError, DatasetConflict, InvalidInput

handlers = HandlerRegistry()


@handlers.register("data_validation")
def echo(ctx: JobContext) -> dict[str, Any]:
    """Return the parameters, after reporting progress once."""
    ctx.report(50.0, message="half way")
    return {"echo": dict(ctx.parameters), "attempt": ctx.attempt}


@handlers.register("file_extraction")
def flaky(ctx: JobContext) -> dict[str, Any]:
    """Fail until attempt ``ok_on``; then succeed. With ``fatal``, raise an error
    that says a retry cannot help; with ``unready``, fail with a non-retryable
    error about the worker's setup or the dataset's state instead of ``OSError``."""
    if ctx.parameters.get("fatal"):
        raise InvalidInput(f"bad parameters on attempt {ctx.attempt}")
    if ctx.attempt < ctx.parameters.get("ok_on", 10**9):
        unready = ctx.parameters.get("unready")
        if unready == "configuration":  # a worker set up wrongly, then fixed
            raise ConfigurationError(f"no SECRET_KEY on attempt {ctx.attempt}")
        if unready == "dataset":  # the dataset was busy with another step
            raise DatasetConflict(f"dataset busy on attempt {ctx.attempt}")
        raise OSError(f"transient failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@handlers.register("dataset_conversion")
def hang(ctx: JobContext) -> None:
    """Ignore every signal to stop: a handler that hangs (bounded, so threads end)."""
    time.sleep(ctx.parameters.get("seconds", 5.0))


@handlers.register("data_compression")
def slow_cooperative(ctx: JobContext) -> dict[str, Any]:
    """Work in small steps, checking for cancellation; write a marker when started."""
    marker = ctx.parameters.get("marker")
    if marker:
        Path(marker).write_text(str(os.getpid()))
    steps = int(ctx.parameters.get("steps", 100))
    for i in range(steps):
        ctx.sleep(ctx.parameters.get("step_seconds", 0.05))
        ctx.report(100.0 * (i + 1) / steps, message=f"step {i + 1}")
    return {"steps": steps}


@handlers.register("backup_creation")
def bad_result(ctx: JobContext) -> object:
    """Return something that is not JSON."""
    return {"when": object()}


@handlers.register("google_sync")
def exits(ctx: JobContext) -> None:
    """Raise SystemExit, which is not an Exception (a badly behaved library)."""
    raise SystemExit(3)
