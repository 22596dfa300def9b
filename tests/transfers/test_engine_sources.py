"""The engine over the HTTP(S) and Google Drive sources, on loopback servers.

HTTP: a real threaded HTTP server on 127.0.0.1, once with Range support and once
without. Drive: the Drive-v3-compatible stand-in from ``drive_standin`` (no Drive
emulator runs on these machines), with a real RSA service-account key.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from blake3 import blake3

from sclib.errors import BlockedAddress, TransferCancelled
from sclib.transfers import (
    MemorySessionStore,
    Progress,
    TransferConfig,
    TransferEngine,
)
from sclib.transfers.plan import KIB
from sclib.transfers.progress import ProgressTracker
from tests.transfers.http_servers import FileServer, serve

pytestmark = pytest.mark.integration

LOOPBACK = {"allow_private": True}  # tests reach 127.0.0.1 on purpose


@pytest.fixture(params=[True, False], ids=["ranges", "no-ranges"])
def server(request: pytest.FixtureRequest) -> Iterator[FileServer]:
    with serve(ranges=request.param) as srv:
        yield srv


def test_http_download_is_verified(server: FileServer, tmp_path: Path) -> None:
    """A URL download is byte-identical with and without Range support."""
    data = os.urandom(300 * KIB + 11)
    server.put("/data/run.bin", data)
    result = TransferEngine(config=TransferConfig(chunk_size=16 * KIB)).copy(
        server.url("/data/run.bin"), str(tmp_path) + "/", source_options=LOOPBACK
    )
    assert (tmp_path / "run.bin").read_bytes() == data
    assert result.files[0].blake3 == blake3(data).hexdigest()


def test_http_download_resumes_with_ranges(tmp_path: Path) -> None:
    """An interrupted download continues from the verified chunks (Range +
    If-Range) instead of starting again from zero."""
    data = os.urandom(512 * KIB)
    sessions = MemorySessionStore()
    engine = TransferEngine(
        sessions=sessions, config=TransferConfig(chunk_size=16 * KIB)
    )
    stop = threading.Event()

    class StopAt100KiB:
        def on_progress(self, progress: Progress, **_: object) -> None:
            if progress.bytes_verified >= 100 * KIB:
                stop.set()

    with serve(ranges=True) as srv:
        srv.put("/big.bin", data)
        with pytest.raises(TransferCancelled):
            engine.copy(
                srv.url("/big.bin"),
                str(tmp_path / "big.bin"),
                source_options=LOOPBACK,
                cancel=stop,
                tracker=ProgressTracker([StopAt100KiB()], rate=0),
            )
        first = len([r for r in srv.seen("GET")])
        result = engine.copy(
            srv.url("/big.bin"), str(tmp_path / "big.bin"), source_options=LOOPBACK
        )
        second = len([r for r in srv.seen("GET")]) - first
    assert (tmp_path / "big.bin").read_bytes() == data
    file = result.files[0]
    assert file.chunks_reused >= 100 // 16
    assert file.chunks_sent == 32 - file.chunks_reused
    assert second <= file.chunks_sent + 2  # the rest only, plus a probe


def test_loopback_is_refused_by_default(tmp_path: Path) -> None:
    """Without the explicit setting, a loopback URL is refused before any request."""
    with serve() as srv:
        srv.put("/x", b"secret internal data")
        with pytest.raises(BlockedAddress):
            TransferEngine().copy(srv.url("/x"), str(tmp_path / "x"))
        assert srv.seen() == []
        assert not (tmp_path / "x").exists()


def test_drive_folder_import(tmp_path: Path) -> None:
    """A Drive folder (nested, paginated, with a Google Doc) lands as files."""
    pytest.importorskip("google.auth", reason="needs sclib[gdrive]")
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    from tests.transfers.drive_standin import DriveStandin

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    email = "ingest@sclib-test.iam.gserviceaccount.com"
    drive = DriveStandin(page_size=2)
    drive.service_accounts[email] = key.public_key()
    files = {
        "a.raw": os.urandom(40 * KIB + 1),
        "sub/b.raw": os.urandom(5000),
        "sub/c.raw": b"",
    }
    with drive.running():
        root = drive.add_folder("experiment")
        sub = drive.add_folder("sub", root)
        drive.add_file("a.raw", files["a.raw"], root)
        drive.add_file("b.raw", files["sub/b.raw"], sub)
        drive.add_file("c.raw", files["sub/c.raw"], sub)
        drive.add_doc("notes", "beam time log", root)
        info = {
            "type": "service_account",
            "project_id": "sclib-test",
            "private_key_id": "0123",
            "client_email": email,
            "client_id": "1",
            "private_key": key.private_bytes(
                Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
            ).decode(),
            "token_uri": drive.token_uri,
        }
        result = TransferEngine(config=TransferConfig(chunk_size=4 * KIB)).copy(
            f"gdrive://{root}",
            str(tmp_path / "exp"),
            source_options={"base_url": drive.base_url, "service_account_info": info},
        )
    keys = sorted(f.key for f in result.files)
    assert keys == ["a.raw", "notes.docx", "sub/b.raw", "sub/c.raw"]
    for key, data in files.items():
        assert (tmp_path / "exp" / key).read_bytes() == data
    assert (tmp_path / "exp" / "notes.docx").stat().st_size > 0
