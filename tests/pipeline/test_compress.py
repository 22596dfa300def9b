"""The data_compression job: a dataset packed into a verified tar.zst/xz/gz archive
with a manifest, on a real SQLite dataset store and real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from blake3 import blake3

from sclib.datasets import DatasetStore
from sclib.errors import (
    ChecksumMismatch,
    DatasetConflict,
    InvalidInput,
    JobCancelled,
    SourceNotFound,
)
from sclib.jobtypes import DatasetStatus
from sclib.pipeline.compress import (
    MANIFEST_NAME,
    CompressionHandler,
    available_formats,
    default_format,
    open_archive,
    read_manifest,
)
from tests.pipeline.maintenance import (
    job_context,
    make_dataset,
    sample_files,
    sqlite_datasets,
)


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return sqlite_datasets(tmp_path)


def _unpack(archive: Path) -> dict[str, bytes]:
    """Every regular member of the archive, by name."""
    out: dict[str, bytes] = {}
    with open_archive(archive) as tar:
        for member in tar:
            assert member.isfile(), member.name
            data = tar.extractfile(member)
            assert data is not None
            out[member.name] = data.read()
    return out


@pytest.mark.parametrize("fmt", ["tar.zst", "tar.xz", "tar.gz"])
def test_archive_holds_every_file_and_a_manifest(
    tmp_path: Path, store: DatasetStore, fmt: str
) -> None:
    """The archive unpacks to the dataset's exact bytes under <slug>/files/, with
    a manifest first listing uuid, name and each file's path, size and BLAKE3; the
    job result gives the archive's own BLAKE3, and the dataset ends 'done'."""
    if fmt not in available_formats():
        pytest.skip(f"{fmt} needs an optional package")
    files = sample_files()
    uuid = make_dataset(tmp_path, store, files)
    result = CompressionHandler(tmp_path, store)(
        job_context("data_compression", uuid, {"format": fmt})
    )
    archive = tmp_path / result["archive"]
    assert result["archive"] == f"compressed/{uuid}/scan-set.{fmt}"
    assert archive.is_file()
    assert result["blake3"] == blake3(archive.read_bytes()).hexdigest()
    assert result["size"] == archive.stat().st_size
    assert result["reused"] is False
    members = _unpack(archive)
    assert next(iter(members)) == f"scan-set/{MANIFEST_NAME}"
    unpacked = {
        name.removeprefix("scan-set/files/"): body
        for name, body in members.items()
        if name.startswith("scan-set/files/")
    }
    assert unpacked == files
    manifest = json.loads(members[f"scan-set/{MANIFEST_NAME}"])
    assert manifest == read_manifest(archive)
    assert manifest["dataset"] == {"uuid": uuid, "name": "Scan Set", "slug": "scan-set"}
    assert manifest["format"] == fmt
    assert {f["path"]: (f["size"], f["blake3"]) for f in manifest["files"]} == {
        p: (len(b), blake3(b).hexdigest()) for p, b in files.items()
    }
    assert store.get(uuid).status == DatasetStatus.DONE
    assert not any((tmp_path / "tmp" / "compress").iterdir())


def test_default_format_is_zstd_when_available(
    tmp_path: Path, store: DatasetStore
) -> None:
    """Without a format parameter the archive is tar.zst where Zstandard is
    importable (tar.xz otherwise), and the result names the format."""
    uuid = make_dataset(tmp_path, store, {"a.txt": b"a" * 1000})
    result = CompressionHandler(tmp_path, store)(job_context("data_compression", uuid))
    assert result["format"] == default_format()
    expected = "tar.zst" if "tar.zst" in available_formats() else "tar.xz"
    assert result["format"] == expected


def test_corrupted_file_fails_naming_it_and_leaves_no_archive(
    tmp_path: Path, store: DatasetStore
) -> None:
    """A file whose bytes no longer match its recorded BLAKE3 stops the job with a
    non-retryable ChecksumMismatch naming it; no archive (nor temp file) is left,
    and the dataset shows 'compression error' with that message."""
    files = sample_files()
    uuid = make_dataset(tmp_path, store, files)
    frame = tmp_path / "upload" / uuid / "raw" / "frame_000.raw"
    damaged = bytearray(files["raw/frame_000.raw"])
    damaged[12345] ^= 0x40
    frame.write_bytes(bytes(damaged))
    with pytest.raises(ChecksumMismatch, match=r"raw/frame_000\.raw") as info:
        CompressionHandler(tmp_path, store)(job_context("data_compression", uuid))
    assert info.value.retryable is False
    assert not (tmp_path / "compressed" / uuid).exists() or not any(
        (tmp_path / "compressed" / uuid).iterdir()
    )
    assert not any((tmp_path / "tmp" / "compress").iterdir())
    record = store.get(uuid)
    assert record.status == DatasetStatus.COMPRESSION_ERROR
    assert "raw/frame_000.raw" in (record.error_message or "")
    # repaired, a retry goes compression error -> zipping -> done
    frame.write_bytes(files["raw/frame_000.raw"])
    CompressionHandler(tmp_path, store)(job_context("data_compression", uuid))
    assert store.get(uuid).status == DatasetStatus.DONE


def test_missing_or_resized_file_is_named(tmp_path: Path, store: DatasetStore) -> None:
    """A recorded file that is gone, or has another size, is named in the error."""
    uuid = make_dataset(tmp_path, store, sample_files())
    handler = CompressionHandler(tmp_path, store)
    folder = tmp_path / "upload" / uuid
    (folder / "meta" / "params.json").write_bytes(b"{}")
    with pytest.raises(ChecksumMismatch, match=r"meta/params.json: 2 bytes on disk"):
        handler(job_context("data_compression", uuid))
    (folder / "meta" / "params.json").unlink()
    with pytest.raises(SourceNotFound, match=r"params\.json: listed in the dataset"):
        handler(job_context("data_compression", uuid))


def test_retry_after_commit_keeps_the_archive(
    tmp_path: Path, store: DatasetStore
) -> None:
    """A second run finds the archive in place with a manifest listing exactly
    the dataset's files and keeps it (same BLAKE3, same file, reused=True); after
    a file is added the archive is packed again and includes it."""
    uuid = make_dataset(tmp_path, store, sample_files())
    handler = CompressionHandler(tmp_path, store)
    first = handler(job_context("data_compression", uuid, {"format": "tar.gz"}))
    archive = tmp_path / first["archive"]
    inode = archive.stat().st_ino
    second = handler(job_context("data_compression", uuid, {"format": "tar.gz"}))
    assert second["reused"] is True
    assert second["blake3"] == first["blake3"]
    assert archive.stat().st_ino == inode
    from sclib.datasets import DatasetFile

    extra = b"new frame" * 100
    (tmp_path / "upload" / uuid / "raw" / "frame_001.raw").write_bytes(extra)
    store.add_files(
        uuid, [DatasetFile("raw/frame_001.raw", len(extra), blake3(extra).hexdigest())]
    )
    third = handler(job_context("data_compression", uuid, {"format": "tar.gz"}))
    assert third["reused"] is False
    assert third["blake3"] != first["blake3"]
    paths = [f["path"] for f in read_manifest(archive)["files"]]
    assert "raw/frame_001.raw" in paths


def test_cancel_leaves_no_archive_and_restores_the_status(
    tmp_path: Path, store: DatasetStore
) -> None:
    """A cancel requested while packing stops the job (JobCancelled), leaves no
    archive or temp file, and puts the dataset back to 'done'."""
    uuid = make_dataset(tmp_path, store, sample_files())
    ctx = job_context("data_compression", uuid)
    seen: list[str] = []
    original = ctx.report

    def report(*args: object, **kwargs: object) -> None:
        original(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(str(kwargs.get("message")))
        if store.get(uuid).status == DatasetStatus.ZIPPING:
            ctx.request_cancel("operator said stop")

    ctx.report = report  # type: ignore[method-assign]
    with pytest.raises(JobCancelled, match="operator said stop"):
        CompressionHandler(tmp_path, store)(ctx)
    assert seen
    assert not (tmp_path / "compressed" / uuid).exists()
    assert not any((tmp_path / "tmp" / "compress").iterdir())
    assert store.get(uuid).status == DatasetStatus.DONE


def test_bad_parameters_and_busy_datasets_are_refused(
    tmp_path: Path, store: DatasetStore
) -> None:
    """An unknown format, a dataset without files, and a dataset whose files are
    still arriving are refused with errors naming the problem, before any work."""
    uuid = make_dataset(tmp_path, store, sample_files())
    handler = CompressionHandler(tmp_path, store)
    with pytest.raises(InvalidInput, match=r"format: unknown archive format 'rar'"):
        handler(job_context("data_compression", uuid, {"format": "rar"}))
    with pytest.raises(InvalidInput, match="needs a dataset_uuid"):
        handler(job_context("data_compression", None))
    empty = make_dataset(tmp_path, store, {}, name="Empty")
    with pytest.raises(InvalidInput, match="has no files"):
        handler(job_context("data_compression", empty))
    busy = make_dataset(
        tmp_path, store, {"x": b"x"}, name="Busy", status=DatasetStatus.UPLOADING
    )
    with pytest.raises(DatasetConflict, match="'uploading'"):
        handler(job_context("data_compression", busy))
    assert store.get(busy).status == DatasetStatus.UPLOADING
    assert not (tmp_path / "compressed").exists()


def test_a_submitted_dataset_is_packed_with_its_status_left_alone(
    tmp_path: Path, store: DatasetStore
) -> None:
    """The table lets 'zipping' return only to 'done': a dataset in another settled
    status (here 'submitted') is packed without a status change."""
    uuid = make_dataset(
        tmp_path, store, {"a.bin": b"1234"}, status=DatasetStatus.SUBMITTED
    )
    result = CompressionHandler(tmp_path, store)(job_context("data_compression", uuid))
    assert result["status"] == "left as 'submitted'"
    assert store.get(uuid).status == DatasetStatus.SUBMITTED
