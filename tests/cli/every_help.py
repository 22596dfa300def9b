"""Run ``sclib --help`` and the ``--help`` of every command and subcommand in
one process; print a JSON summary and exit 1 if any failed.

Used by ``test_no_extras.py`` (with optional packages blocked) and by ``.ci/run``
(in a fresh virtual environment made with a bare ``pip install .``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Iterator

from sclib.cli import build_parser, main


def command_paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Every command path: ``()``, ``("jobs",)``, ``("jobs", "list")``, ..."""
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from command_paths(child, (*prefix, name))


def run() -> dict[str, object]:
    failures = []
    paths = list(command_paths(build_parser()))
    for path in paths:
        out, err = io.StringIO(), io.StringIO()
        code: object
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main([*path, "--help"])
            code = 0
        except SystemExit as exc:
            code = exc.code
        except Exception as exc:  # report whatever broke
            code = repr(exc)
        if code != 0 or "usage:" not in out.getvalue():
            failures.append([" ".join(path), code, err.getvalue()[-300:]])
    return {"paths": len(paths), "failures": failures}


if __name__ == "__main__":
    summary = run()
    print(json.dumps(summary))
    sys.exit(1 if summary["failures"] else 0)
