"""Log records as text or as JSON lines, with the job they concern.

``sclib serve`` and ``sclib worker`` take ``--log-format json`` (or
``SCLIB_LOG_FORMAT=json``): every record is then one JSON object on one line,
for log shippers (Loki, Elasticsearch, CloudWatch...)::

    {"ts": "2026-12-07T12:00:00.123Z", "level": "INFO", "logger": "sclib.jobs.worker",
     "message": "...", "job_id": "01a2...", "job_type": "dataset_conversion",
     "dataset": "4f9c...", "user": "amy@example.org"}

``job_id``, ``job_type``, ``dataset`` and ``user`` appear where known: inside a
job's handler and while a worker records its outcome (:func:`log_context` sets
them for the thread), or when passed with ``extra=``. uvicorn's access lines
carry ``client``, ``method``, ``path`` and ``status``. An exception is in
``exc`` as one string.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

__all__ = ["CONTEXT_FIELDS", "JsonFormatter", "configure", "log_context"]

#: the fields :func:`log_context` sets, in the order they are written
CONTEXT_FIELDS = ("job_id", "job_type", "dataset", "user")

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "sclib_log_context", default=None
)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: attributes every LogRecord has: anything else came with ``extra=``
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add ``fields`` (``job_id``, ``job_type``, ``dataset``, ``user``) to every
    record logged in this thread or task inside the block; ``None`` skips one."""
    merged = {**(_context.get() or {}), **{k: v for k, v in fields.items() if v}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_context.get() or {})
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        args = record.args
        if (
            record.name == "uvicorn.access"
            and isinstance(args, tuple)
            and len(args) == 5
        ):
            client, method, path, version, status = args  # the access line, as fields
            out.update(client=client, method=method, path=path, status=status)
            out["http_version"] = version
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: int, log_format: str = "text") -> None:
    """Send records at ``level`` and above to stderr, as text or JSON lines;
    uvicorn's loggers go the same way (one format for the whole process)."""
    if log_format not in ("text", "json"):
        from sclib.errors import ConfigurationError

        raise ConfigurationError(
            f"log format must be 'text' or 'json', got {log_format!r}"
        )
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def uvicorn_options(log_format: str) -> dict[str, Any]:
    """Options for ``uvicorn.Config``: for JSON, uvicorn leaves logging alone and
    its loggers hand their records to the root logger's JSON handler; for text,
    uvicorn's own format."""
    return {"log_config": None} if log_format == "json" else {}
