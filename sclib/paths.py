"""Paths from users, accepted only when they cannot leave their folder; and
where sclib keeps its own per-user state.

A path a user sends (a file name, a ``relative_path``, an archive entry) is
*refused*, not silently repaired, when it could escape the folder it belongs in:
an absolute path, a ``..`` component, a backslash (a Windows separator a later tool
may honour), a NUL or another control character. What passes is a clean relative
POSIX path of ordinary names; joined under its folder it cannot escape it, and
:func:`safe_join` checks that once more after resolving links.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from urllib.parse import SplitResult, urlsplit

from sclib.errors import InvalidInput

__all__ = ["safe_filename", "safe_join", "safe_relative_path", "user_state_dir"]

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_MAX_NAME = 255
_MAX_PATH = 1024


def _check_part(part: str, field: str, value: str) -> None:
    if part in ("", ".", ".."):
        raise InvalidInput(
            f"{field} {value!r} is not allowed: it must be a relative path of "
            f"ordinary names (no empty, '.' or '..' parts)"
        )
    if len(part.encode()) > _MAX_NAME:
        raise InvalidInput(f"{field}: the name {part[:40]!r}... is too long")


def safe_relative_path(value: str, field: str = "relative_path") -> str:
    """``value`` as a clean relative POSIX path, or :class:`InvalidInput`.

    Leading and trailing slashes are not forgiven on purpose: ``/etc`` is an
    absolute path, and the caller should hear that it was refused.
    """
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string")
    if value == "":
        return ""
    if CONTROL_CHARS.search(value) or "\\" in value:
        raise InvalidInput(
            f"{field} {value!r} contains a backslash or a control character"
        )
    if len(value.encode()) > _MAX_PATH:
        raise InvalidInput(f"{field} is longer than {_MAX_PATH} bytes")
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise InvalidInput(f"{field} {value!r} is absolute; give a relative path")
    parts = value.rstrip("/").split("/")
    for part in parts:
        _check_part(part, field, value)
    return str(PurePosixPath(*parts))


def safe_filename(value: str, field: str = "filename") -> str:
    """A single file name (no separators), or :class:`InvalidInput`."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field} must be a non-empty file name")
    if "/" in value or "\\" in value:
        raise InvalidInput(
            f"{field} {value!r} contains a path separator; send the folder as "
            f"relative_path"
        )
    if CONTROL_CHARS.search(value):
        raise InvalidInput(f"{field} {value!r} contains a control character")
    _check_part(value, field, value)
    return value


def safe_join(root: Path, *relative: str) -> Path:
    """``root`` joined with already-checked relative parts; refuses to leave it."""
    target = root.joinpath(*[r for r in relative if r])
    resolved_root = root.resolve()
    resolved = target.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise InvalidInput(f"path {'/'.join(relative)!r} leaves its folder")
    return target


def user_state_dir() -> Path:
    """The folder where sclib keeps per-user state that must survive a restart
    (the transfer engine's sessions): ``$SCLIB_STATE_DIR`` if set, otherwise the
    platform's convention for application state (platformdirs): on Linux
    ``$XDG_STATE_HOME/sclib`` or ``~/.local/state/sclib``, on macOS
    ``~/Library/Application Support/sclib``, on Windows
    ``%LOCALAPPDATA%\\sclib``. It is not created here."""
    override = os.environ.get("SCLIB_STATE_DIR")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_state_dir("sclib", appauthor=False))


def safe_url(url: str) -> str:
    """``url`` fit for a log line or an error message: no user name or password,
    and every query value replaced by ``***`` (query strings often carry tokens
    and signatures)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<unparsable URL>"
    query = "&".join(
        (p.partition("=")[0] + "=***") if "=" in p else p
        for p in parts.query.split("&")
        if p
    )
    return SplitResult(parts.scheme, netloc, parts.path, query, "").geturl()
