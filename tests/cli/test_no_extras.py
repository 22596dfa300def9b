"""The command line on an install without some or all extras.

Each test runs ``sclib`` in a subprocess in which optional packages are made
unimportable by ``blocker/sitecustomize.py`` (a ``sys.meta_path`` finder), the
same as on a machine where they were never installed. Every command either works
or says, in one line and with exit code 2, which extra to install. CI also runs
the README's commands in fresh virtual environments with only the extras they
name; these tests make the same check for every extra, one at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sclib.errors import OPTIONAL_PACKAGES

pytestmark = pytest.mark.integration

BLOCKER = Path(__file__).parent / "blocker"
#: the packages the ``server`` extra installs, by import name
SERVER = sorted(p for p, extra in OPTIONAL_PACKAGES.items() if extra == "server")
#: every optional package, and a few that only the dev extra brings
EVERYTHING = sorted({*OPTIONAL_PACKAGES, "mongomock", "ipywidgets", "tuspy"})

#: runs ``--help`` of every command and subcommand in one process
EVERY_HELP = Path(__file__).parent / "every_help.py"


def _env(blocked: list[str], tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SCLIB_") or k == "SCLIB_TEST_MONGODB_URI"
    }
    env.update(
        PYTHONPATH=str(BLOCKER),
        SCLIB_TEST_BLOCK=",".join(blocked),
        SCLIB_DATA_DIR=str(tmp_path / "data"),
        HOME=str(tmp_path / "home"),
    )
    return env


def _sclib(
    args: list[str], blocked: list[str], tmp_path: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sclib", *args],
        env=_env(blocked, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _names_extra(run: subprocess.CompletedProcess[str], extra: str) -> None:
    """One line on stderr, exit 2, the extra named, no traceback."""
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert f"pip install 'sclib[{extra}]'" in lines[0], lines[0]


def test_blocker_makes_a_package_unimportable(tmp_path: Path) -> None:
    """The harness itself: a blocked package fails to import as if absent, and
    an unblocked one still imports."""
    code = "import json\ntry:\n    import pymongo\nexcept ModuleNotFoundError as e:\n"
    code += "    print('blocked', e.name)\n"
    run = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(["pymongo"], tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == "blocked pymongo"


@pytest.mark.parametrize("package", ["*", *EVERYTHING])
def test_every_help_works_without_the_package(package: str, tmp_path: Path) -> None:
    """``sclib --help`` and the ``--help`` of every command and subcommand exit 0
    without each optional package in turn, and without any of them (``*``)."""
    blocked = EVERYTHING if package == "*" else [package]
    run = subprocess.run(
        [sys.executable, str(EVERY_HELP)],
        env=_env(blocked, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["failures"] == []
    assert result["paths"] >= 25  # every command group and its actions
    assert run.returncode == 0, run.stderr


def test_queue_demo_runs_on_a_bare_install(tmp_path: Path) -> None:
    """``sclib demo`` needs no extra: with every optional package blocked it runs
    every job to completed."""
    run = _sclib(["demo"], EVERYTHING, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "jobs completed" in run.stdout
    assert "Traceback" not in run.stderr


def test_server_demo_runs_with_only_the_server_extra(tmp_path: Path) -> None:
    """``sclib demo --server`` (the README's run command) works with only the
    ``server`` extra: every other optional package is blocked."""
    blocked = [p for p in EVERYTHING if p not in SERVER]
    run = _sclib(["demo", "--server"], blocked, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    uploaded = [ln.split()[3] for ln in run.stdout.splitlines() if "uploaded" in ln]
    assert len(uploaded) == 4
    for job in uploaded:
        assert f"job {job}: completed" in run.stdout
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("package", SERVER)
def test_server_demo_without_a_server_package(package: str, tmp_path: Path) -> None:
    """Without one package of the ``server`` extra, ``sclib demo --server`` either
    still works (the package is optional there) or names the extra in one line."""
    run = _sclib(["demo", "--server"], [package], tmp_path)
    if run.returncode == 0:
        assert "completed" in run.stdout
        assert "Traceback" not in run.stderr
    else:
        _names_extra(run, "server")


@pytest.mark.parametrize(
    ("args", "package", "extra"),
    [
        (["serve", "--no-auth", "--port", "0"], "fastapi", "server"),
        (["serve", "--no-auth", "--port", "0"], "uvicorn", "server"),
        (["token", "alice@example.org"], "jwt", "server"),
        (["--backend", "mongodb://127.0.0.1:9/db", "jobs", "list"], "pymongo", "mongo"),
        (["copy", "s3://bucket/key", "out/"], "s3fs", "s3"),
        (["copy", "gs://bucket/key", "out/"], "gcsfs", "gcs"),
        (
            [
                "copy",
                "gdrive://some-file-id",
                "out/",
                "--source-option",
                "service_account_file=key.json",
            ],
            "google",
            "gdrive",
        ),
    ],
)
def test_a_command_names_its_missing_extra(
    args: list[str], package: str, extra: str, tmp_path: Path
) -> None:
    """A command whose extra is missing says which one, in one line, exit 2."""
    key = {"type": "service_account", "client_email": "a@b.org", "private_key": "x"}
    (tmp_path / "key.json").write_text(json.dumps(key))
    run = subprocess.run(
        [sys.executable, "-m", "sclib", *args],
        env={**_env([package], tmp_path), "SCLIB_SECRET_KEY": "k" * 40},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    _names_extra(run, extra)
