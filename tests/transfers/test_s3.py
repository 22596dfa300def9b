"""S3Source and S3Destination against a real moto S3 server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("s3fs", reason="the S3 tests need s3fs (sclib[s3])")
pytest.importorskip("moto.server", reason="the S3 tests need moto[server]")

from sclib.errors import (
    ChecksumMismatch,
    ConfigurationError,
    DestinationError,
    SourceChanged,
    SourceError,
    SourceNotFound,
)
from sclib.transfers.plan import MIB, ChunkPlan
from sclib.transfers.s3 import S3Destination, S3Source, s3fs_options
from sclib.transfers.sources import SourceObject, open_source

try:  # tests/transfers is a package
    from tests.transfers.cloud_servers import (
        cloud_env,
        moto_server,
        s3_client,
        s3_options,
    )
except ImportError:  # tests/transfers is a rootdir-less folder on sys.path
    from cloud_servers import (  # type: ignore[no-redef]
        cloud_env,
        moto_server,
        s3_client,
        s3_options,
    )

pytestmark = pytest.mark.integration

CHUNK = 5 * MIB  # S3's smallest part size


# -- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """One moto server for the module, on a port the kernel picked."""
    with cloud_env(), moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def options(endpoint: str) -> dict[str, Any]:
    """S3 options in the seed's names, pointing at the moto server."""
    return s3_options(endpoint)


@pytest.fixture(scope="module")
def admin(endpoint: str) -> Any:
    """A boto3 client to set up and inspect the server behind sclib's back."""
    return s3_client(endpoint)


@pytest.fixture
def bucket(admin: Any) -> str:
    """A new, empty bucket for each test."""
    name = f"sclib-{uuid.uuid4().hex[:16]}"
    admin.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def source(options: dict[str, Any]) -> Iterator[S3Source]:
    """An S3Source for the module."""
    src = S3Source(**options)
    yield src
    src.close()


@pytest.fixture
def destination(options: dict[str, Any], bucket: str) -> Iterator[S3Destination]:
    """An S3Destination writing under ``s3://<bucket>/out``."""
    dest = S3Destination(f"s3://{bucket}/out", **options)
    yield dest
    dest.close()


def read_all(source: S3Source, obj: SourceObject, step: int) -> bytes:
    """Read ``obj`` in ranges of ``step`` bytes, out of order, and reassemble it."""
    offsets = list(range(0, obj.size, step))
    pieces = {o: source.read(obj, o, step) for o in reversed(offsets)}
    return b"".join(pieces[o] for o in offsets)


def write_all(
    writer: Any, data: bytes, order: list[int] | None = None
) -> dict[int, Any]:
    """Write every chunk of ``data`` (in ``order`` if given); return the tokens."""
    plan = ChunkPlan(len(data), CHUNK)
    indexes = order if order is not None else list(range(plan.count))
    tokens = {}
    for i in indexes:
        chunk = plan.chunk(i)
        tokens[i] = writer.write_chunk(chunk, data[chunk.offset : chunk.end])
    return tokens


def pending_uploads(admin: Any, bucket: str) -> list[dict[str, Any]]:
    """The multipart uploads in progress in ``bucket``."""
    uploads: list[dict[str, Any]] = admin.list_multipart_uploads(Bucket=bucket).get(
        "Uploads", []
    )
    return uploads


# -- options --------------------------------------------------------------------


def test_seed_option_names_map_to_s3fs() -> None:
    """access_key_id, secret_access_key, session_token and region become s3fs's."""
    mapped = s3fs_options(
        {
            "access_key_id": "AKID",
            "secret_access_key": "SECRET",
            "session_token": "TOKEN",
            "region": "eu-west-1",
            "endpoint_url": "http://127.0.0.1:9",
            "anon": False,
        }
    )
    assert mapped == {
        "key": "AKID",
        "secret": "SECRET",
        "token": "TOKEN",
        "client_kwargs": {"region_name": "eu-west-1"},
        "endpoint_url": "http://127.0.0.1:9",
        "anon": False,
        "skip_instance_cache": True,
        "use_listings_cache": False,
    }


def test_bad_options_are_refused_without_their_values() -> None:
    """Unknown or doubled option names raise ConfigurationError naming no value."""
    with pytest.raises(ConfigurationError, match="acess_key_id") as excinfo:
        s3fs_options({"acess_key_id": "TOP-SECRET-VALUE"})
    assert "TOP-SECRET-VALUE" not in str(excinfo.value)
    with pytest.raises(ConfigurationError, match="only one"):
        s3fs_options({"access_key_id": "A", "key": "B"})


def test_credentials_stay_out_of_repr_urls_and_errors(
    options: dict[str, Any], admin: Any, bucket: str
) -> None:
    """Secrets never show in repr(), in object URLs or in error messages."""
    admin.put_object(Bucket=bucket, Key="k", Body=b"x")
    with S3Source(**options) as src:
        assert options["secret_access_key"] not in repr(src)
        assert options["access_key_id"] not in repr(src)
        obj = src.stat(f"s3://{bucket}/k")
        assert obj.url == f"s3://{bucket}/k"
        with pytest.raises(SourceNotFound) as excinfo:
            src.stat(f"s3://{bucket}/missing")
        assert options["secret_access_key"] not in str(excinfo.value)
    dest = S3Destination(f"s3://{bucket}/p", **options)
    assert options["secret_access_key"] not in repr(dest)
    dest.close()


def test_open_source_finds_the_s3_plugin(options: dict[str, Any]) -> None:
    """s3:// and s3a:// URLs open an S3Source through the registry."""
    for url in ("s3://b/k", "s3a://b/k"):
        src = open_source(url, **options)
        try:
            assert isinstance(src, S3Source)
        finally:
            src.close()


# -- source ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 5 * MIB + 1])
def test_stat_and_ranged_reads_reassemble_exactly(
    source: S3Source, admin: Any, bucket: str, size: int
) -> None:
    """stat() describes the object; reads by ranges give back exactly its bytes."""
    data = os.urandom(size)
    put = admin.put_object(Bucket=bucket, Key="dir/blob.bin", Body=data)
    obj = source.stat(f"s3://{bucket}/dir/blob.bin")
    assert obj.size == size
    assert obj.key == ""
    assert obj.url == f"s3://{bucket}/dir/blob.bin"
    assert obj.identity["etag"] == put["ETag"]
    assert read_all(source, obj, 1 * MIB + 7) == data
    assert source.read(obj, size, 10) == b""
    if size:
        assert source.read(obj, size - 1, 100) == data[-1:]


def test_concurrent_range_reads(source: S3Source, admin: Any, bucket: str) -> None:
    """Several threads can read ranges of one object at once."""
    data = os.urandom(3 * MIB)
    admin.put_object(Bucket=bucket, Key="c.bin", Body=data)
    obj = source.stat(f"s3://{bucket}/c.bin")
    offsets = list(range(0, obj.size, 256 * 1024))
    with ThreadPoolExecutor(max_workers=6) as pool:
        parts = list(pool.map(lambda o: source.read(obj, o, 256 * 1024), offsets))
    assert b"".join(parts) == data


@pytest.fixture
def streaming(options: dict[str, Any]) -> Iterator[tuple[S3Source, list[str]]]:
    """An S3Source whose GETs serve at most 2 MiB, and the Range of each GET."""
    src = S3Source(**options)
    src.stream_span = 2 * MIB
    ranges: list[str] = []
    real = src.fs._call_s3

    async def counting(method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "get_object":
            ranges.append(kwargs.get("Range", ""))
        return await real(method, *args, **kwargs)

    src.fs._call_s3 = counting
    yield src, ranges
    src.close()


def read_chunks(
    source: S3Source,
    obj: SourceObject,
    chunk: int,
    before: Callable[[int], None] = lambda offset: None,
) -> bytes:
    """read_into every chunk in order, each into its own buffer; ``before(offset)``
    runs ahead of each read (to break a connection at a chosen point)."""
    out = bytearray()
    for offset in range(0, obj.size, chunk):
        before(offset)
        buf = bytearray(chunk)
        n = source.read_into(obj, offset, memoryview(buf))
        out += buf[:n]
    return bytes(out)


def test_chunk_reads_continue_one_get(
    streaming: tuple[S3Source, list[str]], admin: Any, bucket: str
) -> None:
    """Chunks read in order share a GET of up to ``stream_span`` bytes: 5 MiB + 3
    in 512 KiB chunks with a 2 MiB span is 3 GETs, not 11, and the bytes are
    exact."""
    source, ranges = streaming
    data = os.urandom(5 * MIB + 3)
    admin.put_object(Bucket=bucket, Key="s.bin", Body=data)
    obj = source.stat(f"s3://{bucket}/s.bin")
    assert read_chunks(source, obj, 512 * 1024) == data
    assert ranges == [
        f"bytes=0-{2 * MIB - 1}",
        f"bytes={2 * MIB}-{4 * MIB - 1}",
        f"bytes={4 * MIB}-{5 * MIB + 2}",
    ]
    assert source._streams._idle == {}  # every stream was read to its end, closed


def test_chunk_reads_from_threads_stay_exact(
    streaming: tuple[S3Source, list[str]], admin: Any, bucket: str
) -> None:
    """Threads reading chunks in any order still get exact bytes: a read that
    finds no open response at its offset starts its own GET."""
    source, ranges = streaming
    data = os.urandom(6 * MIB)
    admin.put_object(Bucket=bucket, Key="t.bin", Body=data)
    obj = source.stat(f"s3://{bucket}/t.bin")
    chunk = 256 * 1024

    def one(offset: int) -> bytes:
        buf = bytearray(chunk)
        n = source.read_into(obj, offset, memoryview(buf))
        return bytes(buf[:n])

    offsets = list(range(0, obj.size, chunk))
    with ThreadPoolExecutor(max_workers=4) as pool:
        parts = dict(zip(offsets[::-1], pool.map(one, offsets[::-1]), strict=True))
    assert b"".join(parts[o] for o in offsets) == data
    assert 3 <= len(ranges) <= len(offsets)
    assert len(source._streams._idle) <= source._streams.keep


def test_stream_cut_between_chunks_is_reopened(
    streaming: tuple[S3Source, list[str]], admin: Any, bucket: str
) -> None:
    """A response cut while it sat between two chunk reads (a server closing an
    idle connection) is replaced by a new GET from the next offset."""
    source, ranges = streaming
    data = os.urandom(2 * MIB)
    admin.put_object(Bucket=bucket, Key="cut.bin", Body=data)
    obj = source.stat(f"s3://{bucket}/cut.bin")
    first = bytearray(MIB)
    source.read_into(obj, 0, memoryview(first))
    (idle,) = source._streams._idle.values()
    idle.body.close()  # the connection goes away under the idle stream
    second = bytearray(MIB)
    assert source.read_into(obj, MIB, memoryview(second)) == MIB
    assert bytes(first + second) == data
    assert ranges == [f"bytes=0-{2 * MIB - 1}", f"bytes={MIB}-{2 * MIB - 1}"]


def test_object_replaced_during_a_streamed_read_never_mixes(
    streaming: tuple[S3Source, list[str]], admin: Any, bucket: str
) -> None:
    """GETs answered before the object was replaced (the open one and the one
    sent ahead for the next span) keep serving the old version; the next GET is
    conditional on the ETag and fails with SourceChanged: no chunk of the new
    version reaches the copy."""
    source, ranges = streaming
    old = os.urandom(5 * MIB)
    admin.put_object(Bucket=bucket, Key="r.bin", Body=old)
    obj = source.stat(f"s3://{bucket}/r.bin")
    buf = bytearray(MIB)
    source.read_into(obj, 0, memoryview(buf))
    source.read_into(obj, MIB, memoryview(buf))  # sequential: the next GET goes
    ((_, ahead),) = source._streams._ahead.values()
    ahead.result(timeout=30)  # ... and was answered
    admin.put_object(Bucket=bucket, Key="r.bin", Body=os.urandom(5 * MIB))
    for offset in (2 * MIB, 3 * MIB):
        source.read_into(obj, offset, memoryview(buf))
        assert bytes(buf) == old[offset : offset + MIB]
    with pytest.raises(SourceChanged, match="is no longer"):
        source.read_into(obj, 4 * MIB, memoryview(buf))
    assert ranges == [
        f"bytes=0-{2 * MIB - 1}",
        f"bytes={2 * MIB}-{4 * MIB - 1}",
        f"bytes={4 * MIB}-{5 * MIB - 1}",
    ]


def test_close_releases_idle_streams(
    streaming: tuple[S3Source, list[str]], admin: Any, bucket: str
) -> None:
    """A transfer stopped between chunks leaves an open response; close() ends it."""
    source, _ = streaming
    admin.put_object(Bucket=bucket, Key="c2.bin", Body=os.urandom(2 * MIB))
    obj = source.stat(f"s3://{bucket}/c2.bin")
    source.read_into(obj, 0, memoryview(bytearray(MIB)))
    (idle,) = source._streams._idle.values()
    source.close()
    assert source._streams._idle == {}
    assert idle.body.raw_stream.closed  # the aiohttp response


def wait_until_paused(content: Any) -> None:
    """Wait (20 s at most) until aiohttp stops taking bytes from the socket for
    the response whose body is ``content``: its buffer reached its high mark."""
    deadline = time.monotonic() + 20
    while not content._protocol._reading_paused and not content.at_eof():
        assert time.monotonic() < deadline, "the response never stopped reading"
        time.sleep(0.01)


def test_open_response_buffers_little_whatever_the_chunk_size(
    options: dict[str, Any], admin: Any, bucket: str
) -> None:
    """A response kept open between two 8 MiB chunk reads stops taking bytes from
    the network once a few MiB wait in it (aiohttp lets a response buffer twice
    the largest read asked of it, so one 8 MiB read left 16 MiB buffered per open
    response); the reads that follow still get exact bytes."""
    source = S3Source(**options)
    try:
        data = os.urandom(32 * MIB)
        admin.put_object(Bucket=bucket, Key="mem.bin", Body=data)
        obj = source.stat(f"s3://{bucket}/mem.bin")
        source.stream_span = obj.size
        buf = bytearray(8 * MIB)
        source.read_into(obj, 0, memoryview(buf))
        assert bytes(buf) == data[: 8 * MIB]
        (idle,) = source._streams._idle.values()
        content = idle.body.raw_stream.content
        wait_until_paused(content)
        assert content._size <= 3 * MIB
        for offset in range(8 * MIB, obj.size, 8 * MIB):
            source.read_into(obj, offset, memoryview(buf))
            assert bytes(buf) == data[offset : offset + 8 * MIB]
    finally:
        source.close()


def test_store_ignoring_range_never_gives_bytes_of_another_offset(
    options: dict[str, Any], admin: Any, bucket: str
) -> None:
    """A store that answers a ranged GET with the whole object (stand-in: the
    Range header is dropped before the request goes out, as a proxy stripping it
    would) fails a read at a later offset with SourceError naming the range,
    instead of handing out the object's first bytes as those at the offset."""
    source = S3Source(**options)
    real = source.fs._call_s3

    async def no_range(method: str, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("Range", None)
        return await real(method, *args, **kwargs)

    source.fs._call_s3 = no_range
    try:
        data = os.urandom(3 * MIB)
        admin.put_object(Bucket=bucket, Key="norange.bin", Body=data)
        obj = source.stat(f"s3://{bucket}/norange.bin")
        buf = bytearray(MIB)
        with pytest.raises(SourceError, match="bytes=1048576-"):
            source.read_into(obj, MIB, memoryview(buf))
        with pytest.raises(SourceError):
            source.read(obj, MIB, MIB)
        # from the start, the whole object is the right answer
        assert source.read_into(obj, 0, memoryview(buf)) == MIB
        assert bytes(buf) == data[:MIB]
    finally:
        source.close()


def test_open_response_never_serves_another_version(
    streaming: tuple[S3Source, list[str]], admin: Any, bucket: str
) -> None:
    """A response left open for one version of an object is not used for a read
    of another version at the same URL (described after it was replaced, as a
    restarted copy would): that read gets the new version's bytes."""
    source, ranges = streaming
    old = os.urandom(2 * MIB)
    admin.put_object(Bucket=bucket, Key="v.bin", Body=old)
    before = source.stat(f"s3://{bucket}/v.bin")
    source.read_into(before, 0, memoryview(bytearray(MIB)))  # stays open at 1 MiB
    new = os.urandom(2 * MIB)
    admin.put_object(Bucket=bucket, Key="v.bin", Body=new)
    after = source.stat(f"s3://{bucket}/v.bin")
    buf = bytearray(MIB)
    assert source.read_into(after, MIB, memoryview(buf)) == MIB
    assert bytes(buf) == new[MIB:]
    assert ranges[-1] == f"bytes={MIB}-{2 * MIB - 1}"


def test_small_object_chunks_get_only_their_range(
    streaming: tuple[S3Source, list[str]], admin: Any, bucket: str
) -> None:
    """Chunks of an object the engine reads in parallel (1 MiB or less: not read
    in order) each GET exactly their range and leave no response open, so no
    pooled connection is held for an object already read."""
    source, ranges = streaming
    data = os.urandom(MIB)
    admin.put_object(Bucket=bucket, Key="small.bin", Body=data)
    obj = source.stat(f"s3://{bucket}/small.bin")
    assert not source.reads_in_order(obj)
    chunk = 256 * 1024
    parts = {}
    for offset in reversed(range(0, obj.size, chunk)):
        buf = bytearray(chunk)
        assert source.read_into(obj, offset, memoryview(buf)) == chunk
        parts[offset] = bytes(buf)
    assert b"".join(parts[o] for o in sorted(parts)) == data
    assert ranges == [
        f"bytes={o}-{o + chunk - 1}" for o in reversed(range(0, obj.size, chunk))
    ]
    assert source._streams._idle == {}
    assert source._streams._ahead == {}


def test_reopened_response_ends_where_the_get_sent_ahead_starts(
    streaming: tuple[S3Source, list[str]], admin: Any, bucket: str
) -> None:
    """A response cut between two chunks is replaced by a GET up to where the GET
    already sent ahead begins (not a whole span overlapping it), and the reads go
    on through that one: no byte is asked for twice."""
    source, ranges = streaming
    data = os.urandom(4 * MIB)
    admin.put_object(Bucket=bucket, Key="re.bin", Body=data)
    obj = source.stat(f"s3://{bucket}/re.bin")

    def cut(offset: int) -> None:
        if offset == MIB:
            (idle,) = source._streams._idle.values()
            idle.body.close()  # the connection goes away under the idle stream

    assert read_chunks(source, obj, 512 * 1024, cut) == data
    assert ranges == [
        f"bytes=0-{2 * MIB - 1}",
        f"bytes={2 * MIB}-{4 * MIB - 1}",
        f"bytes={MIB}-{2 * MIB - 1}",
    ]


def test_get_sent_ahead_that_broke_while_waiting_is_replaced(
    streaming: tuple[S3Source, list[str]], admin: Any, bucket: str
) -> None:
    """The GET sent ahead waits, unread, while the current span is read; if its
    connection is cut meanwhile, the read that reaches it sends a new GET from
    there instead of failing."""
    source, ranges = streaming
    data = os.urandom(3 * MIB)
    admin.put_object(Bucket=bucket, Key="ahead.bin", Body=data)
    obj = source.stat(f"s3://{bucket}/ahead.bin")

    def cut(offset: int) -> None:
        if offset == 2 * MIB:
            ((_, ahead),) = source._streams._ahead.values()
            ahead.result(timeout=30)["Body"].close()  # cut while it waited

    assert read_chunks(source, obj, MIB, cut) == data
    assert ranges == [
        f"bytes=0-{2 * MIB - 1}",
        f"bytes={2 * MIB}-{3 * MIB - 1}",
        f"bytes={2 * MIB}-{3 * MIB - 1}",
    ]


def test_prefix_walk_gives_relative_keys(
    source: S3Source, admin: Any, bucket: str
) -> None:
    """Walking a prefix yields every object under it, keyed relative to it."""
    bodies = {
        "data/a.bin": b"a",
        "data/sub/b.bin": b"bb",
        "data/sub/deeper/c.bin": b"ccc",
        "database.bin": b"not under data/",
        "other/d.bin": b"d",
    }
    for key, body in bodies.items():
        admin.put_object(Bucket=bucket, Key=key, Body=body)
    for url in (f"s3://{bucket}/data", f"s3://{bucket}/data/"):
        found = {o.key: o for o in source.walk(url)}
        assert sorted(found) == ["a.bin", "sub/b.bin", "sub/deeper/c.bin"]
        assert found["sub/b.bin"].size == 2
        assert found["sub/b.bin"].url == f"s3://{bucket}/data/sub/b.bin"
        assert found["sub/b.bin"].identity["etag"]
    whole = sorted(o.key for o in source.walk(f"s3://{bucket}"))
    assert whole == sorted(bodies)
    single = list(source.walk(f"s3://{bucket}/data/a.bin"))
    assert [(o.key, o.size) for o in single] == [("", 1)]


def test_missing_object_raises_source_not_found(source: S3Source, bucket: str) -> None:
    """stat() and walk() of a key or bucket that does not exist: SourceNotFound."""
    with pytest.raises(SourceNotFound):
        source.stat(f"s3://{bucket}/no/such/key")
    with pytest.raises(SourceNotFound):
        list(source.walk(f"s3://{bucket}/no/such/prefix"))
    with pytest.raises(SourceNotFound):
        source.stat(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/key")


def test_prefix_is_not_an_object(source: S3Source, admin: Any, bucket: str) -> None:
    """stat() of a prefix says it is a folder."""
    admin.put_object(Bucket=bucket, Key="folder/x", Body=b"x")
    with pytest.raises(SourceNotFound, match="folder"):
        source.stat(f"s3://{bucket}/folder")


def test_overwritten_object_fails_the_conditional_read(
    source: S3Source, admin: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object replaced between stat and read raises SourceChanged in the GET."""
    admin.put_object(Bucket=bucket, Key="v.bin", Body=b"version one")
    obj = source.stat(f"s3://{bucket}/v.bin")
    assert source.read(obj, 0, 7) == b"version"
    admin.put_object(Bucket=bucket, Key="v.bin", Body=b"VERSION TWO")

    def no_second_request(obj: SourceObject) -> None:
        raise AssertionError("the If-Match GET should have caught the change")

    monkeypatch.setattr(source, "check_unchanged", no_second_request)
    with pytest.raises(SourceChanged, match="is no longer"):
        source.read(obj, 0, 7)


def test_store_ignoring_if_match_is_still_caught(
    source: S3Source, admin: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a store ignores If-Match, the ETag served with the bytes still tells."""
    admin.put_object(Bucket=bucket, Key="w.bin", Body=b"version one")
    obj = source.stat(f"s3://{bucket}/w.bin")
    admin.put_object(Bucket=bucket, Key="w.bin", Body=b"VERSION TWO")
    real = source.fs._call_s3

    async def without_if_match(method: str, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("IfMatch", None)
        return await real(method, *args, **kwargs)

    monkeypatch.setattr(source.fs, "_call_s3", without_if_match)
    with pytest.raises(SourceChanged, match=r"ETag .* -> "):
        source.read(obj, 0, 7)


def test_deleted_object_raises_source_changed(
    source: S3Source, admin: Any, bucket: str
) -> None:
    """An object deleted after stat raises SourceChanged on read."""
    admin.put_object(Bucket=bucket, Key="gone.bin", Body=b"soon gone")
    obj = source.stat(f"s3://{bucket}/gone.bin")
    admin.delete_object(Bucket=bucket, Key="gone.bin")
    with pytest.raises(SourceChanged, match="disappeared"):
        source.read(obj, 0, 4)


# -- destination ----------------------------------------------------------------


def test_url_for_and_object_keys(options: dict[str, Any]) -> None:
    """Relative keys land under the prefix; "" is the prefix itself."""
    dest = S3Destination("s3://bkt/some/prefix/", **options)
    try:
        assert dest.url_for("a/b.bin") == "s3://bkt/some/prefix/a/b.bin"
        assert dest.url_for("") == "s3://bkt/some/prefix"
        assert S3Destination.object_store is True
    finally:
        dest.close()
    with pytest.raises(ConfigurationError):
        S3Destination("gs://bkt/x", **options)


def test_parts_out_of_order_commit_to_the_exact_object(
    destination: S3Destination, admin: Any, bucket: str
) -> None:
    """Chunks written out of order and from threads commit to the exact bytes;
    nothing is visible at the key before commit."""
    data = os.urandom(2 * CHUNK + 12345)
    writer = destination.open("run/data.bin", len(data), CHUNK)
    assert writer.state["bucket"] == bucket
    assert writer.state["key"] == "out/run/data.bin"
    assert writer.state["upload_id"]
    assert writer.state["resumed"] is False
    plan = ChunkPlan(len(data), CHUNK)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            c.index: pool.submit(writer.write_chunk, c, data[c.offset : c.end])
            for c in reversed(list(plan))
        }
    tokens = {i: f.result() for i, f in futures.items()}
    assert all(isinstance(t, str) and t for t in tokens.values())
    assert not destination.exists("run/data.bin")
    assert "Contents" not in admin.list_objects_v2(Bucket=bucket, Prefix="out/")
    writer.commit(tokens)
    assert destination.exists("run/data.bin")
    body = admin.get_object(Bucket=bucket, Key="out/run/data.bin")["Body"].read()
    assert body == data
    assert pending_uploads(admin, bucket) == []


@pytest.mark.parametrize("size", [0, 1, CHUNK])
def test_small_objects(
    destination: S3Destination, admin: Any, bucket: str, size: int
) -> None:
    """0 bytes: one PutObject at commit, no upload; 1 byte and one full chunk:
    a one-part multipart upload."""
    data = os.urandom(size)
    writer = destination.open("small.bin", size, CHUNK)
    assert (writer.state["upload_id"] is None) == (size == 0)
    tokens = write_all(writer, data)
    assert not destination.exists("small.bin")
    writer.commit(tokens)
    assert admin.get_object(Bucket=bucket, Key="out/small.bin")["Body"].read() == data


def test_abort_leaves_no_object_and_no_upload(
    destination: S3Destination, admin: Any, bucket: str
) -> None:
    """abort() drops the multipart upload: no object, nothing pending."""
    data = os.urandom(CHUNK + 1)
    writer = destination.open("aborted.bin", len(data), CHUNK)
    write_all(writer, data, order=[1])
    assert [u["UploadId"] for u in pending_uploads(admin, bucket)] == [
        writer.state["upload_id"]
    ]
    writer.abort()
    assert not destination.exists("aborted.bin")
    assert pending_uploads(admin, bucket) == []
    writer.abort()  # twice is fine


def test_resume_with_saved_state_continues_the_same_upload(
    destination: S3Destination, admin: Any, bucket: str
) -> None:
    """A writer reopened from its saved (JSON) state continues the same upload."""
    data = os.urandom(2 * CHUNK + 3)
    first = destination.open("resumed.bin", len(data), CHUNK)
    tokens = write_all(first, data, order=[0])
    saved = json.loads(json.dumps(first.state))
    tokens = json.loads(json.dumps(tokens))
    tokens = {int(k): v for k, v in tokens.items()}

    second = destination.open("resumed.bin", len(data), CHUNK, state=saved)
    assert second.state["upload_id"] == saved["upload_id"]
    assert second.state["resumed"] is True
    tokens.update(write_all(second, data, order=[2, 1]))
    second.commit(tokens)
    assert admin.get_object(Bucket=bucket, Key="out/resumed.bin")["Body"].read() == data
    assert len(pending_uploads(admin, bucket)) == 0


def test_resume_after_the_upload_expired_starts_over(
    destination: S3Destination, admin: Any, bucket: str
) -> None:
    """A saved upload id that no longer exists gives a fresh upload, resumed=False."""
    data = os.urandom(CHUNK + 1)
    first = destination.open("expired.bin", len(data), CHUNK)
    write_all(first, data, order=[0])
    saved = dict(first.state)
    admin.abort_multipart_upload(
        Bucket=bucket, Key="out/expired.bin", UploadId=saved["upload_id"]
    )
    second = destination.open("expired.bin", len(data), CHUNK, state=saved)
    assert second.state["resumed"] is False
    assert second.state["upload_id"] != saved["upload_id"]
    second.commit(write_all(second, data))
    assert admin.get_object(Bucket=bucket, Key="out/expired.bin")["Body"].read() == data


def test_state_for_another_key_is_not_reused(destination: S3Destination) -> None:
    """A saved state for a different key gives a fresh upload."""
    first = destination.open("one.bin", 10, CHUNK)
    second = destination.open("two.bin", 10, CHUNK, state=first.state)
    assert second.state["upload_id"] != first.state["upload_id"]
    assert second.state["resumed"] is False
    first.abort()
    second.abort()


def test_part_damaged_in_transit_raises_checksum_mismatch(
    destination: S3Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part whose stored ETag is not the chunk's MD5 raises ChecksumMismatch."""
    data = os.urandom(CHUNK + 5)
    writer = destination.open("damaged.bin", len(data), CHUNK)
    real = destination.fs.call_s3

    def corrupting(method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "upload_part":
            body = bytearray(kwargs["Body"])
            body[len(body) // 2] ^= 0x01
            kwargs["Body"] = bytes(body)
        return real(method, *args, **kwargs)

    monkeypatch.setattr(destination.fs, "call_s3", corrupting)
    with pytest.raises(ChecksumMismatch, match="did not land intact"):
        write_all(writer, data, order=[1])
    monkeypatch.setattr(destination.fs, "call_s3", real)
    # sending the chunk again repairs the part
    tokens = write_all(writer, data)
    writer.commit(tokens)
    assert destination.exists("damaged.bin")


def test_bad_digest_from_s3_raises_checksum_mismatch(
    destination: S3Destination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3's own BadDigest refusal (Content-MD5 check) is a ChecksumMismatch too."""
    from botocore.exceptions import ClientError

    writer = destination.open("digest.bin", 10, CHUNK)

    def refuse(method: str, *args: Any, **kwargs: Any) -> Any:
        error = ClientError(
            {"Error": {"Code": "BadDigest", "Message": "Content-MD5 mismatch"}},
            "UploadPart",
        )
        raise OSError(22, "Content-MD5 mismatch") from error

    monkeypatch.setattr(destination.fs, "call_s3", refuse)
    with pytest.raises(ChecksumMismatch, match="BadDigest"):
        write_all(writer, b"0123456789")


def test_commit_refuses_missing_or_replaced_parts(
    destination: S3Destination, admin: Any, bucket: str
) -> None:
    """commit() checks every part is there and is the chunk that was verified."""
    data = os.urandom(CHUNK + 10)
    writer = destination.open("partial.bin", len(data), CHUNK)
    tokens = write_all(writer, data, order=[0])
    with pytest.raises(DestinationError, match="never uploaded"):
        writer.commit(tokens)
    tokens.update(write_all(writer, data, order=[1]))
    with pytest.raises(ChecksumMismatch, match="part 1"):
        writer.commit({**tokens, 0: '"00000000000000000000000000000000"'})
    assert not destination.exists("partial.bin")
    writer.commit(tokens)
    assert admin.get_object(Bucket=bucket, Key="out/partial.bin")["Body"].read() == data
    writer.commit(tokens)  # a repeated commit after success is a no-op


# -- errors from the client libraries -------------------------------------------------


def test_missing_credentials_say_where_credentials_come_from(
    endpoint: str, bucket: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No key anywhere: a ConfigurationError (not retried) naming the options,
    not botocore's NoCredentialsError."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    with (
        S3Source(endpoint_url=endpoint, region="us-east-1") as src,
        pytest.raises(ConfigurationError) as excinfo,
    ):
        src.stat(f"s3://{bucket}/k")
    message = str(excinfo.value)
    assert "no S3 credentials" in message
    assert "access_key_id" in message and "anon" in message
    assert not excinfo.value.retryable


def test_unreachable_endpoint_is_named_and_retryable(
    options: dict[str, Any], bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port nobody listens on: a SourceError (retryable) that names the
    endpoint, so a typo in endpoint_url shows. (botocore's own tries are cut
    to one; s3fs still tries again.)"""
    import socket

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = f"http://127.0.0.1:{port}"
    with (
        S3Source(**{**options, "endpoint_url": closed}) as src,
        pytest.raises(SourceError) as excinfo,
    ):
        src.stat(f"s3://{bucket}/k")
    assert closed in str(excinfo.value)
    assert "endpoint_url" in str(excinfo.value)
    assert excinfo.value.retryable


def test_programming_errors_are_not_disguised(options: dict[str, Any]) -> None:
    """A bug (a TypeError from our own code) is not turned into a retryable
    SourceError: library_error only claims the libraries' exceptions."""
    with S3Source(**options) as src:
        assert src.library_error(TypeError("bug"), "x") is None
        assert isinstance(src.library_error(ConnectionError("x"), "x"), SourceError)
