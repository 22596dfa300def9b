"""The example plugin passes sclib's Source contract suite."""

from __future__ import annotations

import os
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from sclib_zip_source import ZipSource

from sclib.testing.sources import SourceContract, SourceTree

FILES = {
    "README.txt": b"two detector frames\n" * 50,
    "empty.dat": b"",
    "frames/frame_0001.raw": os.urandom(30_000),
    "frames/frame_0002.raw": bytes(range(256)) * 100,
}


class TestZipSource(SourceContract):
    @pytest.fixture
    def source(self) -> ZipSource:
        return ZipSource()

    @pytest.fixture
    def tree(self, tmp_path: Path) -> SourceTree:
        archive = tmp_path / "run.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for key, data in FILES.items():
                # random data stored, the rest deflated: both read paths are tested
                method = (
                    zipfile.ZIP_STORED
                    if key.endswith("0001.raw")
                    else zipfile.ZIP_DEFLATED
                )
                zf.writestr(key, data, compress_type=method)
        return SourceTree(
            folder=f"zip://{archive}",
            files=FILES,
            missing=f"zip://{tmp_path}/absent.zip",
            url_of={k: f"zip://{archive}#{k}" for k in FILES},
        )


def test_entry_point_is_registered() -> None:
    """Installed, the package advertises its source under 'sclib.sources'."""
    names = {ep.name for ep in entry_points(group="sclib.sources")}
    if "zip" not in names:
        pytest.skip("the example plugin is not installed (pip install -e .)")
    from sclib.transfers.sources import open_source

    assert isinstance(open_source("zip:///x.zip"), ZipSource)
