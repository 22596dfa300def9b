"""Old module paths kept for one release after a module moved.

A shim module calls :func:`alias` with its own name and the new path: the old
name then *is* the new module (every name, private ones included, and one module
object, so patches and ``isinstance`` checks agree), and the importer gets a
``DeprecationWarning`` that names the new path.
"""

from __future__ import annotations

import importlib
import sys
import warnings

__all__ = ["alias"]


def alias(old: str, new: str) -> None:
    """Make module ``old`` an alias of ``new`` and warn the code importing it."""
    module = importlib.import_module(new)
    warnings.warn(
        f"{old} moved to {new}; the old path goes away in the next release",
        DeprecationWarning,
        stacklevel=3,  # the importing line: warn() skips the import machinery
    )
    sys.modules[old] = module
