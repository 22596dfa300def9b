"""TransferEngine on real files: verified, resumable, parallel or serial."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sclib.errors import InvalidInput, SourceChanged, TransferCancelled
from sclib.transfers import MemorySessionStore, TransferConfig, TransferEngine
from sclib.transfers.plan import KIB
from sclib.transfers.sources import SourceObject, register
from tests import hashing_modes
from tests.transfers.engine_sources import Interrupted, install

install()

EXECUTORS = ["threads", "serial"]


def engine(
    sessions: MemorySessionStore, chunk: int, executor: str, parallel: int = 3
) -> TransferEngine:
    return TransferEngine(
        sessions=sessions,
        config=TransferConfig(
            chunk_size=chunk,
            parallel=parallel,
            executor=executor,  # type: ignore[arg-type]
            retry_delay=0.0,
        ),
    )


def write(path: Path, size: int, seed: int = 0) -> bytes:
    data = (
        os.urandom(size) if seed == 0 else bytes((i * seed) % 251 for i in range(size))
    )
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("hashing", hashing_modes.MODES)
@pytest.mark.parametrize("executor", EXECUTORS)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    chunk=st.sampled_from([KIB, 2 * KIB, 4 * KIB, 64 * KIB]),
    size_kind=st.sampled_from(["zero", "one", "multiple", "plus1", "minus1", "any"]),
    n=st.integers(min_value=1, max_value=20),
    extra=st.integers(min_value=0, max_value=200_000),
    cut=st.floats(min_value=0.0, max_value=1.0),
)
def test_interrupted_copy_resumes_byte_identical(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    executor: str,
    hashing: str,
    chunk: int,
    size_kind: str,
    n: int,
    extra: int,
    cut: float,
) -> None:
    """For any size, chunk size and interruption point, the resumed copy is
    byte-identical and its digest equals a one-shot BLAKE3 of the source, with
    the file digest merged from chunk chaining values (tree) or hashed in order."""
    hashing_modes.use(hashing, monkeypatch)
    size = {
        "zero": 0,
        "one": 1,
        "multiple": n * chunk,
        "plus1": n * chunk + 1,
        "minus1": n * chunk - 1,
        "any": extra,
    }[size_kind]
    tmp = tmp_path_factory.mktemp("copy")
    data = write(tmp / "src.bin", size)
    dest = tmp / "out" / "dst.bin"
    sessions = MemorySessionStore()
    chunks = -(-size // chunk)
    fail_after = int(cut * chunks)
    eng = engine(sessions, chunk, executor)
    if fail_after < chunks:
        with pytest.raises(Interrupted):
            eng.copy(
                f"flaky://{tmp}/src.bin",
                str(dest),
                source_options={"fail_after": fail_after},
            )
        assert not dest.exists()  # nothing at the final path before it is verified
    result = eng.copy(f"flaky://{tmp}/src.bin", str(dest))
    assert dest.read_bytes() == data
    (file,) = result.files
    assert file.blake3 == blake3(data).hexdigest()
    assert file.chunks == chunks
    assert file.chunks_sent + file.chunks_reused == chunks
    if fail_after < chunks:
        # every chunk the first run verified was reused, not sent again
        assert file.chunks_reused >= min(fail_after, chunks) - 3 * 2
    assert not [p for p in dest.parent.iterdir() if p.name.endswith(".sclib-part")]


def _interrupted_copy(
    tmp_path: Path, executor: str, parallel: int = 3
) -> tuple[bytes, TransferEngine, MemorySessionStore]:
    """A 26-chunk copy whose source fails after 10 reads: the source's bytes, the
    engine and its sessions."""
    data = write(tmp_path / "src.bin", 100 * KIB + 17)
    sessions = MemorySessionStore()
    eng = engine(sessions, 4 * KIB, executor, parallel=parallel)
    with pytest.raises(Interrupted):
        eng.copy(
            f"flaky://{tmp_path}/src.bin",
            str(tmp_path / "dst.bin"),
            source_options={"fail_after": 10},
        )
    return data, eng, sessions


@pytest.mark.parametrize("executor", EXECUTORS)
def test_resume_reuses_every_recorded_chunk(tmp_path: Path, executor: str) -> None:
    """After an interruption, the chunks recorded as verified are not sent again."""
    data, eng, sessions = _interrupted_copy(tmp_path, executor, parallel=2)
    (session,) = sessions.list()
    recorded = len(session.chunks)
    assert 8 <= recorded <= 10
    result = eng.copy(f"flaky://{tmp_path}/src.bin", str(tmp_path / "dst.bin"))
    assert result.files[0].chunks_reused == recorded
    assert result.files[0].chunks_sent == 26 - recorded
    assert (tmp_path / "dst.bin").read_bytes() == data


def _interrupt_then_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str, second: str
) -> tuple[bytes, list[str], Any]:
    hashing_modes.use(first, monkeypatch)
    data, eng, sessions = _interrupted_copy(tmp_path, "serial")
    (session,) = sessions.list()
    digests = [c.digest for c in session.chunks.values()]
    if second == "absent":
        # the compiled module's absence, simulated: it is installed here
        from sclib.transfers import hashing

        monkeypatch.setattr(hashing, "_tree_module", lambda: None)
    else:
        hashing_modes.use(second, monkeypatch)
    result = eng.copy(f"flaky://{tmp_path}/src.bin", str(tmp_path / "dst.bin"))
    assert (tmp_path / "dst.bin").read_bytes() == data
    assert result.files[0].blake3 == blake3(data).hexdigest()
    return data, digests, result.files[0]


def test_chunks_recorded_in_order_mode_are_reused_by_tree_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transfer begun without one-pass hashing (plain chunk digests) and resumed
    with it reuses every recorded chunk and still gets b3sum's digest."""
    _, digests, file = _interrupt_then_resume(tmp_path, monkeypatch, "ordered", "tree")
    assert digests and not any(d.startswith("cv:") for d in digests)
    assert file.chunks_reused == 10


def test_tree_mode_records_are_reused_in_order_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chaining values recorded with one-pass hashing are checked and reused when
    the resuming run hashes in order but has the module to check them."""
    _, digests, file = _interrupt_then_resume(tmp_path, monkeypatch, "tree", "ordered")
    assert digests and all(d.startswith("cv:") for d in digests)
    assert file.chunks_reused == 10


def test_tree_records_are_sent_again_without_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that cannot check recorded chaining values sends those chunks
    again instead of trusting them or calling the source changed."""
    _, digests, file = _interrupt_then_resume(tmp_path, monkeypatch, "tree", "absent")
    assert all(d.startswith("cv:") for d in digests)
    assert file.chunks_reused == 0 and file.chunks_sent == 26


def test_changed_source_refuses_to_resume(tmp_path: Path) -> None:
    """A source that changed between runs is refused; restart=True starts over."""
    write(tmp_path / "src.bin", 50 * KIB)
    sessions = MemorySessionStore()
    eng = engine(sessions, 4 * KIB, "threads")
    with pytest.raises(Interrupted):
        eng.copy(
            f"flaky://{tmp_path}/src.bin",
            str(tmp_path / "dst.bin"),
            source_options={"fail_after": 5},
        )
    new = write(tmp_path / "src.bin", 50 * KIB + 1, seed=7)
    with pytest.raises(SourceChanged, match="restart=True"):
        eng.copy(f"flaky://{tmp_path}/src.bin", str(tmp_path / "dst.bin"))
    assert not (tmp_path / "dst.bin").exists()
    result = eng.copy(
        f"flaky://{tmp_path}/src.bin", str(tmp_path / "dst.bin"), restart=True
    )
    assert result.files[0].chunks_reused == 0
    assert (tmp_path / "dst.bin").read_bytes() == new
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".sclib-part")] == []


def test_source_changing_mid_transfer_fails_cleanly(tmp_path: Path) -> None:
    """A file rewritten during the copy raises SourceChanged; nothing is committed."""
    write(tmp_path / "src.bin", 400 * KIB)
    eng = engine(MemorySessionStore(), 4 * KIB, "serial")
    future = eng.submit(
        f"slow://{tmp_path}/src.bin",
        str(tmp_path / "dst.bin"),
        source_options={"delay": 0.01},
    )
    threading.Event().wait(0.1)
    write(tmp_path / "src.bin", 400 * KIB, seed=3)
    with pytest.raises(SourceChanged):
        future.result(timeout=30)
    assert not (tmp_path / "dst.bin").exists()


def test_transient_errors_are_retried(tmp_path: Path) -> None:
    """Each chunk failing twice with a retryable error still completes."""
    data = write(tmp_path / "src.bin", 40 * KIB + 3)
    eng = TransferEngine(
        sessions=MemorySessionStore(),
        config=TransferConfig(chunk_size=8 * KIB, max_attempts=3, retry_delay=0.0),
    )
    eng.copy(
        f"transient://{tmp_path}/src.bin",
        str(tmp_path / "dst.bin"),
        source_options={"errors": 2},
    )
    assert (tmp_path / "dst.bin").read_bytes() == data


def test_cancel_keeps_the_transfer_resumable(tmp_path: Path) -> None:
    """future.cancel() stops the copy; running it again finishes it."""
    data = write(tmp_path / "src.bin", 200 * KIB)
    sessions = MemorySessionStore()
    eng = engine(sessions, 4 * KIB, "threads", parallel=2)
    future = eng.submit(
        f"slow://{tmp_path}/src.bin",
        str(tmp_path / "dst.bin"),
        source_options={"delay": 0.02},
    )
    while future.progress.bytes_verified < 20 * KIB:
        threading.Event().wait(0.01)
    assert future.cancel() is True
    with pytest.raises(TransferCancelled):
        future.result(timeout=30)
    assert not (tmp_path / "dst.bin").exists()
    done_before = len(sessions.list()[0].chunks)
    assert done_before >= 5
    result = eng.copy(
        f"slow://{tmp_path}/src.bin",
        str(tmp_path / "dst.bin"),
        source_options={"delay": 0},
    )
    assert (tmp_path / "dst.bin").read_bytes() == data
    assert result.files[0].chunks_reused == done_before
    assert result.files[0].chunks_sent == 50 - done_before


def test_folder_copy_with_globs(tmp_path: Path) -> None:
    """A folder copy keeps relative paths and honours include/exclude."""
    for name in ("a.tif", "b.txt", "sub/c.tif", "sub/deeper/d.tif", "sub/e.log"):
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        write(tmp_path / "src" / name, 3000)
    eng = TransferEngine(config=TransferConfig(chunk_size=KIB))
    result = eng.copy(
        str(tmp_path / "src"),
        str(tmp_path / "dst"),
        include=["*.tif", "sub/*"],
        exclude=["*.log"],
    )
    keys = sorted(f.key for f in result.files)
    assert keys == ["a.tif", "sub/c.tif", "sub/deeper/d.tif"]
    for key in keys:
        assert (tmp_path / "dst" / key).read_bytes() == (
            tmp_path / "src" / key
        ).read_bytes()
    assert not (tmp_path / "dst" / "b.txt").exists()


def test_keys_that_escape_the_destination_are_refused(tmp_path: Path) -> None:
    """An object named '../x' by its source is refused; nothing is written."""
    write(tmp_path / "f.bin", 100)

    class Escaping:
        def __init__(self, **_: object) -> None:
            pass

        def walk(self, url: str):  # type: ignore[no-untyped-def]
            yield SourceObject(str(tmp_path / "f.bin"), "../escaped.bin", 100, {})

        def supports_ranges(self, obj: SourceObject) -> bool:
            return True

        def close(self) -> None:
            pass

    register("escaping", Escaping)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="leave the destination"):
        TransferEngine().copy("escaping://x", str(tmp_path / "dst") + "/")
    assert not (tmp_path / "escaped.bin").exists()


def test_single_file_into_existing_folder(tmp_path: Path) -> None:
    """Copying a file to an existing folder puts it inside, under its own name."""
    data = write(tmp_path / "scan.tif", 5000)
    (tmp_path / "dst").mkdir()
    result = TransferEngine().copy(str(tmp_path / "scan.tif"), str(tmp_path / "dst"))
    assert (tmp_path / "dst" / "scan.tif").read_bytes() == data
    assert result.files[0].dest_url == str(tmp_path / "dst" / "scan.tif")


def test_progress_counts_are_truthful(tmp_path: Path) -> None:
    """Read, durable and verified bytes all reach the size; subscribers hear it."""
    write(tmp_path / "src.bin", 64 * KIB + 1)
    seen = []

    class Sub:
        def on_progress(self, progress, **_):  # type: ignore[no-untyped-def]
            seen.append(progress)

    TransferEngine(config=TransferConfig(chunk_size=4 * KIB)).copy(
        str(tmp_path / "src.bin"), str(tmp_path / "dst.bin"), subscribers=[Sub()]
    )
    last = seen[-1]
    assert (
        last.bytes_total
        == last.bytes_read
        == last.bytes_durable
        == last.bytes_verified
        == 64 * KIB + 1
    )
    assert last.fraction == 1.0 and last.files_done == 1
    assert all(p.bytes_verified <= p.bytes_durable <= p.bytes_read for p in seen)


def test_bad_configuration_is_refused() -> None:
    """Nonsense knobs and chunk sizes fail up front with the reason."""
    with pytest.raises(InvalidInput, match="parallel"):
        TransferConfig(parallel=0)
    with pytest.raises(InvalidInput, match="power of two"):
        TransferEngine(config=TransferConfig(chunk_size=3000)).copy(
            __file__, "/tmp/never-written-sclib-test"
        )


def test_digest_equals_b3sum(tmp_path: Path) -> None:
    """The whole-file digest is exactly what the b3sum tool prints."""
    import shutil
    import subprocess

    b3sum = shutil.which("b3sum")
    if b3sum is None:
        pytest.skip(
            "b3sum is not installed (Debian package b3sum; .ci/run installs it)"
        )
    write(tmp_path / "src.bin", 3 * 1024 * KIB + 77)
    result = TransferEngine(config=TransferConfig(chunk_size=64 * KIB)).copy(
        str(tmp_path / "src.bin"), str(tmp_path / "dst.bin")
    )
    printed = subprocess.run(
        [b3sum, str(tmp_path / "dst.bin")], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert result.files[0].blake3 == printed


def test_rerun_skips_files_already_copied(tmp_path: Path) -> None:
    """Running a finished copy again sends nothing for files still at the
    destination; a deleted copy, a changed source or restart=True copies again."""
    (tmp_path / "src").mkdir()
    for n in range(3):
        write(tmp_path / "src" / f"f{n}.bin", 5 * KIB)
    sessions = MemorySessionStore()
    eng = engine(sessions, KIB, "threads")
    first = eng.copy(str(tmp_path / "src"), str(tmp_path / "dst"))
    assert sum(f.chunks_sent for f in first.files) == 15
    again = eng.copy(str(tmp_path / "src"), str(tmp_path / "dst"))
    assert [f.chunks_sent for f in again.files] == [0, 0, 0]
    assert [f.blake3 for f in again.files] == [f.blake3 for f in first.files]
    (tmp_path / "dst" / "f0.bin").unlink()
    write(tmp_path / "src" / "f1.bin", 5 * KIB)  # a new version
    third = eng.copy(str(tmp_path / "src"), str(tmp_path / "dst"))
    assert [f.chunks_sent for f in third.files] == [5, 5, 0]
    forced = eng.copy(str(tmp_path / "src"), str(tmp_path / "dst"), restart=True)
    assert [f.chunks_sent for f in forced.files] == [5, 5, 5]
