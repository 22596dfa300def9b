"""The Source contract on S3 (a moto server) and Google Cloud Storage (the
gcp-storage-emulator), both real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import socket
import types
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from sclib.testing.sources import SourceContract, SourceTree
from sclib.transfers.sources import Source

try:  # tests/ is a package
    from tests.transfers.cloud_servers import (
        cloud_env,
        gcs_emulator,
        gcs_options,
        moto_server,
        s3_client,
        s3_options,
    )
except ImportError:  # pragma: no cover - run from inside tests/
    from transfers.cloud_servers import (  # type: ignore[no-redef]
        cloud_env,
        gcs_emulator,
        gcs_options,
        moto_server,
        s3_client,
        s3_options,
    )

pytestmark = pytest.mark.integration

FILES = {
    "empty.dat": b"",
    "small.txt": b"hello, sclib\n",
    "scans/frame_0001.tif": os.urandom(50_000),
    "scans/deeper/frame_0002.tif": os.urandom(20_001),
}


def closed_port_url() -> str:
    """http://127.0.0.1:<a port nobody listens on a moment later>."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server for the module."""
    pytest.importorskip("s3fs", reason="needs s3fs (sclib[s3])")
    pytest.importorskip("moto.server", reason="needs moto[server]")
    with cloud_env(), moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def gcs_endpoint() -> Iterator[str]:
    """A GCS emulator for the module."""
    pytest.importorskip("gcsfs", reason="needs gcsfs (sclib[gcs])")
    pytest.importorskip("gcp_storage_emulator", reason="needs the emulator")
    with cloud_env(), gcs_emulator() as url:
        yield url


class TestS3Source(SourceContract):
    @pytest.fixture
    def endpoint(self, s3_endpoint: str) -> str:
        return s3_endpoint

    @pytest.fixture
    def source(self, endpoint: str) -> Iterator[Source]:
        from sclib.transfers.s3 import S3Source

        with S3Source(**s3_options(endpoint)) as src:
            yield src

    @pytest.fixture
    def tree(self, endpoint: str) -> SourceTree:
        bucket = f"sclib-{uuid.uuid4().hex[:16]}"
        admin = s3_client(endpoint)
        admin.create_bucket(Bucket=bucket)
        for key, data in FILES.items():
            admin.put_object(Bucket=bucket, Key=f"tree/{key}", Body=data)
        return SourceTree(
            folder=f"s3://{bucket}/tree",
            files=FILES,
            missing=f"s3://{bucket}/nothing-here",
            url_of={key: f"s3://{bucket}/tree/{key}" for key in FILES},
        )

    @pytest.fixture
    def unreachable(
        self, endpoint: str, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[tuple[Source, str]]:
        """(botocore's own tries are cut to one; s3fs still tries again.)"""
        from sclib.transfers.s3 import S3Source

        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")

        options: dict[str, Any] = {
            **s3_options(endpoint),
            "endpoint_url": closed_port_url(),
        }
        with S3Source(**options) as src:
            yield src, "s3://sclib-bucket/tree"


class TestGCSSource(SourceContract):
    @pytest.fixture
    def endpoint(self, gcs_endpoint: str) -> str:
        return gcs_endpoint

    @pytest.fixture
    def source(self, endpoint: str) -> Iterator[Source]:
        from sclib.transfers.gcs import GCSSource

        with GCSSource(**gcs_options(endpoint)) as src:
            yield src

    @pytest.fixture
    def tree(self, endpoint: str) -> SourceTree:
        from gcsfs.core import GCSFileSystem

        admin = GCSFileSystem(
            token="anon",  # noqa: S106 - gcsfs's word for no credentials
            endpoint_url=endpoint,
            project="sclib-test",
            skip_instance_cache=True,
            use_listings_cache=False,
        )
        bucket = f"sclib-{uuid.uuid4().hex[:16]}"
        admin.mkdir(bucket)
        for key, data in FILES.items():
            admin.pipe(f"{bucket}/tree/{key}", data)
        return SourceTree(
            folder=f"gs://{bucket}/tree",
            files=FILES,
            missing=f"gs://{bucket}/nothing-here",
            url_of={key: f"gs://{bucket}/tree/{key}" for key in FILES},
        )

    @pytest.fixture
    def unreachable(
        self, endpoint: str, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[tuple[Source, str]]:
        """(gcsfs waits about 30 s between its six tries; that wait is cut to
        nothing here, the connections stay real.)"""
        import gcsfs.retry

        from sclib.transfers.gcs import GCSSource

        async def no_wait(seconds: float) -> None:
            await asyncio.sleep(0)

        monkeypatch.setattr(
            gcsfs.retry, "asyncio", types.SimpleNamespace(sleep=no_wait)
        )
        options = {**gcs_options(endpoint), "endpoint_url": closed_port_url()}
        with GCSSource(**options) as src:
            yield src, "gs://sclib-bucket/tree"
