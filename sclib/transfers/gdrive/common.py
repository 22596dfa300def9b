"""What the Drive source's parts share: Drive's MIME types and export table,
file ids, names, and Drive's error answers (see :mod:`sclib.transfers.gdrive`)."""

from __future__ import annotations

import json
import logging
import mimetypes
import posixpath
import re
from collections.abc import Mapping

from sclib.errors import (
    InvalidInput,
    SourceError,
)

log = logging.getLogger("sclib.transfers.gdrive")

FOLDER_MIME = "application/vnd.google-apps.folder"
SHORTCUT_MIME = "application/vnd.google-apps.shortcut"
GOOGLE_APPS_PREFIX = "application/vnd.google-apps."
DRIVE_READONLY_SCOPE = "https://www.googleapis.com/auth/drive.readonly"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL

_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

#: Google Docs MIME type -> the MIME type it is exported to by default
DEFAULT_EXPORT_FORMATS: Mapping[str, str] = {
    "application/vnd.google-apps.document": _DOCX,
    "application/vnd.google-apps.spreadsheet": _XLSX,
    "application/vnd.google-apps.presentation": _PPTX,
    "application/vnd.google-apps.drawing": "image/png",
    "application/vnd.google-apps.script": "application/vnd.google-apps.script+json",
}
#: what other exportable Google types are exported to
DEFAULT_FALLBACK_EXPORT = "application/pdf"
#: Google types that have no content to download or export
NOT_EXPORTABLE: frozenset[str] = frozenset(
    GOOGLE_APPS_PREFIX + name
    for name in (
        "folder",
        "shortcut",
        "form",
        "site",
        "map",
        "fusiontable",
        "jam",
        "drive-sdk",
        "photo",
        "audio",
        "video",
        "unknown",
        "file",
    )
)
#: export MIME type -> file extension (others are asked of :mod:`mimetypes`)
_EXTENSIONS: Mapping[str, str] = {
    _DOCX: "docx",
    _XLSX: "xlsx",
    _PPTX: "pptx",
    "application/pdf": "pdf",
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.presentation": "odp",
    "application/x-vnd.oasis.opendocument.spreadsheet": "ods",
    "application/rtf": "rtf",
    "text/plain": "txt",
    "text/html": "html",
    "application/zip": "zip",
    "application/epub+zip": "epub",
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",
    "text/markdown": "md",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/svg+xml": "svg",
    "application/vnd.google-apps.script+json": "json",
}

_FILE_FIELDS = (
    "id,name,mimeType,size,md5Checksum,modifiedTime,version,headRevisionId,"
    "createdTime,driveId,trashed,shortcutDetails(targetId,targetMimeType)"
)
_CHECK_FIELDS = "id,mimeType,size,md5Checksum,modifiedTime,version,headRevisionId"
_LIST_FIELDS = (
    "nextPageToken,files(id,name,mimeType,size,md5Checksum,modifiedTime,version,"
    "headRevisionId,createdTime,shortcutDetails(targetId,targetMimeType))"
)
_RATE_LIMIT_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "backendError", "internalError"}
)
_ID = re.compile(r"[A-Za-z0-9_-]+")
_UNSAFE_CHARS = re.compile(r"[/\\\x00-\x1f\x7f]")
_MAX_ERROR_BODY = 64 * 1024
_MIB = 1024 * 1024


def drive_file_id(url: str) -> str:
    """The file or folder id in ``gdrive://<id>``."""
    scheme, sep, rest = url.partition("://")
    file_id = rest.rstrip("/")
    if not sep or scheme.lower() != "gdrive" or not _ID.fullmatch(file_id):
        raise InvalidInput(
            f"not a Google Drive URL: {url!r}; expected gdrive://<file-or-folder-id>"
        )
    return file_id


def _permanent(message: str) -> SourceError:
    """A :class:`SourceError` that trying again will not cure."""
    error = SourceError(message)
    error.retryable = False
    return error


def _drive_error(body: bytes) -> tuple[str, str]:
    """Drive's (reason, message) from an error body; empty strings if absent."""
    try:
        payload = json.loads(body)
    except ValueError:
        return "", ""
    if not isinstance(payload, dict) or not isinstance(payload.get("error"), dict):
        return "", ""
    error = payload["error"]
    message = str(error.get("message") or "")[:300]
    reason = ""
    errors = error.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        reason = str(errors[0].get("reason") or "")
    return reason[:80], message


def _safe_name(name: str, fallback: str) -> str:
    """A file name usable as one path component."""
    cleaned = _UNSAFE_CHARS.sub("_", name)
    if cleaned in ("", ".", ".."):
        return "_" * len(cleaned) if cleaned else fallback
    return cleaned


def _extension(mime: str) -> str:
    ext = _EXTENSIONS.get(mime)
    if ext is None:
        guessed = mimetypes.guess_extension(mime, strict=False)
        ext = guessed.lstrip(".") if guessed else ""
    return ext


def _with_suffix(name: str, n: int) -> str:
    stem, ext = posixpath.splitext(name)
    return f"{stem} ({n}){ext}"
