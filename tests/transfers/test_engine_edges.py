"""Edge cases of the engine: names, filters, folders in the way, leaks, retries."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from sclib.errors import InvalidInput, SourceChanged, SourceError, TransferCancelled
from sclib.transfers import MemorySessionStore, TransferConfig, TransferEngine
from sclib.transfers.local import LocalSource
from sclib.transfers.plan import KIB
from sclib.transfers.sources import SourceObject, register
from tests.transfers.engine_sources import Interrupted, _Wrapped, install

install()


class Anonymous(_Wrapped):
    """A front-to-back source that cannot name its version (no identity), like an
    HTTP server without ETag or Last-Modified; fails after ``fail_after`` reads."""

    def stat(self, url: str) -> SourceObject:
        obj = super().stat(url)
        return SourceObject(obj.url, obj.key, obj.size, {}, name=obj.name)

    def walk(self, url: str):  # type: ignore[no-untyped-def]
        yield self.stat(url)

    def supports_ranges(self, obj: SourceObject) -> bool:
        return False

    def before_read(self, offset: int) -> None:
        with self.lock:
            self.reads += 1
            if self.reads > int(self.options.get("fail_after", 10**9)):
                raise Interrupted("simulated interruption")

    def read_into(self, obj: SourceObject, offset: int, buf: memoryview) -> int:
        self.before_read(offset)
        with open(obj.url, "rb") as fh:  # no identity check: it has none
            fh.seek(offset)
            data = fh.read(len(buf))
        buf[: len(data)] = data
        return len(data)


class AlwaysFailing(_Wrapped):
    def before_read(self, offset: int) -> None:
        raise SourceError("network unreachable (simulated)")


register("anonymous", Anonymous)
register("failing", AlwaysFailing)


def test_sequential_source_changed_without_identity_is_refused(tmp_path: Path) -> None:
    """A resumed source with no version identity is compared byte for byte; a
    rewrite of the same size is refused instead of producing a mixed file."""
    (tmp_path / "f.bin").write_bytes(b"A" * 8 * KIB)
    engine = TransferEngine(
        sessions=MemorySessionStore(), config=TransferConfig(chunk_size=KIB)
    )
    with pytest.raises(Interrupted):
        engine.copy(
            f"anonymous://{tmp_path}/f.bin",
            str(tmp_path / "out.bin"),
            source_options={"fail_after": 4},
        )
    (tmp_path / "f.bin").write_bytes(b"B" * 8 * KIB)
    with pytest.raises(SourceChanged, match="not the version"):
        engine.copy(f"anonymous://{tmp_path}/f.bin", str(tmp_path / "out.bin"))
    assert not (tmp_path / "out.bin").exists()


def test_cancel_during_retry_backoff_is_prompt(tmp_path: Path) -> None:
    """Cancelling while a chunk waits out its backoff stops within a moment."""
    (tmp_path / "f.bin").write_bytes(os.urandom(4 * KIB))
    engine = TransferEngine(
        config=TransferConfig(chunk_size=KIB, max_attempts=10, retry_delay=2.0)
    )
    future = engine.submit(f"failing://{tmp_path}/f.bin", str(tmp_path / "o.bin"))
    time.sleep(0.3)
    started = time.monotonic()
    future.cancel()
    with pytest.raises(TransferCancelled):
        future.result(timeout=10)
    assert time.monotonic() - started < 1.5


def test_folder_in_the_way_fails_at_once(tmp_path: Path) -> None:
    """A folder where a file must go is refused before any byte is sent."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_bytes(b"data")
    (tmp_path / "dst" / "a").mkdir(parents=True)
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="is a folder"):
        TransferEngine().copy(str(tmp_path / "src"), str(tmp_path / "dst"))
    assert time.monotonic() - started < 1.0  # not retried
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["a"]


def test_failed_copies_do_not_leak_descriptors(tmp_path: Path) -> None:
    """Twenty interrupted copies leave no file descriptors open. The sessions
    are kept in memory: the default SQLite store's connections are per thread
    and pooled, and a worker thread the executor happens to start late would
    count as a leak that is not one."""
    (tmp_path / "f.bin").write_bytes(os.urandom(16 * KIB))
    fds = Path("/proc/self/fd")
    engine = TransferEngine(
        sessions=MemorySessionStore(), config=TransferConfig(chunk_size=KIB)
    )
    with pytest.raises(Interrupted):
        engine.copy(
            f"flaky://{tmp_path}/f.bin",
            str(tmp_path / "first.bin"),
            source_options={"fail_after": 3},
        )
    before = len(list(fds.iterdir()))
    for n in range(20):
        with pytest.raises(Interrupted):
            engine.copy(
                f"flaky://{tmp_path}/f.bin",
                str(tmp_path / f"o{n}.bin"),
                source_options={"fail_after": 3},
            )
    assert len(list(fds.iterdir())) <= before + 2


def test_single_file_names_and_filters(tmp_path: Path) -> None:
    """A symlink keeps its own name, %-escapes are decoded, and filters apply to a
    single file too."""
    (tmp_path / "run_0042.raw").write_bytes(b"frames")
    (tmp_path / "latest.raw").symlink_to(tmp_path / "run_0042.raw")
    (tmp_path / "out").mkdir()
    TransferEngine().copy(str(tmp_path / "latest.raw"), str(tmp_path / "out"))
    assert (tmp_path / "out" / "latest.raw").read_bytes() == b"frames"
    skipped = TransferEngine().copy(
        str(tmp_path / "run_0042.raw"), str(tmp_path / "out2") + "/", exclude=["*.raw"]
    )
    assert skipped.files == [] and not (tmp_path / "out2").exists()

    class Quoted(LocalSource):
        def stat(self, url: str) -> SourceObject:
            return super().stat(str(tmp_path / "run_0042.raw"))

        def walk(self, url: str):  # type: ignore[no-untyped-def]
            obj = self.stat(url)
            yield SourceObject("https://h/data%20set.zip", "", obj.size, obj.identity)

        def read_into(self, obj: SourceObject, offset: int, buf: memoryview) -> int:
            data = (tmp_path / "run_0042.raw").read_bytes()[offset : offset + len(buf)]
            buf[: len(data)] = data
            return len(data)

    register("quoted", Quoted)
    TransferEngine().copy("quoted://x", str(tmp_path / "out3") + "/")
    assert (tmp_path / "out3" / "data set.zip").read_bytes() == b"frames"


def test_resumed_progress_and_session_error(tmp_path: Path) -> None:
    """After a resume, durable counts reused bytes too, and the finished session
    no longer carries the earlier error."""
    (tmp_path / "f.bin").write_bytes(os.urandom(8 * KIB))
    sessions = MemorySessionStore()
    engine = TransferEngine(sessions=sessions, config=TransferConfig(chunk_size=KIB))
    with pytest.raises(Interrupted):
        engine.copy(
            f"flaky://{tmp_path}/f.bin",
            str(tmp_path / "o.bin"),
            source_options={"fail_after": 4},
        )
    seen = []

    class Sub:
        def on_progress(self, progress, **_):  # type: ignore[no-untyped-def]
            seen.append(progress)

    engine.copy(
        f"flaky://{tmp_path}/f.bin", str(tmp_path / "o.bin"), subscribers=[Sub()]
    )
    assert seen[-1].bytes_durable == seen[-1].bytes_verified == 8 * KIB
    assert seen[-1].bytes_reused > 0
    (session,) = sessions.list(status="completed")
    assert not session.error


def test_long_file_names_get_a_short_temp_name(tmp_path: Path) -> None:
    """A 250-character name still copies (its temp file name stays short)."""
    name = "x" * 250
    (tmp_path / name).write_bytes(b"long")
    (tmp_path / "out").mkdir()
    TransferEngine().copy(str(tmp_path / name), str(tmp_path / "out"))
    assert (tmp_path / "out" / name).read_bytes() == b"long"
    assert threading.active_count() < 20
