"""Job stores, chosen by URL.

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the embedded
  default; the SQLAlchemy spelling: three slashes, then the path).
* ``mongodb://host[:port][/database][?options]`` and ``mongodb+srv://...`` (needs the
  ``mongo`` extra). The database defaults to ``scientistcloud`` and the collection to
  ``jobs``, as in the seed; pass ``database=`` / ``collection=`` to change them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from sclib.backends.base import JobFilter, JobStore
from sclib.errors import ConfigurationError, MissingDependency

__all__ = ["JobFilter", "JobStore", "open_store", "parse_backend_url"]

_EXPECTED = (
    "expected 'sqlite:///path/to/jobs.db' (four slashes for an absolute path: "
    "'sqlite:////var/lib/sclib/jobs.db') or 'mongodb://host:27017/database'"
)


def parse_backend_url(url: str) -> tuple[str, str]:
    """Check a backend URL; return ``("sqlite", path)`` or ``("mongodb", url)``."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"malformed backend URL {url!r}: {_EXPECTED}")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        rest = url[len("sqlite://") :]
        path = unquote(urlsplit("file://" + rest).path[1:]) if rest else ""
        if not rest.startswith("/") or not path:
            raise ConfigurationError(
                f"malformed backend URL {url!r}: the SQLite path is missing; "
                f"{_EXPECTED}"
            )
        return "sqlite", path
    if scheme in ("mongodb", "mongodb+srv"):
        return "mongodb", url
    raise ConfigurationError(
        f"unsupported backend URL scheme {scheme!r} in {url!r}: {_EXPECTED}"
    )


def open_store(url: str, **options: Any) -> JobStore:
    """Open the job store that ``url`` names; ``options`` go to its constructor."""
    kind, target = parse_backend_url(url)
    if kind == "sqlite":
        from sclib.backends.sqlite import SQLiteJobStore

        return SQLiteJobStore(target, **options)
    try:
        from sclib.backends.mongo import MongoJobStore
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingDependency("pymongo", "mongo", "The MongoDB backend") from exc
    return MongoJobStore.from_url(target, **options)
