"""The engine end to end with object stores: moto's S3 server and the GCS emulator,
both real servers on 127.0.0.1, as sources and as destinations, with resume."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

pytest.importorskip("s3fs", reason="needs sclib[s3]")
pytest.importorskip("moto.server", reason="needs moto[server]")
pytest.importorskip("gcsfs", reason="needs sclib[gcs]")
pytest.importorskip("gcp_storage_emulator", reason="needs gcp-storage-emulator")

from sclib.transfers import MemorySessionStore, TransferConfig, TransferEngine
from sclib.transfers.plan import MIB
from tests.transfers.cloud_servers import (
    cloud_env,
    gcs_emulator,
    gcs_options,
    moto_server,
    s3_client,
    s3_options,
)
from tests.transfers.engine_sources import Interrupted, install

pytestmark = pytest.mark.integration
install()


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    with cloud_env(), moto_server() as endpoint:
        bucket = f"b-{uuid.uuid4().hex[:8]}"
        s3_client(endpoint).create_bucket(Bucket=bucket)
        yield {
            "bucket": bucket,
            "options": s3_options(endpoint),
            "client": s3_client(endpoint),
        }


@pytest.fixture(scope="module")
def gcs() -> Iterator[dict[str, Any]]:
    with cloud_env(), gcs_emulator() as endpoint:
        from gcsfs.core import GCSFileSystem

        options = gcs_options(endpoint)
        bucket = f"b-{uuid.uuid4().hex[:8]}"
        fs = GCSFileSystem(**options)
        fs.mkdir(bucket)
        yield {"bucket": bucket, "options": options}


def test_local_to_s3_and_back(s3: dict[str, Any], tmp_path: Path) -> None:
    """A file goes up as a verified multipart upload and comes back identical."""
    data = os.urandom(17 * MIB + 123)
    (tmp_path / "scan.h5").write_bytes(data)
    engine = TransferEngine(config=TransferConfig(chunk_size=8 * MIB))
    url = f"s3://{s3['bucket']}/up/scan.h5"
    up = engine.copy(str(tmp_path / "scan.h5"), url, dest_options=s3["options"])
    assert up.files[0].blake3 == blake3(data).hexdigest()
    assert up.files[0].chunks == 3
    down = engine.copy(url, str(tmp_path / "back.h5"), source_options=s3["options"])
    assert (tmp_path / "back.h5").read_bytes() == data
    assert down.files[0].blake3 == up.files[0].blake3


def test_interrupted_s3_upload_resumes_the_same_multipart_upload(
    s3: dict[str, Any], tmp_path: Path
) -> None:
    """An interrupted upload resumes its multipart upload; parts are not resent."""
    data = os.urandom(26 * MIB)
    (tmp_path / "big.raw").write_bytes(data)
    sessions = MemorySessionStore()
    engine = TransferEngine(
        sessions=sessions,
        config=TransferConfig(chunk_size=8 * MIB, parallel=2, retry_delay=0),
    )
    url = f"s3://{s3['bucket']}/resume/big.raw"
    with pytest.raises(Interrupted):
        engine.copy(
            f"flaky://{tmp_path}/big.raw",
            url,
            dest_options=s3["options"],
            source_options={"fail_after": 3},
        )
    key = "resume/big.raw"
    with pytest.raises(s3["client"].exceptions.ClientError):
        s3["client"].head_object(Bucket=s3["bucket"], Key=key)  # nothing visible yet
    (session,) = sessions.list(status="active")
    upload_id = session.state["upload_id"]
    done_before = len(session.chunks)
    result = engine.copy(f"flaky://{tmp_path}/big.raw", url, dest_options=s3["options"])
    assert result.files[0].chunks_reused == done_before >= 1
    assert sessions.get(session.id).state["upload_id"] == upload_id
    body = s3["client"].get_object(Bucket=s3["bucket"], Key=key)["Body"].read()
    assert body == data


def test_s3_prefix_to_local_folder(s3: dict[str, Any], tmp_path: Path) -> None:
    """Every object under an S3 prefix lands under its relative path."""
    client = s3["client"]
    files = {"a.nc": os.urandom(3000), "run1/b.nc": os.urandom(70_000), "run1/c": b""}
    for key, body in files.items():
        client.put_object(Bucket=s3["bucket"], Key=f"tree/{key}", Body=body)
    result = TransferEngine().copy(
        f"s3://{s3['bucket']}/tree/", str(tmp_path / "t"), source_options=s3["options"]
    )
    assert sorted(f.key for f in result.files) == sorted(files)
    for key, body in files.items():
        assert (tmp_path / "t" / key).read_bytes() == body


def test_local_to_gcs_and_back(gcs: dict[str, Any], tmp_path: Path) -> None:
    """GCS as destination (composed parts) and as source, byte for byte."""
    data = os.urandom(12 * MIB + 5)
    (tmp_path / "vol.tif").write_bytes(data)
    engine = TransferEngine(config=TransferConfig(chunk_size=8 * MIB))
    url = f"gs://{gcs['bucket']}/vol.tif"
    up = engine.copy(str(tmp_path / "vol.tif"), url, dest_options=gcs["options"])
    assert up.files[0].chunks == 2
    engine.copy(url, str(tmp_path / "back.tif"), source_options=gcs["options"])
    assert (tmp_path / "back.tif").read_bytes() == data


def test_lost_gcs_part_is_sent_again_on_resume(
    gcs: dict[str, Any], tmp_path: Path
) -> None:
    """A recorded part that vanished from the bucket is noticed on resume and sent
    again, instead of failing every later commit."""
    from gcsfs.core import GCSFileSystem

    data = os.urandom(40 * MIB)
    (tmp_path / "big.raw").write_bytes(data)
    sessions = MemorySessionStore()
    engine = TransferEngine(
        sessions=sessions,
        config=TransferConfig(chunk_size=8 * MIB, parallel=1, retry_delay=0),
    )
    url = f"gs://{gcs['bucket']}/lost/big.raw"
    with pytest.raises(Interrupted):
        engine.copy(
            f"flaky://{tmp_path}/big.raw",
            url,
            dest_options=gcs["options"],
            source_options={"fail_after": 3},
        )
    (session,) = sessions.list(status="active")
    assert 0 in session.chunks
    fs = GCSFileSystem(**gcs["options"])
    parts = [p for p in fs.find(f"{gcs['bucket']}/lost/") if "sclib-parts" in p]
    first = min(parts)
    fs.rm(first)
    result = engine.copy(
        f"flaky://{tmp_path}/big.raw", url, dest_options=gcs["options"]
    )
    assert result.files[0].chunks_reused == len(session.chunks) - 1
    engine.copy(url, str(tmp_path / "back.raw"), source_options=gcs["options"])
    assert (tmp_path / "back.raw").read_bytes() == data


def _count_gets(monkeypatch: pytest.MonkeyPatch, span: int) -> list[tuple[int, int]]:
    """Make S3Source GETs serve at most ``span`` bytes; the list records each
    GET's ``(offset, end)`` as it is sent."""
    from sclib.transfers.s3 import S3Source

    monkeypatch.setattr(S3Source, "stream_span", span)
    gets: list[tuple[int, int]] = []
    real_request = S3Source._request

    def request(self: S3Source, obj: Any, offset: int, end: int) -> Any:
        gets.append((offset, end))
        return real_request(self, obj, offset, end)

    monkeypatch.setattr(S3Source, "_request", request)
    return gets


@contextlib.contextmanager
def _reads_fail_after(count: int) -> Iterator[None]:
    """Inside the block, S3Source chunk reads after the first ``count`` raise
    SourceError (a stand-in for a connection reset)."""
    from sclib.errors import SourceError
    from sclib.transfers.s3 import S3Source

    real_read = S3Source.read_into
    reads = [0]

    def failing(self: S3Source, obj: Any, offset: int, buf: Any) -> int:
        reads[0] += 1
        if reads[0] > count:
            raise SourceError("connection reset (stand-in for a network failure)")
        return real_read(self, obj, offset, buf)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(S3Source, "read_into", failing)
        yield


def test_s3_source_chunks_share_gets_and_resume_skips_what_landed(
    s3: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 -> local: the engine reads an S3 object's chunks in order, so one GET
    serves ``stream_span`` bytes of them (20 MiB in 1 MiB chunks with an 8 MiB
    span: 3 GETs, not 20). Interrupted after 11 chunks and resumed, the copy asks
    only for the bytes it does not have and is identical."""
    from sclib.errors import SourceError

    data = os.urandom(20 * MIB)
    key = f"streamed/{uuid.uuid4().hex}.bin"
    s3["client"].put_object(Bucket=s3["bucket"], Key=key, Body=data)
    url = f"s3://{s3['bucket']}/{key}"
    gets = _count_gets(monkeypatch, span=8 * MIB)
    sessions = MemorySessionStore()
    config = TransferConfig(chunk_size=MIB, parallel=3, max_attempts=1)
    engine = TransferEngine(sessions=sessions, config=config)

    whole = engine.copy(url, str(tmp_path / "whole.bin"), source_options=s3["options"])
    assert (tmp_path / "whole.bin").read_bytes() == data
    assert whole.files[0].blake3 == blake3(data).hexdigest()
    assert gets == [(0, 8 * MIB), (8 * MIB, 16 * MIB), (16 * MIB, 20 * MIB)]

    gets.clear()
    with _reads_fail_after(11), pytest.raises(SourceError):
        engine.copy(url, str(tmp_path / "part.bin"), source_options=s3["options"])
    assert not (tmp_path / "part.bin").exists()
    (session,) = sessions.list(status="active")
    have = len(session.chunks)
    assert 1 <= have <= 11
    gets.clear()
    resumed = engine.copy(url, str(tmp_path / "part.bin"), source_options=s3["options"])
    assert (tmp_path / "part.bin").read_bytes() == data
    assert resumed.files[0].chunks_reused == have
    assert resumed.files[0].blake3 == whole.files[0].blake3
    # nothing before the first missing chunk was asked for again
    first_missing = min(set(range(20)) - set(session.chunks))
    assert gets[0][0] == first_missing * MIB
    assert sum(end - offset for offset, end in gets) <= (20 - have) * MIB + 8 * MIB


def test_s3_to_s3_resume_reads_the_source_once_in_order(
    s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 -> S3 resumed: the destination cannot read parts back, so the chunks an
    earlier run verified are read from the source again, and for S3 that happens
    in order from the one open GET (not by each chunk thread with a GET of its
    own, which asked for overlapping spans and held a connection each): the GETs
    of the resumed run never ask for a byte twice, and the copy is identical."""
    from sclib.errors import SourceError

    data = os.urandom(32 * MIB)
    key = f"s2s/{uuid.uuid4().hex}.bin"
    s3["client"].put_object(Bucket=s3["bucket"], Key=key, Body=data)
    url = f"s3://{s3['bucket']}/{key}"
    dest = f"s3://{s3['bucket']}/copy/{key}"
    gets = _count_gets(monkeypatch, span=16 * MIB)
    sessions = MemorySessionStore()
    config = TransferConfig(chunk_size=8 * MIB, parallel=3, max_attempts=1)
    engine = TransferEngine(sessions=sessions, config=config)
    options = {"source_options": s3["options"], "dest_options": s3["options"]}
    with _reads_fail_after(2), pytest.raises(SourceError):
        engine.copy(url, dest, **options)
    (session,) = sessions.list(status="active")
    assert sorted(session.chunks) == [0, 1]
    gets.clear()
    resumed = engine.copy(url, dest, **options)
    assert resumed.files[0].chunks_reused == 2
    assert resumed.files[0].blake3 == blake3(data).hexdigest()
    copied = s3["client"].get_object(Bucket=s3["bucket"], Key=f"copy/{key}")
    assert copied["Body"].read() == data
    assert gets == [(0, 16 * MIB), (16 * MIB, 32 * MIB)]
