"""The rsync_transfer job: the real rsync binary (local folders, and an rsync daemon
on 127.0.0.1), the TransferEngine fallback when rsync is missing, and the refusal of
sources that could smuggle options or reach outside the allowed places."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

from sclib.datasets import DatasetStore
from sclib.errors import (
    Forbidden,
    InvalidInput,
    JobCancelled,
    SourceError,
    SourceNotFound,
)
from sclib.jobs.context import JobContext
from sclib.jobtypes import DatasetStatus
from sclib.pipeline import rsync as rsync_module
from sclib.pipeline._staging import Stage
from sclib.pipeline.rsync import RsyncHandler, parse_source, rsync_command
from tests.pipeline.maintenance import digests, job_context, sqlite_datasets

RSYNC = shutil.which("rsync")
needs_rsync = pytest.mark.skipif(RSYNC is None, reason="needs the rsync program")


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return sqlite_datasets(tmp_path)


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    """/<tmp>/roots/scans/run42 with nested files, an empty file, a file whose name
    looks like an option, and a symlink pointing outside the root."""
    run = tmp_path / "roots" / "scans" / "run42"
    (run / "sub" / "deeper").mkdir(parents=True)
    (run / "frame.raw").write_bytes(os.urandom(200_000))
    (run / "sub" / "deeper" / "log.txt").write_bytes(b"exposure ok\n" * 100)
    (run / "sub" / "empty").write_bytes(b"")
    (run / "-e touch pwned").write_bytes(b"just a file name")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for users")
    (run / "link-out").symlink_to(secret)
    return run


def _handler(tmp_path: Path, store: DatasetStore, **kw: Any) -> RsyncHandler:
    kw.setdefault("path_roots", [tmp_path / "roots"])
    return RsyncHandler(tmp_path / "data", store, **kw)


def _expected(run: Path) -> dict[str, str]:
    """The regular files of the tree (symlinks are not copied)."""
    return {
        p.relative_to(run).as_posix(): blake3(p.read_bytes()).hexdigest()
        for p in run.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


@needs_rsync
def test_rsync_a_local_folder_into_the_dataset(
    tmp_path: Path, store: DatasetStore, source_tree: Path
) -> None:
    """rsync copies the folder into <dataset>/run42/ (symlinks left out, the
    option-like file name copied as a plain file); every file is recorded with its
    BLAKE3; rsync's progress lines reach the job, which ends at 100% of the bytes;
    the dataset ends 'done' via sync queued -> syncing; nothing is left in the
    staging folder."""
    handler = _handler(tmp_path, store)
    ctx = job_context("rsync_transfer", "a" * 32, {"source": str(source_tree)})
    reports: list[tuple[Any, Any]] = []
    original = ctx.report

    def report(*args: Any, **kwargs: Any) -> None:
        reports.append((args, kwargs.get("message")))
        original(*args, **kwargs)

    ctx.report = report  # type: ignore[method-assign]
    result = handler(ctx)
    # rsync's own --info=progress2 lines were parsed into the job's progress
    assert any(message == "rsync" and args for args, message in reports)
    assert result["tool"] == "rsync"
    progress = ctx.take_progress()
    assert progress is not None and progress.percentage == 100.0
    assert progress.bytes_done == sum(f["size"] for f in result["files"])
    dataset = tmp_path / "data" / "upload" / ("a" * 32)
    assert digests(dataset / "run42") == _expected(source_tree)
    assert not (dataset / "run42" / "link-out").exists()
    assert not (tmp_path / "pwned").exists()
    record = store.get("a" * 32)
    assert {f.path: f.blake3 for f in record.files} == {
        f"run42/{p}": d for p, d in _expected(source_tree).items()
    }
    assert record.status == DatasetStatus.DONE
    assert not (tmp_path / "data" / "tmp" / "rsync" / ctx.job.id).exists()


def test_engine_fallback_without_rsync(
    tmp_path: Path,
    store: DatasetStore,
    source_tree: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no rsync program (shutil.which patched to None), a local folder is
    copied by the TransferEngine with the same result: same files, same digests.
    A remote source then fails (ConfigurationError: another worker may have
    rsync, so the job is retried): the dataset says `retrying` while attempts
    are left, `sync error` after the last one."""
    monkeypatch.setattr(rsync_module.shutil, "which", lambda name: None)
    handler = _handler(tmp_path, store)
    result = handler(
        job_context(
            "rsync_transfer",
            "b" * 32,
            {"source": str(source_tree), "relative_path": "incoming"},
        )
    )
    assert result["tool"] == "engine"
    dataset = tmp_path / "data" / "upload" / ("b" * 32)
    assert digests(dataset / "incoming" / "run42") == _expected(source_tree)
    assert {f["path"] for f in result["files"]} == {
        f"incoming/run42/{p}" for p in _expected(source_tree)
    }
    remote = job_context("rsync_transfer", "b" * 32, {"source": "127.0.0.1:/x"})
    with pytest.raises(Exception, match="rsync is not installed"):
        RsyncHandler(tmp_path / "data", store, hosts=["127.0.0.1"])(remote)
    assert store.get("b" * 32).status == DatasetStatus.RETRYING
    last = JobContext(replace(remote.job, attempts=3, failures=2, max_attempts=3))
    with pytest.raises(Exception, match="rsync is not installed"):
        RsyncHandler(tmp_path / "data", store, hosts=["127.0.0.1"])(last)
    assert store.get("b" * 32).status == DatasetStatus.SYNC_ERROR


@needs_rsync
def test_retry_after_the_plan_commits_without_transferring(
    tmp_path: Path,
    store: DatasetStore,
    source_tree: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An attempt that dies after writing its commit plan (before the rename) is
    finished by the next attempt from the plan alone: the rsync program is not run
    again (it is set to a path that does not exist), and the files are recorded."""
    uuid = "c" * 32
    job_id = "9" * 32

    def die(self: Stage, plan: Any) -> Any:
        raise KeyboardInterrupt("worker killed")

    monkeypatch.setattr(Stage, "commit", die)
    with pytest.raises(KeyboardInterrupt):
        _handler(tmp_path, store)(
            job_context(
                "rsync_transfer", uuid, {"source": str(source_tree)}, job_id=job_id
            )
        )
    monkeypatch.undo()
    handler = _handler(tmp_path, store, rsync=str(tmp_path / "no-such-rsync"))
    result = handler(
        job_context(
            "rsync_transfer",
            uuid,
            {"source": str(source_tree)},
            job_id=job_id,
            attempt=2,
        )
    )
    assert result["tool"] == "committed earlier"
    assert digests(tmp_path / "data" / "upload" / uuid / "run42") == _expected(
        source_tree
    )
    assert len(store.get(uuid).files) == len(_expected(source_tree))


@needs_rsync
def test_an_existing_folder_is_not_overwritten(
    tmp_path: Path, store: DatasetStore, source_tree: Path
) -> None:
    """A second sync of the same folder into the same place is refused, naming the
    folder, before anything is copied; the dataset's copy stays as it was."""
    handler = _handler(tmp_path, store)
    handler(job_context("rsync_transfer", "d" * 32, {"source": str(source_tree)}))
    with pytest.raises(InvalidInput, match="already has 'run42'"):
        handler(job_context("rsync_transfer", "d" * 32, {"source": str(source_tree)}))


def test_injection_and_escapes_are_refused(
    tmp_path: Path, store: DatasetStore, source_tree: Path
) -> None:
    """Sources that start with '-', remote paths with shell or option characters,
    hosts not allowed, paths outside the roots (also through a symlink), relative
    paths and a relative_path with '..' are refused with errors naming them."""
    roots = [tmp_path / "roots"]
    hosts = ["data.example.org"]
    refused: list[tuple[str, type[Exception], str]] = [
        ("-e sh -c 'touch /tmp/x'", InvalidInput, "must not begin with '-'"),
        ("--rsh=sh", InvalidInput, "must not begin with '-'"),
        ("data.example.org:/d;rm -rf /", InvalidInput, "only letters"),
        ("data.example.org:$(id)", InvalidInput, "only letters"),
        ("data.example.org:/d --delete", InvalidInput, "only letters"),
        ("evil.example.org:/d", Forbidden, "SCLIB_RSYNC_HOSTS"),
        ("rsync://evil.example.org/mod/x", Forbidden, "not one this worker"),
        ("rsync://data.example.org", InvalidInput, "need a module"),
        ("data.example.org::mod", InvalidInput, "rsync://host/module"),
        ("-oProxyCommand=x:y", InvalidInput, "must not begin with '-'"),
        ("/etc", Forbidden, "outside the allowed folders"),
        ("relative/path", InvalidInput, "absolute path"),
        ("/x\n--delete", InvalidInput, "control character"),
    ]
    for value, kind, message in refused:
        with pytest.raises(kind, match=message):
            parse_source(value, roots, hosts)
    escape = tmp_path / "roots" / "escape"
    escape.symlink_to(tmp_path)
    with pytest.raises(Forbidden, match="outside"):
        parse_source(str(escape), roots, hosts)
    with pytest.raises(Forbidden, match="turned off"):
        parse_source(str(source_tree), [], hosts)
    with pytest.raises(InvalidInput, match="relative_path"):
        _handler(tmp_path, store)(
            job_context(
                "rsync_transfer",
                "e" * 32,
                {"source": str(source_tree), "relative_path": "../out"},
            )
        )
    assert not (tmp_path / "data" / "out").exists()
    assert parse_source("rsync://data.example.org:8730/mod/a", roots, hosts).remote


def test_command_line_is_fixed_options_then_double_dash() -> None:
    """The argument list holds only the module's own options, then '--', then the
    source and the destination; an ssh source gets a fixed non-interactive -e."""
    src = parse_source("u@data.example.org:/srv/run", [], ["data.example.org"])
    args = rsync_command("/usr/bin/rsync", src, Path("/d/stage"))
    cut = args.index("--")
    assert args[cut + 1 :] == ["u@data.example.org:/srv/run", "/d/stage/"]
    assert args[args.index("-e") + 1] == "ssh -o BatchMode=yes"
    assert all(a.startswith("-") or a.startswith("ssh ") for a in args[1:cut])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def rsync_daemon(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real rsync daemon on 127.0.0.1 serving module 'scans' (read-only)."""
    if RSYNC is None:
        pytest.skip("needs the rsync program")
    served = tmp_path / "served"
    (served / "run7" / "sub").mkdir(parents=True)
    (served / "run7" / "a.raw").write_bytes(os.urandom(50_000))
    (served / "run7" / "sub" / "b.txt").write_bytes(b"b" * 1000)
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(
        f"use chroot = no\nuid = {os.getuid()}\ngid = {os.getgid()}\n"
        f"pid file = {tmp_path / 'rsyncd.pid'}\n"
        f"log file = {tmp_path / 'rsyncd.log'}\n"
        f"[scans]\npath = {served}\nread only = yes\n"
    )
    port = _free_port()
    proc = subprocess.Popen(
        [
            RSYNC,
            "--daemon",
            "--no-detach",
            f"--config={conf}",
            "--address=127.0.0.1",
            f"--port={port}",
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield port, served
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.integration
def test_rsync_from_a_daemon_on_loopback(
    tmp_path: Path, store: DatasetStore, rsync_daemon: tuple[int, Path]
) -> None:
    """rsync://127.0.0.1:<port>/scans/run7 (the host allowed) arrives in the
    dataset with identical bytes; a path that is not there is SourceNotFound or
    a SourceError carrying rsync's message, and the dataset shows 'sync error'."""
    port, served = rsync_daemon
    handler = _handler(tmp_path, store, hosts=["127.0.0.1"])
    result = handler(
        job_context(
            "rsync_transfer",
            "f" * 32,
            {"source": f"rsync://127.0.0.1:{port}/scans/run7"},
        )
    )
    assert result["tool"] == "rsync"
    dataset = tmp_path / "data" / "upload" / ("f" * 32)
    assert digests(dataset / "run7") == digests(served / "run7")
    with pytest.raises((SourceNotFound, SourceError), match="rsync exited"):
        handler(
            job_context(
                "rsync_transfer",
                "1" * 32,
                {"source": f"rsync://127.0.0.1:{port}/scans/nothing-here"},
            )
        )
    assert store.get("1" * 32).status == DatasetStatus.SYNC_ERROR


def test_cancel_stops_the_rsync_process(
    tmp_path: Path, store: DatasetStore, source_tree: Path
) -> None:
    """A cancel requested while rsync runs stops the process at once (TERM) and
    raises JobCancelled; nothing reaches the dataset. The 'rsync' here is a
    stand-in script that only sleeps (a real transfer is too quick to catch)."""
    slow = tmp_path / "slow-rsync"
    pidfile = tmp_path / "pid"
    slow.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 30\n")
    slow.chmod(0o755)
    handler = _handler(tmp_path, store, rsync=str(slow))
    ctx = job_context("rsync_transfer", "2" * 32, {"source": str(source_tree)})

    def cancel_when_started() -> None:
        deadline = time.monotonic() + 10
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        ctx.request_cancel("stop now")

    started = time.monotonic()
    threading.Thread(target=cancel_when_started, daemon=True).start()
    with pytest.raises(JobCancelled, match="stop now"):
        handler(ctx)
    assert time.monotonic() - started < 10
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the process is gone (and reaped)
    assert not (tmp_path / "data" / "upload" / ("2" * 32)).exists()
