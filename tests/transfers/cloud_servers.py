"""Local cloud storage servers for the S3 and GCS transfer tests, on 127.0.0.1 only.

- :func:`moto_server`: moto's S3 in server mode (``moto[server]``), in a thread.
- :func:`gcs_emulator`: ``gcp-storage-emulator`` (pure Python), in a thread, in
  memory.
- :func:`cloud_env`: the environment both need: no CA bundle for plain-HTTP
  endpoints, no instance-metadata lookups, no proxy for 127.0.0.1, and gcsfs's
  experimental zonal/HNS support off (it would ask Google's Storage Control API
  about every bucket and stall for about a minute per call without a network).

Each server binds port 0 (the kernel picks a free port, no race) and is stopped
when its ``with`` block ends.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

# gcsfs reads this once, when it is first imported; the GCS module of sclib uses
# gcsfs.core.GCSFileSystem, which never makes those calls, but a test or fixture
# that goes through fsspec.filesystem("gs") would get the experimental class.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

__all__ = ["cloud_env", "gcs_emulator", "moto_server"]

logger = logging.getLogger(__name__)

#: dummy credentials for moto (never real ones)
S3_KEY = "testing-key-id"
S3_SECRET = "testing-secret-key"  # noqa: S105 - a dummy for a local test server
S3_REGION = "us-east-1"


@contextmanager
def cloud_env() -> Iterator[None]:
    """Set the environment variables the local servers need, restore them after."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        # botocore would load this bundle for every client; plain HTTP needs none
        mp.delenv("AWS_CA_BUNDLE", raising=False)
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        no_proxy = ",".join(
            p for p in (os.environ.get("NO_PROXY"), "127.0.0.1,localhost") if p
        )
        mp.setenv("NO_PROXY", no_proxy)
        mp.setenv("no_proxy", no_proxy)
        yield


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        logger.info("moto S3 server on %s:%s", host, port)
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for setting up and inspecting the moto server."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name=S3_REGION,
    )


def s3_options(endpoint: str) -> dict[str, Any]:
    """S3Source / S3Destination options for the moto server (the seed's names)."""
    return {
        "endpoint_url": endpoint,
        "access_key_id": S3_KEY,
        "secret_access_key": S3_SECRET,
        "region": S3_REGION,
    }


@contextmanager
def gcs_emulator() -> Iterator[str]:
    """A gcp-storage-emulator server on 127.0.0.1, in memory; yields its URL."""
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    try:
        httpd = server._api._httpd  # the port the kernel picked
        if httpd is None:  # pragma: no cover - start() waits for it
            raise RuntimeError("the GCS emulator did not start")
        # gcsfs races two requests in info() and drops the loser; do not print a
        # traceback for each broken pipe
        httpd.handle_error = _quiet_error
        host, port = httpd.server_address[:2]
        logger.info("GCS emulator on %s:%s", host, port)
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _quiet_error(request: object, client_address: object) -> None:
    """Log a dropped client connection instead of printing a traceback."""
    logger.debug("GCS emulator: a client went away (%s)", client_address)


def gcs_options(endpoint: str) -> dict[str, Any]:
    """GCSSource / GCSDestination options for the emulator (anonymous)."""
    return {"endpoint_url": endpoint, "token": "anon", "project": "sclib-test"}
