"""HTTP and HTTPS URLs as a source.

An HTTP URL is one object. :meth:`HTTPSource.stat` asks for its size and version
with ``HEAD`` (or, when the server refuses ``HEAD`` or does not say whether it
serves byte ranges, with ``GET`` and ``Range: bytes=0-0``), following redirects.
The version is what the server says about it, ``{"etag": ..., "last_modified":
...}``; a resumed or parallel read checks it on every response, so two versions of
a file are never mixed:

* servers that serve byte ranges get one ``GET`` per chunk with ``Range`` and
  ``If-Range``; a ``200`` answer (the whole *new* file) means the file changed
  and raises :class:`~sclib.errors.SourceChanged`. A weak ETag (``W/"..."``)
  cannot be used in ``If-Range``; the ``Last-Modified`` date is sent instead
  when there is one, and the validators of every ``206`` are compared anyway.
* servers that do not are read front to back from one streaming ``GET`` kept
  open between :meth:`HTTPSource.read` calls.

Addresses are checked with an :class:`~sclib.transfers.ssrf.AddressPolicy` on
every hop of a redirect chain, and the request is then sent *to the address that
was checked* (the URL's host is replaced by the IP, the ``Host`` header and the
TLS server name keep the host name, so certificates are still verified against
it), so a DNS answer that changes between the check and the connection (DNS
rebinding) cannot reach a refused address.

Credentials (an ``Authorization`` header in ``headers``, or a user name and
password in the URL) are sent only to the origin (scheme, host, port) of the URL
given to :meth:`HTTPSource.stat`, never to a host it redirects to, and never
logged or put in an error message or a :class:`SourceObject`. Query strings are
kept in :attr:`SourceObject.url` (a signed URL needs its signature to be read)
but their values are masked in log lines and error messages. Cookies are neither
stored nor sent.
"""

from __future__ import annotations

import base64
import contextlib
import http.cookiejar
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Self

import httpx

from sclib.errors import (
    InvalidInput,
    SourceChanged,
    SourceError,
    SourceNotFound,
)
from sclib.transfers.progress import received
from sclib.transfers.sources import Source, SourceObject
from sclib.transfers.ssrf import AddressPolicy, ResolvedAddress, safe_url

__all__ = ["HTTPSource"]

logger = logging.getLogger(__name__)

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_GONE: Final = frozenset({404, 410})
#: HEAD answers after which a ranged GET is tried instead: HEAD not allowed or not
#: implemented, or refused because a signed URL was signed for GET only
_HEAD_REFUSED: Final = frozenset({400, 401, 403, 405, 501})
#: 4xx answers that trying again later can fix
_RETRYABLE_4XX: Final = frozenset({408, 425, 429})
#: request headers the caller may not set: this source manages them
_RESERVED_HEADERS: Final = frozenset(
    {"host", "range", "if-range", "accept-encoding", "content-length", "cookie"}
)
#: caller headers that are harmless to send to a host a redirect leads to
_PUBLIC_HEADERS: Final = frozenset({"user-agent", "accept", "accept-language"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)
_STREAM_PIECE: Final = 1 << 20

Origin = tuple[str, str, int]


def _origin(url: httpx.URL) -> Origin:
    return (url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme, 0))


def _may_get_credentials(origin: Origin, trusted: Origin) -> bool:
    """Credentials go to the trusted origin, and to its https upgrade."""
    if origin == trusted:
        return True
    return trusted == ("http", origin[1], 80) and origin == ("https", origin[1], 443)


def _shown(url: httpx.URL | str) -> str:
    return safe_url(str(url))


def _identity(headers: httpx.Headers) -> dict[str, str]:
    identity: dict[str, str] = {}
    etag = headers.get("etag")
    if etag:
        identity["etag"] = etag.strip()
    modified = headers.get("last-modified")
    if modified:
        identity["last_modified"] = modified.strip()
    return identity


def _if_range(identity: Mapping[str, str]) -> str | None:
    """The validator to send in ``If-Range``: a strong ETag, else the date."""
    etag = identity.get("etag")
    if etag and not etag.startswith(("W/", "w/")):
        return etag
    return identity.get("last_modified") or None


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _content_type(headers: httpx.Headers) -> str | None:
    value = headers.get("content-type")
    if not value:
        return None
    return value.split(";", 1)[0].strip() or None


def _status_error(
    response: httpx.Response, url: httpx.URL, doing: str
) -> SourceError | SourceNotFound:
    status = response.status_code
    reason = response.reason_phrase or ""
    shown = _shown(url)
    if status in _GONE:
        return SourceNotFound(f"{shown} does not exist (HTTP {status} {reason})")
    if status in (401, 403):
        hint = "; check the credentials passed in the source's headers"
    elif status == 407:
        hint = "; a proxy asks for credentials"
    else:
        hint = ""
    error = SourceError(
        f"{doing} {shown} failed: HTTP {status} {reason}{hint}".replace("  ", " ")
    )
    if 400 <= status < 500 and status not in _RETRYABLE_4XX:
        # the same request will get the same answer: not worth retrying
        error.retryable = False
    return error


def _changed(obj: SourceObject, why: str) -> SourceChanged:
    return SourceChanged(
        f"{_shown(obj.url)} changed since the transfer started ({why}); start a new "
        "transfer to copy the new version"
    )


def _check_validators(obj: SourceObject, headers: httpx.Headers) -> None:
    """Raise :class:`SourceChanged` if a response names another version."""
    now = _identity(headers)
    for key in ("etag", "last_modified"):
        before = obj.identity.get(key)
        after = now.get(key)
        if before and after and before != after:
            name = "ETag" if key == "etag" else "Last-Modified"
            raise _changed(obj, f"{name} {before} -> {after}")


@dataclass(slots=True)
class _Stream:
    """One streaming GET, read front to back across :meth:`HTTPSource.read`."""

    response: httpx.Response
    chunks: Iterator[bytes]
    position: int = 0
    pending: bytes = b""

    def take(self, count: int, arrived: Callable[[int], None] | None = None) -> bytes:
        """Up to ``count`` bytes (fewer only at the end of the body); each piece
        is counted with ``arrived`` as it is taken."""
        out = bytearray(self.pending[:count])
        self.pending = self.pending[count:]
        if arrived is not None and out:
            arrived(len(out))
        while len(out) < count:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            need = count - len(out)
            out += chunk[:need]
            self.pending = chunk[need:]
            if arrived is not None:
                arrived(min(len(chunk), need))
        self.position += len(out)
        return bytes(out)

    def skip(self, count: int) -> int:
        """Drop ``count`` bytes; returns how many were there to drop."""
        dropped = 0
        while dropped < count:
            got = len(self.take(min(count - dropped, _STREAM_PIECE)))
            if not got:
                break
            dropped += got
        return dropped

    def close(self) -> None:
        self.response.close()


@dataclass(slots=True)
class _ObjectState:
    """What a source remembers about one object it described."""

    ranges: bool
    #: the origin credentials may be sent to (that of the URL given to stat)
    trusted: Origin
    #: ``Authorization`` value made from the URL's user name and password
    url_auth: str | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    stream: _Stream | None = None

    def close_stream(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


class HTTPSource(Source):
    """``http://`` and ``https://`` URLs, each one object.

    :param policy: which addresses may be reached; by default
        ``AddressPolicy()``, which refuses loopback, private, link-local, metadata
        and other non-public addresses.
    :param allow_private: shortcut for ``policy=AddressPolicy(allow_private=True)``
        (not both).
    :param timeout: seconds to wait to connect and between bytes received.
    :param headers: request headers, e.g. ``{"Authorization": "Bearer ..."}``.
        Sent only to the origin of the URL being copied; never logged.
    :param max_redirects: how many redirects to follow before giving up.
    :param verify: TLS verification: ``True``, ``False`` or an
        :class:`ssl.SSLContext` (for a private certificate authority).
    :param transport: an httpx transport to send requests through (for tests).

    Thread-safe: one :class:`httpx.Client` is shared by every thread.
    """

    schemes = ("http", "https")
    #: how long a host's checked addresses are reused before resolving it again
    dns_cache_seconds: float = 60.0

    def __init__(
        self,
        *,
        policy: AddressPolicy | None = None,
        allow_private: bool = False,
        timeout: float = 30,
        headers: Mapping[str, str] | None = None,
        max_redirects: int = 10,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.BaseTransport | None = None,
        **unknown: object,
    ) -> None:
        if unknown:
            raise InvalidInput(
                f"unknown option(s) for the http source: {', '.join(sorted(unknown))}"
                "; it takes policy, allow_private, timeout, headers, max_redirects, "
                "verify"
            )
        if policy is not None and allow_private:
            raise InvalidInput(
                "pass either policy or allow_private to the http source, not both "
                "(use AddressPolicy(allow_private=True, ...))"
            )
        if not timeout or timeout <= 0:
            raise InvalidInput(
                f"timeout must be a positive number of seconds, not {timeout!r}"
            )
        if max_redirects < 0:
            raise InvalidInput(f"max_redirects must be 0 or more, not {max_redirects}")
        self.policy = policy or AddressPolicy(allow_private=allow_private)
        self.max_redirects = max_redirects
        self._headers = self._check_headers(headers or {})
        # refuse every cookie: a cookie set by one host must not reach another that
        # shares its address, and downloads do not need them
        jar = http.cookiejar.CookieJar(
            policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
        )
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            verify=verify,
            cookies=jar,
            transport=transport,
        )
        self._objects: dict[str, _ObjectState] = {}
        self._resolved: dict[Origin, tuple[float, list[ResolvedAddress]]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # never show the headers: they may hold credentials
        return f"HTTPSource(policy={self.policy!r})"

    @staticmethod
    def _check_headers(headers: Mapping[str, str]) -> dict[str, str]:
        checked: dict[str, str] = {}
        for name, value in headers.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise InvalidInput(
                    "http source headers must map strings to strings "
                    f"(header {name!r} does not)"
                )
            if name.lower() in _RESERVED_HEADERS:
                raise InvalidInput(
                    f"the http source sets the {name} header itself; remove it from "
                    "headers"
                )
            checked[name] = value
        return checked

    # -- sending ----------------------------------------------------------------

    def _send_once(
        self, method: str, url: httpx.URL, headers: dict[str, str]
    ) -> httpx.Response:
        """Send to one hop, connecting to an address the policy checked."""
        addresses = self._addresses(url)
        host = url.raw_host.decode("ascii")
        netloc = url.netloc.decode("ascii")
        extensions: dict[str, object] = {}
        if url.scheme == "https":
            # verify the certificate against the host name, not the address
            extensions["sni_hostname"] = host
        failure: Exception | None = None
        for address in addresses:
            pinned = url.copy_with(host=str(address.ip))
            request = self._client.build_request(
                method,
                pinned,
                headers={**headers, "Host": netloc},
                extensions=extensions,
            )
            try:
                return self._client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                logger.debug(
                    "cannot connect to %s at %s: %s",
                    host,
                    address.ip,
                    type(exc).__name__,
                )
                failure = exc
            except httpx.HTTPError as exc:
                raise SourceError(
                    f"{method} {_shown(url)} failed: {type(exc).__name__}: {exc}"
                ) from exc
        with self._lock:  # resolve again next time: the addresses may have moved
            self._resolved.pop(_origin(url), None)
        raise SourceError(
            f"cannot connect to {_shown(url)} "
            f"({', '.join(str(a.ip) for a in addresses)}): {failure}"
        ) from failure

    def _addresses(self, url: httpx.URL) -> list[ResolvedAddress]:
        """The addresses of ``url``'s host, checked by the policy; a checked answer
        is reused for :attr:`dns_cache_seconds` (connections still go to it)."""
        key = _origin(url)
        now = time.monotonic()
        with self._lock:
            cached = self._resolved.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        addresses = self.policy.check_url(str(url))
        if self.dns_cache_seconds > 0:
            with self._lock:
                self._resolved[key] = (now + self.dns_cache_seconds, addresses)
        return addresses

    def _fetch(
        self,
        method: str,
        url: httpx.URL,
        extra: Mapping[str, str],
        trusted: Origin,
        url_auth: str | None,
    ) -> tuple[httpx.Response, httpx.URL]:
        """Send ``method url`` and follow redirects, checking every hop.

        Returns the final (streaming, still open) response and its URL. The
        caller's headers and ``url_auth`` go only to hops on the ``trusted``
        origin.
        """
        current = url
        for hop in range(self.max_redirects + 1):
            headers = {"Accept-Encoding": "identity", **extra}
            if _may_get_credentials(_origin(current), trusted):
                headers.update(self._headers)
                if url_auth is not None and not any(
                    k.lower() == "authorization" for k in self._headers
                ):
                    headers["Authorization"] = url_auth
            else:
                headers.update(
                    (k, v)
                    for k, v in self._headers.items()
                    if k.lower() in _PUBLIC_HEADERS
                )
            response = self._send_once(method, current, headers)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS or not location:
                return response, current
            response.close()
            try:
                target = current.join(location).copy_with(userinfo=b"", fragment=None)
            except httpx.InvalidURL as exc:
                raise SourceError(
                    f"{_shown(current)} redirects to a malformed URL: {exc}"
                ) from exc
            logger.debug(
                "%s %s redirects (%d) to %s",
                method,
                _shown(current),
                response.status_code,
                _shown(target),
            )
            if hop == self.max_redirects:
                error = SourceError(
                    f"{_shown(url)} redirects more than {self.max_redirects} times "
                    f"(last to {_shown(target)}); raise max_redirects if this is "
                    "expected"
                )
                error.retryable = False
                raise error
            current = target
        raise AssertionError("unreachable")  # pragma: no cover

    # -- describing ---------------------------------------------------------------

    @staticmethod
    def _parse(url: str) -> tuple[httpx.URL, str | None]:
        """The URL without user info or fragment, and a Basic ``Authorization``
        value made from the user info, if any."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise InvalidInput(f"bad URL {_shown(url)}: {exc}") from exc
        if parsed.scheme not in ("http", "https"):
            raise InvalidInput(
                f"the http source reads http and https URLs, not {_shown(url)}"
            )
        if not parsed.host:
            raise InvalidInput(f"bad URL {_shown(url)}: it names no host")
        auth = None
        if parsed.userinfo:
            pair = f"{parsed.username}:{parsed.password}".encode()
            auth = "Basic " + base64.b64encode(pair).decode("ascii")
        return parsed.copy_with(userinfo=b"", fragment=None), auth

    def _describe(self, url: str) -> tuple[SourceObject, _ObjectState]:
        start, url_auth = self._parse(url)
        trusted = _origin(start)
        response, final = self._fetch("HEAD", start, {}, trusted, url_auth)
        with contextlib.closing(response):
            status = response.status_code
            head = response.headers
        if status in _GONE:
            raise _status_error(response, final, "HEAD")
        head_ok = 200 <= status < 300
        if not head_ok and status not in _HEAD_REFUSED:
            raise _status_error(response, final, "HEAD")
        size = _int_header(head, "content-length") if head_ok else None
        accept = (head.get("accept-ranges") or "").strip().lower() if head_ok else ""
        identity = _identity(head) if head_ok else {}
        content_type = _content_type(head) if head_ok else None
        ranges = accept == "bytes"
        if size is None or (head_ok and not accept) or not head_ok:
            # HEAD refused, no size, or silent about ranges: ask with a ranged GET
            logger.debug(
                "probing %s with a ranged GET (HEAD: %d, Accept-Ranges: %r)",
                _shown(final),
                status,
                accept,
            )
            response, final = self._fetch(
                "GET", start, {"Range": "bytes=0-0"}, trusted, url_auth
            )
            with contextlib.closing(response):
                probe = response.headers
                status = response.status_code
                if status == 206:
                    match = _CONTENT_RANGE.match(probe.get("content-range", ""))
                    total = match.group(3) if match else "*"
                    ranges = True
                    size = int(total) if total != "*" else size
                elif status == 416:
                    match = _UNSATISFIED_RANGE.match(probe.get("content-range", ""))
                    ranges = True
                    size = int(match.group(1)) if match else size
                elif 200 <= status < 300:
                    # the server ignored Range: it does not serve byte ranges
                    ranges = False
                    size = _int_header(probe, "content-length")
                    if size is None and head_ok:
                        size = _int_header(head, "content-length")
                else:
                    raise _status_error(response, final, "GET")
            identity = _identity(probe) or identity
            content_type = _content_type(probe) or content_type
        if size is None:
            error = SourceError(
                f"{_shown(final)} has no known size: the server sends neither "
                "Content-Length nor Content-Range"
            )
            error.retryable = False
            raise error
        obj = SourceObject(
            url=str(final),
            key="",
            size=size,
            identity=identity,
            content_type=content_type,
        )
        if identity.get("etag", "").startswith(("W/", "w/")):
            logger.debug(
                "%s has a weak ETag: If-Range will use Last-Modified instead",
                _shown(final),
            )
        logger.debug(
            "%s: %d bytes, ranges %s, identity %s",
            _shown(final),
            size,
            "yes" if ranges else "no",
            identity,
        )
        return obj, _ObjectState(ranges=ranges, trusted=trusted, url_auth=url_auth)

    def _remember(self, url: str, state: _ObjectState) -> None:
        with self._lock:
            old = self._objects.get(url)
            self._objects[url] = state
        if old is not None and old is not state:
            with old.lock:
                old.close_stream()

    def stat(self, url: str) -> SourceObject:
        """Describe the object at ``url``, following redirects.

        :attr:`SourceObject.url` is the URL after redirects (without user info).
        Raises :class:`~sclib.errors.SourceNotFound` on 404 or 410,
        :class:`~sclib.errors.SourceError` on other failures and
        :class:`~sclib.errors.BlockedAddress` if a hop is refused by the policy.
        """
        obj, state = self._describe(url)
        self._remember(obj.url, state)
        return obj

    def walk(self, url: str) -> Iterator[SourceObject]:
        """An HTTP URL is a single object: yields :meth:`stat` of it."""
        yield self.stat(url)

    def _state(self, obj: SourceObject) -> _ObjectState:
        """The state for ``obj``; an object this source did not describe (a
        transfer resumed in a new process) is described now and must still be
        the same version."""
        with self._lock:
            state = self._objects.get(obj.url)
        if state is not None:
            return state
        now, state = self._describe(obj.url)
        if now.size != obj.size:
            raise _changed(obj, f"size {obj.size} -> {now.size}")
        for key, before in obj.identity.items():
            if now.identity.get(key) != before:
                raise _changed(obj, f"{key} {before} -> {now.identity.get(key)}")
        with self._lock:
            return self._objects.setdefault(obj.url, state)

    def supports_ranges(self, obj: SourceObject) -> bool:
        """Whether the server serves byte ranges of ``obj`` (``Accept-Ranges:
        bytes`` or a ``206`` to the probe); if not, reads must come in order."""
        return self._state(obj).ranges

    # -- reading ------------------------------------------------------------------

    def read(self, obj: SourceObject, offset: int, length: int) -> bytes:
        """``length`` bytes of ``obj`` from ``offset`` (fewer only at the end).

        Raises :class:`~sclib.errors.SourceChanged` if the server now has another
        version, and :class:`~sclib.errors.SourceError` (retryable) on network
        errors and 5xx answers.
        """
        if offset < 0 or length < 0:
            raise InvalidInput(f"bad read of {length} bytes at {offset}")
        end = min(offset + length, obj.size)
        if offset >= end:
            return b""
        state = self._state(obj)
        try:
            if state.ranges:
                return self._read_range(obj, state, offset, end)
            return self._read_stream(obj, state, offset, end)
        except httpx.HTTPError as exc:
            raise SourceError(
                f"reading {_shown(obj.url)} at {offset} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _read_range(
        self, obj: SourceObject, state: _ObjectState, offset: int, end: int
    ) -> bytes:
        extra = {"Range": f"bytes={offset}-{end - 1}"}
        validator = _if_range(obj.identity)
        if validator is not None:
            extra["If-Range"] = validator
        response, final = self._fetch(
            "GET", httpx.URL(obj.url), extra, state.trusted, state.url_auth
        )
        with contextlib.closing(response):
            status = response.status_code
            if status == 206:
                _check_validators(obj, response.headers)
                self._check_content_range(obj, response, final, offset, end)
                return self._body(obj, response, offset, end - offset)
            if 200 <= status < 300:
                now = _identity(response.headers)
                if not obj.identity or now != dict(obj.identity):
                    raise _changed(
                        obj,
                        "the server answered a range request with the whole file; "
                        f"identity {dict(obj.identity)} -> {now}",
                    )
                # same version, yet the whole file: the server ignored Range (or
                # If-Range) although it said it serves byte ranges
                error = SourceError(
                    f"{_shown(final)} answered a range request at {offset} with the "
                    "whole file although its version did not change; the server "
                    "does not serve byte ranges reliably"
                )
                error.retryable = False
                raise error
            if status in _GONE:
                raise _changed(obj, f"it is gone: HTTP {status}")
            if status in (412, 416):
                raise _changed(obj, f"HTTP {status} to a read at {offset}")
            raise _status_error(response, final, "GET")

    @staticmethod
    def _check_content_range(
        obj: SourceObject,
        response: httpx.Response,
        url: httpx.URL,
        offset: int,
        end: int,
    ) -> None:
        header = response.headers.get("content-range", "")
        match = _CONTENT_RANGE.match(header)
        if match is None:
            raise SourceError(
                f"{_shown(url)} sent a 206 without a usable Content-Range ({header!r})"
            )
        first, last, total = int(match.group(1)), int(match.group(2)), match.group(3)
        if total != "*" and int(total) != obj.size:
            raise _changed(obj, f"size {obj.size} -> {total}")
        if (first, last) != (offset, end - 1):
            raise SourceError(
                f"{_shown(url)} sent bytes {first}-{last} for a read of bytes "
                f"{offset}-{end - 1}"
            )

    @staticmethod
    def _body(
        obj: SourceObject, response: httpx.Response, offset: int, expected: int
    ) -> bytes:
        data = bytearray()
        for chunk in response.iter_raw():
            data += chunk
            received(len(chunk))  # progress as the bytes arrive
            if len(data) > expected:
                break
        if len(data) != expected:
            raise SourceError(
                f"reading {_shown(obj.url)} at {offset}: expected {expected} bytes, "
                f"got {len(data)}{' or more' if len(data) > expected else ''}"
            )
        return bytes(data)

    def _open_stream(self, obj: SourceObject, state: _ObjectState) -> _Stream:
        response, final = self._fetch(
            "GET", httpx.URL(obj.url), {}, state.trusted, state.url_auth
        )
        try:
            status = response.status_code
            if status in _GONE:
                raise _changed(obj, f"it is gone: HTTP {status}")
            if not 200 <= status < 300 or status == 206:
                raise _status_error(response, final, "GET")
            _check_validators(obj, response.headers)
            size = _int_header(response.headers, "content-length")
            if size is not None and size != obj.size:
                raise _changed(obj, f"size {obj.size} -> {size}")
        except BaseException:
            response.close()
            raise
        return _Stream(response, response.iter_raw())

    def _read_stream(
        self, obj: SourceObject, state: _ObjectState, offset: int, end: int
    ) -> bytes:
        with state.lock:
            try:
                stream = state.stream
                if stream is None or stream.position != offset:
                    if stream is not None:
                        logger.debug(
                            "%s: read at %d but the stream is at %d; restarting it",
                            _shown(obj.url),
                            offset,
                            stream.position,
                        )
                    state.close_stream()
                    stream = state.stream = self._open_stream(obj, state)
                    if stream.skip(offset) != offset:
                        raise SourceError(
                            f"{_shown(obj.url)} ended before byte {offset}"
                        )
                data = stream.take(end - offset, received)
                if len(data) != end - offset:
                    raise SourceError(
                        f"{_shown(obj.url)} ended after {stream.position} of "
                        f"{obj.size} bytes"
                    )
                if stream.position >= obj.size:
                    state.close_stream()
                return data
            except BaseException:
                state.close_stream()
                raise

    def __enter__(self) -> Self:
        return self

    def close(self) -> None:
        """Close every open stream and the connection pool."""
        with self._lock:
            states = list(self._objects.values())
            self._objects.clear()
        for state in states:
            with state.lock:
                state.close_stream()
        self._client.close()
