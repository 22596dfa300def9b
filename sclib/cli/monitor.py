"""``sclib monitor overview|report|stale|failed|cleanup``: the JobMonitor on the
command line, as readable tables or ``--json``.

Exit codes follow :mod:`sclib.cli`: 0 done, 1 the operation failed, 2 bad usage.
``cleanup`` only reports what it would delete unless given ``--apply``. Every action
needs an existing store: reading one never creates it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sclib.cli._common import open_queue, require_store, settings_from, table

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the ``monitor`` command to the ``sclib`` sub-parsers."""
    mon = sub.add_parser("monitor", help="queue health, reports, stale and failed jobs")
    mon.set_defaults(run=run)
    msub = mon.add_subparsers(
        dest="monitor_action", required=True, parser_class=type(mon)
    )
    ov = msub.add_parser("overview", help="counts, oldest waiting job, workers, health")
    rep = msub.add_parser("report", help="success rate, durations, throughput")
    rep.add_argument("--days", type=int, default=7, help="days the report covers")
    msub.add_parser("stale", help="running jobs with an expired lease or old heartbeat")
    fail = msub.add_parser("failed", help="jobs that failed for good recently")
    fail.add_argument(
        "--hours", type=float, default=24, help="hours back to look for failures"
    )
    fail.add_argument("--limit", type=int, default=100, help="jobs at most")
    clean = msub.add_parser(
        "cleanup", help="delete old finished jobs and upload sessions (dry run)"
    )
    clean.add_argument(
        "--days", type=float, default=30, help="finished more than this many days ago"
    )
    clean.add_argument(
        "--apply", action="store_true", help="delete them (default: only report)"
    )
    for p in (ov, rep, fail, clean, msub.choices["stale"]):
        p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    """Run ``sclib monitor ...``; errors propagate to :func:`sclib.cli.main`."""
    from sclib.datasets import open_dataset_store
    from sclib.monitor import JobMonitor
    from sclib.transfers.sessions import open_session_store

    settings = settings_from(args)
    require_store(settings)
    url = settings.backend_url()
    queue = open_queue(settings)
    sessions = open_session_store(url, **settings.session_store_options(url))
    datasets = open_dataset_store(url, **settings.session_store_options(url))
    try:
        monitor = JobMonitor(
            queue, sessions=sessions, datasets=datasets, data_dir=settings.data_dir
        )
        action = args.monitor_action
        if action == "overview":
            data: Any = monitor.get_queue_overview()
            text = _overview_text(data)
        elif action == "report":
            data = monitor.get_performance_report(args.days)
            text = _report_text(data)
        elif action == "stale":
            data = monitor.get_stale_jobs()
            rows = [
                [j["job_id"], j["job_type"], j["worker_id"] or "", j["reason"]]
                for j in data
            ]
            text = (
                table(rows, ["JOB ID", "TYPE", "WORKER", "WHY"])
                if rows
                else "no stale jobs"
            )
        elif action == "failed":
            data = monitor.get_failed_jobs(args.hours, limit=args.limit)
            rows = [
                [
                    j["job_id"],
                    j["job_type"],
                    j["owner"] or "",
                    j["finished_at"] or "",
                    "yes" if j["retry_available"] else "no",
                    (j["error"] or "")[:60],
                ]
                for j in data
            ]
            header = ["JOB ID", "TYPE", "OWNER", "FAILED AT", "RETRY", "ERROR"]
            text = (
                table(rows, header)
                if rows
                else f"no failed jobs in the last {args.hours:g} h"
            )
        else:
            data = monitor.cleanup_old_data(args.days, apply=args.apply)
            text = _cleanup_text(data)
    finally:
        datasets.close()
        sessions.close()
        queue.close()
    print(json.dumps(data, indent=2, default=str) if args.json else text)
    return 0


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}min"
    return f"{value / 3600:.1f}h"


def _overview_text(o: dict[str, Any]) -> str:
    health = o["health_status"]
    lines = [f"health: {health['overall'].upper()}"]
    lines += [
        f"  {c['name']:<13} {c['status']:<9} {c['reason']}" for c in health["checks"]
    ]
    counts = ", ".join(f"{k} {v}" for k, v in o["by_status"].items())
    lines += ["", f"jobs: {o['total']} ({counts})"]
    lines.append(
        f"oldest claimable job waiting: {_seconds(o['oldest_pending_age_seconds'])}"
    )
    if o["active_uploads"] is not None:
        lines.append(f"active uploads: {o['active_uploads']}")
    if o["by_type_status"]:
        statuses = list(o["by_status"])
        rows = [
            [t, *(str(per.get(s, 0)) for s in statuses)]
            for t, per in sorted(o["by_type_status"].items())
        ]
        lines += ["", table(rows, ["TYPE", *(s.upper() for s in statuses)])]
    lines += ["", f"workers: {o['live_workers']} live"]
    if o["workers"]:
        rows = [
            [
                w["worker_id"],
                "yes" if w["live"] else "no",
                _seconds(w["heartbeat_age_seconds"]) + " ago",
                ", ".join(j["job_id"][-8:] for j in w["current_jobs"]) or "idle",
            ]
            for w in o["workers"]
        ]
        lines.append(table(rows, ["WORKER", "LIVE", "HEARTBEAT", "JOBS"]))
    return "\n".join(lines)


def _report_text(r: dict[str, Any]) -> str:
    s = r["summary"]
    rate = "-" if s["success_rate"] is None else f"{s['success_rate']:.1%}"
    lines = [
        f"last {r['window']['days']} day(s): {s['finished']} finished, "
        f"{s['completed']} completed, {s['failed']} failed, {s['cancelled']} "
        f"cancelled; success rate {rate}",
    ]
    if r["durations_by_type"]:
        rows = [
            [
                t,
                str(d["count"]),
                _seconds(d["p50"]),
                _seconds(d["p95"]),
                _seconds(d["max"]),
            ]
            for t, d in r["durations_by_type"].items()
        ]
        lines += ["", table(rows, ["TYPE", "COMPLETED", "P50", "P95", "MAX"])]
    rows = [
        [d["start"][:16], str(d["completed"]), str(d["failed"])]
        for d in r["throughput_per_day"]
    ]
    lines += ["", table(rows, ["DAY FROM", "COMPLETED", "FAILED"])]
    lines += ["", "recommendations:" if r["recommendations"] else "no recommendations"]
    lines += [f"  - {x['message']}" for x in r["recommendations"]]
    return "\n".join(lines)


def _cleanup_text(c: dict[str, Any]) -> str:
    verb = "deleted" if c["applied"] else "would be deleted (run with --apply)"
    by = ", ".join(f"{k} {v}" for k, v in sorted(c["jobs"]["by_status"].items()))
    return (
        f"finished before {c['cutoff']}:\n"
        f"  {c['jobs']['count']} job(s)" + (f" ({by})" if by else "") + "\n"
        f"  {c['upload_sessions']['count']} upload session(s)\n"
        f"  {c['workers']['count']} worker record(s)\n"
        f"{c['total']} item(s) {verb}"
    )
