"""What a user of TransferEngine gets without configuring anything: sessions
that survive the process, keyword-only arguments, a config checked when it is
built, and one way to ask for progress."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sclib.errors import InvalidInput
from sclib.transfers import (
    MemorySessionStore,
    TqdmSubscriber,
    TransferConfig,
    TransferEngine,
    TransferProgress,
)
from sclib.transfers.plan import KIB, MIB

COPY = textwrap.dedent(
    """
    import json, sys
    from sclib.transfers import TransferEngine

    with TransferEngine() as engine:
        result = engine.copy(sys.argv[1], sys.argv[2])
    print(json.dumps([[f.key, f.chunks_sent, f.chunks_reused] for f in result.files]))
    """
)


def copy_in_new_process(src: Path, dst: str, state: Path) -> list[list[object]]:
    """Run one copy with a default TransferEngine in a Python process of its own."""
    import json

    env = {**os.environ, "SCLIB_STATE_DIR": str(state)}
    done = subprocess.run(
        [sys.executable, "-c", COPY, str(src), dst],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found: list[list[object]] = json.loads(done.stdout)
    return found


def test_a_second_process_reuses_every_finished_file(tmp_path: Path) -> None:
    """The default session store is a file in the user's state folder: the same
    copy run again in a new process sends no chunk of the four finished files."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("a.raw", "b.raw", "sub/c.raw", "sub/d.raw"):
        (src / name).write_bytes(os.urandom(3 * MIB + 17))
    state = tmp_path / "state"
    first = copy_in_new_process(src, str(tmp_path / "dst") + "/", state)
    assert sorted(k for k, _, _ in first) == [
        "a.raw",
        "b.raw",
        "sub/c.raw",
        "sub/d.raw",
    ]
    assert all(sent for _, sent, _ in first)
    assert (state / "transfers.sqlite3").is_file()
    second = copy_in_new_process(src, str(tmp_path / "dst") + "/", state)
    assert [sent for _, sent, _ in second] == [0, 0, 0, 0]
    for name in ("a.raw", "b.raw", "sub/c.raw", "sub/d.raw"):
        assert (tmp_path / "dst" / name).read_bytes() == (src / name).read_bytes()


def test_arguments_are_keyword_only() -> None:
    """TransferEngine(TransferConfig(...)) is a TypeError at once, not an
    AttributeError from deep inside the first copy."""
    with pytest.raises(TypeError):
        TransferEngine(TransferConfig())  # type: ignore[misc]
    with pytest.raises(InvalidInput, match="config must be a TransferConfig"):
        TransferEngine(config=MemorySessionStore())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="sessions must be a SessionStore"):
        TransferEngine(sessions=TransferConfig())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"chunk_size": 3_000_000}, "power of two"),
        ({"chunk_size": 512}, "power of two"),
        ({"chunk_size": "8MiB"}, "parse_size"),
        ({"parallel": 0}, "parallel"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"retry_delay": -1}, "retry_delay"),
        ({"executor": "processes"}, "executor"),
    ],
)
def test_config_is_checked_when_built(options: dict[str, object], message: str) -> None:
    """A TransferConfig no copy could use is refused when it is made."""
    with pytest.raises(InvalidInput, match=message):
        TransferConfig(**options)  # type: ignore[arg-type]


def test_progress_true_and_a_callback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """progress=True draws a bar labelled with the source's name; a callable
    gets fractions that rise to 1.0; subscribers hear TransferProgress."""
    src = tmp_path / "scan_007"
    src.mkdir()
    (src / "frame.raw").write_bytes(os.urandom(64 * KIB))
    config = TransferConfig(chunk_size=4 * KIB)
    seen: list[float] = []
    snapshots: list[TransferProgress] = []

    class Keep:
        def on_progress(self, *, progress: TransferProgress, **_: object) -> None:
            snapshots.append(progress)

    with TransferEngine(sessions=MemorySessionStore(), config=config) as engine:
        engine.copy(str(src), str(tmp_path / "a") + "/", progress=True)
        assert "scan_007" in capsys.readouterr().err
        engine.copy(
            str(src),
            str(tmp_path / "b") + "/",
            progress=seen.append,
            subscribers=[Keep()],
        )
        with pytest.raises(TypeError, match="progress must be"):
            engine.copy(str(src), str(tmp_path / "c") + "/", progress="yes")  # type: ignore[arg-type]
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert snapshots[-1].bytes_verified == 64 * KIB


def test_a_resumed_copy_shows_the_rate_of_this_run_only(tmp_path: Path) -> None:
    """Bytes an earlier run verified are the bar's start, not speed: a copy whose
    files were all finished shows no rate, not gigabytes a second."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.raw").write_bytes(os.urandom(2 * MIB))
    with TransferEngine(sessions=MemorySessionStore()) as engine:
        engine.copy(str(src), str(tmp_path / "dst") + "/")
        out = io.StringIO()
        engine.copy(
            str(src),
            str(tmp_path / "dst") + "/",
            subscribers=[TqdmSubscriber("src", file=out)],
        )
    last = out.getvalue().strip().split("\r")[-1]
    assert "6.00M/6.00M" in last
    assert not re.search(r"\d[kMGT]?B/s", last), last


def test_closing_the_engine_closes_only_its_own_store(tmp_path: Path) -> None:
    """The store the engine opened is closed with it; one passed in stays open."""
    from sclib.backends.sqlite_sessions import SQLiteSessionStore
    from sclib.errors import SclibError

    mine = SQLiteSessionStore(str(tmp_path / "mine.sqlite3"))
    with TransferEngine(sessions=mine) as engine:
        engine.copy(str(tmp_path / "mine.sqlite3"), str(tmp_path / "copy.db"))
    assert mine.count() == 1  # still open
    mine.close()
    with TransferEngine() as engine:
        own = engine.sessions
    with pytest.raises(SclibError):
        own.count()
