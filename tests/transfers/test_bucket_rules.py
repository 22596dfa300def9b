"""Bucket names, regions and endpoint URLs that no S3 or GCS service takes are
refused up front with InvalidInput naming the field and the rule: by the rules
themselves, and by the S3 and GCS sources opened directly through the
TransferEngine, against moto's S3 and the GCS emulator on 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sclib.errors import InvalidInput
from sclib.transfers.buckets import (
    check_endpoint_url,
    check_gcs_bucket,
    check_region,
    check_s3_bucket,
)
from sclib.transfers.engine import TransferConfig, TransferEngine


@pytest.mark.parametrize(
    "name",
    ["abc", "my-bucket", "my.bucket.2024", "a" * 63, "0-data", "logs--x-s3"],
)
def test_valid_s3_bucket_names_pass(name: str) -> None:
    """Names S3 allows are returned unchanged."""
    assert check_s3_bucket(name) == name


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("ab", "3 to 63 characters"),
        ("a" * 64, "3 to 63 characters"),
        ("Bad_Bucket", "lower-case letters"),
        ("my bucket", "lower-case letters"),
        ("-bucket", "begin and end"),
        ("bucket.", "begin and end"),
        ("a..b", "adjacent periods"),
        ("192.168.5.4", "IP address"),
    ],
)
def test_invalid_s3_bucket_names_say_the_rule(name: str, rule: str) -> None:
    """Each S3 naming rule broken is refused with the field and the rule."""
    with pytest.raises(InvalidInput, match=rule) as caught:
        check_s3_bucket(name, "source_config.bucket_name")
    assert str(caught.value).startswith("source_config.bucket_name: ")
    assert not caught.value.retryable


@pytest.mark.parametrize(
    "name", ["abc", "my_bucket", "my-bucket", "a.b.c", ".".join(["a" * 63] * 3)]
)
def test_valid_gcs_bucket_names_pass(name: str) -> None:
    """Names GCS allows (underscores, dotted names up to 222) pass."""
    assert check_gcs_bucket(name) == name


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("ab", "3 to 63 characters"),
        ("a" * 64, "3 to 63 characters"),
        ("Bucket", "lower-case letters"),
        ("_bucket", "begin and end"),
        (".".join(["a" * 64, "b"]), "1 to 63 characters"),
        ("1.2.3.4", "IP address"),
        ("goog-data", "begin with 'goog'"),
        ("my-google-data", "contain 'google'"),
    ],
)
def test_invalid_gcs_bucket_names_say_the_rule(name: str, rule: str) -> None:
    """Each GCS naming rule broken is refused with the field and the rule."""
    with pytest.raises(InvalidInput, match=rule):
        check_gcs_bucket(name, "source_config.bucket_name")


def test_regions() -> None:
    """A region botocore cannot take is refused; without an endpoint it must be
    an AWS region (listed, or named like those of a partition); with one, any
    well-formed name is the store's business."""
    assert check_region("us-east-1") == "us-east-1"
    assert check_region("cn-north-1") == "cn-north-1"
    assert check_region("us-gov-west-1") == "us-gov-west-1"
    for bad in ("not a region!", "-us-east-1", "us_east_1", "1234", "a" * 64):
        with pytest.raises(InvalidInput, match="letters, digits and '-'"):
            check_region(bad, "source_config.region")
    pytest.importorskip("botocore")
    with pytest.raises(InvalidInput, match="AWS region") as caught:
        check_region("mars-north-1", "source_config.region")
    assert "endpoint_url" in str(caught.value)
    assert check_region("mars-north-1", endpoint_url="http://127.0.0.1:9000")


def test_endpoint_urls() -> None:
    """http(s) with a host (name, IPv4, bracketed IPv6), a port and a path pass;
    other schemes, credentials, queries, bad hosts and ports are refused, and a
    value that may carry credentials is not repeated in the message."""
    for good in (
        "http://127.0.0.1:9000",
        "https://s3.example.org",
        "http://[::1]:9000/",
        "https://gateway.example.org/s3/",
    ):
        assert check_endpoint_url(good) == good
    for bad, rule in [
        ("ftp://example.org", "http:// or https://"),
        ("example.org", "http:// or https://"),
        ("http://", "name a host"),
        ("http://minio_1:9000", "its host must be"),
        ("http://example.org:99999", "does not parse"),
        ("http://example.org:0", "port"),
        ("http://a b", "spaces"),
        ("http://example.org/#x", "no query and no fragment"),
    ]:
        with pytest.raises(InvalidInput, match=rule):
            check_endpoint_url(bad, "source_config.endpoint_url")
    for secret in ("http://key:s3cr3t@example.org", "http://example.org/?sig=s3cr3t"):
        with pytest.raises(InvalidInput) as caught:
            check_endpoint_url(secret)
        assert "s3cr3t" not in str(caught.value)


# -- through the engine ---------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[tuple[str, str]]:
    """moto's S3 on 127.0.0.1 with a bucket holding ``a.bin``."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    from tests.transfers.cloud_servers import cloud_env, moto_server, s3_client

    with cloud_env(), moto_server() as endpoint:
        bucket = f"b-{uuid.uuid4().hex[:8]}"
        client = s3_client(endpoint)
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="a.bin", Body=b"x" * 100)
        yield endpoint, bucket


def _engine() -> TransferEngine:
    # retries that would take seconds if the errors were taken for transient
    return TransferEngine(config=TransferConfig(max_attempts=5, retry_delay=2.0))


@pytest.mark.integration
def test_s3_source_refuses_a_bad_region_endpoint_or_bucket(
    moto: tuple[str, str], tmp_path: Path
) -> None:
    """Copied directly with the engine, an S3 source with an invalid region (which
    botocore raised as InvalidRegionError on every try), an invalid endpoint URL
    or a bucket name S3 never takes fails at once with InvalidInput; the valid
    copy goes through."""
    from tests.transfers.cloud_servers import cloud_env, s3_options

    endpoint, bucket = moto
    with cloud_env():
        options: dict[str, Any] = s3_options(endpoint)
        cases: list[tuple[str, dict[str, Any], str]] = [
            (f"s3://{bucket}/a.bin", {**options, "region": "not a region!"}, "region"),
            (
                f"s3://{bucket}/a.bin",
                {**options, "endpoint_url": "ftp://127.0.0.1:1"},
                "endpoint_url",
            ),
            ("s3://Bad_Bucket/a.bin", options, "bucket: 'Bad_Bucket'"),
        ]
        for url, opts, words in cases:
            with pytest.raises(InvalidInput, match=words):
                _engine().copy(url, str(tmp_path / "out") + "/", source_options=opts)
        result = _engine().copy(
            f"s3://{bucket}/a.bin", str(tmp_path / "ok") + "/", source_options=options
        )
    assert result.files[0].size == 100


@pytest.mark.integration
def test_gcs_source_refuses_a_bad_bucket_or_endpoint(tmp_path: Path) -> None:
    """The GCS source opened by the engine refuses a bucket name GCS never takes
    and an endpoint that is not an http(s) URL, with InvalidInput."""
    pytest.importorskip("gcsfs")
    pytest.importorskip("gcp_storage_emulator")
    from tests.transfers.cloud_servers import cloud_env, gcs_emulator, gcs_options

    with cloud_env(), gcs_emulator() as endpoint:
        options = gcs_options(endpoint)
        with pytest.raises(InvalidInput, match="begin with 'goog'"):
            _engine().copy(
                "gs://goog-data/a.bin", str(tmp_path) + "/", source_options=options
            )
        bad = {**options, "endpoint_url": "localhost:4443"}
        with pytest.raises(InvalidInput, match="endpoint_url"):
            _engine().copy(
                "gs://some-bucket/a.bin", str(tmp_path) + "/", source_options=bad
            )
