"""``sclib jobs list|show|cancel|retry|stats|submit``: the queue by hand."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from sclib.cli._common import (
    EXIT_OK,
    UsageError,
    emit,
    json_flag,
    load_handlers,
    open_queue,
    options,
    settings_from,
    table,
)

if TYPE_CHECKING:
    from sclib.jobs.queue import JobQueue
    from sclib.models import Job
    from sclib.settings import Settings

__all__ = ["register", "run"]

#: the one action that may create a store; the others need an existing one
_CREATES = {"submit"}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``jobs`` and its actions."""
    jobs = sub.add_parser("jobs", help="inspect and manage jobs")
    jobs.set_defaults(run=run)
    jsub = jobs.add_subparsers(dest="action", required=True, parser_class=type(jobs))
    ls = jsub.add_parser("list", help="list jobs, oldest first")
    ls.add_argument(
        "--status",
        help="only this status: pending, running, completed, ... (default: all)",
    )
    ls.add_argument("--type", dest="job_type", help="only this job type (default: all)")
    ls.add_argument(
        "--dataset", dest="dataset_uuid", help="only this dataset's jobs (default: all)"
    )
    ls.add_argument("--owner", help="only this user's jobs (default: everyone's)")
    ls.add_argument("--limit", type=int, default=50, help="jobs at most")
    ls.add_argument("--offset", type=int, default=0, help="jobs to skip first")
    json_flag(ls)
    show = jsub.add_parser("show", help="one job with its history")
    show.add_argument("job_id")
    json_flag(show)
    cancel = jsub.add_parser("cancel", help="cancel a pending or running job")
    cancel.add_argument("job_id")
    cancel.add_argument(
        "--reason",
        default="cancelled from the command line",
        help="why, kept with the job",
    )
    json_flag(cancel)
    retry = jsub.add_parser("retry", help="run a failed or cancelled job again")
    retry.add_argument("job_id")
    json_flag(retry)
    stats = jsub.add_parser("stats", help="job counts by status and type")
    json_flag(stats)
    schedules = jsub.add_parser(
        "schedules",
        help="the periodic jobs the handlers declare: next tick, last tick's job",
    )
    schedules.add_argument(
        "--handlers",
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="handler registry declaring them, as for 'sclib worker' (repeatable; "
        "default: $SCLIB_HANDLERS)",
    )
    json_flag(schedules)
    submit = jsub.add_parser("submit", help="enqueue a job")
    submit.add_argument("job_type")
    submit.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter; VALUE is parsed as JSON if it can be (repeatable; "
        "default: none)",
    )
    submit.add_argument(
        "--params-json", help="all parameters as one JSON object (default: none)"
    )
    submit.add_argument(
        "--dataset",
        dest="dataset_uuid",
        help="the dataset the job works on (default: none)",
    )
    submit.add_argument("--owner", help="the user the job runs for (default: none)")
    submit.add_argument(
        "--priority",
        type=int,
        choices=[1, 2, 3],
        help="1 high .. 3 low (default: the job type's)",
    )
    submit.add_argument(
        "--delay", type=float, help="seconds before it may run (default: none)"
    )
    submit.add_argument(
        "--idempotency-key",
        help="a second submit with the same key returns the first job (default: none)",
    )
    submit.add_argument(
        "--depends-on",
        action="append",
        default=[],
        metavar="JOB_ID",
        help="run only after this job completed (repeatable; default: at once)",
    )
    submit.add_argument(
        "--max-attempts", type=int, help="tries at most (default: the job type's)"
    )
    submit.add_argument(
        "--timeout",
        type=float,
        dest="timeout_seconds",
        help="seconds one try may run (default: the job type's)",
    )
    json_flag(submit)


def _short(job: Job) -> list[str]:
    pct = job.progress.percentage
    return [
        job.id,
        job.type,
        job.status.value,
        str(job.priority),
        f"{job.failures}/{job.max_attempts}",
        str(job.attempts),
        "" if pct is None else f"{pct:.0f}%",
        (job.error or "")[:60],
    ]


def _parse_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.params_json:
        try:
            loaded = json.loads(args.params_json)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--params-json is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError("--params-json must be a JSON object")
        params.update(loaded)
    params.update(options(args.param, "--param"))
    return params


def run(args: argparse.Namespace) -> int:
    """Run ``sclib jobs ...``."""
    settings = settings_from(args)
    queue = open_queue(settings, must_exist=args.action not in _CREATES)
    try:
        return _run(args, queue, settings)
    finally:
        queue.close()


def _run(args: argparse.Namespace, queue: JobQueue, settings: Settings) -> int:
    action = args.action
    if action == "list":
        jobs = queue.list(
            status=args.status,
            job_type=args.job_type,
            dataset_uuid=args.dataset_uuid,
            owner=args.owner,
            limit=args.limit,
            offset=args.offset,
        )
        header = ["JOB ID", "TYPE", "STATUS", "PRIO", "FAILURES", "RUNS", "PROGRESS"]
        emit(
            [j.to_dict() for j in jobs],
            args.json,
            table([_short(j) for j in jobs], [*header, "ERROR"]) if jobs else "no jobs",
        )
    elif action == "show":
        _show(args, queue)
    elif action == "cancel":
        job = queue.cancel(args.job_id, args.reason)
        _after_cancel(queue, job, settings)
        state = (
            "cancellation requested; the worker will stop it"
            if job.status.value == "running"
            else job.status.value
        )
        emit(job.to_dict(), args.json, f"job {job.id}: {state}")
    elif action == "retry":
        job = queue.retry(args.job_id)
        emit(job.to_dict(), args.json, f"job {job.id}: {job.status.value} again")
    elif action == "stats":
        stats = queue.stats()
        rows = [
            [
                t,
                *[str(c.get(s, 0)) for s in stats["by_status"]],
                str(stats["by_type"][t]),
            ]
            for t, c in sorted(stats["by_type_status"].items())
        ]
        rows.append(
            [
                "TOTAL",
                *[str(n) for n in stats["by_status"].values()],
                str(stats["total"]),
            ]
        )
        emit(
            stats,
            args.json,
            table(rows, ["TYPE", *[s.upper() for s in stats["by_status"]], "ALL"]),
        )
    elif action == "schedules":
        _schedules(args, queue, settings)
    elif action == "submit":
        job = queue.enqueue(
            args.job_type,
            _parse_params(args),
            dataset_uuid=args.dataset_uuid,
            owner=args.owner,
            priority=args.priority,
            delay=args.delay,
            idempotency_key=args.idempotency_key,
            depends_on=args.depends_on,
            max_attempts=args.max_attempts,
            timeout_seconds=args.timeout_seconds,
        )
        emit(job.to_dict(), args.json, job.id)
    return EXIT_OK


def _schedules(args: argparse.Namespace, queue: JobQueue, settings: Settings) -> None:
    from sclib.backends.base import JobFilter

    handlers = load_handlers(settings, args.handlers, "declaring schedules")
    queue.adopt(handlers)
    now = queue.clock()
    found = []
    for schedule in handlers.schedules.values():
        last = schedule.previous_tick(now)
        jobs = queue.store.list_jobs(
            JobFilter(idempotency_key=schedule.key(last)), limit=1
        )
        found.append(
            {
                "name": schedule.name,
                "cron": schedule.cron,
                "timezone": schedule.timezone,
                "job_type": schedule.job_type,
                "missed": schedule.missed,
                "next_tick": schedule.next_tick(now).isoformat(),
                "last_tick": last.isoformat(),
                "last_job_id": jobs[0].id if jobs else None,
                "last_job_status": jobs[0].status.value if jobs else None,
            }
        )
    rows = [
        [
            f["name"],
            f["cron"],
            f["timezone"],
            f["job_type"],
            f["next_tick"],
            f["last_tick"],
            f["last_job_status"] or "not enqueued",
        ]
        for f in found
    ]
    header = ["NAME", "CRON", "ZONE", "TYPE", "NEXT TICK", "LAST TICK", "LAST JOB"]
    emit(found, args.json, table(rows, header) if rows else "no schedules declared")


def _show(args: argparse.Namespace, queue: JobQueue) -> None:
    job = queue.get(args.job_id)
    events = queue.events(args.job_id)
    dataset_status = (
        queue.dataset_status(job.dataset_uuid) if job.dataset_uuid else None
    )
    data = {
        **job.to_dict(),
        "dataset_status": dataset_status.value if dataset_status else None,
        "events": [
            {
                "kind": e.kind,
                "at": e.at.isoformat(),
                "worker_id": e.worker_id,
                "attempt": e.attempt,
                "message": e.message,
            }
            for e in events
        ],
    }
    lines = [
        f"{k}: {json.dumps(v, default=str)}" for k, v in data.items() if k != "events"
    ]
    lines.append("events:")
    lines += [
        f"  {e.at.isoformat()}  {e.kind:<16} {e.worker_id or '-':<24} "
        f"{e.attempt or '-':<3} {e.message}"
        for e in events
    ]
    emit(data, args.json, "\n".join(lines))


def _after_cancel(queue: JobQueue, job: Job, settings: Settings) -> None:
    """Tell the job's dataset, if the backend has dataset records."""
    if not job.dataset_uuid:
        return
    from sclib.datasets import open_dataset_store
    from sclib.pipeline.flow import after_cancel

    url = settings.backend_url()
    store = open_dataset_store(url, **settings.session_store_options(url))
    try:
        after_cancel(queue, store, job, settings.data_dir)
    finally:
        store.close()
