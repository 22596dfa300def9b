"""``sclib uploads expire``: unfinished uploads on this server's backend."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from sclib.cli._common import (
    EXIT_OK,
    UsageError,
    emit,
    json_flag,
    open_queue,
    settings_from,
    table,
)

if TYPE_CHECKING:
    from datetime import timedelta

__all__ = ["parse_age", "register", "run"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``uploads`` and its actions."""
    up = sub.add_parser("uploads", help="unfinished uploads on this server's backend")
    up.set_defaults(run=run)
    upsub = up.add_subparsers(
        dest="uploads_command", required=True, parser_class=type(up)
    )
    exp = upsub.add_parser(
        "expire",
        help="remove unfinished uploads and free their disk space",
        description="Remove unfinished uploads untouched for a while (default "
        "SCLIB_UPLOAD_EXPIRY_HOURS) and delete their staged bytes. A dry run "
        "unless --apply is given.",
    )
    exp.add_argument(
        "--older-than",
        metavar="AGE",
        help="untouched for longer than this, e.g. 90s, 30m, 2h, 3d, or 0 for "
        "every one (default: $SCLIB_UPLOAD_EXPIRY_HOURS, else 24h)",
    )
    exp.add_argument("--user", help="only this user's uploads (default: everyone's)")
    exp.add_argument(
        "--state",
        choices=["any", "receiving", "committing"],
        default="any",
        help="receiving: still taking bytes; committing: a commit was "
        "interrupted (it is finished, not deleted)",
    )
    exp.add_argument(
        "--apply", action="store_true", help="delete them (default: only report)"
    )
    json_flag(exp)


def parse_age(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``3d`` or plain seconds as a duration."""
    from datetime import timedelta

    value = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    unit = value[-1:] if value[-1:] in units else "s"
    number = value[:-1] if value[-1:] in units else value
    try:
        amount = float(number)
    except ValueError:
        amount = -1.0
    if amount < 0:
        raise UsageError(
            f"--older-than expects an age such as 90s, 30m, 2h or 3d, got {text!r}"
        )
    return timedelta(seconds=amount * units[unit])


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
        found = manager.expire(
            dry_run=not args.apply,
            older_than=parse_age(args.older_than) if args.older_than else None,
            owner=args.user.strip().lower() if args.user else None,
            state=args.state,
        )
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
