"""Mistakes seen on a first try of the command line, each answered in one line.

Every test runs the real ``sclib`` command in a subprocess, in an empty folder,
and checks the exact message and exit code a newcomer sees.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sclib.cli import build_parser

pytestmark = pytest.mark.integration


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCLIB_")}
    env["HOME"] = str(tmp_path / "home")
    env.update(extra)
    return env


def _sclib(
    tmp_path: Path, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sclib", *args],
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line(run: subprocess.CompletedProcess[str]) -> str:
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    return lines[0]


def test_a_url_with_one_slash_is_refused(tmp_path: Path) -> None:
    """``s3:/bucket/x`` (one slash) is refused with the fix, and no local folder
    named ``s3:`` is created."""
    (tmp_path / "f.txt").write_text("data")
    run = _sclib(tmp_path, "copy", "f.txt", "s3:/bucket/x")
    assert run.returncode == 2
    assert _one_line(run) == (
        "sclib: error: 's3:/bucket/x' is not a URL: 's3:' takes two slashes; write "
        "s3://bucket/x (or ./s3:/bucket/x for a local path of that name)"
    )
    assert not (tmp_path / "s3:").exists()


def test_a_url_without_slashes_is_refused(tmp_path: Path) -> None:
    """A known scheme with no slashes at all (``gs:bucket/x``) as a source is
    refused the same way."""
    run = _sclib(tmp_path, "copy", "gs:bucket/x", "out/")
    assert run.returncode == 2
    assert _one_line(run) == (
        "sclib: error: 'gs:bucket/x' is not a URL: 'gs:' takes two slashes; write "
        "gs://bucket/x (or ./gs:bucket/x for a local path of that name)"
    )


def test_a_local_path_with_a_colon_still_works(tmp_path: Path) -> None:
    """A colon in an ordinary file name is not taken for a URL."""
    (tmp_path / "run:7.txt").write_text("data")
    run = _sclib(tmp_path, "copy", "run:7.txt", "out/", "--no-progress")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "run:7.txt").read_text() == "data"


_FTP_SERVER = """
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

authorizer = DummyAuthorizer()
authorizer.add_user("bob", "secret", sys.argv[1], perm="elr")
FTPHandler.authorizer = authorizer
server = FTPServer(("127.0.0.1", 0), FTPHandler)
print(server.socket.getsockname()[1], flush=True)
server.serve_forever()
"""


@pytest.fixture
def ftp_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real FTP server (pyftpdlib, in its own process) on 127.0.0.1 with the
    user ``bob``; yields its port and root folder."""
    pytest.importorskip("pyftpdlib")
    root = tmp_path / "ftp-root"
    root.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", _FTP_SERVER, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield port, root
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_ftp_urls_carry_their_host_port_and_user(
    tmp_path: Path, ftp_server: tuple[int, Path]
) -> None:
    """The fsspec fallback gives the filesystem the URL's host, port, user and
    password: a file copies from a real FTP server, verified, with no warning
    printed on the way."""
    port, root = ftp_server
    payload = os.urandom(300_000)
    (root / "x.bin").write_bytes(payload)
    url = f"ftp://bob:secret@127.0.0.1:{port}/x.bin"
    run = _sclib(tmp_path, "copy", url, "out/", "--no-progress")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "x.bin").read_bytes() == payload
    assert "Exception ignored" not in run.stderr
    assert "secret" not in run.stdout


def test_an_ftp_server_that_is_not_there(tmp_path: Path) -> None:
    """A refused connection is one line that names the server, not a missing
    'host' argument and a traceback from the filesystem's destructor."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = _sclib(tmp_path, "copy", f"ftp://127.0.0.1:{port}/x.bin", "out/")
    assert run.returncode == 1
    line = _one_line(run)
    assert line.startswith(
        f"sclib: error: cannot connect to the ftp server for "
        f"ftp://127.0.0.1:{port}/x.bin: "
    )
    assert "Connection refused" in line


@pytest.mark.parametrize(
    ("url", "package", "install"),
    [
        ("sftp://127.0.0.1/x.bin", "paramiko", "paramiko (or sshfs)"),
        ("hf://datasets/org/name/x.bin", "huggingface_hub", "huggingface_hub"),
    ],
)
def test_fsspec_protocols_name_the_package_to_install(
    tmp_path: Path, url: str, package: str, install: str
) -> None:
    """A protocol fsspec knows but whose package is missing names that package,
    not an sclib extra that would not install it."""
    pytest.importorskip("sclib")
    run = _sclib(tmp_path, "copy", url, "out/")
    assert run.returncode == 2
    scheme = url.split(":")[0]
    assert _one_line(run) == (
        f"sclib: error: The {scheme!r} source needs the {package!r} package, which "
        f"is not installed; install it with: pip install {install}"
    )


def test_serve_on_a_busy_port(tmp_path: Path) -> None:
    """A taken port is one line naming it, a non-zero exit, and no claim of
    serving first."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = _sclib(tmp_path, "serve", "--no-auth", "--port", str(port))
    assert run.returncode == 1
    assert _one_line(run) == (
        f"sclib: error: port {port} on 127.0.0.1 is already in use (another "
        "server?); pick a free one with --port"
    )
    assert "serving" not in run.stdout + run.stderr


def test_serve_says_it_serves_only_once_it_does(tmp_path: Path) -> None:
    """The banner comes after the port is bound and the app started, and names
    the port it really got."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sclib", "serve", "--no-auth", "--port", "0"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "sclib serving on" in line:
                break
        url = line.split("serving on ")[1].split()[0]
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stderr is not None:
            proc.stderr.close()


def test_serve_without_auth_says_both_ways_out(tmp_path: Path) -> None:
    """With authentication on and nothing to verify tokens, the one line names
    ``--no-auth`` for a try on loopback, and SCLIB_SECRET_KEY with
    ``sclib token`` to make a token."""
    run = _sclib(tmp_path, "serve", "--port", "0")
    assert run.returncode == 2
    line = _one_line(run)
    assert line.startswith(
        "sclib: error: authentication is on but nothing can verify tokens."
    )
    assert "'sclib serve --no-auth'" in line
    assert "SCLIB_SECRET_KEY" in line
    assert "'sclib token alice@example.org'" in line


def test_token_makes_a_token_the_server_accepts(tmp_path: Path) -> None:
    """``sclib token`` prints a token that an authenticator with the same key
    accepts for that user."""
    from sclib.server.auth import Authenticator

    key = "k" * 40
    run = _sclib(tmp_path, "token", "alice@example.org", SCLIB_SECRET_KEY=key)
    assert run.returncode == 0, run.stderr
    identity = Authenticator(secret_key=key).authenticate(
        f"Bearer {run.stdout.strip()}"
    )
    assert identity.email == "alice@example.org"
    run = _sclib(tmp_path, "token", "alice@example.org")
    assert run.returncode == 2
    assert "SCLIB_SECRET_KEY" in _one_line(run)


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "show", "deadbeef"],
        ["jobs", "list"],
        ["jobs", "cancel", "deadbeef"],
        ["datasets", "list"],
        ["datasets", "show", "deadbeef"],
        ["monitor", "overview"],
        ["uploads", "expire"],
        ["migrate", "validate"],
    ],
)
def test_reading_never_creates_a_store(tmp_path: Path, args: list[str]) -> None:
    """A command that reads a store that does not exist says so, with the path,
    and leaves no database (or data folder) behind."""
    run = _sclib(tmp_path, *args)
    assert run.returncode == 2
    db = (tmp_path / "sclib-data" / "sclib.db").resolve()
    assert _one_line(run) == (
        f"sclib: error: no such store: {db} (nothing has run with this data folder "
        "yet; pass --data-dir or --backend, or set SCLIB_DATA_DIR, to read another)"
    )
    assert not (tmp_path / "sclib-data").exists()


def _options(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.Action, str]]:
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _options(child, (*path, name))
        elif action.option_strings and action.help != argparse.SUPPRESS:
            text = formatter._expand_help(action) if action.help else ""
            yield path, action, text


def test_every_option_has_help_with_its_default() -> None:
    """Every option of every command has help text, and every option with a
    default says what it is."""
    missing, no_default = [], []
    for path, action, text in _options(build_parser()):
        name = f"sclib {' '.join(path)} {action.option_strings[-1]}"
        if not text.strip():
            missing.append(name)
        valued = not isinstance(
            action,
            argparse._StoreTrueAction
            | argparse._HelpAction
            | argparse._VersionAction
            | argparse._CountAction,
        ) or isinstance(action, argparse._CountAction)
        if valued and "default" not in text and not action.required:
            no_default.append(name)
    assert missing == []
    assert no_default == []
