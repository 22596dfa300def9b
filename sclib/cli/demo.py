"""``sclib demo [--server]``: the embedded demo, or the whole system end to end."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from sclib.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    json_flag,
    settings_from,
    table,
)

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``demo``."""
    demo = sub.add_parser("demo", help="run the embedded demo and print its results")
    demo.set_defaults(run=run)
    demo.add_argument(
        "--datasets", type=int, default=3, help="sample datasets the queue demo makes"
    )
    demo.add_argument(
        "--server",
        action="store_true",
        help="start the server with a worker, upload a sample dataset with the "
        "client, and follow its jobs to completed (needs the server extra)",
    )
    json_flag(demo)


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 when every job completed."""
    if args.datasets < 1:
        raise UsageError("--datasets must be at least 1")
    settings = settings_from(args)
    if args.server:
        from sclib.demo.server import run_server_demo

        logging.getLogger("sclib").setLevel(logging.WARNING)
        return EXIT_OK if run_server_demo(settings) else EXIT_FAILED
    from sclib.demo.core import run_demo

    # the demo's backup job fails once on purpose; its retry is shown in the table
    logging.getLogger("sclib.jobs.worker").setLevel(logging.ERROR)
    jobs = run_demo(settings.data_dir, datasets=args.datasets)
    if args.json:
        print(json.dumps([j.to_dict() for j in jobs], indent=2, default=str))
    else:
        rows = [
            [
                j.id[-8:],
                j.type,
                j.dataset_uuid or "",
                j.status.value,
                str(j.attempts),
                json.dumps(j.result)[:60],
                "; ".join(f"try {e.attempt}: {e.error}" for e in j.error_history),
            ]
            for j in jobs
        ]
        header = ["JOB", "TYPE", "DATASET", "STATUS", "TRIES", "RESULT", "ERRORS"]
        print(table(rows, header))
        done = sum(j.status.value == "completed" for j in jobs)
        db = (settings.data_dir / "demo.db").resolve()
        print(f"\n{done} of {len(jobs)} jobs completed; data in {settings.data_dir}")
        print(f"inspect them with: sclib --backend sqlite:///{db} jobs list")
    return EXIT_OK if all(j.status.value == "completed" for j in jobs) else EXIT_FAILED
