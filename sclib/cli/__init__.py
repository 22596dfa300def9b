"""The ``sclib`` command.

One module per command group, each with ``register(subparsers)`` (argparse only)
and ``run(args)``, which imports what the command needs when it runs. Building
the parser therefore imports no optional package: ``sclib --help`` and every
subcommand's ``--help`` work on a bare ``pip install sclib``, and a command that
needs an extra names it when it runs.

Exit codes: 0 success; 1 the operation failed (unknown job, wrong state, backend
error); 2 bad usage, configuration, or a missing extra. Errors go to stderr as one
readable line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sclib.cli import (
    client,
    copy,
    datasets,
    demo,
    jobs,
    migrate,
    monitor,
    serve,
    token,
    uploads,
    worker,
)
from sclib.cli._common import (
    BACKEND_HELP,
    DATA_DIR_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    UsageError,
)
from sclib.errors import ConfigurationError, InvalidInput, SclibError, missing_extra

__all__ = ["build_parser", "main"]

#: the command groups, in the order ``sclib --help`` lists them
COMMANDS = (
    worker,
    jobs,
    copy,
    datasets,
    serve,
    uploads,
    client,
    monitor,
    migrate,
    token,
    demo,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``sclib`` argument parser, with every command registered."""
    from sclib.version import __version__

    parser = Parser(prog="sclib", description="sclib: ingest and process datasets.")
    parser.add_argument("--version", action="version", version=f"sclib {__version__}")
    parser.add_argument("--backend", help=BACKEND_HELP)
    parser.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more log output (-vv for debug; default: warnings only)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sclib`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    log_format = getattr(args, "log_format", None) or os.environ.get(
        "SCLIB_LOG_FORMAT", "text"
    )
    if log_format not in ("text", "json"):
        return _fail(
            f"SCLIB_LOG_FORMAT must be 'text' or 'json', got {log_format!r}",
            EXIT_USAGE,
        )
    if args.command == "worker" or (args.command == "serve" and log_format == "json"):
        level = min(level, logging.INFO)
    from sclib.logs import configure

    configure(level, log_format)
    args.log_format = log_format
    try:
        code: int = args.run(args)
        return code
    except (UsageError, ConfigurationError, InvalidInput) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except SclibError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except ImportError as exc:
        # an optional package imported deep inside a command: name its extra
        missing = missing_extra(exc, f"sclib {args.command}")
        if missing is None:
            raise
        return _fail(str(missing), EXIT_USAGE)
    except BrokenPipeError:
        # the reader went away (`sclib jobs list --json | head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"sclib: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
