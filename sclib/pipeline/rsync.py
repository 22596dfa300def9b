"""The ``rsync_transfer`` job: bring files into a dataset with rsync.

The job's ``source`` is one of

* a local path on the worker, which must lie inside one of the folders the operator
  allows (``SCLIB_UPLOAD_PATH_ROOTS``, the same roots as server-path uploads;
  symbolic links are resolved first);
* ``host:path`` or ``user@host:path`` (rsync over ssh, non-interactive) or
  ``rsync://host[:port]/module/path`` (an rsync daemon), where ``host`` must be one
  of the hosts the operator allows (``SCLIB_RSYNC_HOSTS``). No host is allowed by
  default: the worker's ssh keys and network are not the user's to point anywhere.

The command line is built by this module as a list (never a shell string), from
fixed options only: ``-r -t`` (recursive, keep times, no symlinks, devices or
special files, no permissions), ``--partial-dir`` (resume big files),
``--info=progress2`` (progress), ``--timeout``, and ``--`` before the source and
destination. Nothing a user sends becomes an option: a source beginning with ``-``
is refused, and so is a remote path with characters outside a plain set (letters,
digits, ``._-/~+=,@%`` and ``:`` in the host part).

When the ``rsync`` program is not installed, local sources are copied with the
:class:`~sclib.transfers.engine.TransferEngine` instead (remote ones are refused,
saying rsync is needed).

Files land in the job's staging folder (:mod:`sclib.pipeline._staging`): kept
across attempts, so a retry resumes (rsync skips the files it already has, and
continues partial ones). Then every file is hashed (BLAKE3), a commit plan is
written, and the staged entries are renamed into ``<data>/upload/<uuid>/`` (or its
``relative_path`` folder); a retry that finds the plan finishes the renames and
records the files without transferring again. A local folder arrives as a folder
of its own name; an entry the dataset already has is refused, naming it.

The dataset goes ``sync queued`` -> ``syncing`` -> what the pipeline decides
(:func:`sclib.pipeline.flow.after_files`: extraction, conversion or ``done``), or
``sync error`` with the message.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import IO, Any

from sclib.datasets import DatasetStore
from sclib.errors import (
    ConfigurationError,
    Forbidden,
    InvalidInput,
    SourceError,
    SourceNotFound,
)
from sclib.jobs.context import JobContext
from sclib.jobtypes import DatasetStatus
from sclib.paths import CONTROL_CHARS, safe_relative_path
from sclib.pipeline._staging import Stage, run_sync_job
from sclib.pipeline._transfer import engine_copy
from sclib.pipeline.flow import Pipeline
from sclib.transfers.engine import TransferEngine
from sclib.transfers.sessions import SessionStore

__all__ = ["RsyncHandler", "RsyncSource", "parse_source", "rsync_command"]

log = logging.getLogger(__name__)

_SAFE_REMOTE = re.compile(r"^[A-Za-z0-9._\-/~+=,@%]*$")
_HOST = re.compile(r"^[A-Za-z0-9.\-]+$|^\[[0-9A-Fa-f:.]+\]$")
_USER = re.compile(r"^[A-Za-z0-9._\-]+$")
_PROGRESS = re.compile(r"^\s*([\d,]+)\s+(\d{1,3})%")
#: rsync exit codes worth another attempt (network, protocol, timeouts)
_RETRYABLE = frozenset({5, 10, 11, 12, 30, 35})
_D = DatasetStatus


class RsyncSource:
    """A checked source: ``kind`` is ``local``, ``ssh`` or ``daemon``."""

    def __init__(self, kind: str, arg: str, host: str = "", name: str = "") -> None:
        self.kind = kind
        self.arg = arg  # what goes on rsync's command line after "--"
        self.host = host
        self.name = name  # a local source's file or folder name

    @property
    def remote(self) -> bool:
        return self.kind != "local"

    def __repr__(self) -> str:
        return f"RsyncSource({self.kind}, {self.arg!r})"


def _check_remote(host: str, path: str, allowed: Collection[str], value: str) -> None:
    if not _HOST.match(host):
        raise InvalidInput(f"source: {host!r} is not a host name")
    if not _SAFE_REMOTE.match(path):
        raise InvalidInput(
            "source: the remote path may use only letters, digits and ._-/~+=,@%"
        )
    if host.lower().strip("[]") not in {h.lower().strip("[]") for h in allowed}:
        raise Forbidden(
            f"source: host {host!r} is not one this worker may rsync from "
            "(the operator can allow hosts with SCLIB_RSYNC_HOSTS)"
        )


def parse_source(
    value: object, roots: Collection[Path], hosts: Collection[str]
) -> RsyncSource:
    """Check the job's ``source``; :class:`InvalidInput` or :class:`Forbidden`
    naming what is wrong."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("source: field required (a path, host:path or rsync://)")
    if value.startswith("-"):
        raise InvalidInput("source: must not begin with '-'")
    if CONTROL_CHARS.search(value):
        raise InvalidInput("source: contains a control character")
    if value.lower().startswith("rsync://"):
        rest = value[len("rsync://") :]
        authority, _, path = rest.partition("/")
        userinfo, _, hostport = authority.rpartition("@")
        if userinfo and not _USER.match(userinfo):
            raise InvalidInput("source: bad user name in the rsync:// URL")
        host, _, port = (
            hostport.rpartition(":") if hostport.count(":") == 1 else (hostport, "", "")
        )
        if port and not port.isdigit():
            raise InvalidInput("source: the port must be a number")
        if not path:
            raise InvalidInput("source: rsync:// URLs need a module: rsync://host/mod")
        _check_remote(host, path, hosts, value)
        return RsyncSource("daemon", value, host)
    if not value.startswith("/") and ":" in value.split("/", 1)[0]:
        login, _, path = value.partition(":")
        if path.startswith(":"):
            raise InvalidInput("source: use rsync://host/module for an rsync daemon")
        user, _, host = login.rpartition("@")
        if user and not _USER.match(user):
            raise InvalidInput("source: bad user name before the host")
        if not path:
            raise InvalidInput("source: host:path needs a path after the ':'")
        _check_remote(host, path, hosts, value)
        return RsyncSource("ssh", value, host)
    return _local_source(value, roots)


def _local_source(value: str, roots: Collection[Path]) -> RsyncSource:
    if not roots:
        raise Forbidden(
            "source: local paths are turned off on this worker (the operator can "
            "allow folders with SCLIB_UPLOAD_PATH_ROOTS)"
        )
    path = Path(value)
    if not path.is_absolute():
        raise InvalidInput("source: a local source must be an absolute path")
    resolved = path.resolve()
    if not any(
        resolved == root.resolve() or root.resolve() in resolved.parents
        for root in roots
    ):
        raise Forbidden(f"source: {value!r} is outside the allowed folders")
    if not resolved.exists():
        raise SourceNotFound(f"source: {value!r} does not exist")
    if not (resolved.is_dir() or resolved.is_file()):
        raise InvalidInput(f"source: {value!r} is not a file or folder")
    return RsyncSource("local", str(resolved), name=resolved.name)


def rsync_command(
    program: str, source: RsyncSource, dest: Path, *, timeout: int = 600
) -> list[str]:
    """The rsync argument list: fixed options, then ``--``, source, destination.

    A local folder is given without a trailing slash, so it arrives as a folder of
    its own name; a remote source is passed as the user wrote it (rsync's trailing
    slash rule applies)."""
    args = [
        program,
        "-r",
        "-t",
        "--partial-dir=.rsync-partial",
        "--info=progress2",
        "--no-inc-recursive",
        f"--timeout={int(timeout)}",
    ]
    if source.kind == "ssh":
        args += ["-s", "-e", "ssh -o BatchMode=yes"]
    elif source.kind == "daemon":
        args += ["-s"]
    return [*args, "--", source.arg, str(dest) + "/"]


class RsyncHandler:
    """The ``rsync_transfer`` job handler; see the module docstring.

    :param path_roots: folders local sources must lie in (none: local sources off).
    :param hosts: hosts remote sources may name (none: remote sources off).
    :param rsync: the rsync program; default: ``shutil.which("rsync")`` when the
        job runs (``None`` there: the TransferEngine for local sources).
    :param pipeline: what comes after the files are recorded
        (:mod:`sclib.pipeline.flow`); ``None`` marks the dataset ``done``.

    Parameters of the job: ``source`` (required), ``relative_path`` (optional: a
    folder inside the dataset).
    """

    def __init__(
        self,
        data_dir: Path,
        datasets: DatasetStore | None = None,
        sessions: SessionStore | None = None,
        *,
        path_roots: Collection[Path] = (),
        hosts: Collection[str] = (),
        rsync: str | None = None,
        io_timeout: int = 600,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.datasets = datasets
        self.sessions = sessions
        self.path_roots = [Path(p) for p in path_roots]
        self.hosts = list(hosts)
        self.rsync = rsync
        self.io_timeout = io_timeout
        self.pipeline = pipeline

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        return run_sync_job(
            ctx, self.datasets, self.pipeline, "an rsync job", self._run
        )

    def _run(
        self, ctx: JobContext, uuid: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        relative = safe_relative_path(
            str(params.get("relative_path") or ""), "relative_path"
        )
        source = parse_source(params.get("source"), self.path_roots, self.hosts)
        stage = Stage(self.data_dir, "rsync", ctx.job.id, uuid)
        plan = stage.plan()
        tool = "committed earlier"
        if plan is None:
            if source.kind == "local":
                stage.check_free(relative, [source.name])
            program = self.rsync or shutil.which("rsync")
            data = stage.prepare()
            known: dict[str, tuple[int, str]] | None = None
            if program is not None:
                tool = "rsync"
                self._rsync(ctx, program, source, data)
            elif source.remote:
                raise ConfigurationError(
                    "rsync is not installed on this worker; remote sources need it"
                )
            else:
                tool = "engine"
                known = self._engine(ctx, source, data)
            ctx.check()
            plan = stage.write_plan(relative, stage.hash_files(known))
            total = sum(int(f["size"]) for f in plan["files"])
            ctx.report(100.0, bytes_done=total, bytes_total=total, message="staged")
        files = stage.commit(plan)
        stage.remove()
        log.info("dataset %s: %d files from %s (%s)", uuid, len(files), source, tool)
        return {
            "files": files,
            "bytes": sum(int(f["size"]) for f in files),
            "source": source.arg,
            "tool": tool,
        }

    def _rsync(
        self, ctx: JobContext, program: str, source: RsyncSource, data: Path
    ) -> None:
        args = rsync_command(program, source, data, timeout=self.io_timeout)
        log.info("running %s", args)
        env = {**os.environ, "LC_ALL": "C"}
        errors: list[bytes] = []
        with subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        ) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            readers = [
                threading.Thread(
                    target=_progress, args=(ctx, proc.stdout), daemon=True
                ),
                threading.Thread(target=_tail, args=(proc.stderr, errors), daemon=True),
            ]
            for reader in readers:
                reader.start()
            try:
                code = _wait(ctx, proc)
            finally:
                for reader in readers:
                    reader.join(timeout=5)
        if code != 0:
            text = b"".join(errors).decode(errors="replace").strip()
            message = f"rsync exited with code {code}: {text[-2000:] or 'no message'}"
            if "No such file or directory" in text and code == 23:
                raise SourceNotFound(message)
            error = SourceError(message)
            error.retryable = code in _RETRYABLE
            raise error

    def _engine(
        self, ctx: JobContext, source: RsyncSource, data: Path
    ) -> dict[str, tuple[int, str]]:
        """Copy a local source with the TransferEngine (no rsync here)."""
        engine = TransferEngine(sessions=self.sessions)
        into = data / source.name if Path(source.arg).is_dir() else data
        into.mkdir(parents=True, exist_ok=True)
        result = engine_copy(ctx, engine, source.arg, str(into) + "/")
        known = {}
        for f in result.files:
            rel = Path(f.dest_url).resolve().relative_to(data.resolve()).as_posix()
            known[rel] = (f.size, f.blake3)
        return known


def _progress(ctx: JobContext, stream: IO[bytes]) -> None:
    """Read rsync's ``--info=progress2`` lines (split by CR) into the job."""
    buf = b""
    while True:
        block = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
        *lines, buf = re.split(rb"[\r\n]", buf + block) if block else [buf, b""]
        for line in lines:
            match = _PROGRESS.match(line.decode(errors="replace"))
            if match:
                done = int(match.group(1).replace(",", ""))
                ctx.report(float(match.group(2)), bytes_done=done, message="rsync")
        if not block:
            return


def _tail(stream: IO[bytes], out: list[bytes]) -> None:
    """Keep the last 64 KiB of rsync's error output."""
    size = 0
    for line in stream:
        out.append(line)
        size += len(line)
        while size > 65536 and len(out) > 1:
            size -= len(out.pop(0))


def _wait(ctx: JobContext, proc: subprocess.Popen[bytes]) -> int:
    """rsync's exit code; stops it if the job is told to stop meanwhile."""
    try:
        while True:
            try:
                return proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                ctx.check()
    except BaseException:
        _stop(proc)
        raise


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop rsync (TERM, then KILL after 5 s)."""
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
