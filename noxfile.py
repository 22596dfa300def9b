"""Developer sessions: `nox -s lint typecheck tests bench` (or just `nox`)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PATHS = ["sclib", "tests", "benchmarks", "examples", "noxfile.py"]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", *PATHS)
    session.run("ruff", "format", "--check", *PATHS)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, in two processes (pass pytest options after --)."""
    session.install(
        "-e", ".[dev]", "-e", "examples/source_plugin", "./native/blake3tree"
    )
    session.run("pytest", *(session.posargs or ["-n", "2"]))


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; they print ratios against a baseline measured in the same run."""
    session.install("-e", ".[dev]")
    session.run("python", "benchmarks/queue_throughput.py", *session.posargs)
