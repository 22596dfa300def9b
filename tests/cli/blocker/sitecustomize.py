"""Test support: make packages unimportable, as if they were not installed.

Put this folder on ``PYTHONPATH`` and name the packages (top-level import names)
in ``SCLIB_TEST_BLOCK``, comma-separated; Python imports ``sitecustomize`` at
start-up, and every later import of those packages, or of a module inside them,
raises ``ModuleNotFoundError`` exactly as on a machine without them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

_BLOCKED = frozenset(
    name.strip() for name in os.environ.get("SCLIB_TEST_BLOCK", "").split(",") if name
)


class _Blocker(MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


if _BLOCKED:
    # forget what a .pth file may have imported already (namespace packages)
    for _name in [m for m in sys.modules if m.split(".")[0] in _BLOCKED]:
        del sys.modules[_name]
    sys.meta_path.insert(0, _Blocker())
