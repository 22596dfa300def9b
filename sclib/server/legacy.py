"""The original ScientistCloud API's vocabulary, for the legacy routes.

The ``/api/upload/...`` routes answer as the original servers did (a superset:
every key they had, with its meaning and type, and sclib's keys beside them), so
the original clients and scripts run unchanged. This module holds what those
answers need: the original's status words, its size units, its info documents
(``/``, ``/health``, ``/api/upload/limits``, ...), and the status codes it gave
for errors. ``/api/v1`` keeps sclib's own vocabulary. ``docs/compat.md`` lists
every route and every deliberate difference.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sclib.errors import InvalidInput, SclibError
from sclib.jobtypes import JobStatus, SensorType
from sclib.models import Job
from sclib.settings import Settings
from sclib.version import __version__

__all__ = [
    "LEGACY_STATUSES",
    "estimated_seconds",
    "health_document",
    "large_health_document",
    "legacy_status",
    "limits_document",
    "original_codes",
    "root_document",
    "sources_document",
    "status_filter",
    "status_word",
]

MIB = 1024**2
TIB = 1024**4

#: The original API's job status words (its ``UploadStatus``).
LEGACY_STATUSES = (
    "queued",
    "initializing",
    "uploading",
    "processing",
    "verifying",
    "completed",
    "failed",
    "cancelled",
    "paused",
)

#: legacy status word -> the sclib job status it selects in a list filter
_FILTER = {
    "queued": JobStatus.PENDING,
    "initializing": JobStatus.RUNNING,
    "uploading": JobStatus.RUNNING,
    "processing": JobStatus.RUNNING,
    "verifying": JobStatus.RUNNING,
    "completed": JobStatus.COMPLETED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}

#: the source types the original listed, as sclib supports them
SOURCE_TYPES = ["local", "google_drive", "s3", "url", "gcs"]


def legacy_status(job: Job) -> str:
    """The original's word for a job's state.

    ``pending`` is ``queued``. A running import is ``uploading`` (its bytes are
    arriving); a running job on bytes already received (the verification of an
    upload, a conversion) is ``processing``. The finished states keep their
    names.
    """
    status = job.status
    if status is JobStatus.PENDING:
        return "queued"
    if status is JobStatus.RUNNING:
        if job.parameters.get("source") == "import":
            return "uploading"
        return "processing"
    return status.value


def status_word(value: str) -> str:
    """The original's word for a sclib job status value, when only the value is
    at hand (``pending`` is ``queued``, ``running`` is ``processing``)."""
    return {"pending": "queued", "running": "processing"}.get(value, value)


def status_filter(word: str | None) -> str | None:
    """The sclib job status that a ``status`` filter on a legacy route selects:
    the original's words (``queued``, ``uploading``, ...) and sclib's own
    (``pending``, ``running``) both work. ``paused`` selects nothing: sclib has no
    paused jobs; the caller checks for it."""
    if word is None or not word.strip():
        return None
    text = word.strip().lower()
    if text in _FILTER:
        return _FILTER[text].value
    try:
        return JobStatus(text).value
    except ValueError:
        known = ", ".join([*LEGACY_STATUSES, "pending", "running"])
        raise InvalidInput(f"status: unknown status {word!r}; known: {known}") from None


@contextlib.contextmanager
def original_codes(codes: Mapping[type[SclibError], int]) -> Iterator[None]:
    """Answer errors of the given classes with the original's status codes.

    The error keeps its class (and so its ``code`` in the problem document, which
    sclib's client maps back): only the HTTP status changes.
    """
    try:
        yield
    except SclibError as exc:
        if getattr(exc, "http_status", None) is None:  # an inner choice stands
            for cls, status in codes.items():
                if isinstance(exc, cls):
                    exc.http_status = status  # type: ignore[attr-defined]
                    break
        raise


def _mb(size: int) -> float:
    return round(size / MIB, 2)


def _text(number: float) -> str:
    """``100.0`` -> ``"100"``, ``10.5`` -> ``"10.5"``: the original's text values."""
    return f"{number:g}"


def estimated_seconds(size: int) -> int:
    """A rough upload duration in whole seconds (at 50 MB/s, at least 1)."""
    return max(1, round(1.0 + size / (50 * 1000**2)))


def root_document(settings: Settings) -> dict[str, Any]:
    """``GET /``: what this server is (the original Unified and Authenticated
    apps' keys, all text, and sclib's)."""
    return {
        "message": "ScientistCloud Upload API - sclib",
        "version": __version__,
        "description": "Uploads, imports and jobs for ScientistCloud datasets",
        "docs": "/docs",
        "redoc": "/redoc",
        "large_file_threshold_mb": _text(_mb(settings.standard_upload_limit)),
        "authentication": "Token-based authentication supported via "
        "Authorization header or cookies",
        "service": "sclib upload and job API",
        "endpoints": {
            "upload": "/api/upload/upload",
            "large_files": "/api/upload/large/initiate",
            "tus": "/files/",
            "jobs": "/api/v1/jobs",
            "datasets": "/api/v1/datasets",
            "monitor": "/api/v1/monitor/overview",
            "metrics": "/metrics",
            "status_page": "/ui/",
            "health": "/health",
        },
    }


def _now() -> str:
    return datetime.now(UTC).isoformat()


def health_document(settings: Settings) -> dict[str, Any]:
    """``GET /health``'s original keys (text values, as the original's)."""
    return {
        "status": "healthy",
        "timestamp": _now(),
        "upload_type": "unified",
        "large_file_threshold_mb": _text(_mb(settings.standard_upload_limit)),
        "max_file_size_tb": _text(round(settings.max_upload_size / TIB, 3)),
        "version": __version__,
    }


def _folder_bytes(root: Path) -> int:
    """Bytes the files under ``root`` hold on disk (allocated, so sparse
    staging files count what was written)."""
    total = 0
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total


def large_health_document(
    settings: Settings, active_uploads: int, staging: Path, free: int
) -> dict[str, Any]:
    """``GET /health/large-files``: the original's keys (numbers) and sclib's."""
    return {
        "status": "healthy",
        "timestamp": _now(),
        "active_uploads": active_uploads,
        "temp_directory_size_mb": _mb(_folder_bytes(staging)),
        "max_file_size_tb": round(settings.max_upload_size / TIB, 3),
        "chunk_size_mb": _mb(settings.chunk_size),
        "max_file_size": settings.max_upload_size,
        "chunk_size": settings.chunk_size,
        "staging_free_bytes": free,
    }


def limits_document(
    settings: Settings, staging: Path, *, large: bool = False
) -> dict[str, Any]:
    """``GET /api/upload/limits`` (and ``/large/limits`` with ``large``): the
    original's keys with their types, and sclib's."""
    s = settings
    doc: dict[str, Any] = {
        "max_file_size_bytes": s.max_upload_size,
        "max_file_size_tb": round(s.max_upload_size / TIB, 3),
        "large_file_threshold_bytes": s.standard_upload_limit,
        "large_file_threshold_mb": _mb(s.standard_upload_limit),
        "chunk_size_bytes": s.chunk_size,
        "chunk_size_mb": _mb(s.chunk_size),
        "resumable_upload_timeout_days": round(s.upload_expiry_hours / 24, 3),
        "supported_source_types": list(SOURCE_TYPES),
        "temp_directory": str(staging),
        "max_file_size": s.max_upload_size,
        "standard_upload_limit": s.standard_upload_limit,
        "chunk_size": s.chunk_size,
        "max_chunk_size": s.max_chunk_size,
        "upload_expiry_hours": s.upload_expiry_hours,
        "tus_endpoint": "/files/",
        "checksums": ["sha256", "blake3"],
    }
    if large:
        doc["recommended_for_files_larger_than_mb"] = round(
            s.standard_upload_limit / MIB
        )
    return doc


def sources_document(
    settings: Settings, sources: Mapping[str, Mapping[str, list[str]]]
) -> dict[str, Any]:
    """``GET /api/upload/supported-sources``: the original's keys (source and
    sensor names, each source's required and optional ``source_config`` keys) and
    sclib's (``sources``, ``sensors``, ``upload_types``)."""
    required = {"local": ["file"]} | {
        name: list(spec["required"]) for name, spec in sources.items()
    }
    optional = {"local": ["folder", "team_uuid"]} | {
        name: [f for f in spec["fields"] if f not in spec["required"]]
        + ["folder", "team_uuid"]
        for name, spec in sources.items()
    }
    return {
        "source_types": list(SOURCE_TYPES),
        "sensor_types": [s.value for s in SensorType],
        "required_parameters": required,
        "optional_parameters": optional,
        "large_file_threshold_mb": round(settings.standard_upload_limit / MIB),
        "sources": {"local": {"fields": ["file"], "required": ["file"]}}
        | {k: dict(v) for k, v in sources.items()},
        "sensors": [s.value for s in SensorType],
        "upload_types": ["standard", "chunked", "tus"],
    }
