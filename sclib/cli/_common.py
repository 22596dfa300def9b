"""What every ``sclib`` command shares: the parser class, exit codes, settings,
stores opened for reading, and plain-text tables.

Nothing here imports an optional package, so every command's ``--help`` works on a
bare ``pip install sclib``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sclib.errors import ConfigurationError

if TYPE_CHECKING:
    from sclib.jobs.queue import JobQueue
    from sclib.jobs.registry import HandlerRegistry
    from sclib.settings import Settings

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Parser",
    "UsageError",
    "emit",
    "given",
    "open_queue",
    "options",
    "require_store",
    "settings_from",
    "table",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: what ``--data-dir`` and ``--backend`` say about their defaults
DATA_DIR_HELP = "data folder (default: $SCLIB_DATA_DIR, else ./sclib-data)"
BACKEND_HELP = (
    "job store URL, sqlite:///path.db or mongodb://host/db (default: "
    "$SCLIB_BACKEND, else $SCLIB_MONGO_URL, else sclib.db in the data folder)"
)


class UsageError(Exception):
    """A command line that cannot work; printed as one line, exit 2."""


class HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to every option that has a default worth showing and
    whose help does not already say its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or (isinstance(default, list | tuple) and not default)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"sclib: error: {message}\n")


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings: the environment, overridden by ``--data-dir``/``--backend``."""
    from sclib.settings import load_settings

    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None) is not None:
        overrides["SCLIB_DATA_DIR"] = args.data_dir
    if getattr(args, "backend", None) is not None:
        overrides["SCLIB_BACKEND"] = args.backend
    return load_settings(**overrides)


def require_store(settings: Settings) -> None:
    """Refuse to read a store that does not exist, instead of creating it.

    Commands that only read (``jobs list``, ``datasets show``, ``monitor ...``)
    call this first, so a mistyped ``--data-dir`` is reported, never turned into
    a new empty database. Only SQLite can be checked this way; a MongoDB database
    that does not exist simply has no documents.
    """
    from sclib.backends import parse_backend_url

    url = settings.backend_url()
    kind, target = parse_backend_url(url)
    if kind == "sqlite" and not Path(target).is_file():
        raise ConfigurationError(
            f"no such store: {target} (nothing has run with this data folder yet; "
            "pass --data-dir or --backend, or set SCLIB_DATA_DIR, to read another)"
        )


def open_queue(settings: Settings, *, must_exist: bool = False) -> JobQueue:
    """The job queue the settings name."""
    from sclib.backends import open_store
    from sclib.jobs.queue import JobQueue

    if must_exist:
        require_store(settings)
    url = settings.backend_url()
    return JobQueue(
        open_store(url, **settings.store_options(url)), max_crashes=settings.max_crashes
    )


def given(value: Any, default: Any) -> Any:
    """The command-line value if one was given (0 included), else the setting."""
    return default if value is None else value


def options(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` items as a dict; each VALUE is parsed as JSON if it can be."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Rows as left-aligned columns under a header."""
    cells = [[str(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in cells
    )


def emit(data: Any, as_json: bool, text: str) -> None:
    """Print ``data`` as JSON, or ``text``."""
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


def json_flag(parser: argparse.ArgumentParser, **kwargs: Any) -> None:
    """The ``--json`` option, the same everywhere."""
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of text", **kwargs
    )


def load_handlers(
    settings: Settings, paths: list[str], purpose: str
) -> HandlerRegistry:
    """The handler registries of ``$SCLIB_HANDLERS`` then ``--handlers``, merged
    (a later one wins on conflicts); a usage error without any."""
    from sclib.jobs.registry import HandlerRegistry

    found = [p.strip() for p in (settings.handlers or "").split(",") if p.strip()]
    found += paths
    if not found:
        raise UsageError(
            f"no handlers {purpose}: pass --handlers module:registry (or set "
            "SCLIB_HANDLERS); 'sclib.demo:handlers' has the demo handlers"
        )
    handlers = HandlerRegistry()
    for path in found:
        handlers = handlers.merge(HandlerRegistry.load(path))
    return handlers
