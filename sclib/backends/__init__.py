"""The stores, chosen by URL: jobs (:func:`open_store`), transfer sessions
(:func:`open_session_store`, :func:`default_session_store`) and datasets
(:func:`open_dataset_store`).

The interfaces live here too, below the cores that use them
(:mod:`sclib.backends.base` for jobs, :mod:`sclib.backends.sessions`,
:mod:`sclib.backends.datasets`), so an implementation imports its interface and
nothing imports an implementation but these factories.


* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the embedded
  default; the SQLAlchemy spelling: three slashes, then the path).
* ``mongodb://host[:port][/database][?options]`` and ``mongodb+srv://...`` (needs the
  ``mongo`` extra). The database defaults to ``scientistcloud`` and the collection to
  ``jobs``, as in the seed; pass ``database=`` / ``collection=`` to change them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from sclib.backends.base import JobFilter, JobStore
from sclib.errors import ConfigurationError, MissingDependency

if TYPE_CHECKING:
    from sclib.backends.datasets import DatasetStore
    from sclib.backends.sessions import SessionStore

__all__ = [
    "JobFilter",
    "JobStore",
    "default_session_store",
    "open_dataset_store",
    "open_session_store",
    "open_store",
    "parse_backend_url",
]

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


def _mongo_missing(exc: ImportError) -> MissingDependency:
    return MissingDependency("pymongo", "mongo", "The MongoDB backend")


def open_store(url: str, **options: Any) -> JobStore:
    """Open the job store that ``url`` names; ``options`` go to its constructor."""
    kind, target = parse_backend_url(url)
    if kind == "sqlite":
        from sclib.backends.sqlite import SQLiteJobStore

        return SQLiteJobStore(target, **options)
    try:
        from sclib.backends.mongo import MongoJobStore
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise _mongo_missing(exc) from exc
    return MongoJobStore.from_url(target, **options)


def open_session_store(url: str, **options: Any) -> SessionStore:
    """The transfer session store at ``url`` (the URL forms of :func:`open_store`)."""
    kind, target = parse_backend_url(url)
    if kind == "sqlite":
        from sclib.backends.sqlite_sessions import SQLiteSessionStore

        return SQLiteSessionStore(target, **options)
    try:
        from sclib.backends.mongo_sessions import MongoSessionStore
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise _mongo_missing(exc) from exc
    return MongoSessionStore.from_url(target, **options)


def open_dataset_store(url: str, **options: Any) -> DatasetStore:
    """The dataset store at ``url`` (the URL forms of :func:`open_store`);
    ``options`` go to the store's constructor."""
    kind, target = parse_backend_url(url)
    if kind == "sqlite":
        from sclib.backends.sqlite_datasets import SQLiteDatasetStore

        return SQLiteDatasetStore(target, **options)
    try:
        from sclib.backends.mongo_datasets import MongoDatasetStore
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise _mongo_missing(exc) from exc
    return MongoDatasetStore.from_url(target, **options)


def default_session_store() -> SessionStore:
    """The session store :class:`~sclib.transfers.TransferEngine` uses when given
    none: ``transfers.sqlite3`` in :func:`sclib.paths.user_state_dir` (created
    if needed), shared by every process of the user, so a copy resumes in any
    later process and a finished file is not sent again."""
    from sclib.backends.sqlite_sessions import SQLiteSessionStore
    from sclib.paths import user_state_dir

    folder = user_state_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the transfer state folder {folder} ({exc.strerror}): "
            "set SCLIB_STATE_DIR to a writable folder, or pass "
            "sessions=MemorySessionStore() to keep no state"
        ) from exc
    return SQLiteSessionStore(str(folder / "transfers.sqlite3"))
