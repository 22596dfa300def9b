"""The backup_creation job: a dataset folder copied by the TransferEngine to a local
folder and to S3 (moto's real S3 server on 127.0.0.1), verified by BLAKE3, with
sessions in a real SQLite file."""

from __future__ import annotations

import uuid as _uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

from sclib.datasets import DatasetStore
from sclib.errors import ChecksumMismatch, Forbidden, InvalidInput
from sclib.pipeline.backup import BackupHandler, normalise_destination
from sclib.transfers.sessions import open_session_store
from tests.pipeline.maintenance import (
    digests,
    job_context,
    make_dataset,
    sample_files,
    sqlite_datasets,
)


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return sqlite_datasets(tmp_path)


def _handler(tmp_path: Path, store: DatasetStore, **kw: Any) -> BackupHandler:
    sessions = open_session_store(f"sqlite:///{tmp_path / 'sessions.db'}")
    return BackupHandler(tmp_path / "data", store, sessions, **kw)


def test_backup_to_a_local_folder_then_a_second_run_sends_nothing(
    tmp_path: Path, store: DatasetStore
) -> None:
    """The dataset's files arrive under <destination>/<uuid>/ with the same BLAKE3
    digests, listed in the result; a second run re-checks the source but sends no
    file (all 'already there'), and the copies are untouched."""
    files = sample_files()
    uuid = make_dataset(tmp_path / "data", store, files)
    backups = tmp_path / "backups"
    handler = _handler(tmp_path, store, default_destination=str(backups))
    result = handler(job_context("backup_creation", uuid))
    target = backups / uuid
    assert result["destination"] == f"{target}/"
    assert digests(target) == digests(tmp_path / "data" / "upload" / uuid)
    assert {f["path"]: f["blake3"] for f in result["files"]} == {
        p: blake3(b).hexdigest() for p, b in files.items()
    }
    nonempty = sum(1 for b in files.values() if b)
    assert (result["sent"], result["already_there"]) == (nonempty, 0)
    mtimes = {p: p.stat().st_mtime_ns for p in target.rglob("*") if p.is_file()}
    again = handler(job_context("backup_creation", uuid))
    assert again["sent"] == 0
    assert again["already_there"] == nonempty
    assert again["files"] == result["files"]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_damaged_source_is_not_backed_up(tmp_path: Path, store: DatasetStore) -> None:
    """A dataset file whose bytes differ from its record stops the backup before
    anything is sent, naming the file (so a good backup is never overwritten)."""
    files = sample_files()
    uuid = make_dataset(tmp_path / "data", store, files)
    (tmp_path / "data" / "upload" / uuid / "readme.txt").write_bytes(
        b"x" * len(files["readme.txt"])
    )
    handler = _handler(tmp_path, store, default_destination=str(tmp_path / "b"))
    with pytest.raises(ChecksumMismatch, match=r"damaged: readme\.txt") as info:
        handler(job_context("backup_creation", uuid))
    assert info.value.retryable is False
    assert not (tmp_path / "b").exists()


def test_destinations_are_confined_and_checked(
    tmp_path: Path, store: DatasetStore
) -> None:
    """A destination outside the allowed ones is Forbidden; other schemes, relative
    paths, '..' and credentials in the URL are InvalidInput naming the problem;
    with no default, a job without a destination is told about SCLIB_BACKUP_URL."""
    uuid = make_dataset(tmp_path / "data", store, {"a": b"a"})
    allowed = tmp_path / "backups"
    handler = _handler(tmp_path, store, default_destination=str(allowed))
    with pytest.raises(Forbidden, match="not inside an allowed backup destination"):
        handler(job_context("backup_creation", uuid, {"destination": "/etc"}))
    with pytest.raises(Forbidden):
        handler(
            job_context(
                "backup_creation", uuid, {"destination": f"{tmp_path}/backups-evil"}
            )
        )
    for bad, message in [
        ("ftp://host/x", "no writer for 'ftp'"),
        ("relative/dir", "absolute path"),
        (f"{allowed}/../escape", "'..'"),
        ("s3://key:secret@bucket/x", "credentials"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            handler(job_context("backup_creation", uuid, {"destination": bad}))
    inside = handler(
        job_context("backup_creation", uuid, {"destination": f"{allowed}/nightly"})
    )
    assert (allowed / "nightly" / uuid / "a").read_bytes() == b"a"
    assert inside["files"][0]["path"] == "a"
    with pytest.raises(InvalidInput, match="SCLIB_BACKUP_URL"):
        _handler(tmp_path, store)(job_context("backup_creation", uuid))
    assert normalise_destination("s3a://bucket//a/b/") == "s3://bucket/a/b"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    pytest.importorskip("s3fs", reason="needs sclib[s3]")
    pytest.importorskip("moto.server", reason="needs moto[server]")
    from tests.transfers.cloud_servers import (
        cloud_env,
        moto_server,
        s3_client,
        s3_options,
    )

    with cloud_env(), moto_server() as endpoint:
        bucket = f"b-{_uuid.uuid4().hex[:8]}"
        client = s3_client(endpoint)
        client.create_bucket(Bucket=bucket)
        yield {"bucket": bucket, "options": s3_options(endpoint), "client": client}


@pytest.mark.integration
def test_backup_to_s3_on_moto(
    tmp_path: Path, store: DatasetStore, s3: dict[str, Any]
) -> None:
    """Backed up to moto's S3: every object under s3://bucket/backups/<uuid>/ has
    the dataset file's bytes (BLAKE3 compared after downloading), and a second run
    sends nothing."""
    files = sample_files()
    uuid = make_dataset(tmp_path / "data", store, files)
    root = f"s3://{s3['bucket']}/backups"
    handler = _handler(
        tmp_path, store, default_destination=root, destination_options=s3["options"]
    )
    result = handler(job_context("backup_creation", uuid))
    assert result["destination"] == f"{root}/{uuid}/"
    client = s3["client"]
    for path, body in files.items():
        obj = client.get_object(Bucket=s3["bucket"], Key=f"backups/{uuid}/{path}")
        assert blake3(obj["Body"].read()).hexdigest() == blake3(body).hexdigest()
    listed = client.list_objects_v2(Bucket=s3["bucket"], Prefix=f"backups/{uuid}/")
    assert listed["KeyCount"] == len(files)
    again = handler(job_context("backup_creation", uuid))
    assert (again["sent"], again["already_there"]) == (0, len(files) - 1)
