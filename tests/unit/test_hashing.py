"""Whole-file BLAKE3 helpers: memory-mapped file hashing and the ordered hasher."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import pytest

from sclib.transfers.hashing import OrderedHasher, blake3_file


@pytest.mark.parametrize("size", [0, 1, 4095, 64 * 1024, 3 * 64 * 1024 + 7])
def test_blake3_file_equals_the_plain_digest(tmp_path: Path, size: int) -> None:
    """Hashing through memory-mapped windows gives b3sum's digest, for empty
    files, files smaller than a page, and files spanning several windows."""
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    seen: list[int] = []
    digest, n = blake3_file(path, on_progress=seen.append, block=64 * 1024)
    assert (digest, n) == (blake3.blake3(data).hexdigest(), size)
    assert seen == sorted(seen) and (not seen or seen[-1] == size)


def test_offer_ignores_chunks_given_before() -> None:
    """offer() feeds a chunk once; offering it again (a re-read) changes nothing."""
    hasher = OrderedHasher()
    assert hasher.offer(1, b"world")
    assert hasher.offer(0, b"hello ")
    assert not hasher.offer(0, b"XXXXXX")
    assert not hasher.offer(1, b"YYYYY")
    assert hasher.hexdigest() == blake3.blake3(b"hello world").hexdigest()
