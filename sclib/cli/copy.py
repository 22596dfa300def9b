"""``sclib copy``: copy a file or folder, resumably and verified."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from sclib.cli._common import EXIT_OK, UsageError, json_flag, options, settings_from

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``copy``."""
    cp = sub.add_parser(
        "copy", help="copy a file or folder, resumably (run it again to resume)"
    )
    cp.set_defaults(run=run)
    cp.add_argument("source", help="path or URL: s3://, gs://, gdrive://, https://")
    cp.add_argument("destination", help="local path, s3://bucket/prefix or gs://...")
    cp.add_argument("--parallel", type=int, default=4, help="chunks in flight")
    cp.add_argument(
        "--chunk-size", help="chunk size, e.g. 8MiB (default: chosen by size)"
    )
    cp.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="copy only files whose path under the source matches (repeatable; "
        "default: every file)",
    )
    cp.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip files whose path under the source matches (repeatable; "
        "default: none)",
    )
    cp.add_argument(
        "--restart",
        action="store_true",
        help="drop an unfinished earlier transfer and start over",
    )
    cp.add_argument("--sha256", action="store_true", help="also print SHA-256")
    cp.add_argument(
        "--source-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="source option, e.g. endpoint_url=..., allow_private=true "
        "(credentials: prefer the SCLIB_SOURCE_OPTIONS variable, a JSON "
        "object, so they stay out of the process list; default: none)",
    )
    cp.add_argument(
        "--dest-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="destination option, e.g. endpoint_url=... or fsync=false "
        "(repeatable; default: none)",
    )
    cp.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (default: a bar on stderr when it is a terminal)",
    )
    json_flag(cp)


def _source_options(args: argparse.Namespace) -> dict[str, Any]:
    found: dict[str, Any] = {}
    env_options = os.environ.get("SCLIB_SOURCE_OPTIONS")
    if env_options:
        try:
            found.update(json.loads(env_options))
        except json.JSONDecodeError as exc:
            raise UsageError(f"SCLIB_SOURCE_OPTIONS is not JSON: {exc}") from None
    found.update(options(args.source_option, "--source-option"))
    return found


def run(args: argparse.Namespace) -> int:
    """Run ``sclib copy``."""
    from sclib.transfers import TqdmSubscriber, TransferConfig, TransferEngine
    from sclib.transfers.plan import parse_size
    from sclib.transfers.sessions import open_session_store
    from sclib.transfers.sources import check_url

    # a malformed URL must not become a local folder named "s3:"
    check_url(args.source)
    check_url(args.destination)
    settings = settings_from(args)
    source_options = _source_options(args)
    config = TransferConfig(
        parallel=args.parallel,
        chunk_size=parse_size(args.chunk_size) if args.chunk_size else None,
        sha256=args.sha256,
    )
    url = settings.backend_url()
    store_options = settings.store_options(url)
    store_options.pop("collection", None)  # that names the jobs collection
    sessions = open_session_store(url, **store_options)
    show = not (args.no_progress or args.json) and sys.stderr.isatty()
    subscribers = [TqdmSubscriber("copy", file=sys.stderr)] if show else []
    try:
        result = TransferEngine(sessions=sessions, config=config).copy(
            args.source,
            args.destination,
            include=args.include,
            exclude=args.exclude,
            source_options=source_options,
            dest_options=options(args.dest_option, "--dest-option"),
            subscribers=subscribers,
            restart=args.restart,
        )
    finally:
        sessions.close()
    if args.json:
        files = [vars(f) for f in result.files]
        print(
            json.dumps(
                {"seconds": result.seconds, "bytes": result.bytes, "files": files},
                indent=2,
            )
        )
        return EXIT_OK
    for f in result.files:
        resumed = (
            f" ({f.chunks_reused} of {f.chunks} chunks already there)"
            if f.chunks_reused
            else ""
        )
        print(f"{f.blake3}  {f.dest_url}{resumed}")
        if f.sha256:
            print(f"sha256 {f.sha256}  {f.dest_url}")
    mib = result.bytes / 2**20
    rate = mib / result.seconds if result.seconds else 0.0
    print(
        f"{len(result.files)} file(s), {mib:,.1f} MiB in {result.seconds:.1f}s "
        f"({rate:,.0f} MiB/s), verified with BLAKE3",
        file=sys.stderr,
    )
    return EXIT_OK
