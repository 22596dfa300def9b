"""GCSSource and GCSDestination against gcp-storage-emulator on 127.0.0.1.

The emulator ignores ``ifGenerationMatch`` on downloads and sends no
``x-goog-generation`` header, so the source's fallback (a generation check after
the read) is what catches a replaced object here; the real-GCS answers (412, a
different served generation) are replayed by patching the request function.
"""

from __future__ import annotations

import base64
import json
import os
import random
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("gcsfs", reason="the GCS tests need gcsfs (sclib[gcs])")
pytest.importorskip("gcp_storage_emulator", reason="needs gcp-storage-emulator")

try:  # tests/transfers is a package
    from tests.transfers.cloud_servers import cloud_env, gcs_emulator, gcs_options
except ImportError:  # tests/transfers is a rootdir-less folder on sys.path
    from cloud_servers import (  # type: ignore[no-redef]
        cloud_env,
        gcs_emulator,
        gcs_options,
    )

import google_crc32c
from gcsfs.core import GCSFileSystem

from sclib.errors import (
    ChecksumMismatch,
    ConfigurationError,
    DestinationError,
    SourceChanged,
    SourceError,
    SourceNotFound,
)
from sclib.transfers.gcs import (
    PARTS_SUFFIX,
    GCSDestination,
    GCSSource,
    crc32c_combine,
    gcs_error,
    gcsfs_options,
)
from sclib.transfers.plan import KIB, MIB, ChunkPlan
from sclib.transfers.sources import SourceObject, open_source

pytestmark = pytest.mark.integration

CHUNK = 5 * MIB


# -- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """One GCS emulator for the module, on a port the kernel picked."""
    with cloud_env(), gcs_emulator() as url:
        yield url


@pytest.fixture(scope="module")
def options(endpoint: str) -> dict[str, Any]:
    """Anonymous GCS options pointing at the emulator."""
    return gcs_options(endpoint)


@pytest.fixture(scope="module")
def admin(endpoint: str) -> Any:
    """A gcsfs filesystem to set up and inspect the emulator behind sclib's back."""
    return GCSFileSystem(
        token="anon",  # noqa: S106 - gcsfs's word for no credentials
        endpoint_url=endpoint,
        project="sclib-test",
        skip_instance_cache=True,
        use_listings_cache=False,
    )


@pytest.fixture
def bucket(admin: Any) -> str:
    """A new, empty bucket for each test."""
    name = f"sclib-{uuid.uuid4().hex[:16]}"
    admin.mkdir(name)
    return name


@pytest.fixture(scope="module")
def source(options: dict[str, Any]) -> Iterator[GCSSource]:
    """A GCSSource for the module."""
    src = GCSSource(**options)
    yield src
    src.close()


@pytest.fixture
def destination(options: dict[str, Any], bucket: str) -> Iterator[GCSDestination]:
    """A GCSDestination writing under ``gs://<bucket>/out``."""
    dest = GCSDestination(f"gs://{bucket}/out", **options)
    yield dest
    dest.close()


def objects(admin: Any, bucket: str) -> list[str]:
    """Every object name in ``bucket`` (no listing cache)."""
    return sorted(p.split("/", 1)[1] for p in admin.find(bucket))


def put(admin: Any, path: str, data: bytes) -> None:
    """Upload ``data`` to ``bucket/key`` behind sclib's back, in 1 MiB pieces
    (aiohttp warns about larger bytes bodies, and warnings are errors here)."""
    admin.pipe(path, data, chunksize=MIB)


def read_all(source: GCSSource, obj: SourceObject, step: int) -> bytes:
    """Read ``obj`` in ranges of ``step`` bytes, out of order, and reassemble it."""
    offsets = list(range(0, obj.size, step))
    pieces = {o: source.read(obj, o, step) for o in reversed(offsets)}
    return b"".join(pieces[o] for o in offsets)


def write_all(
    writer: Any, data: bytes, chunk_size: int = CHUNK, order: list[int] | None = None
) -> dict[int, Any]:
    """Write every chunk of ``data`` (in ``order`` if given); return the tokens."""
    plan = ChunkPlan(len(data), chunk_size)
    tokens = {}
    for i in order if order is not None else range(plan.count):
        chunk = plan.chunk(i)
        tokens[i] = writer.write_chunk(chunk, data[chunk.offset : chunk.end])
    return tokens


# -- options and checksums ------------------------------------------------------


def test_options_map_to_gcsfs() -> None:
    """credentials is token, anon is token='anon'; clashes and typos are refused."""
    assert gcsfs_options({"anon": True})["token"] == "anon"  # noqa: S105
    assert gcsfs_options({"credentials": {"type": "x"}})["token"] == {"type": "x"}
    assert gcsfs_options({"project": "p"})["use_listings_cache"] is False
    with pytest.raises(ConfigurationError, match="only one"):
        gcsfs_options({"token": "a.json", "credentials": "b.json"})
    with pytest.raises(ConfigurationError, match="tokne") as excinfo:
        gcsfs_options({"tokne": "SECRET-FILE.json"})
    assert "SECRET-FILE" not in str(excinfo.value)


def test_crc32c_combine_matches_crc32c_of_the_concatenation() -> None:
    """crc32c_combine(crc(a), crc(b), len(b)) == crc(a + b)."""
    rng = random.Random(7)
    for len_a, len_b in [(0, 0), (0, 5), (5, 0), (1, 1), (1000, 3), (KIB, 70_001)]:
        a, b = rng.randbytes(len_a), rng.randbytes(len_b)
        crc_a, crc_b = google_crc32c.value(a), google_crc32c.value(b)
        assert crc32c_combine(crc_a, crc_b, len_b) == google_crc32c.value(a + b)


def test_credentials_stay_out_of_repr(options: dict[str, Any]) -> None:
    """repr() shows the endpoint, never the token."""
    user = {
        "type": "authorized_user",
        "client_id": "sclib-test-client",
        "client_secret": "SECRET-CLIENT-VALUE",
        "refresh_token": "SECRET-REFRESH-VALUE",
    }
    secret = {**options, "token": None, "credentials": user}
    for made in (GCSSource(**secret), GCSDestination("gs://b/p", **secret)):
        assert "SECRET" not in repr(made)
        assert options["endpoint_url"] in repr(made)
        made.close()


def test_open_source_finds_the_gcs_plugin(options: dict[str, Any]) -> None:
    """gs:// and gcs:// URLs open a GCSSource through the registry."""
    for url in ("gs://b/k", "gcs://b/k"):
        src = open_source(url, **options)
        try:
            assert isinstance(src, GCSSource)
        finally:
            src.close()


# -- source ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 5 * MIB + 1])
def test_stat_and_ranged_reads_reassemble_exactly(
    source: GCSSource, admin: Any, bucket: str, size: int
) -> None:
    """stat() describes the object; reads by ranges give back exactly its bytes."""
    data = os.urandom(size)
    put(admin, f"{bucket}/dir/blob.bin", data)
    obj = source.stat(f"gs://{bucket}/dir/blob.bin")
    assert obj.size == size
    assert obj.key == ""
    assert obj.url == f"gs://{bucket}/dir/blob.bin"
    info = admin.info(f"{bucket}/dir/blob.bin")
    assert obj.identity["generation"] == str(info["generation"])
    assert obj.identity["md5"] == info["md5Hash"]
    assert obj.identity["crc32c"] == info["crc32c"]
    assert "etag" in obj.identity
    assert read_all(source, obj, 1 * MIB + 7) == data
    assert source.read(obj, size, 10) == b""
    if size:
        assert source.read(obj, size - 1, 100) == data[-1:]


def test_gcs_scheme_is_read_too(source: GCSSource, admin: Any, bucket: str) -> None:
    """A gcs:// URL reads the same object (reported as gs://)."""
    put(admin, f"{bucket}/x.bin", b"hello")
    obj = source.stat(f"gcs://{bucket}/x.bin")
    assert obj.url == f"gs://{bucket}/x.bin"
    assert source.read(obj, 1, 3) == b"ell"


def test_concurrent_range_reads(source: GCSSource, admin: Any, bucket: str) -> None:
    """Several threads can read ranges of one object at once."""
    data = os.urandom(2 * MIB)
    put(admin, f"{bucket}/c.bin", data)
    obj = source.stat(f"gs://{bucket}/c.bin")
    offsets = list(range(0, obj.size, 256 * KIB))
    with ThreadPoolExecutor(max_workers=4) as pool:
        parts = list(pool.map(lambda o: source.read(obj, o, 256 * KIB), offsets))
    assert b"".join(parts) == data


def test_prefix_walk_gives_relative_keys(
    source: GCSSource, admin: Any, bucket: str
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
        put(admin, f"{bucket}/{key}", body)
    for url in (f"gs://{bucket}/data", f"gs://{bucket}/data/"):
        found = {o.key: o for o in source.walk(url)}
        assert sorted(found) == ["a.bin", "sub/b.bin", "sub/deeper/c.bin"]
        assert found["sub/b.bin"].size == 2
        assert found["sub/b.bin"].url == f"gs://{bucket}/data/sub/b.bin"
        assert found["sub/b.bin"].identity["generation"]
    whole = sorted(o.key for o in source.walk(f"gs://{bucket}"))
    assert whole == sorted(bodies)
    single = list(source.walk(f"gs://{bucket}/data/a.bin"))
    assert [(o.key, o.size) for o in single] == [("", 1)]


def test_missing_object_raises_source_not_found(source: GCSSource, bucket: str) -> None:
    """stat() and walk() of an object or prefix that does not exist: SourceNotFound."""
    with pytest.raises(SourceNotFound):
        source.stat(f"gs://{bucket}/no/such/key")
    with pytest.raises(SourceNotFound):
        list(source.walk(f"gs://{bucket}/no/such/prefix"))


def test_overwritten_object_raises_source_changed(
    source: GCSSource, admin: Any, bucket: str
) -> None:
    """An object replaced between stat and read raises SourceChanged."""
    put(admin, f"{bucket}/v.bin", b"version one")
    obj = source.stat(f"gs://{bucket}/v.bin")
    assert source.read(obj, 0, 7) == b"version"
    put(admin, f"{bucket}/v.bin", b"VERSION TWO")
    with pytest.raises(SourceChanged, match="generation"):
        source.read(obj, 0, 7)


def test_precondition_failure_is_source_changed_in_one_request(
    source: GCSSource, admin: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What real GCS answers to ifGenerationMatch on a replaced object (412) is
    SourceChanged, without another request."""
    put(admin, f"{bucket}/p.bin", b"payload")
    obj = source.stat(f"gs://{bucket}/p.bin")
    seen: list[dict[str, Any]] = []

    def gcs_412(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        raise FileExistsError(path)  # gcsfs raises this for 412

    monkeypatch.setattr(source.fs, "call", gcs_412)
    with pytest.raises(SourceChanged, match="no longer"):
        source.read(obj, 0, 3)
    assert len(seen) == 1
    assert seen[0]["ifGenerationMatch"] == obj.identity["generation"]


def test_served_generation_is_compared(
    source: GCSSource, admin: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A different x-goog-generation served with the bytes is SourceChanged."""
    put(admin, f"{bucket}/g.bin", b"payload")
    obj = source.stat(f"gs://{bucket}/g.bin")
    real = source.fs.call

    def other_generation(*args: Any, **kwargs: Any) -> Any:
        headers, data = real(*args, **kwargs)
        return {**headers, "x-goog-generation": "1"}, data

    monkeypatch.setattr(source.fs, "call", other_generation)
    with pytest.raises(SourceChanged, match="-> 1"):
        source.read(obj, 0, 3)


def test_deleted_object_raises_source_changed(
    source: GCSSource, admin: Any, bucket: str
) -> None:
    """An object deleted after stat raises SourceChanged on read."""
    put(admin, f"{bucket}/gone.bin", b"soon gone")
    obj = source.stat(f"gs://{bucket}/gone.bin")
    admin.rm(f"{bucket}/gone.bin")
    with pytest.raises(SourceChanged, match="disappeared"):
        source.read(obj, 0, 4)


# -- destination ----------------------------------------------------------------


def test_url_for_and_object_keys(options: dict[str, Any]) -> None:
    """Relative keys land under the prefix; "" is the prefix itself."""
    dest = GCSDestination("gcs://bkt/some/prefix/", **options)
    try:
        assert dest.url_for("a/b.bin") == "gs://bkt/some/prefix/a/b.bin"
        assert dest.url_for("") == "gs://bkt/some/prefix"
        assert GCSDestination.object_store is True
    finally:
        dest.close()
    with pytest.raises(ConfigurationError):
        GCSDestination("s3://bkt/x", **options)


def test_parts_out_of_order_commit_to_the_exact_object(
    destination: GCSDestination, admin: Any, bucket: str
) -> None:
    """Chunks written out of order and from threads compose into the exact bytes;
    nothing is at the key before commit, and the parts are gone after."""
    data = os.urandom(2 * CHUNK + 12345)
    writer = destination.open("run/data.bin", len(data), CHUNK)
    assert writer.state["bucket"] == bucket
    assert writer.state["key"] == "out/run/data.bin"
    assert writer.state["resumed"] is False
    plan = ChunkPlan(len(data), CHUNK)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            c.index: pool.submit(writer.write_chunk, c, data[c.offset : c.end])
            for c in reversed(list(plan))
        }
    tokens = {i: f.result() for i, f in futures.items()}
    assert not destination.exists("run/data.bin")
    assert all(PARTS_SUFFIX in name for name in objects(admin, bucket))
    writer.commit(tokens)
    assert destination.exists("run/data.bin")
    assert admin.cat(f"{bucket}/out/run/data.bin") == data
    assert objects(admin, bucket) == ["out/run/data.bin"]
    info = admin.info(f"{bucket}/out/run/data.bin")
    assert info["crc32c"] == base64.b64encode(
        google_crc32c.Checksum(data).digest()
    ).decode("ascii")


@pytest.mark.parametrize("size", [0, 1, CHUNK])
def test_small_objects(
    destination: GCSDestination, admin: Any, bucket: str, size: int
) -> None:
    """0 bytes: written whole at commit; 1 byte and one chunk: one part composed."""
    data = os.urandom(size)
    writer = destination.open("small.bin", size, CHUNK)
    tokens = write_all(writer, data)
    assert not destination.exists("small.bin")
    writer.commit(tokens)
    assert admin.cat(f"{bucket}/out/small.bin") == data
    assert objects(admin, bucket) == ["out/small.bin"]


def test_many_parts_compose_in_a_tree(
    destination: GCSDestination, admin: Any, bucket: str
) -> None:
    """More than 32 parts are composed 32 at a time, in levels, in order."""
    chunk_size = KIB
    data = os.urandom(70 * chunk_size + 3)  # 71 parts: 3 groups, then the final
    writer = destination.open("tree.bin", len(data), chunk_size)
    order = list(range(ChunkPlan(len(data), chunk_size).count))
    random.Random(3).shuffle(order)
    tokens = write_all(writer, data, chunk_size, order)
    writer.commit(tokens)
    assert admin.cat(f"{bucket}/out/tree.bin") == data
    assert objects(admin, bucket) == ["out/tree.bin"]


def test_abort_leaves_no_object_and_no_parts(
    destination: GCSDestination, admin: Any, bucket: str
) -> None:
    """abort() deletes every part; no object appears."""
    data = os.urandom(CHUNK + 1)
    writer = destination.open("aborted.bin", len(data), CHUNK)
    write_all(writer, data, order=[1, 0])
    assert len(objects(admin, bucket)) == 2
    writer.abort()
    assert not destination.exists("aborted.bin")
    assert objects(admin, bucket) == []
    writer.abort()  # twice is fine


def test_resume_with_saved_state_continues_the_same_upload(
    destination: GCSDestination, admin: Any, bucket: str
) -> None:
    """A writer reopened from its saved (JSON) state continues the same upload."""
    data = os.urandom(2 * CHUNK + 3)
    first = destination.open("resumed.bin", len(data), CHUNK)
    tokens = write_all(first, data, order=[0])
    saved = json.loads(json.dumps(first.state))
    tokens = {int(k): v for k, v in json.loads(json.dumps(tokens)).items()}

    second = destination.open("resumed.bin", len(data), CHUNK, state=saved)
    assert second.state["upload_id"] == saved["upload_id"]
    assert second.state["resumed"] is True
    tokens.update(write_all(second, data, order=[2, 1]))
    second.commit(tokens)
    assert admin.cat(f"{bucket}/out/resumed.bin") == data

    # a process that lost the end of commit and reopens finds it done
    third = destination.open("resumed.bin", len(data), CHUNK, state=saved)
    assert third.state["resumed"] is True
    third.commit({})
    assert admin.cat(f"{bucket}/out/resumed.bin") == data


def test_resume_without_parts_starts_over(
    destination: GCSDestination, admin: Any, bucket: str
) -> None:
    """A saved state whose parts are all gone gives a fresh upload, resumed=False."""
    data = os.urandom(CHUNK + 1)
    first = destination.open("expired.bin", len(data), CHUNK)
    write_all(first, data, order=[0])
    saved = dict(first.state)
    first.abort()
    second = destination.open("expired.bin", len(data), CHUNK, state=saved)
    assert second.state["resumed"] is False
    assert second.state["upload_id"] != saved["upload_id"]
    second.commit(write_all(second, data))
    assert admin.cat(f"{bucket}/out/expired.bin") == data


def test_part_damaged_in_transit_is_refused(
    destination: GCSDestination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes damaged on the way do not match the MD5/CRC-32C sent with them: the
    server refuses the upload and write_chunk raises ChecksumMismatch."""
    data = os.urandom(CHUNK + 5)
    writer = destination.open("damaged.bin", len(data), CHUNK)
    real = writer._upload

    def corrupting(name: str, body: bytes, md5: bytes, crc: int) -> Any:
        damaged = bytearray(body)
        damaged[len(damaged) // 2] ^= 0x01
        return real(name, bytes(damaged), md5, crc)

    monkeypatch.setattr(writer, "_upload", corrupting)
    with pytest.raises(ChecksumMismatch, match="refused"):
        write_all(writer, data, order=[1])
    monkeypatch.setattr(writer, "_upload", real)
    writer.commit(write_all(writer, data))
    assert destination.exists("damaged.bin")


def test_part_stored_differently_raises_checksum_mismatch(
    destination: GCSDestination, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored part whose reported CRC-32C differs from the chunk's is refused."""
    writer = destination.open("different.bin", 10, CHUNK)
    real = writer._upload

    def misreporting(name: str, body: bytes, md5: bytes, crc: int) -> Any:
        return {**real(name, body, md5, crc), "crc32c": "AAAAAA=="}

    monkeypatch.setattr(writer, "_upload", misreporting)
    with pytest.raises(ChecksumMismatch, match="did not land intact"):
        write_all(writer, b"0123456789")


def test_commit_refuses_missing_or_replaced_parts(
    destination: GCSDestination, admin: Any, bucket: str
) -> None:
    """commit() checks every part is there and is the one that was verified."""
    data = os.urandom(CHUNK + 10)
    writer = destination.open("partial.bin", len(data), CHUNK)
    tokens = write_all(writer, data, order=[0])
    with pytest.raises(DestinationError, match="never uploaded"):
        writer.commit(tokens)
    tokens.update(write_all(writer, data, order=[1]))
    with pytest.raises(ChecksumMismatch, match="chunk 0"):
        writer.commit({**tokens, 0: "12345"})
    assert not destination.exists("partial.bin")
    writer.commit(tokens)
    assert admin.cat(f"{bucket}/out/partial.bin") == data
    writer.commit(tokens)  # a repeated commit is a no-op


# -- errors from the client libraries -------------------------------------------------


def test_unreachable_endpoint_is_named_and_retryable(
    options: dict[str, Any], bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port nobody listens on: a retryable SourceError naming the endpoint.
    (gcsfs's own back-off between its six tries is shortened to nothing: the
    connections are real, only the 30 s of waiting is skipped.)"""
    import asyncio
    import socket
    import types

    import gcsfs.retry

    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    monkeypatch.setattr(gcsfs.retry, "asyncio", types.SimpleNamespace(sleep=no_wait))

    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = f"http://127.0.0.1:{port}"
    with (
        GCSSource(**{**options, "endpoint_url": closed}) as src,
        pytest.raises(SourceError) as excinfo,
    ):
        src.stat(f"gs://{bucket}/k")
    assert closed in str(excinfo.value)
    assert excinfo.value.retryable


def test_google_auth_errors_say_where_credentials_come_from() -> None:
    """google-auth's own exception classes become a ConfigurationError with the
    ways to give credentials. (Constructed here: without credentials gcsfs
    falls back to anonymous access, and the refusal would need Google itself.)"""
    from google.auth.exceptions import DefaultCredentialsError, RefreshError

    for exc in (DefaultCredentialsError("none found"), RefreshError("expired")):
        error = gcs_error(exc, "reading gs://b/k")
        assert isinstance(error, ConfigurationError)
        assert "service_account_json" in str(error)
        assert not error.retryable
    assert GCSSource.raised_by(RefreshError("x"), "google")
    assert not GCSSource.raised_by(KeyError("x"), "google")
