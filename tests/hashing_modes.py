"""Run a test with one-pass (chaining value) or in-order chunk hashing.

``tree`` needs the compiled ``sclib_blake3tree`` module (``pip install
./native/blake3tree``); without it such tests skip, or fail when
``CI_REQUIRE_BLAKE3TREE=1`` (set by ``.ci/run``), so CI cannot quietly test only
the fallback. ``ordered`` turns it off through ``SCLIB_BLAKE3_TREE=0``.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

MODES = ["tree", "ordered"]


def require_tree() -> None:
    """Skip (or, in CI, fail) unless sclib_blake3tree is installed."""
    if importlib.util.find_spec("sclib_blake3tree") is None:
        reason = (
            "the compiled module sclib_blake3tree is not there: pip install "
            "./native/blake3tree builds it when a C compiler and Python's headers "
            "are installed (without them it installs nothing to import)"
        )
        if os.environ.get("CI_REQUIRE_BLAKE3TREE") == "1":
            pytest.fail(f"CI_REQUIRE_BLAKE3TREE=1 but {reason}", pytrace=False)
        pytest.skip(reason)


def use(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make chunk hashing run in ``mode`` for the rest of the test."""
    if mode == "tree":
        require_tree()
        monkeypatch.delenv("SCLIB_BLAKE3_TREE", raising=False)
    else:
        monkeypatch.setenv("SCLIB_BLAKE3_TREE", "0")
