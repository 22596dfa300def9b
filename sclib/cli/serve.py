"""``sclib serve``: the reference server, with an in-process worker, under uvicorn."""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from sclib.cli._common import (
    BACKEND_HELP,
    DATA_DIR_HELP,
    EXIT_OK,
    UsageError,
    settings_from,
)
from sclib.errors import ConfigurationError, MissingDependency, SclibError

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``serve``."""
    srv = sub.add_parser(
        "serve", help="run the reference server (with a worker) under uvicorn"
    )
    srv.set_defaults(run=run)
    srv.add_argument("--host", default="127.0.0.1", help="address to bind")
    srv.add_argument(
        "--port", type=int, default=8000, help="port to listen on, 0 for any free one"
    )
    srv.add_argument("--backend", default=argparse.SUPPRESS, help=BACKEND_HELP)
    srv.add_argument(
        "--data-dir", type=Path, default=argparse.SUPPRESS, help=DATA_DIR_HELP
    )
    srv.add_argument(
        "--workers",
        type=int,
        help="job-runner threads of the in-process worker; 0 runs none (then run "
        "'sclib worker --handlers sclib.pipeline:handlers_from_settings') "
        "(default: $SCLIB_WORKER_CONCURRENCY, else 1)",
    )
    srv.add_argument(
        "--no-auth",
        action="store_true",
        help="no tokens: every request is the local admin (loopback only)",
    )
    srv.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text, or one JSON object per line with job_id, "
        "job_type, dataset and user where known (default: $SCLIB_LOG_FORMAT, "
        "else text)",
    )
    srv.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn's log level",
    )


class PortBusy(SclibError):
    """The address to serve on is taken."""


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket bound to ``host:port``, or one clear error."""
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigurationError(f"--host {host!r} is not an address: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortBusy(
                f"port {port} on {host} is already in use (another server?); "
                "pick a free one with --port"
            ) from None
        raise PortBusy(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def run(args: argparse.Namespace) -> int:
    """Run ``sclib serve`` until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise MissingDependency("uvicorn", "server", "sclib serve") from None
    from sclib.server import create_app
    from sclib.server.auth import check_bind_address

    settings = settings_from(args)
    overrides: dict[str, Any] = {}
    if args.no_auth:
        overrides["no_auth"] = True
    if args.workers is not None:
        if args.workers < 0:
            raise UsageError("--workers must not be negative")
        overrides["worker_concurrency"] = args.workers
    if overrides:
        settings = settings.model_copy(update=overrides)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must lie in 0..65535, got {args.port}")
    check_bind_address(args.host, settings.no_auth)
    app = create_app(settings, run_worker=settings.worker_concurrency > 0)
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    banner = (
        f"sclib serving on http://{shown}:{port} (docs at /docs), "
        f"data in {settings.data_dir}"
    )

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:  # say it only once it is true
                if args.log_format == "json":
                    logging.getLogger("sclib.server").warning(banner)
                else:
                    print(banner, file=sys.stderr, flush=True)

    from sclib.logs import uvicorn_options
    from sclib.server.http import uvicorn_config

    config = uvicorn_config(
        app, settings, log_level=args.log_level, **uvicorn_options(args.log_format)
    )
    try:
        _Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return EXIT_OK
