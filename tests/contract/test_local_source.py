"""The Source contract on local files (a real folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sclib.testing.sources import SourceContract, SourceTree
from sclib.transfers.local import LocalSource

FILES = {
    "empty.dat": b"",
    "small.txt": b"hello, sclib\n",
    "scans/frame_0001.tif": os.urandom(50_000),
    "scans/deeper/frame_0002.tif": os.urandom(20_001),
}


class TestLocalSource(SourceContract):
    @pytest.fixture
    def source(self) -> LocalSource:
        return LocalSource()

    @pytest.fixture
    def tree(self, tmp_path: Path) -> SourceTree:
        root = tmp_path / "tree"
        for key, data in FILES.items():
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)
        return SourceTree(
            folder=str(root),
            files=FILES,
            missing=str(tmp_path / "nothing-here"),
            url_of={key: str(root / key) for key in FILES},
        )
