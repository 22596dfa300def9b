"""The ``sclib`` command: workers, job inspection, and the demo.

Exit codes: 0 success; 1 the operation failed (unknown job, wrong state, backend
error); 2 bad usage or configuration. Errors go to stderr as one readable line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from sclib.backends import open_store
from sclib.errors import ConfigurationError, InvalidInput, SclibError
from sclib.jobs.queue import JobQueue
from sclib.jobs.registry import HandlerRegistry
from sclib.jobs.worker import Worker
from sclib.models import Job
from sclib.settings import Settings, load_settings

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"sclib: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sclib", description="sclib: ingest and process datasets.")
    parser.add_argument(
        "--backend", help="job store URL (sqlite:///... or mongodb://...)"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="data folder (default ./sclib-data)"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more log output (-vv for debug)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    w = sub.add_parser("worker", help="run a worker that executes jobs")
    w.add_argument("--concurrency", type=int, help="jobs run at once (default 1)")
    w.add_argument(
        "--types",
        help="comma-separated job types to take (default: all types with a handler)",
    )
    w.add_argument(
        "--handlers",
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="handler registry to load (repeatable)",
    )
    w.add_argument(
        "--prefetch",
        type=int,
        help="jobs to claim ahead of free slots (default 0); raises "
        "throughput for short jobs",
    )
    w.add_argument("--mode", choices=["thread", "process"])
    w.add_argument("--lease-seconds", type=float)
    w.add_argument("--poll-interval", type=float)
    w.add_argument("--grace-period", type=float)
    w.add_argument(
        "--rescue-interval",
        type=float,
        default=5.0,
        help="seconds between sweeps for expired leases (0: never)",
    )
    w.add_argument(
        "--until-idle", action="store_true", help="exit once no job is claimable"
    )
    w.add_argument("--max-jobs", type=int, help="exit after this many jobs")

    jobs = sub.add_parser("jobs", help="inspect and manage jobs")
    jsub = jobs.add_subparsers(dest="action", required=True, parser_class=_Parser)
    ls = jsub.add_parser("list", help="list jobs, oldest first")
    ls.add_argument("--status")
    ls.add_argument("--type", dest="job_type")
    ls.add_argument("--dataset", dest="dataset_uuid")
    ls.add_argument("--owner")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--offset", type=int, default=0)
    ls.add_argument("--json", action="store_true")
    show = jsub.add_parser("show", help="one job with its history")
    show.add_argument("job_id")
    show.add_argument("--json", action="store_true")
    cancel = jsub.add_parser("cancel", help="cancel a pending or running job")
    cancel.add_argument("job_id")
    cancel.add_argument("--reason", default="cancelled from the command line")
    cancel.add_argument("--json", action="store_true")
    retry = jsub.add_parser("retry", help="run a failed or cancelled job again")
    retry.add_argument("job_id")
    retry.add_argument("--json", action="store_true")
    stats = jsub.add_parser("stats", help="job counts by status and type")
    stats.add_argument("--json", action="store_true")
    submit = jsub.add_parser("submit", help="enqueue a job")
    submit.add_argument("job_type")
    submit.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter; VALUE is parsed as JSON if it can be",
    )
    submit.add_argument("--params-json", help="all parameters as one JSON object")
    submit.add_argument("--dataset", dest="dataset_uuid")
    submit.add_argument("--owner")
    submit.add_argument("--priority", type=int, choices=[1, 2, 3])
    submit.add_argument("--delay", type=float, help="seconds before it may run")
    submit.add_argument("--idempotency-key")
    submit.add_argument("--depends-on", action="append", default=[], metavar="JOB_ID")
    submit.add_argument("--max-attempts", type=int)
    submit.add_argument("--timeout", type=float, dest="timeout_seconds")
    submit.add_argument("--json", action="store_true")

    cp = sub.add_parser(
        "copy", help="copy a file or folder, resumably (run it again to resume)"
    )
    cp.add_argument("source", help="path or URL: s3://, gs://, gdrive://, https://")
    cp.add_argument("destination", help="local path, s3://bucket/prefix or gs://...")
    cp.add_argument("--parallel", type=int, default=4, help="chunks in flight")
    cp.add_argument("--chunk-size", help="e.g. 8MiB (default: automatic)")
    cp.add_argument("--include", action="append", default=[], metavar="GLOB")
    cp.add_argument("--exclude", action="append", default=[], metavar="GLOB")
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
        "object, so they stay out of the process list)",
    )
    cp.add_argument("--dest-option", action="append", default=[], metavar="KEY=VALUE")
    cp.add_argument("--no-progress", action="store_true")
    cp.add_argument("--json", action="store_true")

    ds = sub.add_parser("datasets", help="inspect datasets and their files")
    dsub = ds.add_subparsers(dest="dataset_action", required=True, parser_class=_Parser)
    dls = dsub.add_parser("list", help="datasets, newest first")
    dls.add_argument("--owner", help="only this user's (email)")
    dls.add_argument("--status", help="only this legacy status, e.g. 'done'")
    dls.add_argument("--limit", type=int, default=50)
    dls.add_argument("--offset", type=int, default=0)
    dls.add_argument("--json", action="store_true")
    dshow = dsub.add_parser("show", help="one dataset with its files")
    dshow.add_argument("uuid")
    dshow.add_argument("--json", action="store_true")
    drep = dsub.add_parser(
        "reprocess", help="convert a dataset again (queues a dataset_conversion job)"
    )
    drep.add_argument("uuid")
    drep.add_argument("--sensor", help="convert as this sensor instead")
    drep.add_argument("--format", choices=["idx", "zarr"], help="output format")
    drep.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a converter parameter (VALUE parsed as JSON if it can be); repeatable",
    )
    drep.add_argument("--json", action="store_true")

    srv = sub.add_parser(
        "serve", help="run the reference server (with a worker) under uvicorn"
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to bind")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument(
        "--backend", default=argparse.SUPPRESS, help="job store URL (as above)"
    )
    srv.add_argument(
        "--data-dir", type=Path, default=argparse.SUPPRESS, help="data folder"
    )
    srv.add_argument(
        "--workers",
        type=int,
        help="job-runner threads of the in-process worker; 0 runs none (then run "
        "'sclib worker --handlers sclib.server.handlers:handlers_from_settings')",
    )
    srv.add_argument(
        "--no-auth",
        action="store_true",
        help="no tokens: every request is the local admin (loopback only)",
    )
    srv.add_argument("--log-level", default="info")

    up = sub.add_parser("uploads", help="unfinished uploads on this server's backend")
    upsub = up.add_subparsers(dest="uploads_command", required=True)
    exp = upsub.add_parser(
        "expire", help="remove uploads untouched for SCLIB_UPLOAD_EXPIRY_HOURS"
    )
    exp.add_argument(
        "--apply", action="store_true", help="delete them (default: only report)"
    )
    exp.add_argument("--json", action="store_true")

    from sclib.cli_client import register

    register(sub)

    from sclib.cli_monitor import register as register_monitor

    register_monitor(sub)

    from sclib.cli_migrate import register as register_migrate

    register_migrate(sub)

    demo = sub.add_parser("demo", help="run the embedded demo and print its results")
    demo.add_argument("--datasets", type=int, default=3)
    demo.add_argument(
        "--server",
        action="store_true",
        help="start the server with a worker, upload a sample dataset with the "
        "client, and follow its jobs to completed",
    )
    demo.add_argument("--json", action="store_true")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["SCLIB_DATA_DIR"] = args.data_dir
    if args.backend is not None:
        overrides["SCLIB_BACKEND"] = args.backend
    return load_settings(**overrides)


def _queue(settings: Settings) -> JobQueue:
    url = settings.backend_url()
    return JobQueue(
        open_store(url, **settings.store_options(url)), max_crashes=settings.max_crashes
    )


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


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _emit(data: Any, as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


def _parse_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.params_json:
        try:
            loaded = json.loads(args.params_json)
        except json.JSONDecodeError as exc:
            raise _UsageError(f"--params-json is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise _UsageError("--params-json must be a JSON object")
        params.update(loaded)
    params.update(_options(args.param, "--param"))
    return params


def _cmd_jobs(args: argparse.Namespace, queue: JobQueue, settings: Settings) -> int:
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
        header = [
            "JOB ID",
            "TYPE",
            "STATUS",
            "PRIO",
            "FAILURES",
            "RUNS",
            "PROGRESS",
            "ERROR",
        ]
        _emit(
            [j.to_dict() for j in jobs],
            args.json,
            _table([_short(j) for j in jobs], header) if jobs else "no jobs",
        )
    elif action == "show":
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
            f"{k}: {json.dumps(v, default=str)}"
            for k, v in data.items()
            if k != "events"
        ]
        lines.append("events:")
        lines += [
            f"  {e.at.isoformat()}  {e.kind:<16} {e.worker_id or '-':<24} "
            f"{e.attempt or '-':<3} {e.message}"
            for e in events
        ]
        _emit(data, args.json, "\n".join(lines))
    elif action == "cancel":
        job = queue.cancel(args.job_id, args.reason)
        _after_cancel(queue, job, settings)
        state = (
            "cancellation requested; the worker will stop it"
            if job.status.value == "running"
            else job.status.value
        )
        _emit(job.to_dict(), args.json, f"job {job.id}: {state}")
    elif action == "retry":
        job = queue.retry(args.job_id)
        _emit(job.to_dict(), args.json, f"job {job.id}: {job.status.value} again")
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
        _emit(
            stats,
            args.json,
            _table(rows, ["TYPE", *[s.upper() for s in stats["by_status"]], "ALL"]),
        )
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
        _emit(job.to_dict(), args.json, job.id)
    return EXIT_OK


def _after_cancel(queue: JobQueue, job: Job, settings: Settings) -> None:
    """Tell the job's dataset, if the backend has dataset records."""
    if not job.dataset_uuid:
        return
    from sclib.datasets import open_dataset_store
    from sclib.pipeline.flow import after_cancel

    url = settings.backend_url()
    store = open_dataset_store(url, **settings.session_store_options(url))
    try:
        after_cancel(queue, store, job)
    finally:
        store.close()


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    # the environment first, so that --handlers (loaded later) wins on conflicts
    paths = [p.strip() for p in (settings.handlers or "").split(",") if p.strip()]
    paths += args.handlers
    if not paths:
        raise _UsageError(
            "no handlers to run: pass --handlers module:registry (or set "
            "SCLIB_HANDLERS); 'sclib.demo:handlers' has the demo handlers"
        )
    handlers = HandlerRegistry()
    for path in paths:
        handlers = handlers.merge(HandlerRegistry.load(path))
    types = (
        [t.strip() for t in args.types.split(",") if t.strip()] if args.types else None
    )
    queue = _queue(settings)
    try:
        worker = Worker(
            queue,
            handlers,
            concurrency=_given(args.concurrency, settings.worker_concurrency),
            prefetch=_given(args.prefetch, settings.worker_prefetch),
            types=types,
            mode=_given(args.mode, settings.worker_mode),
            lease_seconds=_given(args.lease_seconds, settings.lease_seconds),
            poll_interval=_given(args.poll_interval, settings.poll_interval),
            grace_period=_given(args.grace_period, settings.grace_period),
            rescue_interval=args.rescue_interval or None,
        )
        worker.install_signal_handlers()
        worker.run(until_idle=args.until_idle, max_jobs=args.max_jobs)
    finally:
        queue.close()
    return EXIT_OK


def _given(value: Any, default: Any) -> Any:
    """The command-line value if one was given (0 included), else the setting."""
    return default if value is None else value


def _options(items: Sequence[str], flag: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise _UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def _cmd_copy(args: argparse.Namespace, settings: Settings) -> int:
    from sclib.transfers import TqdmSubscriber, TransferConfig, TransferEngine
    from sclib.transfers.plan import parse_size
    from sclib.transfers.sessions import open_session_store

    source_options: dict[str, Any] = {}
    env_options = os.environ.get("SCLIB_SOURCE_OPTIONS")
    if env_options:
        try:
            source_options.update(json.loads(env_options))
        except json.JSONDecodeError as exc:
            raise _UsageError(f"SCLIB_SOURCE_OPTIONS is not JSON: {exc}") from None
    source_options.update(_options(args.source_option, "--source-option"))
    config = TransferConfig(
        parallel=args.parallel,
        chunk_size=parse_size(args.chunk_size) if args.chunk_size else None,
        sha256=args.sha256,
    )
    url = settings.backend_url()
    options = settings.store_options(url)
    options.pop("collection", None)  # that names the jobs collection
    sessions = open_session_store(url, **options)
    show = not (args.no_progress or args.json) and sys.stderr.isatty()
    subscribers = [TqdmSubscriber("copy", file=sys.stderr)] if show else []
    try:
        result = TransferEngine(sessions, config).copy(
            args.source,
            args.destination,
            include=args.include,
            exclude=args.exclude,
            source_options=source_options,
            dest_options=_options(args.dest_option, "--dest-option"),
            subscribers=subscribers,
            restart=args.restart,
        )
    finally:
        sessions.close()
    if args.json:
        print(
            json.dumps(
                {
                    "seconds": result.seconds,
                    "bytes": result.bytes,
                    "files": [vars(f) for f in result.files],
                },
                indent=2,
            )
        )
    else:
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


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    try:
        import uvicorn
    except ImportError:
        from sclib.errors import MissingDependency

        raise MissingDependency("uvicorn", "server", "sclib serve") from None
    from sclib.server import create_app
    from sclib.server.auth import check_bind_address

    overrides: dict[str, Any] = {}
    if args.no_auth:
        overrides["no_auth"] = True
    if args.workers is not None:
        if args.workers < 0:
            raise _UsageError("--workers must not be negative")
        overrides["worker_concurrency"] = args.workers
    if overrides:
        settings = settings.model_copy(update=overrides)
    check_bind_address(args.host, settings.no_auth)
    app = create_app(settings, run_worker=settings.worker_concurrency > 0)
    print(
        f"sclib serving on http://{args.host}:{args.port} (docs at /docs), "
        f"data in {settings.data_dir}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_keep_alive=300,
        h11_max_incomplete_event_size=1024**2,
    )
    return EXIT_OK


def _cmd_datasets(args: argparse.Namespace, settings: Settings) -> int:
    from sclib.datasets import open_dataset_store
    from sclib.datasets.records import dataset_dict

    url = settings.backend_url()
    store = open_dataset_store(url, **settings.session_store_options(url))
    try:
        if args.dataset_action == "list":
            found = store.list(
                owner=args.owner,
                status=args.status,
                limit=args.limit,
                offset=args.offset,
            )
            rows = [
                [
                    d.uuid,
                    d.name[:30],
                    d.owner,
                    str(d.status),
                    str(len(d.files)),
                    str(d.total_size),
                ]
                for d in found
            ]
            header = ["UUID", "NAME", "OWNER", "STATUS", "FILES", "BYTES"]
            _emit(
                [dataset_dict(d, files=False) for d in found],
                args.json,
                _table(rows, header) if found else "no datasets",
            )
        elif args.dataset_action == "reprocess":
            from sclib.pipeline.flow import Pipeline

            queue = _queue(settings)
            try:
                pipeline = Pipeline(
                    queue,
                    store,
                    settings.data_dir,
                    output_format=settings.conversion_format,
                )
                result = pipeline.reprocess(
                    args.uuid,
                    sensor=args.sensor,
                    output_format=args.format,
                    conversion_params=_options(args.param, "--param") or None,
                )
            finally:
                queue.close()
            text = (
                f"conversion queued as job {result['job_id']}"
                if result["next"] == "dataset_conversion"
                else f"nothing to convert: {result.get('note', '')}"
            )
            _emit(result, args.json, text)
        else:
            d = store.get(args.uuid)
            lines = [
                f"{d.name} ({d.uuid}), owner {d.owner}, sensor {d.sensor}",
                f"status: {d.status}"
                + (f" ({d.error_message})" if d.error_message else ""),
                f"{len(d.files)} files, {d.total_size} bytes:",
                *(f"  {f.blake3}  {f.size:>12}  {f.path}" for f in d.files),
            ]
            _emit(dataset_dict(d), args.json, "\n".join(lines))
    finally:
        store.close()
    return EXIT_OK


def _cmd_uploads(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from sclib.server.uploads import UploadManager
    from sclib.transfers.sessions import open_session_store

    url = settings.backend_url()
    queue = _queue(settings)
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
    text = _table(
        [[str(v) for v in r.values()] for r in rows],
        ["upload_id", "protocol", "owner", "filename", "received", "updated"],
    )
    _emit(
        {"applied": args.apply, "uploads": rows},
        args.json,
        f"{text}\n{len(rows)} abandoned upload(s) {verb}",
    )
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    if args.server:
        try:
            from sclib.demo_server import run_server_demo
        except ImportError as exc:  # pragma: no cover - depends on the install
            from sclib.errors import MissingDependency

            raise MissingDependency(
                exc.name or "fastapi", "server", "sclib demo --server"
            ) from None
        logging.getLogger("sclib").setLevel(logging.WARNING)
        return EXIT_OK if run_server_demo(settings) else EXIT_FAILED
    from sclib.demo import run_demo

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
        print(
            _table(
                rows,
                [
                    "JOB",
                    "TYPE",
                    "DATASET",
                    "STATUS",
                    "TRIES",
                    "RESULT",
                    "ERRORS",
                ],
            )
        )
        done = sum(j.status.value == "completed" for j in jobs)
        db = (settings.data_dir / "demo.db").resolve()
        print(f"\n{done} of {len(jobs)} jobs completed; data in {settings.data_dir}")
        print(f"inspect them with: sclib --backend sqlite:///{db} jobs list")
    return EXIT_OK if all(j.status.value == "completed" for j in jobs) else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sclib`` command; returns the exit code."""
    args = _build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    if args.command == "worker":
        level = min(level, logging.INFO)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "worker":
        if args.rescue_interval < 0:
            return _usage("--rescue-interval must not be negative")
        if args.max_jobs is not None and args.max_jobs < 1:
            return _usage("--max-jobs must be at least 1")
    if args.command == "demo" and args.datasets < 1:
        return _usage("--datasets must be at least 1")
    try:
        settings = _settings(args)
        if args.command == "worker":
            return _cmd_worker(args, settings)
        if args.command == "demo":
            return _cmd_demo(args, settings)
        if args.command == "copy":
            return _cmd_copy(args, settings)
        if args.command == "serve":
            return _cmd_serve(args, settings)
        if args.command == "uploads":
            return _cmd_uploads(args, settings)
        if args.command == "datasets":
            return _cmd_datasets(args, settings)
        if args.command == "migrate":
            from sclib.cli_migrate import run as run_migrate

            return run_migrate(args, settings)
        if args.command == "monitor":
            from sclib.cli_monitor import run as run_monitor

            return run_monitor(args, settings)
        if args.command in ("upload", "status"):
            from sclib.cli_client import run

            return run(args)
        queue = _queue(settings)
        try:
            return _cmd_jobs(args, queue, settings)
        finally:
            queue.close()
    except (_UsageError, ConfigurationError, InvalidInput) as exc:
        print(f"sclib: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SclibError as exc:
        print(f"sclib: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # the reader went away (`sclib jobs list --json | head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _usage(message: str) -> int:
    print(f"sclib: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
