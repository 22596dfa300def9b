"""Source plugins: where bytes come from, by URL scheme.

A :class:`Source` knows one family of URLs (``file://``, ``s3://``, ``https://``...).
It can describe an object (:meth:`Source.stat`), list a folder or prefix
(:meth:`Source.walk`), and read any byte range of an object (:meth:`Source.read`),
refusing with :class:`~sclib.errors.SourceChanged` when the object is no longer
the version that was described. That last rule is what makes resuming safe: a
resumed transfer never mixes two versions of a file.

Plugins are found, in order, in: the runtime registry (:func:`register`), the
entry-point group ``sclib.sources`` (for third-party packages), and the built-in
table below, which imports each plugin lazily and names the extra to install when
its dependency is missing. Any other protocol that fsspec knows works through
:class:`FsspecSource` as a fallback.

Credentials are passed as options when the source is opened; a source must never
log them or put them in anything it returns (:attr:`SourceObject.url` included).
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar

from sclib.errors import (
    ConfigurationError,
    InvalidInput,
    MissingDependency,
    SclibError,
    SourceChanged,
    SourceError,
    SourceNotFound,
    UnsupportedScheme,
)

__all__ = [
    "FsspecSource",
    "Source",
    "SourceObject",
    "available_schemes",
    "check_url",
    "open_source",
    "register",
    "scheme_of",
]


@dataclass(frozen=True, slots=True)
class SourceObject:
    """One object a source can read.

    :param url: the object's URL, without credentials.
    :param key: its path relative to the folder or prefix being copied, with ``/``
        separators; ``""`` when a single object is copied.
    :param size: its size in bytes.
    :param identity: what identifies this version (``etag``, ``mtime``,
        ``version_id``, ``generation``, ``md5`` ...). Two reads with equal identity
        read the same bytes; a resumed transfer compares it.
    :param content_type: the MIME type, when the source knows it.
    :param name: the file name to use when the object is copied on its own into a
        folder, when the URL does not say it (a Drive file id, a symlink); default:
        the last part of the URL's path.
    """

    url: str
    key: str
    size: int
    identity: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    name: str | None = None


class Source(ABC):
    """Reads objects from one family of URLs. Subclasses must be thread-safe:
    the engine reads several ranges of one object at once."""

    #: URL schemes this source handles, e.g. ``("s3",)``.
    schemes: ClassVar[tuple[str, ...]] = ()

    def supports_ranges(self, obj: SourceObject) -> bool:
        """Whether :meth:`read` can start at any offset for ``obj``.

        If not, the engine reads the object front to back, one :meth:`read` call
        after the other in order, from one thread; the source may then serve the
        reads from a single streaming response. Resuming such an object restarts
        it from the beginning (the bytes already verified are skipped, not kept).
        """
        return True

    @abstractmethod
    def stat(self, url: str) -> SourceObject:
        """Describe one object; :class:`~sclib.errors.SourceNotFound` if missing."""

    @abstractmethod
    def walk(self, url: str) -> Iterator[SourceObject]:
        """Every object under the folder or prefix ``url``, recursively, each with its
        ``key`` relative to ``url``. A single object yields itself with ``key=""``."""

    def reads_in_order(self, obj: SourceObject) -> bool:
        """Whether the engine should read ``obj``'s chunks in file order from one
        thread (handing them to the chunk threads) even though the source serves
        ranges: for sources where one request can serve many chunks in a row
        (S3 keeps a GET open across chunks). Chunks a resumed transfer already
        has are still skipped where the destination can read them back (else
        they are read here too, in order). Default: no, every chunk thread reads
        its own range."""
        return False

    @abstractmethod
    def read(self, obj: SourceObject, offset: int, length: int) -> bytes:
        """``length`` bytes of ``obj`` from ``offset`` (fewer only at the end).

        Raises :class:`~sclib.errors.SourceChanged` if the object is no longer the
        version ``obj`` describes (where the protocol can tell), and
        :class:`~sclib.errors.SourceError` for failures worth retrying.
        """

    def read_into(self, obj: SourceObject, offset: int, buf: memoryview) -> int:
        """Read into ``buf`` (``len(buf)`` bytes, fewer only at the end); return the
        count. The engine reuses a few buffers this way, so memory does not churn;
        sources that can read into memory directly (local files) override it."""
        data = self.read(obj, offset, len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: "scheme:" at the start of a text, two characters or more (so "C:/x" is a path)
_SCHEME_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):(/?)(?!/)")


def check_url(url: str) -> None:
    """Refuse a text that looks like a URL but is not one.

    ``s3:/bucket/x`` (one slash) or ``s3:bucket/x`` would otherwise be taken for a
    local path, and a copy would quietly create a folder named ``s3:``. A scheme
    sclib or fsspec knows, followed by anything but ``//``, is an error; so is any
    ``word:/`` with a single slash. A local path that really starts so can be
    written ``./s3:/...``.
    """
    match = _SCHEME_PREFIX.match(url)
    if match is None:
        return
    scheme, slash = match.group(1).lower(), match.group(2)
    if not slash and scheme not in _known_schemes():
        return
    rest = url[match.end() :]
    raise InvalidInput(
        f"{url!r} is not a URL: {match.group(1) + ':'!r} takes two slashes; write "
        f"{scheme}://{rest} (or ./{url} for a local path of that name)"
    )


def _known_schemes() -> set[str]:
    names = set(_BUILTIN) | set(_registry)
    try:
        from fsspec.registry import known_implementations

        names |= set(known_implementations)
    except ImportError:  # pragma: no cover - fsspec is a core dependency
        pass
    return names


def scheme_of(url: str) -> str:
    """The URL's scheme, lower case; a bare path is ``file``.

    Raises :class:`~sclib.errors.InvalidInput` for a malformed URL (see
    :func:`check_url`).
    """
    if "://" not in url:
        check_url(url)
        return "file"
    return url.split("://", 1)[0].lower()


class FsspecSource(Source):
    """Any fsspec filesystem as a source (the fallback for unknown protocols).

    ``options`` go to ``fsspec.filesystem(protocol, **options)``. The identity of an
    object is taken from what ``fs.info`` reports (ETag, mtime, version, generation,
    checksum); reads use ``fs.cat_file(path, start, end)``.
    """

    #: info() keys that identify a version, by the name the identity gets
    identity_keys: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "etag": ("ETag", "etag"),
        "mtime": ("mtime", "LastModified", "last_modified", "updated", "modified"),
        "version_id": ("VersionId", "version_id"),
        "generation": ("generation",),
        "md5": ("md5Hash", "md5"),
        "crc32c": ("crc32c",),
    }

    def __init__(
        self,
        protocol: str,
        fs: Any | None = None,
        *,
        url: str | None = None,
        **options: Any,
    ) -> None:
        if fs is None:
            fs = _fsspec_filesystem(protocol, url, options)
        self.protocol = protocol
        self.fs = fs

    def _path(self, url: str) -> str:
        return str(self.fs._strip_protocol(url))

    def _url(self, path: str) -> str:
        return str(self.fs.unstrip_protocol(path))

    def _identity(self, info: Mapping[str, Any]) -> dict[str, str]:
        identity: dict[str, str] = {}
        for name, keys in self.identity_keys.items():
            for key in keys:
                value = info.get(key)
                if value not in (None, ""):
                    identity[name] = str(value)
                    break
        return identity

    def _object(self, info: Mapping[str, Any], key: str) -> SourceObject:
        return SourceObject(
            url=self._url(info["name"]),
            key=key,
            size=int(info.get("size") or 0),
            identity=self._identity(info),
            content_type=info.get("ContentType") or info.get("contentType"),
        )

    def library_error(self, exc: Exception, what: str) -> SclibError | None:
        """sclib's error for an exception the filesystem's library raised (its
        own classes, not OSError), or ``None`` to let it through. Plugins over a
        client library override this to give hints (credentials, endpoints)."""
        return None

    @staticmethod
    def raised_by(exc: BaseException, *packages: str) -> bool:
        """Whether ``exc`` is an OSError or a class from one of ``packages``
        (top-level names): what :meth:`library_error` should translate."""
        top = type(exc).__module__.partition(".")[0]
        return isinstance(exc, OSError) or top in packages

    def _translated(self, exc: Exception, what: str) -> SclibError | None:
        """The error to raise for ``exc``; ``None`` for a programming error the
        library did not claim (it then propagates as it is)."""
        found = self.library_error(exc, what)
        if found is not None:
            return found
        if isinstance(exc, FileNotFoundError):
            return SourceNotFound(f"{self.protocol} source: {what}: it does not exist")
        if isinstance(exc, OSError):
            return SourceError(f"{what}: {type(exc).__name__}: {exc}")
        return None

    def _info(self, path: str) -> dict[str, Any]:
        try:
            info: dict[str, Any] = self.fs.info(path)
        except FileNotFoundError as exc:
            raise SourceNotFound(
                f"{self.protocol} source {path!r} does not exist"
            ) from exc
        except SclibError:
            raise
        except Exception as exc:  # the library's own errors, translated once here
            error = self._translated(exc, f"cannot read {path!r}")
            if error is None:
                raise
            raise error from exc
        return info

    def stat(self, url: str) -> SourceObject:
        info = self._info(self._path(url))
        if info.get("type") == "directory":
            raise SourceNotFound(
                f"{url!r} is a folder; copy it as a folder, not as one object"
            )
        return self._object(info, "")

    def walk(self, url: str) -> Iterator[SourceObject]:
        root = self._path(url).rstrip("/")
        info = self._info(root)
        if info.get("type") != "directory":
            yield self._object(info, "")
            return
        try:
            found = self.fs.find(root, detail=True)
        except SclibError:
            raise
        except Exception as exc:  # the library's own errors, translated once here
            error = self._translated(exc, f"cannot list {url!r}")
            if error is None:
                raise
            raise error from exc
        for path in sorted(found):
            entry = found[path]
            if entry.get("type") == "directory":
                continue
            key = path[len(root) :].lstrip("/")
            yield self._object(entry, key)

    def read(self, obj: SourceObject, offset: int, length: int) -> bytes:
        path = self._path(obj.url)
        if obj.identity:
            self.check_unchanged(obj)
        try:
            data: bytes = self.fs.cat_file(path, start=offset, end=offset + length)
        except FileNotFoundError as exc:
            raise SourceChanged(f"{obj.url} disappeared during the transfer") from exc
        except OSError as exc:
            raise SourceError(f"reading {obj.url} at {offset}: {exc}") from exc
        return data

    def check_unchanged(self, obj: SourceObject) -> None:
        """Raise :class:`SourceChanged` if ``obj`` is no longer the same version.

        The generic check re-reads ``info`` and compares identity and size; plugins
        whose protocol supports conditional reads (If-Match, generation match)
        should override :meth:`read` and do it in the same request instead.
        """
        try:
            info = self.fs.info(self._path(obj.url))
        except FileNotFoundError as exc:
            raise SourceChanged(f"{obj.url} disappeared during the transfer") from exc
        except OSError as exc:
            raise SourceError(f"cannot check {obj.url}: {exc}") from exc
        now = self._object(info, obj.key)
        if now.size != obj.size or any(
            now.identity.get(k) != v for k, v in obj.identity.items()
        ):
            raise SourceChanged(
                f"{obj.url} changed since the transfer started (size {obj.size} -> "
                f"{now.size}, identity {dict(obj.identity)} -> {dict(now.identity)}); "
                "start a new transfer to copy the new version"
            )


#: import name -> what to pip install, where the two differ
_PIP_NAMES = {"paramiko": "paramiko (or sshfs)"}


def _fsspec_filesystem(
    protocol: str, url: str | None, options: Mapping[str, Any]
) -> Any:
    """``fsspec.filesystem(protocol, ...)`` with what the URL says (host, port,
    user: ``ftp://user@host:21/x``) under the caller's options, and errors that
    say what to install or what is wrong."""
    import fsspec

    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        missing = getattr(exc.__cause__, "name", None) or exc.name or protocol
        package = missing.split(".")[0]
        raise MissingDependency(
            package,
            None,
            f"The {protocol!r} source",
            install=_PIP_NAMES.get(package, package),
        ) from exc
    except ValueError as exc:
        raise UnsupportedScheme(f"fsspec has no filesystem for {protocol!r}") from exc
    kwargs: dict[str, Any] = {}
    if url is not None:
        try:
            kwargs.update(cls._get_kwargs_from_urls(url))
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidInput(
                f"cannot read {url!r} as a {protocol} URL: {exc}"
            ) from exc
    kwargs.update(options)
    try:
        return cls(**kwargs)
    except ImportError as exc:
        package = (exc.name or protocol).split(".")[0]
        raise MissingDependency(
            package, None, f"The {protocol!r} source", install=package
        ) from exc
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"cannot open an fsspec filesystem for {protocol!r}: {exc}"
        ) from exc
    except OSError as exc:
        where = f" for {url}" if url else ""
        raise SourceError(
            f"cannot connect to the {protocol} server{where}: {exc}"
        ) from exc


# -- the registry ---------------------------------------------------------------

SourceFactory = Callable[..., Source]

#: scheme -> "module:attribute" of a Source class, imported on first use
_BUILTIN: dict[str, str] = {
    "file": "sclib.transfers.local:LocalSource",
    "local": "sclib.transfers.local:LocalSource",
    "s3": "sclib.transfers.s3:S3Source",
    "s3a": "sclib.transfers.s3:S3Source",
    "gs": "sclib.transfers.gcs:GCSSource",
    "gcs": "sclib.transfers.gcs:GCSSource",
    "gdrive": "sclib.transfers.gdrive:DriveSource",
    "http": "sclib.transfers.http:HTTPSource",
    "https": "sclib.transfers.http:HTTPSource",
}
#: scheme -> the sclib extra that installs its dependency
_EXTRAS: dict[str, str] = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "gdrive": "gdrive",
}

_registry: dict[str, SourceFactory] = {}
_lock = threading.Lock()


def register(scheme: str, factory: SourceFactory) -> None:
    """Use ``factory(**options)`` for URLs with ``scheme`` (overrides built-ins)."""
    if not scheme or not scheme.replace("+", "").replace("-", "").isalnum():
        raise ConfigurationError(f"bad URL scheme {scheme!r}")
    with _lock:
        _registry[scheme.lower()] = factory


def _entry_point(scheme: str) -> SourceFactory | None:
    for ep in entry_points(group="sclib.sources"):
        if ep.name.lower() == scheme:
            loaded: SourceFactory = ep.load()
            return loaded
    return None


def _builtin(scheme: str) -> SourceFactory | None:
    target = _BUILTIN.get(scheme)
    if target is None:
        return None
    module_name, _, attr = target.partition(":")
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MissingDependency(
            exc.name or module_name,
            _EXTRAS.get(scheme, "all"),
            f"The {scheme!r} source",
        ) from exc
    factory: SourceFactory = getattr(module, attr)
    return factory


def open_source(url: str, **options: Any) -> Source:
    """A :class:`Source` for ``url``'s scheme, opened with ``options``."""
    scheme = scheme_of(url)
    with _lock:
        factory = _registry.get(scheme)
    factory = factory or _entry_point(scheme) or _builtin(scheme)
    if factory is not None:
        return factory(**options)
    try:
        import fsspec

        known = fsspec.available_protocols()
    except ImportError:  # pragma: no cover - depends on the install
        known = []
    if scheme in known:
        return FsspecSource(scheme, url=url, **options)
    raise UnsupportedScheme(
        f"no source plugin for {scheme!r} URLs ({url.split('://', 1)[0]}://...); "
        f"built in: {', '.join(sorted(_BUILTIN))}; others can be added with "
        "sclib.transfers.sources.register() or the 'sclib.sources' entry point"
    )


def available_schemes() -> list[str]:
    """Schemes with a registered, entry-point or built-in plugin."""
    names = set(_BUILTIN) | set(_registry)
    names |= {ep.name for ep in entry_points(group="sclib.sources")}
    return sorted(names)
