"""The google_sync job against the Drive v3 stand-in on 127.0.0.1 (no Google Drive
emulator exists; see tests/transfers/drive_standin.py), with a real service-account
key signed and checked, sealed credentials, a real SQLite dataset store and
session store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

pytest.importorskip("cryptography", reason="needs cryptography")
pytest.importorskip("google.oauth2.service_account", reason="needs google-auth")

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from sclib.datasets import DatasetStore
from sclib.errors import InvalidInput, SourceError
from sclib.jobtypes import DatasetStatus
from sclib.pipeline.gsync import GoogleSyncHandler, drive_id_from
from sclib.secrets import SecretBox
from sclib.transfers.engine import TransferConfig
from sclib.transfers.sessions import open_session_store
from tests.pipeline.maintenance import digests, job_context, sqlite_datasets
from tests.transfers.drive_standin import DriveStandin

SECRET = "x" * 40
EMAIL = "ingest@sclib-test.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def drive(key: rsa.RSAPrivateKey) -> Iterator[DriveStandin]:
    standin = DriveStandin(page_size=2)
    standin.service_accounts[EMAIL] = key.public_key()
    with standin.running():
        yield standin


@pytest.fixture
def tree(drive: DriveStandin) -> dict[str, Any]:
    """experiment/{a.raw, notes (a Google Doc), sub/{b.raw, c.raw (empty)}}."""
    files = {
        "a.raw": os.urandom(70_001),
        "sub/b.raw": os.urandom(5000),
        "sub/c.raw": b"",
    }
    root = drive.add_folder("experiment")
    sub = drive.add_folder("sub", root)
    ids = {
        "a.raw": drive.add_file("a.raw", files["a.raw"], root),
        "sub/b.raw": drive.add_file("b.raw", files["sub/b.raw"], sub),
        "sub/c.raw": drive.add_file("c.raw", files["sub/c.raw"], sub),
    }
    doc = drive.add_doc("notes", "beam time log", root)
    return {"root": root, "files": files, "ids": ids, "doc": doc}


def _sealed(drive: DriveStandin, key: rsa.RSAPrivateKey) -> str:
    info = {
        "type": "service_account",
        "project_id": "sclib-test",
        "private_key_id": "0123",
        "client_email": EMAIL,
        "client_id": "1",
        "private_key": key.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        ).decode(),
        "token_uri": drive.token_uri,
    }
    return SecretBox(SECRET).seal({"service_account_json": info})


def _handler(
    tmp_path: Path, store: DatasetStore, drive: DriveStandin
) -> GoogleSyncHandler:
    return GoogleSyncHandler(
        tmp_path / "data",
        store,
        open_session_store(f"sqlite:///{tmp_path / 'sessions.db'}"),
        secret_key=SECRET,
        drive_options={"base_url": drive.base_url, "timeout": 5},
        token_uris=[drive.token_uri],
        config=TransferConfig(chunk_size=16 * 1024, max_attempts=1),
    )


def test_folder_arrives_recursively_with_docs_exported(
    tmp_path: Path, drive: DriveStandin, tree: dict[str, Any], key: rsa.RSAPrivateKey
) -> None:
    """Every file of the folder, recursively, arrives in the dataset with its
    bytes (BLAKE3 compared), the Google Doc as notes.docx holding its export; the
    files are recorded and the dataset goes sync queued -> syncing -> done."""
    store = sqlite_datasets(tmp_path)
    uuid = "a" * 32
    link = f"https://drive.google.com/drive/folders/{tree['root']}?usp=sharing"
    ctx = job_context(
        "google_sync",
        uuid,
        {"google_drive_link": link, "sealed": _sealed(drive, key)},
    )
    result = _handler(tmp_path, store, drive)(ctx)
    folder = tmp_path / "data" / "upload" / uuid
    for path, body in tree["files"].items():
        assert (folder / path).read_bytes() == body
    docx = drive.items[tree["doc"]].export(
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    )
    assert (folder / "notes.docx").read_bytes() == docx
    record = store.get(uuid)
    assert {f.path: f.blake3 for f in record.files} == digests(folder)
    assert sorted(f["path"] for f in result["files"]) == [
        "a.raw",
        "notes.docx",
        "sub/b.raw",
        "sub/c.raw",
    ]
    assert record.status == DatasetStatus.DONE
    assert record.owner == "alice@example.org"
    assert not (tmp_path / "data" / "tmp" / "gsync" / ctx.job.id).exists()


def test_the_workers_service_account_serves_jobs_without_credentials(
    tmp_path: Path, drive: DriveStandin, tree: dict[str, Any], key: rsa.RSAPrivateKey
) -> None:
    """A job with only a google_drive_link (as `sclib migrate` makes them) uses
    the worker's SCLIB_GDRIVE_SERVICE_ACCOUNT_FILE; without that file the job is
    refused saying what to set, and an unreadable file is a configuration error
    naming the setting."""
    from sclib.errors import ConfigurationError

    info = SecretBox(SECRET).open(_sealed(drive, key))["service_account_json"]
    keyfile = tmp_path / "auth" / "service-account.json"
    keyfile.parent.mkdir()
    import json

    keyfile.write_text(json.dumps(info))
    store = sqlite_datasets(tmp_path)
    uuid = "c" * 32
    link = f"https://drive.google.com/drive/folders/{tree['root']}"
    handler = _handler(tmp_path, store, drive)
    with pytest.raises(InvalidInput, match="SCLIB_GDRIVE_SERVICE_ACCOUNT_FILE"):
        handler(job_context("google_sync", uuid, {"google_drive_link": link}))
    handler.service_account_file = tmp_path / "missing.json"
    with pytest.raises(ConfigurationError, match="SCLIB_GDRIVE_SERVICE_ACCOUNT"):
        handler(job_context("google_sync", uuid, {"google_drive_link": link}))
    handler.service_account_file = keyfile
    handler(job_context("google_sync", uuid, {"google_drive_link": link}))
    folder = tmp_path / "data" / "upload" / uuid
    assert (folder / "sub" / "b.raw").read_bytes() == tree["files"]["sub/b.raw"]
    assert store.get(uuid).status == DatasetStatus.DONE


def test_a_failed_attempt_resumes_without_fetching_again(
    tmp_path: Path, drive: DriveStandin, tree: dict[str, Any], key: rsa.RSAPrivateKey
) -> None:
    """The first attempt fails on one file (Drive answers 403 for it): the dataset
    is 'sync error' naming the failure and receives nothing. The retry (same job,
    attempt 2) downloads only what was missing: the file fetched before is not
    downloaded again (counted at the stand-in), and the dataset ends 'done'."""
    store = sqlite_datasets(tmp_path)
    uuid = "b" * 32
    params = {"folder_id": tree["root"], "sealed": _sealed(drive, key)}
    handler = _handler(tmp_path, store, drive)
    drive.forbid(tree["ids"]["sub/b.raw"])
    with pytest.raises(SourceError):
        handler(job_context("google_sync", uuid, params, job_id="7" * 32))
    assert store.get(uuid).status == DatasetStatus.SYNC_ERROR
    assert not (tmp_path / "data" / "upload" / uuid).exists()

    def media(file_id: str) -> int:
        return sum(
            1
            for r in drive.requests
            if r["path"].endswith(file_id) and r["query"].get("alt") == "media"
        )

    before = media(tree["ids"]["a.raw"])
    assert before >= 1
    with drive.lock:
        drive._forbidden.clear()
    handler(job_context("google_sync", uuid, params, job_id="7" * 32, attempt=2))
    assert media(tree["ids"]["a.raw"]) == before
    folder = tmp_path / "data" / "upload" / uuid
    for path, body in tree["files"].items():
        assert blake3((folder / path).read_bytes()).digest() == blake3(body).digest()
    assert store.get(uuid).status == DatasetStatus.DONE


def test_bad_parameters_and_plain_credentials_are_refused(
    tmp_path: Path, drive: DriveStandin, tree: dict[str, Any], key: rsa.RSAPrivateKey
) -> None:
    """No id, a link that is not Drive's, credentials in clear parameters, sealed
    credentials naming a foreign token endpoint, and a sealed value from another
    key are refused with InvalidInput naming the field; nothing is written."""
    store = sqlite_datasets(tmp_path)
    handler = _handler(tmp_path, store, drive)
    sealed = _sealed(drive, key)
    foreign = SecretBox(SECRET).seal(
        {"service_account_json": {"token_uri": "https://evil.example/token"}}
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"sealed": sealed}, "folder_id or google_drive_link: field required"),
        (
            {"google_drive_link": "https://evil.example/folders/abcdefghijk"},
            "not a Google Drive link",
        ),
        ({"folder_id": "../../etc"}, "folder_id: must be a Google Drive id"),
        (
            {"folder_id": tree["root"], "service_account_json": "{}"},
            "must be sealed",
        ),
        ({"folder_id": tree["root"]}, "sealed: a Google Drive sync needs"),
        ({"folder_id": tree["root"], "sealed": foreign}, "token_uri must be"),
        (
            {"folder_id": tree["root"], "sealed": SecretBox("y" * 40).seal({"a": 1})},
            "cannot be opened",
        ),
        (
            {"folder_id": tree["root"], "sealed": sealed, "relative_path": "../x"},
            "relative_path",
        ),
    ]
    for params, message in cases:
        with pytest.raises(InvalidInput, match=message):
            handler(job_context("google_sync", "c" * 32, params))
    assert store.get("c" * 32).status == DatasetStatus.SYNC_ERROR
    assert not (tmp_path / "data" / "upload").exists()


def test_drive_ids_from_legacy_links() -> None:
    """The id is taken from folder links, file links, open?id= links and bare ids."""
    ident = "1AbC-dEf_GhIjKlMnOp"
    for link in (
        f"https://drive.google.com/drive/folders/{ident}?usp=sharing",
        f"https://drive.google.com/drive/u/0/folders/{ident}",
        f"https://drive.google.com/file/d/{ident}/view",
        f"https://drive.google.com/open?id={ident}",
        ident,
    ):
        assert drive_id_from(None, link) == ident
    assert drive_id_from(ident, "ignored") == ident


def test_a_worker_without_secret_key_is_a_configuration_error(
    tmp_path: Path, drive: DriveStandin, key: rsa.RSAPrivateKey
) -> None:
    """Sealed credentials reaching a worker that has no SECRET_KEY fail with a
    ConfigurationError (the worker's setup, retried once an operator sets it),
    not an InvalidInput that would fail the job for good; nothing is written."""
    from sclib.errors import ConfigurationError

    store = sqlite_datasets(tmp_path)
    handler = _handler(tmp_path, store, drive)
    handler.secret_key = None
    params = {"folder_id": "a" * 20, "sealed": _sealed(drive, key)}
    with pytest.raises(ConfigurationError, match="no SECRET_KEY"):
        handler(job_context("google_sync", "d" * 32, params))
    assert not (tmp_path / "data" / "upload").exists()
