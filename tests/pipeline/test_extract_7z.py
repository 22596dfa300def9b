"""7z archives through extract_archive: real archives written by py7zr, and
malicious ones made by patching a real archive's (uncompressed) header."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from blake3 import blake3

from sclib.errors import InvalidInput, JobCancelled, TooLarge
from sclib.pipeline.extract import ExtractLimits, extract_archive, is_archive

py7zr = pytest.importorskip("py7zr")


def _write(path: Path, entries: dict[str, bytes], **kw: object) -> Path:
    with py7zr.SevenZipFile(path, "w", **kw) as z:
        for name, data in entries.items():
            z.writestr(data, name)
    return path


def _crafted(path: Path, good: str, bad: str, data: bytes = b"x") -> Path:
    """A 7z whose one entry is named ``bad``: written as ``good`` (same length)
    with an uncompressed header, then the name and both CRCs patched."""
    z = py7zr.SevenZipFile(path, "w")
    z.encoded_header_mode = False
    z.writestr(data, good)
    z.close()
    raw = bytearray(path.read_bytes())
    g, b = good.encode("utf-16-le"), bad.encode("utf-16-le")
    at = raw.find(g)
    assert at > 0 and len(g) == len(b)
    raw[at : at + len(g)] = b
    offset, size = struct.unpack("<QQ", raw[12:28])
    header = raw[32 + offset : 32 + offset + size]
    raw[28:32] = struct.pack("<I", zlib.crc32(header))
    raw[8:12] = struct.pack("<I", zlib.crc32(raw[12:32]))
    path.write_bytes(bytes(raw))
    return path


def test_a_7z_archive_unpacks_with_digests(tmp_path: Path) -> None:
    """Nested folders, an empty file and a 300 KB file arrive byte for byte, each
    with its BLAKE3; modes are the module's, not the archive's; is_archive says
    yes by content and name, and no for a text file named .7z."""
    entries = {
        "run/a.txt": b"alpha",
        "run/deep/b.bin": os.urandom(300_000),
        "run/empty.dat": b"",
    }
    archive = _write(tmp_path / "scan.7z", entries)
    assert is_archive(archive)
    fake = tmp_path / "notes.7z"
    fake.write_text("not an archive")
    assert not is_archive(fake)
    dest = tmp_path / "out"
    done = extract_archive(archive, dest)
    assert {f.path: f.blake3 for f in done} == {
        name: blake3(data).hexdigest() for name, data in entries.items()
    }
    for name, data in entries.items():
        target = dest / name
        assert target.read_bytes() == data
        assert target.stat().st_mode & 0o7777 == 0o644


@pytest.mark.parametrize(
    ("good", "bad"),
    [("xx/evil.txt", "../evil.txt"), ("tmpx/x.txt", "/tmp/x.txt")],
)
def test_escaping_names_are_refused(tmp_path: Path, good: str, bad: str) -> None:
    """An entry named ../evil.txt or /tmp/x.txt is refused, naming it; nothing is
    written anywhere."""
    archive = _crafted(tmp_path / "evil.7z", good, bad)
    dest = tmp_path / "out"
    with pytest.raises(InvalidInput, match="refused"):
        extract_archive(archive, dest)
    assert not dest.exists()
    assert not (tmp_path / "evil.txt").exists()


def test_links_and_encrypted_archives_are_refused(tmp_path: Path) -> None:
    """A symbolic link inside a 7z is refused (whatever it points to), and so is
    an encrypted archive; neither leaves a destination folder behind."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "link").symlink_to("../a.txt")  # harmless, still refused
    linked = tmp_path / "linked.7z"
    with py7zr.SevenZipFile(linked, "w") as z:
        z.writeall(src, "src")
    with pytest.raises(InvalidInput, match="link"):
        extract_archive(linked, tmp_path / "out1")
    assert not (tmp_path / "out1").exists()
    locked = _write(
        tmp_path / "locked.7z",
        {"a.txt": b"secret"},
        password="pw",  # noqa: S106
    )
    with pytest.raises(InvalidInput, match="encrypted"):
        extract_archive(locked, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_bombs_damage_and_cancel(tmp_path: Path) -> None:
    """64 MB of zeros in a small 7z breaks max_ratio before a byte is written; a
    truncated archive is refused as unreadable; a check() that cancels stops the
    extraction and removes the folder."""
    bomb = _write(tmp_path / "bomb.7z", {"zeros.bin": bytes(64 << 20)})
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(TooLarge, match="max_ratio"):
        extract_archive(bomb, tmp_path / "out1", ExtractLimits(max_ratio=100))
    assert not (tmp_path / "out1").exists()
    good = _write(tmp_path / "good.7z", {"r.bin": os.urandom(200_000)})
    cut = tmp_path / "cut.7z"
    cut.write_bytes(good.read_bytes()[:-300])
    with pytest.raises(InvalidInput, match=r"cannot be read"):
        extract_archive(cut, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    calls = {"n": 0}

    def check() -> None:
        calls["n"] += 1
        if calls["n"] >= 2:  # past the checks of the plan: while writing
            raise JobCancelled("stop")

    with pytest.raises(JobCancelled):
        extract_archive(good, tmp_path / "out3", check=check)
    assert not (tmp_path / "out3").exists()


def test_a_stopped_7z_extraction_leaves_no_open_file(tmp_path: Path) -> None:
    """When check() stops a 7z extraction in the middle of a file (a cancel), the
    file py7zr had asked for is closed all the same: after a few stopped runs the
    process holds no more open descriptors than before, and the folder is gone."""
    data = {f"d{i}/f.bin": bytes(range(256)) * 4096 * (i + 1) for i in range(2)}
    archive = _write(tmp_path / "a.7z", data)
    before = len(os.listdir("/proc/self/fd"))
    for stop_after in (2, 3):  # 2 entries planned, then one write per file
        calls = {"n": 0}

        def check(calls: dict[str, int] = calls, stop_after: int = stop_after) -> None:
            calls["n"] += 1
            if calls["n"] > stop_after:
                raise JobCancelled("stop")

        with pytest.raises(JobCancelled):
            extract_archive(
                archive, tmp_path / "out", ExtractLimits(max_ratio=1e6), check=check
            )
        assert not (tmp_path / "out").exists()
    assert len(os.listdir("/proc/self/fd")) == before
