"""``sclib migrate``: move datasets of the old status-based system onto the queue.

::

    sclib migrate [--from FILE] [--dataset-uuid U] [--resolve] [--apply] [--json]
    sclib migrate validate [--dataset-uuid U] [--json]
    sclib migrate rollback [--dataset-uuid U] [--apply] [--json]

``migrate`` and ``rollback`` are dry runs unless ``--apply`` is given. Exit codes:
0 nothing to report; 1 problems or clashes were found (and reported; everything
else was done); 2 bad usage. See :mod:`sclib.migrate` and ``docs/operations.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sclib.cli._common import settings_from, table
from sclib.errors import InvalidInput

if TYPE_CHECKING:
    from sclib.migrate import Migrator

__all__ = ["register", "run"]

EXIT_OK, EXIT_PROBLEMS = 0, 1


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``migrate`` (with ``validate`` and ``rollback``) to ``sclib``'s parser."""
    m = sub.add_parser(
        "migrate",
        help="create the jobs that continue datasets of the old system",
        description="Read the legacy dataset documents and create the job that "
        "continues each one from its status. A dry run unless --apply is given.",
    )
    m.set_defaults(run=run)
    m.add_argument(
        "--from",
        dest="from_file",
        type=Path,
        metavar="FILE",
        help="import legacy documents from a JSON array or JSONL export first "
        "(default: only what the store holds)",
    )
    m.add_argument(
        "--dataset-uuid", metavar="U", help="only this dataset (default: all)"
    )
    m.add_argument(
        "--resolve",
        action="store_true",
        help="give the older datasets of a repeated slug numbered slugs (default: "
        "keep every slug as it is and report the clash)",
    )
    m.add_argument("--apply", action="store_true", help="do it (default: only plan)")
    m.add_argument("--json", action="store_true", help="print JSON instead of text")
    msub = m.add_subparsers(dest="migrate_action", required=False, parser_class=type(m))
    # The actions repeat migrate's options with SUPPRESS defaults: argparse lets a
    # sub-parser's defaults overwrite what was parsed before it, so
    # `migrate --dataset-uuid U rollback --apply` would otherwise roll back all.
    keep = argparse.SUPPRESS
    v = msub.add_parser("validate", help="check each dataset's status against its jobs")
    v.add_argument(
        "--dataset-uuid", metavar="U", default=keep, help="only this one (default: all)"
    )
    v.add_argument(
        "--json", action="store_true", default=keep, help="print JSON instead of text"
    )
    r = msub.add_parser(
        "rollback", help="delete migrated jobs and restore the documents"
    )
    r.add_argument(
        "--dataset-uuid", metavar="U", default=keep, help="only this one (default: all)"
    )
    r.add_argument(
        "--apply", action="store_true", default=keep, help="do it (default: only plan)"
    )
    r.add_argument(
        "--json", action="store_true", default=keep, help="print JSON instead of text"
    )


def _print(data: dict[str, Any], as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else text)


def _say(notes: Sequence[str], problems: Sequence[str]) -> str:
    return "; ".join([*(f"PROBLEM: {p}" for p in problems), *notes])


def run(args: argparse.Namespace) -> int:
    """Run ``sclib migrate ...``; the exit code."""
    from sclib.migrate import Migrator

    action = getattr(args, "migrate_action", None)
    if action is not None and args.from_file is not None:
        raise InvalidInput(
            f"--from imports documents for `sclib migrate [--apply]`; "
            f"`sclib migrate {action}` does not take it"
        )
    if action == "validate" and args.apply:
        raise InvalidInput("--apply: `sclib migrate validate` changes nothing")
    if action is not None and args.resolve:
        raise InvalidInput(
            f"--resolve is for `sclib migrate [--apply]`; `sclib migrate {action}` "
            "does not take it"
        )
    settings = settings_from(args)
    if action is not None or args.from_file is None:
        # validate, rollback and a plain migrate read what the store holds: a
        # store that does not exist is a mistake to report, not one to create
        from sclib.cli._common import require_store

        require_store(settings)
    url = settings.backend_url()
    migrator = Migrator.open(
        url,
        store_options=settings.store_options(url),
        dataset_options=settings.session_store_options(url),
    )
    try:
        if action == "validate":
            return _validate(migrator, args)
        if action == "rollback":
            return _rollback(migrator, args)
        return _migrate(migrator, args)
    finally:
        migrator.close()


def _migrate(migrator: Migrator, args: argparse.Namespace) -> int:
    from sclib.migrate import load_legacy_file

    imports = load_legacy_file(args.from_file) if args.from_file else None
    report = migrator.migrate(
        apply=args.apply,
        imports=imports,
        dataset_uuid=args.dataset_uuid,
        resolve=args.resolve,
    )
    rows = [
        [
            i.uuid or (f"_id {i.id}" if i.id else "?"),
            (i.status or "?")
            + (f" (was {i.original_status!r})" if i.original_status else ""),
            i.action + (" (import)" if i.imported and i.action != "skip" else ""),
            i.job_type or "",
            i.job_id or "",
            _say(
                i.notes + ([f"sets {', '.join(i.changes)}"] if i.changes else []),
                i.problems,
            ),
        ]
        for i in report.items
    ]
    c = report.counts()
    verb = "done" if args.apply else "dry run, nothing changed (run with --apply)"
    reported = report.reported()
    summary = (
        f"{len(report.items)} datasets: {c['create']} jobs to create, "
        f"{c['exists']} already continued, {c['nothing']} need nothing, "
        f"{c['skip']} skipped with problems"
        + (
            " (" + ", ".join(f"{n} {why}" for why, n in reported.items()) + ")"
            if reported
            else ""
        )
        + f"; {c['imported']} from the file, {c['normalised']} documents "
        f"normalised; {len(report.open_clashes)} clashes to look at; {verb}"
    )
    header = ["UUID", "STATUS", "ACTION", "JOB TYPE", "JOB", "NOTES"]
    parts = [table(rows, header)] if rows else []
    if report.clashes:
        lines = ["", "CLASHES"]
        for clash in report.clashes:
            who = "; ".join(
                " ".join(
                    str(x)
                    for x in (
                        d["uuid"] or "(no uuid)",
                        f"_id {d['_id']}" if d["_id"] else "",
                        f"'{d['name']}'" if d["name"] else "",
                        f"from the {d['source']}" if d["source"] == "file" else "",
                    )
                    if x
                )
                for d in clash.documents
            )
            key = f" {clash.key}" if clash.key else ""
            lines += [
                f"- {clash.kind}{key}: {len(clash.documents)} documents: {who}",
                f"  done: {clash.action}",
                f"  to resolve: {clash.resolve}",
            ]
        parts.append("\n".join(lines))
    if report.notes:
        parts.append("\n".join(["", "NOTES", *(f"- {n}" for n in report.notes)]))
    text = "\n".join([*parts, summary])
    _print(report.to_dict(), args.json, text)
    if _unknown(args, report.items, "no dataset {} in the store or the --from file"):
        return EXIT_PROBLEMS
    return EXIT_PROBLEMS if report.problems or report.open_clashes else EXIT_OK


def _unknown(args: argparse.Namespace, items: Sequence[Any], message: str) -> bool:
    """Say so (on stderr) when --dataset-uuid matched nothing: a mistyped uuid
    must not look like a dataset with nothing to do."""
    if args.dataset_uuid is None or items:
        return False
    print(f"sclib: {message.format(args.dataset_uuid)}", file=sys.stderr)
    return True


def _validate(migrator: Migrator, args: argparse.Namespace) -> int:
    report = migrator.validate(args.dataset_uuid)
    rows = [
        [i.uuid or "?", i.status or "?", ",".join(i.jobs), "; ".join(i.problems)]
        for i in report.problems
    ]
    text = (
        table(rows, ["UUID", "STATUS", "LIVE JOBS", "PROBLEM"]) + "\n" if rows else ""
    ) + (f"{len(report.items)} datasets checked, {len(report.problems)} with problems")
    _print(report.to_dict(), args.json, text)
    if _unknown(args, report.items, "no dataset {} in the store"):
        return EXIT_PROBLEMS
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _rollback(migrator: Migrator, args: argparse.Namespace) -> int:
    report = migrator.rollback(args.dataset_uuid, apply=args.apply)
    rows = [
        [i.uuid, i.document, str(len(i.jobs)), "; ".join(i.problems)]
        for i in report.items
    ]
    verb = "rolled back" if args.apply else "to roll back (run with --apply)"
    text = (
        table(rows, ["UUID", "DOCUMENT", "JOBS", "PROBLEM"]) + "\n" if rows else ""
    ) + f"{len(report.items) - len(report.problems)} datasets {verb}"
    _print(report.to_dict(), args.json, text)
    if _unknown(
        args, report.items, "dataset {} was not migrated: nothing to roll back"
    ):
        return EXIT_PROBLEMS
    return EXIT_PROBLEMS if report.problems else EXIT_OK
