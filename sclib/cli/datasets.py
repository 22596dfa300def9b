"""``sclib datasets list|show|reprocess``: dataset records and their files.

``list`` and ``show`` read any document the dataset store holds, the original
ScientistCloud's included: one sclib cannot fully read is shown with what it has
and its notes (see :attr:`sclib.datasets.Dataset.notes`), never an error.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from sclib.cli._common import (
    EXIT_OK,
    emit,
    json_flag,
    open_queue,
    options,
    require_store,
    settings_from,
    table,
)

if TYPE_CHECKING:
    from sclib.datasets import Dataset

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``datasets`` and its actions."""
    ds = sub.add_parser("datasets", help="inspect datasets and their files")
    ds.set_defaults(run=run)
    dsub = ds.add_subparsers(
        dest="dataset_action", required=True, parser_class=type(ds)
    )
    dls = dsub.add_parser("list", help="datasets, newest first")
    dls.add_argument("--owner", help="only this user's (default: everyone's)")
    dls.add_argument(
        "--status", help="only this legacy status, e.g. 'done' (default: all)"
    )
    dls.add_argument("--limit", type=int, default=50, help="datasets at most")
    dls.add_argument("--offset", type=int, default=0, help="datasets to skip first")
    json_flag(dls)
    dshow = dsub.add_parser("show", help="one dataset with its files")
    dshow.add_argument(
        "uuid",
        metavar="DATASET",
        help="its uuid (any spelling), number, slug or name (a document without "
        "a uuid: its MongoDB _id)",
    )
    json_flag(dshow)
    drep = dsub.add_parser(
        "reprocess", help="convert a dataset again (queues a dataset_conversion job)"
    )
    drep.add_argument("uuid")
    drep.add_argument(
        "--sensor", help="convert as this sensor instead (default: its own)"
    )
    drep.add_argument(
        "--format",
        choices=["idx", "zarr"],
        help="output format (default: $SCLIB_CONVERSION_FORMAT, else idx)",
    )
    drep.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a converter parameter (VALUE parsed as JSON if it can be); "
        "repeatable (default: none)",
    )
    json_flag(drep)


def run(args: argparse.Namespace) -> int:
    """Run ``sclib datasets ...``; every action needs an existing store."""
    from sclib.datasets import open_dataset_store
    from sclib.datasets.records import dataset_dict

    settings = settings_from(args)
    require_store(settings)
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
                    (d.name or "?")[:30],
                    d.owner or "?",
                    str(d.status) or "?",
                    str(len(d.files)),
                    str(d.total_size),
                    _note(d),
                ]
                for d in found
            ]
            header = ["UUID", "NAME", "OWNER", "STATUS", "FILES", "BYTES", "NOTES"]
            emit(
                [dataset_dict(d, files=False) for d in found],
                args.json,
                table(rows, header) if found else "no datasets",
            )
        elif args.dataset_action == "reprocess":
            from sclib.pipeline.flow import Pipeline

            queue = open_queue(settings)
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
                    conversion_params=options(args.param, "--param") or None,
                )
            finally:
                queue.close()
            text = (
                f"conversion queued as job {result['job_id']}"
                if result["next"] == "dataset_conversion"
                else f"nothing to convert: {result.get('note', '')}"
            )
            emit(result, args.json, text)
        else:
            from sclib.datasets import DatasetNotFound, find_dataset

            d = find_dataset(store, args.uuid)
            if d is None:
                raise DatasetNotFound(args.uuid)
            unknown = "(digest not known yet)".ljust(64)
            lines = [
                f"{d.name or '(no name)'} ({d.uuid}), owner {d.owner or '(none)'}, "
                f"sensor {d.sensor}",
                f"status: {d.status or '(none)'}"
                + (f" ({d.error_message})" if d.error_message else ""),
                *(f"note: {n}" for n in d.notes),
                f"{len(d.files)} files, {d.total_size} bytes:",
                *(f"  {f.blake3 or unknown}  {f.size:>12}  {f.path}" for f in d.files),
            ]
            emit(dataset_dict(d), args.json, "\n".join(lines))
    finally:
        store.close()
    return EXIT_OK


def _note(d: Dataset) -> str:
    """The first note, shortened, and how many more there are."""
    if not d.notes:
        return ""
    first = d.notes[0] if len(d.notes[0]) <= 60 else d.notes[0][:57] + "..."
    return first + (f" (+{len(d.notes) - 1} more)" if len(d.notes) > 1 else "")
