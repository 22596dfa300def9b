"""Staging for the jobs that bring files into a dataset (rsync, Google Drive sync).

Files arrive in ``<data>/tmp/<kind>/<job id>/data/``, a folder of the job's own:
kept across attempts on purpose, so a retried job resumes instead of starting over
(rsync skips what it already has; the TransferEngine's sessions point there).
Nothing in it is part of the dataset yet.

Once everything is there and hashed, the job writes a commit plan
(``commit.json``: the top-level entries to move, where to, and every file with its
BLAKE3) and syncs it; then each entry is renamed into the dataset folder (one
atomic ``rename`` each; an entry that already exists there is refused before
anything moves). A retry that finds a plan finishes the renames it lists and
records the files from it, without transferring anything again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sclib.datasets import DatasetStore
from sclib.datasets.records import ensure_dataset, mark, record_files
from sclib.errors import InvalidInput, LeaseLost
from sclib.jobs.context import JobContext
from sclib.jobtypes import DatasetStatus
from sclib.paths import safe_join, safe_relative_path
from sclib.pipeline.flow import Pipeline, after_files, step_failed
from sclib.transfers.hashing import blake3_file

__all__ = ["Stage", "enter_syncing", "run_sync_job"]

_PLAN = "commit.json"
#: what a cut-off transfer leaves behind: never part of a dataset
_LEFTOVER_FILES = ".sclib-part"
_LEFTOVER_DIRS = ".rsync-partial"
_D = DatasetStatus


def enter_syncing(store: DatasetStore, uuid: str) -> None:
    """``sync queued`` (unless already queued, syncing or retrying), ``syncing``;
    each step through the legacy table (a refused one is logged, not forced)."""
    current = store.get(uuid).status
    if current not in (_D.SYNC_QUEUED, _D.SYNCING, _D.RETRYING):
        mark(store, uuid, _D.SYNC_QUEUED)
    mark(store, uuid, _D.SYNCING)


def run_sync_job(
    ctx: JobContext,
    store: DatasetStore | None,
    pipeline: Pipeline | None,
    what: str,
    run: Callable[[JobContext, str, Mapping[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """The frame of a job that brings files into a dataset (rsync, Drive sync):
    the dataset record created if new and moved to ``syncing``; ``run(ctx, uuid,
    parameters)`` does the work; its files are recorded and the pipeline's next
    step queued, or the dataset goes to ``sync error`` with the error's text
    (``retrying`` while a failed attempt will be retried)."""
    uuid = ctx.job.dataset_uuid
    if not uuid:
        raise InvalidInput(f"{what} needs a dataset_uuid")
    params = ctx.parameters
    if store is not None:
        owner = ctx.job.owner or "unknown@localhost"
        ensure_dataset(store, uuid, owner, params.get("dataset") or {})
        enter_syncing(store, uuid)
    try:
        result = run(ctx, uuid, params)
    except LeaseLost:
        raise  # another worker runs the job now: the status is its business
    except Exception as exc:
        if store is not None:  # `sync error` once the job will not run again
            step_failed(store, ctx, uuid, _D.SYNC_ERROR, exc)
        raise
    if store is not None:
        record_files(store, uuid, result["files"])
        result["pipeline"] = after_files(pipeline, store, ctx, uuid, result["files"])
    return result


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Stage:
    """The job-scoped staging folder of one job; see the module docstring."""

    def __init__(self, data_dir: Path, kind: str, job_id: str, uuid: str) -> None:
        self.root = Path(data_dir) / "tmp" / kind / job_id
        self.data = self.root / "data"
        self.dataset = Path(data_dir) / "upload" / uuid

    def prepare(self) -> Path:
        """The folder to fill (created if missing; earlier attempts' files kept)."""
        self.data.mkdir(parents=True, exist_ok=True)
        return self.data

    def plan(self) -> dict[str, Any] | None:
        """The commit plan an earlier attempt wrote, if any."""
        try:
            text = (self.root / _PLAN).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        plan: dict[str, Any] = json.loads(text)
        return plan

    def target(self, relative: str) -> Path:
        """The folder inside the dataset the entries go to (checked)."""
        rel = safe_relative_path(relative, "relative_path")
        return safe_join(self.dataset, rel) if rel else self.dataset

    def check_free(self, relative: str, names: Iterable[str]) -> None:
        """Refuse, naming it, an entry the dataset already has."""
        target = self.target(relative)
        for name in names:
            if os.path.lexists(target / name):
                shown = f"{relative}/{name}" if relative else name
                raise InvalidInput(
                    f"the dataset already has {shown!r}; sync into another "
                    "relative_path (or remove it first)"
                )

    def hash_files(
        self, known: Mapping[str, tuple[int, str]] | None = None
    ) -> list[dict[str, Any]]:
        """Every staged file (path relative to the staging folder), with its size and
        BLAKE3; ``known`` supplies digests already computed (by the engine)."""
        self._drop_leftovers()
        files = []
        for path in sorted(p for p in self.data.rglob("*") if p.is_file()):
            rel = path.relative_to(self.data).as_posix()
            if known is not None and rel in known:
                size, digest = known[rel]
            else:
                digest, size = blake3_file(path)
            files.append({"path": rel, "size": size, "blake3": digest})
        return files

    def _drop_leftovers(self) -> None:
        """Remove partial files of transfers that were given up (a source file
        deleted between attempts leaves its temp file): they are no dataset file."""
        for path in list(self.data.rglob("*")):
            if path.name == _LEFTOVER_DIRS and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.endswith(_LEFTOVER_FILES) and path.is_file():
                path.unlink(missing_ok=True)

    def write_plan(self, relative: str, files: list[dict[str, Any]]) -> dict[str, Any]:
        """Record what will be committed (synced to disk before any rename)."""
        entries = sorted(p.name for p in self.data.iterdir())
        self.check_free(relative, entries)
        prefix = f"{safe_relative_path(relative, 'relative_path')}/" if relative else ""
        plan = {
            "relative_path": relative,
            "entries": entries,
            "files": [{**f, "path": prefix + f["path"]} for f in files],
        }
        temp = self.root / (_PLAN + ".tmp")
        with open(temp, "w", encoding="utf-8") as fh:
            json.dump(plan, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, self.root / _PLAN)
        _fsync_dir(self.root)
        return plan

    def commit(self, plan: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Rename the planned entries into the dataset; the files, as recorded."""
        target = self.target(str(plan["relative_path"]))
        target.mkdir(parents=True, exist_ok=True)
        for name in plan["entries"]:
            src = self.data / name
            if not os.path.lexists(src):
                continue  # moved by an earlier attempt
            dst = safe_join(target, safe_relative_path(str(name), "entry"))
            if os.path.lexists(dst):
                raise InvalidInput(f"the dataset already has {name!r}; not replaced")
            os.rename(src, dst)
        _fsync_dir(target)
        return list(plan["files"])

    def remove(self) -> None:
        """Delete the staging folder (after the files are recorded)."""
        shutil.rmtree(self.root, ignore_errors=True)
