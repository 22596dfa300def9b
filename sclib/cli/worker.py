"""``sclib worker``: run a worker that executes jobs."""

from __future__ import annotations

import argparse
from typing import Any

from sclib.cli._common import (
    EXIT_OK,
    UsageError,
    given,
    load_handlers,
    open_queue,
    settings_from,
)

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``worker``."""
    w = sub.add_parser("worker", help="run a worker that executes jobs")
    w.set_defaults(run=run)
    w.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text, or one JSON object per line with job_id, "
        "job_type, dataset and user where known (default: $SCLIB_LOG_FORMAT, "
        "else text)",
    )
    w.add_argument(
        "--concurrency",
        type=int,
        help="jobs run at once (default: $SCLIB_WORKER_CONCURRENCY, else 1)",
    )
    w.add_argument(
        "--types",
        help="comma-separated job types to take (default: all types with a handler)",
    )
    w.add_argument(
        "--handlers",
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="handler registry to load, e.g. mypackage.jobs:handlers (repeatable; "
        "default: $SCLIB_HANDLERS)",
    )
    w.add_argument(
        "--prefetch",
        type=_prefetch,
        metavar="auto|N",
        help="jobs to claim ahead of free slots: 'auto' adapts to how long jobs "
        "take (many when they take milliseconds, none when they take seconds), "
        "N fixes it, 0 claims only for idle runners (default: "
        "$SCLIB_WORKER_PREFETCH, else auto)",
    )
    w.add_argument(
        "--mode",
        choices=["thread", "process"],
        help="run each job in a thread or in a child process (default: "
        "$SCLIB_WORKER_MODE, else thread)",
    )
    w.add_argument(
        "--lease-seconds",
        type=float,
        help="how long a claim holds without a heartbeat (default: "
        "$SCLIB_LEASE_SECONDS, else 30)",
    )
    w.add_argument(
        "--poll-interval",
        type=float,
        help="seconds between polls of an empty queue (default: "
        "$SCLIB_POLL_INTERVAL, else 1)",
    )
    w.add_argument(
        "--grace-period",
        type=float,
        help="seconds running jobs get to finish on SIGTERM (default: "
        "$SCLIB_GRACE_PERIOD, else 30)",
    )
    w.add_argument(
        "--rescue-interval",
        type=float,
        default=5.0,
        help="seconds between sweeps for expired leases, 0 for never",
    )
    w.add_argument(
        "--until-idle", action="store_true", help="exit once no job is claimable"
    )
    w.add_argument(
        "--max-jobs", type=int, help="exit after this many jobs (default: never)"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``sclib worker``."""
    from sclib.jobs.worker import Worker

    if args.rescue_interval < 0:
        raise UsageError("--rescue-interval must not be negative")
    if args.max_jobs is not None and args.max_jobs < 1:
        raise UsageError("--max-jobs must be at least 1")
    settings = settings_from(args)
    handlers = load_handlers(settings, args.handlers, "to run")
    types = (
        [t.strip() for t in args.types.split(",") if t.strip()] if args.types else None
    )
    queue = open_queue(settings)
    try:
        worker = Worker(
            queue,
            handlers,
            concurrency=given(args.concurrency, settings.worker_concurrency),
            prefetch=given(args.prefetch, settings.worker_prefetch),
            types=types,
            mode=given(args.mode, settings.worker_mode),
            lease_seconds=given(args.lease_seconds, settings.lease_seconds),
            poll_interval=given(args.poll_interval, settings.poll_interval),
            grace_period=given(args.grace_period, settings.grace_period),
            rescue_interval=args.rescue_interval or None,
            keep_finished=settings.keep_finished,
        )
        worker.install_signal_handlers()
        worker.run(until_idle=args.until_idle, max_jobs=args.max_jobs)
    finally:
        queue.close()
    return EXIT_OK


def _prefetch(value: str) -> int | str:
    """``--prefetch``: ``auto`` or a count."""
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a number >= 0, got {value!r}"
        )
    return count
