"""extract_archive and is_archive on real zip and tar archives, good and hostile."""

from __future__ import annotations

import io
import os
import stat
import struct
import subprocess
import sys
import tarfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from blake3 import blake3

from sclib.errors import InvalidInput, TooLarge
from sclib.pipeline import extract as extract_module
from sclib.pipeline.extract import (
    ExtractedFile,
    ExtractLimits,
    extract_archive,
    is_archive,
)

MIB = 1 << 20
TarMode = Literal["w", "w:gz", "w:bz2", "w:xz"]

FILES: dict[str, bytes] = {
    "top.txt": b"hello\n",
    "a/b/c.bin": os.urandom(3 * MIB + 17),
    "a/empty.dat": b"",
    "a/b/d/deep.txt": b"deep " * 1000,
}


class Cancelled(Exception):
    """What the test's check() raises to cancel."""


# -- archive builders ------------------------------------------------------------


def write_zip(
    path: Path,
    entries: list[tuple[str, bytes]],
    *,
    mode: int | None = None,
    compress: int = zipfile.ZIP_DEFLATED,
) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on duplicate names
        with zipfile.ZipFile(path, "w", compression=compress) as zf:
            for name, data in entries:
                info = zipfile.ZipInfo(name)
                info.compress_type = compress
                if mode is not None:
                    info.external_attr = mode << 16
                zf.writestr(info, data)
    return path


def tar_file(
    name: str, data: bytes, mode: int = 0o644
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def tar_special(
    name: str, kind: bytes, linkname: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def write_tar(
    path: Path, members: list[tuple[tarfile.TarInfo, bytes]], mode: TarMode = "w"
) -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def tree(root: Path, skip: Path) -> set[str]:
    """Every path under ``root`` except those under ``skip``."""
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            if full == skip or skip in full.parents:
                continue
            found.add(str(full.relative_to(root)))
    return found


def refused(
    tmp_path: Path,
    archive: Path,
    error: type[Exception],
    match: str,
    limits: ExtractLimits | None = None,
    **kwargs: Callable[..., None],
) -> pytest.ExceptionInfo[Exception]:
    """Extract ``archive``, expect ``error``; check nothing outside dest was touched."""
    dest = tmp_path / "work" / "dest"
    dest.parent.mkdir(exist_ok=True)
    before = tree(tmp_path, dest)
    with pytest.raises(error, match=match) as caught:
        extract_archive(archive, dest, limits or ExtractLimits(), **kwargs)
    assert not dest.exists()
    assert tree(tmp_path, dest) == before
    assert not Path("/etc/x").exists()
    return caught


def assert_extracted(
    result: list[ExtractedFile], dest: Path, expected: dict[str, bytes]
) -> None:
    assert [f.path for f in result] == sorted(expected)
    for item in result:
        data = expected[item.path]
        assert item.size == len(data)
        assert item.blake3 == blake3(data).hexdigest()
        on_disk = dest / item.path
        assert on_disk.read_bytes() == data
        assert stat.S_IMODE(on_disk.stat().st_mode) == 0o644
    written = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert written == set(expected)
    for folder in (p for p in dest.rglob("*") if p.is_dir()):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755


# -- archives that extract -------------------------------------------------------


def test_zip_with_nested_folders_and_empty_files(tmp_path: Path) -> None:
    """A zip with folders, an explicit folder entry and an empty file extracts
    byte for byte, with BLAKE3 digests equal to the originals', sorted by path."""
    entries = [("a/", b""), *FILES.items(), ("a/emptydir/", b"")]
    archive = write_zip(tmp_path / "data.zip", entries)
    dest = tmp_path / "dest"
    result = extract_archive(archive, dest)
    assert_extracted(result, dest, FILES)
    assert (dest / "a" / "emptydir").is_dir()


@pytest.mark.parametrize(
    ("suffix", "mode"),
    [
        (".tar", "w"),
        (".tar.gz", "w:gz"),
        (".tgz", "w:gz"),
        (".tar.bz2", "w:bz2"),
        (".tar.xz", "w:xz"),
    ],
)
def test_tar_formats(tmp_path: Path, suffix: str, mode: TarMode) -> None:
    """Plain, gzip, bzip2 and xz tars extract byte for byte with matching BLAKE3."""
    folder = tarfile.TarInfo("a")
    folder.type = tarfile.DIRTYPE
    members = [(folder, b""), *(tar_file(n, d) for n, d in FILES.items())]
    archive = write_tar(tmp_path / f"data{suffix}", members, mode)
    assert is_archive(archive)
    dest = tmp_path / "dest"
    assert_extracted(extract_archive(archive, dest), dest, FILES)


def test_leading_dot_slash_names_are_accepted(tmp_path: Path) -> None:
    """``tar -C folder -czf x.tgz .`` names entries ``./x`` with a ``.`` root
    entry; those cannot leave dest and extract normally."""
    root = tarfile.TarInfo(".")
    root.type = tarfile.DIRTYPE
    members = [(root, b""), tar_file("./x.txt", b"x"), tar_file("./s/y.txt", b"y")]
    archive = write_tar(tmp_path / "dot.tar.gz", members, "w:gz")
    dest = tmp_path / "dest"
    result = extract_archive(archive, dest)
    assert_extracted(result, dest, {"x.txt": b"x", "s/y.txt": b"y"})


def test_modes_from_the_archive_are_dropped(tmp_path: Path) -> None:
    """Set-uid and exec bits in the archive do not reach the written files."""
    archive = write_tar(
        tmp_path / "modes.tar",
        [tar_file("run.sh", b"#!/bin/sh\n", 0o4777), tar_file("x/y", b"y", 0o6755)],
    )
    dest = tmp_path / "dest"
    assert_extracted(
        extract_archive(archive, dest), dest, {"run.sh": b"#!/bin/sh\n", "x/y": b"y"}
    )
    zipped = write_zip(tmp_path / "modes.zip", [("run.sh", b"x")], mode=0o104777)
    dest2 = tmp_path / "dest2"
    assert_extracted(extract_archive(zipped, dest2), dest2, {"run.sh": b"x"})


def test_existing_empty_dest_is_used(tmp_path: Path) -> None:
    """An existing empty folder is a valid destination."""
    archive = write_zip(tmp_path / "a.zip", [("f", b"1")])
    dest = tmp_path / "dest"
    dest.mkdir()
    assert_extracted(extract_archive(archive, dest), dest, {"f": b"1"})


def test_non_empty_dest_is_refused_and_kept(tmp_path: Path) -> None:
    """A destination that holds something is refused and left as it was."""
    archive = write_zip(tmp_path / "a.zip", [("f", b"1")])
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep").write_bytes(b"mine")
    with pytest.raises(InvalidInput, match="not empty"):
        extract_archive(archive, dest)
    assert (dest / "keep").read_bytes() == b"mine"


def test_progress_reports_bytes(tmp_path: Path) -> None:
    """on_progress sees growing byte counts ending at the total; check() is called
    between blocks."""
    archive = write_zip(tmp_path / "p.zip", list(FILES.items()))
    calls: list[tuple[int, int]] = []
    checks: list[int] = []
    extract_archive(
        archive,
        tmp_path / "dest",
        check=lambda: checks.append(1),
        on_progress=lambda done, total: calls.append((done, total)),
    )
    total = sum(len(d) for d in FILES.values())
    assert calls[-1] == (total, total)
    assert all(t == total for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(checks) >= 4 + len(FILES)  # c.bin alone takes four blocks


# -- is_archive ------------------------------------------------------------------


def test_is_archive_by_content_and_name(tmp_path: Path) -> None:
    """Only a known archive name with matching content counts as an archive."""
    real_zip = write_zip(tmp_path / "x.zip", [("f", b"1")])
    real_tgz = write_tar(tmp_path / "x.tgz", [tar_file("f", b"1")], "w:gz")
    assert is_archive(real_zip)
    assert is_archive(str(real_tgz))
    fake_zip = tmp_path / "fake.zip"
    fake_zip.write_bytes(b"just some text, not an archive\n" * 40)
    fake_tar = tmp_path / "fake.tar.gz"
    fake_tar.write_bytes(b"\x1f\x8b not really gzip")
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    npz = write_zip(tmp_path / "arrays.npz", [("a.npy", b"\x93NUMPY")])
    assert not is_archive(fake_zip)
    assert not is_archive(fake_tar)
    assert not is_archive(empty)
    assert not is_archive(npz)  # a zip inside, but a data file by name
    assert not is_archive(tmp_path / "missing.zip")
    folder = tmp_path / "folder.zip"
    folder.mkdir()
    assert not is_archive(folder)


def test_not_an_archive_is_refused(tmp_path: Path) -> None:
    """extract_archive refuses a file that is neither zip nor tar."""
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"plain text\n" * 100)
    refused(tmp_path, fake, InvalidInput, "not a zip, tar or 7z archive")


def test_truncated_archive_is_refused(tmp_path: Path) -> None:
    """A tar.gz cut short is InvalidInput, and dest is removed."""
    archive = write_tar(
        tmp_path / "t.tar.gz",
        [tar_file("a", os.urandom(MIB)), tar_file("b", os.urandom(MIB))],
        "w:gz",
    )
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) * 3 // 4])
    refused(tmp_path, archive, InvalidInput, "cannot be read")


# -- hostile names, links and special files ---------------------------------------

BAD_NAMES = ["../evil", "/etc/x", "a/../../x", "C:/x", "a\\b", "a//b", "ok/./x"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_zip_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    """A zip with one escaping or malformed name is refused whole, naming it;
    the good entry before it is not written either."""
    archive = write_zip(tmp_path / "bad.zip", [("good.txt", b"g"), (name, b"evil")])
    caught = refused(tmp_path, archive, InvalidInput, "archive entry")
    assert repr(name) in str(caught.value)
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_tar_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    """A tar with one escaping or malformed name is refused whole, naming it."""
    archive = write_tar(
        tmp_path / "bad.tar", [tar_file("good.txt", b"g"), tar_file(name, b"evil")]
    )
    caught = refused(tmp_path, archive, InvalidInput, "archive entry")
    assert repr(name) in str(caught.value)


def test_zip_nul_in_name_is_refused(tmp_path: Path) -> None:
    """A NUL in a zip entry name (which zipfile would cut) is refused."""
    archive = write_zip(tmp_path / "nul.zip", [("safeXname.txt", b"x")])
    data = archive.read_bytes().replace(b"safeXname", b"safe\x00name")
    archive.write_bytes(data)
    refused(tmp_path, archive, InvalidInput, "NUL")


@pytest.mark.parametrize(
    ("name", "kind", "linkname", "match"),
    [
        ("passwd", tarfile.SYMTYPE, "/etc/passwd", "link"),
        ("up", tarfile.SYMTYPE, "../../outside", "link"),
        ("inside", tarfile.SYMTYPE, "good.txt", "link"),
        ("hard", tarfile.LNKTYPE, "/etc/passwd", "link"),
        ("hard2", tarfile.LNKTYPE, "good.txt", "link"),
        ("tty", tarfile.CHRTYPE, "", "device file or FIFO"),
        ("disk", tarfile.BLKTYPE, "", "device file or FIFO"),
        ("pipe", tarfile.FIFOTYPE, "", "device file or FIFO"),
    ],
)
def test_tar_links_and_special_files_are_refused(
    tmp_path: Path, name: str, kind: bytes, linkname: str, match: str
) -> None:
    """Every tar link (wherever it points), device and FIFO is refused, named."""
    archive = write_tar(
        tmp_path / "special.tar",
        [tar_file("good.txt", b"g"), tar_special(name, kind, linkname)],
    )
    caught = refused(tmp_path, archive, InvalidInput, match)
    assert repr(name) in str(caught.value)


def test_tar_symlink_then_write_through_it_is_refused(tmp_path: Path) -> None:
    """The classic two-step escape (a link to a folder, then a file under it)
    stops at the link."""
    archive = write_tar(
        tmp_path / "two-step.tar",
        [tar_special("d", tarfile.SYMTYPE, str(tmp_path)), tar_file("d/evil", b"x")],
    )
    refused(tmp_path, archive, InvalidInput, "'d' is a link")
    assert not (tmp_path / "evil").exists()


def test_zip_symlink_entry_is_refused(tmp_path: Path) -> None:
    """A zip entry whose Unix mode marks a symbolic link is refused."""
    archive = write_zip(
        tmp_path / "link.zip", [("passwd", b"/etc/passwd")], mode=0o120777
    )
    refused(tmp_path, archive, InvalidInput, "'passwd' is a symbolic link")


def test_zip_device_entry_is_refused(tmp_path: Path) -> None:
    """A zip entry whose Unix mode marks a FIFO is refused."""
    archive = write_zip(tmp_path / "fifo.zip", [("pipe", b"")], mode=0o010644)
    refused(tmp_path, archive, InvalidInput, "'pipe' is not a regular file")


def test_encrypted_zip_entry_is_refused(tmp_path: Path) -> None:
    """An entry flagged as encrypted is refused before anything is read."""
    archive = write_zip(tmp_path / "enc.zip", [("secret", b"x")])
    data = bytearray(archive.read_bytes())  # zipfile clears flag_bits on writing
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature) + offset
        data[at] |= 0x1
    archive.write_bytes(bytes(data))
    refused(tmp_path, archive, InvalidInput, "'secret' is encrypted")


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_duplicate_entries_are_refused(tmp_path: Path, kind: str) -> None:
    """The same path twice is refused, naming it."""
    pairs = [("a/x.txt", b"1"), ("b", b"2"), ("a/x.txt", b"3")]
    if kind == "zip":
        archive = write_zip(tmp_path / "dup.zip", pairs)
    else:
        archive = write_tar(tmp_path / "dup.tar", [tar_file(n, d) for n, d in pairs])
    refused(tmp_path, archive, InvalidInput, "'a/x.txt' appears more than once")


def test_duplicate_folder_entries_are_allowed(tmp_path: Path) -> None:
    """A folder listed twice is harmless and extracts."""
    archive = write_zip(
        tmp_path / "dirs.zip", [("d/", b""), ("d/f", b"f"), ("d/", b"")]
    )
    dest = tmp_path / "dest"
    assert_extracted(extract_archive(archive, dest), dest, {"d/f": b"f"})


@pytest.mark.parametrize(
    "pairs",
    [
        [("a", b"file"), ("a/b", b"under it")],
        [("a/b", b"under it"), ("a", b"file")],
        [("a/", b""), ("a", b"file")],
        [("a", b"file"), ("a/", b"")],
    ],
)
def test_file_used_as_folder_is_refused(
    tmp_path: Path, pairs: list[tuple[str, bytes]]
) -> None:
    """A path that is a file in one entry and a folder in another is refused."""
    archive = write_zip(tmp_path / "clash.zip", pairs)
    refused(tmp_path, archive, InvalidInput, "'a'")


# -- bomb limits -----------------------------------------------------------------


def test_zip_bomb_refused_by_ratio_before_writing(tmp_path: Path) -> None:
    """50 MB of deflated zeros (ratio about 1000) is refused by max_ratio from the
    declared sizes, before a byte is written."""
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(50 * 1000 * 1000))
    progress: list[int] = []
    refused(
        tmp_path,
        archive,
        TooLarge,
        r"'zeros.bin'.*max_ratio=200",
        on_progress=lambda done, total: progress.append(done),
    )
    assert progress == []


def test_max_files(tmp_path: Path) -> None:
    """More entries than max_files is TooLarge naming the entry that crossed it."""
    archive = write_zip(tmp_path / "many.zip", [(f"f{i}", b"x") for i in range(11)])
    refused(
        tmp_path, archive, TooLarge, r"'f10'.*max_files=10", ExtractLimits(max_files=10)
    )
    dest = tmp_path / "ok"
    extract_archive(archive, dest, ExtractLimits(max_files=11))
    assert len(list(dest.iterdir())) == 11


def test_max_total_size_from_declared_sizes(tmp_path: Path) -> None:
    """Declared sizes above max_total_size are refused before writing."""
    archive = write_tar(
        tmp_path / "big.tar",
        [tar_file("a", os.urandom(600)), tar_file("b", b"x" * 600)],
    )
    refused(
        tmp_path,
        archive,
        TooLarge,
        r"'b'.*declared total.*max_total_size=1000",
        ExtractLimits(max_total_size=1000),
    )


def test_max_file_size(tmp_path: Path) -> None:
    """One file above max_file_size is refused, naming it."""
    archive = write_zip(tmp_path / "f.zip", [("small", b"x"), ("large", b"y" * 2000)])
    refused(
        tmp_path,
        archive,
        TooLarge,
        r"'large'.*max_file_size=1000",
        ExtractLimits(max_file_size=1000),
    )


def test_limits_are_enforced_while_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the declared sizes slip through (here: declared as 0), the bytes actually
    written still hit max_total_size, and dest is removed."""
    monkeypatch.setattr(extract_module, "_declared_size", lambda member: 0)
    archive = write_zip(
        tmp_path / "w.zip",
        [("big.bin", os.urandom(3 * MIB))],
        compress=zipfile.ZIP_STORED,
    )
    progress: list[int] = []
    refused(
        tmp_path,
        archive,
        TooLarge,
        r"'big.bin'.*extracted total.*max_total_size",
        ExtractLimits(max_total_size=MIB + 1),
        on_progress=lambda done, total: progress.append(done),
    )
    assert progress == [MIB]  # stopped in the second block


def test_ratio_is_enforced_while_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ratio limit also applies to the bytes actually written."""
    monkeypatch.setattr(extract_module, "_declared_size", lambda member: 0)
    archive = write_zip(tmp_path / "r.zip", [("zeros", bytes(5 * MIB))])
    refused(tmp_path, archive, TooLarge, r"'zeros'.*extracted.*max_ratio")


def _patch_zip_size(archive: Path, size: int) -> None:
    """Rewrite the uncompressed size of the only entry, in both headers."""
    data = bytearray(archive.read_bytes())
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, size)
    struct.pack_into("<I", data, central + 24, size)
    archive.write_bytes(bytes(data))


def test_zip_declaring_fewer_bytes_than_it_holds(tmp_path: Path) -> None:
    """A zip whose headers claim a smaller size than the data is refused
    (zipfile stops at the claimed size, whose CRC does not match)."""
    archive = write_zip(tmp_path / "lie.zip", [("payload", bytes(4 * MIB))])
    _patch_zip_size(archive, 10)
    refused(tmp_path, archive, InvalidInput, "'payload'")


def test_zip_declaring_more_bytes_than_it_holds(tmp_path: Path) -> None:
    """A zip that claims more bytes than it holds is refused, naming the entry;
    one that claims a huge size is stopped by the declared limits."""
    archive = write_zip(tmp_path / "lie.zip", [("payload", b"abc" * 1000)])
    _patch_zip_size(archive, 5000)
    refused(tmp_path, archive, InvalidInput, "'payload' declares 5000 bytes")
    _patch_zip_size(archive, 0xFFFFFFF0)
    refused(tmp_path, archive, TooLarge, "'payload'")


# -- cancellation ----------------------------------------------------------------


@pytest.mark.parametrize("after", [0, 3, 6, 10])
def test_cancel_through_check_removes_dest(tmp_path: Path, after: int) -> None:
    """check() raising (during validation or between blocks) propagates, and dest
    is removed with everything written so far."""
    archive = write_zip(tmp_path / "c.zip", list(FILES.items()))
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls > after:
            raise Cancelled

    progress: list[int] = []
    refused(
        tmp_path,
        archive,
        Cancelled,
        "^$",
        check=check,
        on_progress=lambda done, total: progress.append(done),
    )
    assert bool(progress) == (after >= 6)  # later cancels come after writing began


def test_import_sclib_does_not_import_pipeline() -> None:
    """``import sclib`` stays light: the pipeline loads only when asked for."""
    code = "import sys, sclib; print('sclib.pipeline' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_tar_ending_with_a_zip_is_read_as_tar(tmp_path: Path) -> None:
    """A tar whose last member is a zip also passes zipfile.is_zipfile; it is
    still unpacked as the tar it is, leaving the inner zip whole."""
    inner = write_zip(tmp_path / "inner.zip", [("inner.txt", b"x")])
    payload = inner.read_bytes()
    archive = write_tar(tmp_path / "outer.tar", [tar_file("inner.zip", payload)])
    assert zipfile.is_zipfile(archive)
    assert is_archive(archive)
    dest = tmp_path / "dest"
    assert_extracted(extract_archive(archive, dest), dest, {"inner.zip": payload})
