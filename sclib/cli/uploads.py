"""``sclib uploads expire``: unfinished uploads on this server's backend."""

from __future__ import annotations

import argparse
from typing import Any

from sclib.cli._common import (
    EXIT_OK,
    emit,
    json_flag,
    open_queue,
    settings_from,
    table,
)

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``uploads`` and its actions."""
    up = sub.add_parser("uploads", help="unfinished uploads on this server's backend")
    up.set_defaults(run=run)
    upsub = up.add_subparsers(
        dest="uploads_command", required=True, parser_class=type(up)
    )
    exp = upsub.add_parser(
        "expire", help="remove uploads untouched for SCLIB_UPLOAD_EXPIRY_HOURS"
    )
    exp.add_argument(
        "--apply", action="store_true", help="delete them (default: only report)"
    )
    json_flag(exp)


def run(args: argparse.Namespace) -> int:
    """Run ``sclib uploads expire``."""
    from datetime import timedelta

    from sclib.server.uploads import UploadManager
    from sclib.transfers.sessions import open_session_store

    settings = settings_from(args)
    url = settings.backend_url()
    queue = open_queue(settings, must_exist=True)
    sessions = open_session_store(url, **settings.session_store_options(url))
    try:
        manager = UploadManager(
            sessions,
            queue,
            settings.data_dir,
            expiry=timedelta(hours=settings.upload_expiry_hours),
        )
        found = manager.expire(dry_run=not args.apply)
    finally:
        sessions.close()
        queue.close()
    rows = [
        {
            "upload_id": u.id,
            "protocol": u.protocol,
            "owner": u.owner,
            "filename": u.filename,
            "bytes_received": u.bytes_received,
            "updated_at": u.updated_at.isoformat(),
        }
        for u in found
    ]
    verb = "removed" if args.apply else "would remove (run with --apply)"
    text = table(
        [[str(v) for v in r.values()] for r in rows],
        ["upload_id", "protocol", "owner", "filename", "received", "updated"],
    )
    emit(
        {"applied": args.apply, "uploads": rows},
        args.json,
        f"{text}\n{len(rows)} abandoned upload(s) {verb}",
    )
    return EXIT_OK
