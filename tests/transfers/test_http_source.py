"""HTTPSource against real HTTP servers on 127.0.0.1 (and 127.0.0.2)."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from sclib.errors import (
    BlockedAddress,
    InvalidInput,
    SourceChanged,
    SourceError,
    SourceNotFound,
)
from sclib.transfers.http import HTTPSource
from sclib.transfers.sources import SourceObject, open_source
from sclib.transfers.ssrf import AddressPolicy

try:  # tests/transfers importable as a package (the repository root on sys.path)
    from tests.transfers.http_servers import FileServer, serve
except ImportError:  # tests/transfers itself on sys.path (pytest rootdir mode)
    from http_servers import FileServer, serve  # type: ignore[no-redef,import-not-found]

SECRET = "tok-3f9a1c77e2"  # noqa: S105 - a fake credential the tests look for
QUERY_SECRET = "qsig-81be0d"  # noqa: S105 - a fake signature the tests look for


def _data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + size).randbytes(size)


def _read_all(source: HTTPSource, obj: SourceObject, chunk: int) -> bytes:
    return b"".join(
        source.read(obj, offset, chunk) for offset in range(0, obj.size, chunk)
    )


def _can_bind(host: str) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


@pytest.fixture
def server() -> Iterator[FileServer]:
    """A server on 127.0.0.1 that serves byte ranges."""
    with serve() as running:
        yield running


@pytest.fixture
def plain_server() -> Iterator[FileServer]:
    """A server on 127.0.0.1 that ignores Range and refuses HEAD."""
    with serve(ranges=False, head=False) as running:
        yield running


@pytest.fixture
def other_server() -> Iterator[FileServer]:
    """A server on 127.0.0.2: another host, as far as the policy can tell."""
    if not _can_bind("127.0.0.2"):
        pytest.skip("cannot bind 127.0.0.2 on this machine")
    with serve("127.0.0.2") as running:
        yield running


@pytest.fixture
def source() -> Iterator[HTTPSource]:
    """A source allowed to reach loopback addresses."""
    with HTTPSource(allow_private=True) as opened:
        assert isinstance(opened, HTTPSource)
        yield opened


# -- ranged reads --------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "chunk"),
    [(0, 4), (1, 1), (2, 1), (7, 3), (1000, 97), (65_537, 4096), (10_001, 10_001)],
)
def test_ranged_reads_reassemble(
    server: FileServer, source: HTTPSource, size: int, chunk: int
) -> None:
    """Reading every chunk with Range requests gives back the exact bytes, and
    stat captures size, ETag and Last-Modified."""
    data = _data(size)
    server.put("/data.bin", data)
    obj = source.stat(server.url("/data.bin"))
    served = server.files["/data.bin"]
    assert obj.size == size
    assert obj.key == ""
    assert obj.url == server.url("/data.bin")
    assert obj.identity == {
        "etag": served.etag,
        "last_modified": served.last_modified,
    }
    assert obj.content_type == "application/octet-stream"
    assert source.supports_ranges(obj)
    assert _read_all(source, obj, chunk) == data
    ranged = [r for r in server.seen("GET") if "Range" in r.headers]
    assert all(r.headers.get("If-Range") == served.etag for r in ranged)


def test_parallel_ranged_reads(server: FileServer, source: HTTPSource) -> None:
    """Chunks read at once from several threads reassemble byte-identically."""
    data = _data(200_003, seed=1)
    server.put("/big", data)
    obj = source.stat(server.url("/big"))
    offsets = list(range(0, obj.size, 8192))
    random.Random(5).shuffle(offsets)
    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = dict(
            zip(
                offsets,
                pool.map(lambda o: source.read(obj, o, 8192), offsets),
                strict=True,
            )
        )
    assert b"".join(parts[o] for o in sorted(parts)) == data


def test_read_past_the_end_is_short_or_empty(
    server: FileServer, source: HTTPSource
) -> None:
    """A read running past the end returns only the bytes that exist; one
    starting at the end returns nothing, without a request."""
    server.put("/f", b"0123456789")
    obj = source.stat(server.url("/f"))
    assert source.read(obj, 8, 100) == b"89"
    before = len(server.seen())
    assert source.read(obj, 10, 5) == b""
    assert len(server.seen()) == before


def test_walk_yields_the_single_object(server: FileServer, source: HTTPSource) -> None:
    """walk() of an HTTP URL yields the object itself with key ''."""
    server.put("/one", b"abc")
    assert [(o.key, o.size) for o in source.walk(server.url("/one"))] == [("", 3)]


def test_open_source_finds_the_http_plugin(server: FileServer) -> None:
    """open_source picks HTTPSource for http URLs and passes the options on."""
    server.put("/x", b"xyz")
    with open_source(server.url("/x"), allow_private=True) as opened:
        assert isinstance(opened, HTTPSource)
        assert opened.stat(server.url("/x")).size == 3


def test_unknown_and_conflicting_options_are_refused() -> None:
    """Misspelled options, policy together with allow_private, and headers the
    source manages itself are refused with InvalidInput."""
    with pytest.raises(InvalidInput, match="allow_privat"):
        HTTPSource(allow_privat=True)
    with pytest.raises(InvalidInput, match="not both"):
        HTTPSource(policy=AddressPolicy(), allow_private=True)
    with pytest.raises(InvalidInput, match="Range"):
        HTTPSource(headers={"Range": "bytes=0-1"})


# -- servers without ranges ----------------------------------------------------


def test_sequential_reads_without_range_support(
    plain_server: FileServer, source: HTTPSource
) -> None:
    """A server that ignores Range (and refuses HEAD) is read front to back from
    one streaming GET, byte-identically."""
    data = _data(50_001, seed=2)
    plain_server.put("/plain", data)
    obj = source.stat(plain_server.url("/plain"))
    assert obj.size == len(data)
    assert not source.supports_ranges(obj)
    assert obj.identity["etag"] == plain_server.files["/plain"].etag
    probes = len(plain_server.seen("GET"))
    assert _read_all(source, obj, 4096) == data
    assert len(plain_server.seen("GET")) == probes + 1  # one GET for every chunk
    assert source._objects[obj.url].stream is None  # closed after the last byte


def test_out_of_order_read_restarts_the_stream(
    plain_server: FileServer, source: HTTPSource
) -> None:
    """A read that is not where the stream is restarts it from the start and skips
    forward, and still returns the right bytes."""
    data = _data(10_000, seed=3)
    plain_server.put("/plain", data)
    obj = source.stat(plain_server.url("/plain"))
    gets = len(plain_server.seen("GET"))
    assert source.read(obj, 0, 1000) == data[:1000]
    assert source.read(obj, 1000, 1000) == data[1000:2000]
    assert len(plain_server.seen("GET")) == gets + 1
    assert source.read(obj, 0, 1000) == data[:1000]  # backwards: restart
    assert source.read(obj, 5000, 1000) == data[5000:6000]  # forwards: restart, skip
    assert source.read(obj, 6000, 4000) == data[6000:]
    assert len(plain_server.seen("GET")) == gets + 3


def test_stream_reopen_checks_identity(
    plain_server: FileServer, source: HTTPSource
) -> None:
    """When the stream is (re)opened on a file that has a new ETag, the read
    raises SourceChanged."""
    plain_server.put("/plain", b"a" * 1000)
    obj = source.stat(plain_server.url("/plain"))
    assert source.read(obj, 0, 100) == b"a" * 100
    plain_server.put("/plain", b"b" * 1000, version=2)
    with pytest.raises(SourceChanged, match="changed since the transfer started"):
        source.read(obj, 500, 100)


# -- changes, errors -----------------------------------------------------------


def test_change_between_stat_and_read(server: FileServer, source: HTTPSource) -> None:
    """A file replaced after stat (new ETag) makes the next ranged read raise
    SourceChanged: the server answers If-Range with the whole new file."""
    server.put("/f", _data(5000))
    obj = source.stat(server.url("/f"))
    assert source.read(obj, 0, 1000) == _data(5000)[:1000]
    server.put("/f", _data(5000, seed=9), version=2)
    with pytest.raises(SourceChanged, match="changed since the transfer started"):
        source.read(obj, 1000, 1000)


def test_weak_etag_uses_last_modified(server: FileServer, source: HTTPSource) -> None:
    """With a weak ETag, If-Range carries the Last-Modified date instead (weak
    validators cannot be used there), reads work, and a change is still caught."""
    server.put("/w", _data(3000), weak=True)
    obj = source.stat(server.url("/w"))
    assert obj.identity["etag"].startswith("W/")
    assert _read_all(source, obj, 1000) == _data(3000)
    sent = {
        r.headers.get("If-Range") for r in server.seen("GET") if "Range" in r.headers
    }
    assert sent == {server.files["/w"].last_modified}
    server.put("/w", _data(3000, seed=4), version=2, weak=True)
    with pytest.raises(SourceChanged):
        source.read(obj, 0, 1000)


def test_size_change_is_caught(server: FileServer, source: HTTPSource) -> None:
    """A file that changed size but kept its validators is caught by the total in
    Content-Range."""
    server.put("/s", b"x" * 100)
    obj = source.stat(server.url("/s"))
    served = server.files["/s"]
    with server.lock:
        server.files["/s"] = type(served)(b"x" * 200, served.etag, served.last_modified)
    with pytest.raises(SourceChanged, match="size 100 -> 200"):
        source.read(obj, 0, 10)


def test_deleted_file_during_read(server: FileServer, source: HTTPSource) -> None:
    """A file that disappears after stat raises SourceChanged on read."""
    server.put("/gone", b"data")
    obj = source.stat(server.url("/gone"))
    with server.lock:
        del server.files["/gone"]
    with pytest.raises(SourceChanged, match="gone"):
        source.read(obj, 0, 4)


def test_missing_is_not_found(server: FileServer, source: HTTPSource) -> None:
    """404 (and 410) on stat raise SourceNotFound."""
    with pytest.raises(SourceNotFound, match="404"):
        source.stat(server.url("/nope"))
    server.errors["/old"] = 410
    with pytest.raises(SourceNotFound, match="410"):
        source.stat(server.url("/old"))


def test_server_errors_are_retryable_source_errors(
    server: FileServer, source: HTTPSource
) -> None:
    """500 on stat or on read raises a retryable SourceError naming the status and
    URL; a 403 is a SourceError that is not retryable."""
    server.errors["/broken"] = 500
    with pytest.raises(SourceError, match=r"/broken.*HTTP 500") as info:
        source.stat(server.url("/broken"))
    assert info.value.retryable
    server.put("/flaky", b"abcdef")
    obj = source.stat(server.url("/flaky"))
    server.errors["/flaky"] = 503
    with pytest.raises(SourceError, match="HTTP 503") as info:
        source.read(obj, 0, 3)
    assert info.value.retryable
    server.errors["/denied"] = 403
    with pytest.raises(SourceError, match="HTTP 403") as info:
        source.stat(server.url("/denied"))
    assert not info.value.retryable


def test_connection_refused_is_a_source_error(source: HTTPSource) -> None:
    """A port nobody listens on gives a retryable SourceError."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SourceError, match="cannot connect") as info:
        source.stat(f"http://127.0.0.1:{port}/x")
    assert info.value.retryable


def test_resumed_object_is_described_again(server: FileServer) -> None:
    """A new source reading an object described by another one checks that it is
    still the same version first."""
    server.put("/r", b"0123456789")
    with HTTPSource(allow_private=True) as first:
        obj = first.stat(server.url("/r"))
    with HTTPSource(allow_private=True) as second:
        assert second.read(obj, 2, 3) == b"234"
    server.put("/r", b"9876543210", version=2)
    with HTTPSource(allow_private=True) as third, pytest.raises(SourceChanged):
        third.read(obj, 0, 3)


# -- redirects -----------------------------------------------------------------


def test_redirect_is_followed(server: FileServer, source: HTTPSource) -> None:
    """A 302 to another path is followed; SourceObject.url is the final URL and
    reads go there."""
    server.put("/real", b"payload")
    server.redirects["/link"] = (302, "/real")
    obj = source.stat(server.url("/link"))
    assert obj.url == server.url("/real")
    assert source.read(obj, 0, 7) == b"payload"


def test_redirect_loop_gives_up(server: FileServer) -> None:
    """More redirects than max_redirects raise a SourceError that is not
    retryable."""
    server.redirects["/a"] = (302, "/b")
    server.redirects["/b"] = (307, "/a")
    with (
        HTTPSource(allow_private=True, max_redirects=3) as source,
        pytest.raises(SourceError, match="more than 3 times") as info,
    ):
        source.stat(server.url("/a"))
    assert not info.value.retryable


# -- address policy (SSRF) -----------------------------------------------------


def test_default_policy_refuses_loopback_before_any_request(
    server: FileServer,
) -> None:
    """The default policy refuses 127.0.0.1 and localhost with BlockedAddress, and
    the server never sees a request."""
    server.put("/f", b"secret internal data")
    with HTTPSource() as source:
        with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1.*loopback"):
            source.stat(server.url("/f"))
        with pytest.raises(BlockedAddress, match=r"'localhost'.*allow_private"):
            source.stat(f"http://localhost:{server.port}/f")
    assert server.seen() == []


def test_redirect_to_blocked_address_is_refused(
    server: FileServer, other_server: FileServer
) -> None:
    """With only 127.0.0.2/32 allowed, a redirect from it to 127.0.0.1 (or to
    localhost, or to a file:// URL) is refused; 127.0.0.1 sees nothing."""
    server.put("/internal", b"do not leak")
    other_server.redirects["/go"] = (302, server.url("/internal"))
    other_server.redirects["/go-name"] = (301, f"http://localhost:{server.port}/x")
    other_server.redirects["/go-file"] = (302, "file:///etc/passwd")
    policy = AddressPolicy(allowed_networks=["127.0.0.2/32"])
    with HTTPSource(policy=policy) as source:
        with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1"):
            source.stat(other_server.url("/go"))
        with pytest.raises(BlockedAddress, match="localhost"):
            source.stat(other_server.url("/go-name"))
        with pytest.raises(BlockedAddress, match="only http and https"):
            source.stat(other_server.url("/go-file"))
    assert server.seen() == []
    assert len(other_server.seen("HEAD")) == 3


def test_allowed_networks_allow_exactly_that_range(other_server: FileServer) -> None:
    """allowed_networks=['127.0.0.2/32'] lets the source read from 127.0.0.2."""
    other_server.put("/ok", b"fine")
    policy = AddressPolicy(allowed_networks=["127.0.0.2/32"])
    with HTTPSource(policy=policy) as source:
        obj = source.stat(other_server.url("/ok"))
        assert source.read(obj, 0, 4) == b"fine"


def test_requests_go_to_the_checked_address() -> None:
    """The request is sent to the address the policy checked (URL host replaced
    by the IP), with the original Host header and, for https, the host name as
    TLS server name. The checked answer is reused for the next request."""
    seen: list[httpx.Request] = []
    lookups: list[str] = []

    def resolver(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = {"Content-Length": "3", "Accept-Ranges": "bytes", "ETag": '"e"'}
        if "Range" in request.headers:
            headers["Content-Range"] = "bytes 0-2/3"
            return httpx.Response(206, headers=headers, stream=httpx.ByteStream(b"abc"))
        return httpx.Response(200, headers=headers)

    policy = AddressPolicy(resolver=resolver)
    transport = httpx.MockTransport(handler)
    with HTTPSource(policy=policy, transport=transport) as source:
        obj = source.stat("https://files.example.org:8443/data?sig=1")
        assert source.read(obj, 0, 3) == b"abc"
    assert obj.url == "https://files.example.org:8443/data?sig=1"
    assert lookups == ["files.example.org"]
    for request in seen:
        assert request.url.host == "93.184.216.34"
        assert request.url.port == 8443
        assert request.headers["Host"] == "files.example.org:8443"
        assert request.extensions["sni_hostname"] == "files.example.org"


def test_rebinding_answer_is_refused() -> None:
    """A name that resolves to a public and a private address is refused before
    any request is sent."""

    def resolver(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request may be sent")

    policy = AddressPolicy(resolver=resolver)
    with (
        HTTPSource(policy=policy, transport=httpx.MockTransport(handler)) as source,
        pytest.raises(BlockedAddress, match=r"10\.0\.0\.7.*private"),
    ):
        source.stat("http://rebind.example.org/")


# -- credentials ---------------------------------------------------------------


def test_credentials_never_logged_or_in_errors(
    server: FileServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A token in headers and a password in the URL are sent to the server but
    appear in no log record at DEBUG (sclib's or httpx's), no exception message,
    no SourceObject and not in repr(source); query values are masked in sclib's
    own log lines and messages."""
    caplog.set_level(logging.DEBUG)
    server.put("/f", _data(3000))
    server.errors["/boom"] = 500
    messages: list[str] = []
    headers = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET}
    with HTTPSource(allow_private=True, headers=headers) as source:
        obj = source.stat(server.url("/f"))
        _read_all(source, obj, 1000)
        for path in ("/boom", "/missing"):
            with pytest.raises((SourceError, SourceNotFound)) as info:
                source.stat(server.url(path))
            messages.append(str(info.value))
        with_password = f"http://user:{SECRET}@127.0.0.1:{server.port}"
        obj2 = source.stat(f"{with_password}/f")
        with pytest.raises(SourceNotFound) as info:
            source.stat(f"{with_password}/missing?sig={QUERY_SECRET}")
        messages += [str(info.value), repr(source), repr(obj), repr(obj2)]
    assert server.seen()[0].headers["Authorization"] == f"Bearer {SECRET}"
    assert caplog.records, "expected DEBUG records to check"
    logged = [r.getMessage() for r in caplog.records]
    assert not [m for m in logged + messages if SECRET in m]
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("sclib")]
    assert not [m for m in ours + messages if QUERY_SECRET in m]
    assert "sig=***" in messages[2]


def test_credentials_not_sent_to_another_origin(
    server: FileServer, other_server: FileServer
) -> None:
    """Headers and URL credentials go only to the origin of the URL being copied,
    not to the host it redirects to."""
    server.put("/f", b"data")
    other_server.redirects["/r"] = (302, server.url("/f"))
    headers = {"Authorization": f"Bearer {SECRET}", "User-Agent": "probe/1"}
    with HTTPSource(allow_private=True, headers=headers) as source:
        obj = source.stat(other_server.url("/r"))
        assert source.read(obj, 0, 4) == b"data"
    assert all("Authorization" not in r.headers for r in server.seen())
    assert all(r.headers["User-Agent"] == "probe/1" for r in server.seen())
    assert other_server.seen()[0].headers["Authorization"] == f"Bearer {SECRET}"


def test_url_user_info_becomes_basic_auth(
    server: FileServer, source: HTTPSource
) -> None:
    """A user name and password in the URL are sent as Basic auth and dropped from
    SourceObject.url."""
    server.put("/f", b"data")
    obj = source.stat(f"http://alice:pw%40x@127.0.0.1:{server.port}/f")
    assert "alice" not in obj.url
    assert source.read(obj, 0, 4) == b"data"
    auth = {r.headers.get("Authorization") for r in server.seen()}
    assert auth == {"Basic YWxpY2U6cHdAeA=="}  # alice:pw@x


def _resolve_public(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]


def test_credentials_follow_an_https_upgrade_only() -> None:
    """A redirect from http to https on the same host keeps the credentials; one
    to another host drops them (mock transport, public addresses)."""
    seen: list[httpx.Request] = []
    routes = {
        ("http", "files.example.org", "/a"): "https://files.example.org/a",
        ("https", "files.example.org", "/a"): "https://cdn.example.net/a",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        host = request.headers["Host"]
        target = routes.get((request.url.scheme, host, request.url.path))
        if target is not None:
            return httpx.Response(302, headers={"Location": target})
        return httpx.Response(
            200, headers={"Content-Length": "1", "Accept-Ranges": "bytes"}
        )

    with HTTPSource(
        policy=AddressPolicy(resolver=_resolve_public),
        headers={"Authorization": f"Bearer {SECRET}"},
        transport=httpx.MockTransport(handler),
    ) as source:
        obj = source.stat("http://files.example.org/a")
    assert obj.url == "https://cdn.example.net/a"
    sent = [(r.headers["Host"], r.headers.get("Authorization")) for r in seen]
    assert sent == [
        ("files.example.org", f"Bearer {SECRET}"),
        ("files.example.org", f"Bearer {SECRET}"),
        ("cdn.example.net", None),
    ]


def test_server_ignoring_range_without_change_is_not_a_change() -> None:
    """A server that advertises ranges but answers a range request with the whole,
    unchanged file (same ETag) gives a non-retryable SourceError, not
    SourceChanged; a 200 with another ETag is SourceChanged."""
    etag = ['"v1"']

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Length": "4", "Accept-Ranges": "bytes", "ETag": etag[0]}
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(b"abcd"))

    with HTTPSource(
        policy=AddressPolicy(resolver=_resolve_public),
        transport=httpx.MockTransport(handler),
    ) as source:
        obj = source.stat("https://files.example.org/f")
        assert source.supports_ranges(obj)
        with pytest.raises(SourceError, match="does not serve byte ranges") as info:
            source.read(obj, 0, 2)
        assert not info.value.retryable
        etag[0] = '"v2"'
        with pytest.raises(SourceChanged, match=r'"v1".*"v2"'):
            source.read(obj, 0, 2)
