"""``sclib upload`` and ``sclib status``: the client side of the command line.

::

    sclib upload scan.h5 --sensor HDF5 --dataset "Scan 42" --wait
    sclib upload ./run-17/ --sensor TIFF            # a folder: one dataset
    sclib status 01a2... --wait --json

The server comes from ``--server`` or ``$SCLIB_SERVER`` (default
``http://127.0.0.1:8000``), the token from ``--token`` or ``$SCLIB_TOKEN``. In text
mode stdout carries only job ids (one per file), so ``JOB=$(sclib upload ...)``
works; the progress bar and notes go to stderr. Exit codes as for every ``sclib``
command: 0 success; 1 the operation failed (including a job that ended failed or
cancelled under ``--wait``); 2 bad usage, configuration or credentials.

An interrupted chunked upload resumes when the same command is run again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sclib.errors import AuthError, ConfigurationError, InvalidInput, SclibError

if TYPE_CHECKING:
    from sclib.client import Client

__all__ = ["DEFAULT_SERVER", "register", "run"]

DEFAULT_SERVER = "http://127.0.0.1:8000"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _size(text: str) -> int:
    from sclib.transfers.plan import parse_size

    try:
        return parse_size(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help=f"server address (default: $SCLIB_SERVER, else {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--token", default=None, help="bearer token (default: $SCLIB_TOKEN, else none)"
    )
    parser.add_argument(
        "--wait", action="store_true", help="wait until the job(s) finished"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds --wait waits at most (default: no limit)",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=2.0, help="seconds between polls"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of text"
    )


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the ``upload`` and ``status`` subcommands to ``sclib``'s parser."""
    up = sub.add_parser(
        "upload",
        help="upload a file or a folder to a server",
        description="Upload a file, or every file under a folder into one "
        "dataset. Large files go in parallel verified chunks and resume when the "
        "same command runs again.",
    )
    up.set_defaults(run=run)
    up.add_argument("path", type=Path, help="a file or a folder")
    up.add_argument(
        "--dataset", metavar="NAME", help="dataset name (default: the file's name)"
    )
    up.add_argument("--sensor", required=True, help="sensor type, e.g. TIFF, HDF5")
    up.add_argument(
        "--user-email",
        metavar="E",
        help="the dataset's owner, if not you (admins only; default: the token's user)",
    )
    up.add_argument(
        "--convert",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="convert to a streamable format after the upload (default: yes)",
    )
    up.add_argument("--public", action="store_true", help="make the dataset public")
    up.add_argument(
        "--public-downloadable", action="store_true", help="let anyone download it"
    )
    up.add_argument(
        "--folder", metavar="F", help="the portal folder to list it in (default: none)"
    )
    up.add_argument("--tags", help="comma-separated tags (default: none)")
    up.add_argument(
        "--add-to",
        metavar="DATASET_UUID",
        help="add to an existing dataset (default: a new dataset)",
    )
    up.add_argument(
        "--parallel", type=_positive, help="chunks in flight at once (default 4)"
    )
    up.add_argument(
        "--chunk-size",
        type=_size,
        metavar="SIZE",
        help="chunk size, e.g. 64MiB (default: the server's)",
    )
    up.add_argument(
        "--state-dir",
        type=Path,
        help="where unfinished uploads are remembered (default: ~/.cache/sclib)",
    )
    _connection_args(up)

    st = sub.add_parser("status", help="show (or wait for) an upload job's status")
    st.set_defaults(run=run)
    st.add_argument("job_id")
    _connection_args(st)


def _client(args: argparse.Namespace) -> Client:
    from sclib.client import Client

    server = args.server or os.environ.get("SCLIB_SERVER") or DEFAULT_SERVER
    if not server.startswith(("http://", "https://")):
        raise ConfigurationError(f"--server must be an http(s) URL, got {server!r}")
    token = args.token or os.environ.get("SCLIB_TOKEN") or None
    kwargs: dict[str, Any] = {}
    if getattr(args, "parallel", None):
        kwargs["parallel"] = args.parallel
    if getattr(args, "state_dir", None):
        kwargs["state_dir"] = args.state_dir
    return Client(server, token, **kwargs)


def _progress(args: argparse.Namespace) -> bool:
    if args.progress is None:
        return sys.stderr.isatty()
    return bool(args.progress)


def _note(text: str) -> None:
    print(text, file=sys.stderr)


def _cmd_upload(args: argparse.Namespace) -> int:
    from sclib.client import UploadOptions, UploadResult

    path: Path = args.path
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or folder")
    options: UploadOptions = {
        "sensor": args.sensor,
        "convert": args.convert,
        "is_public": args.public,
        "is_public_downloadable": args.public_downloadable,
        "progress": _progress(args),
    }
    for key, value in (
        ("dataset_name", args.dataset),
        ("user_email", args.user_email),
        ("folder", args.folder),
        ("tags", args.tags),
        ("chunk_size", args.chunk_size),
    ):
        if value is not None:
            options[key] = value  # type: ignore[literal-required]
    if args.add_to:
        options["dataset_identifier"] = args.add_to
        options["add_to_existing"] = True
    with _client(args) as client:
        results: list[UploadResult]
        if path.is_dir():
            results = client.upload_directory(path, **options)
        else:
            results = [client.upload_file(path, **options)]
        if not args.json:
            for result in results:
                print(result.job_id, flush=True)
        if len(results) > 1:
            _note(f"{len(results)} files uploaded to dataset {results[0].dataset_uuid}")
        out: list[dict[str, Any]] = [r.to_dict() for r in results]
        code = EXIT_OK
        if args.wait:
            for item, result in zip(out, results, strict=True):
                final = client.wait_for_completion(
                    result.job_id,
                    timeout=args.timeout,
                    poll_interval=args.poll_interval,
                    progress=_progress(args),
                )
                item["final_status"] = final.to_dict()
                if final.status != "completed":
                    code = EXIT_FAILED
                    _note(f"job {final.job_id} {final.status}: {final.error or ''}")
    if args.json:
        print(json.dumps(out[0] if not path.is_dir() else out, indent=2))
    return code


def _cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.wait:
            status = client.wait_for_completion(
                args.job_id,
                timeout=args.timeout,
                poll_interval=args.poll_interval,
                progress=_progress(args),
            )
        else:
            status = client.get_upload_status(args.job_id)
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        line = f"{status.job_id}  {status.status}  {status.progress_percentage:.0f}%"
        extra = status.error or status.message
        print(f"{line}  {extra}" if extra else line)
    if args.wait and status.status != "completed":
        return EXIT_FAILED
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run ``sclib upload`` or ``sclib status``; the exit code."""
    try:
        if args.command == "upload":
            return _cmd_upload(args)
        if args.command == "status":
            return _cmd_status(args)
        raise ConfigurationError(f"not a client command: {args.command!r}")
    except (InvalidInput, ConfigurationError, AuthError) as exc:
        print(f"sclib: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SclibError as exc:
        print(f"sclib: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            "sclib: interrupted; run the same command again to resume the upload",
            file=sys.stderr,
        )
        return EXIT_FAILED
