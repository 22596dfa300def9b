"""Upload throughput over loopback: sclib's Client against curl, tuspy and cp.

Run from the repository root (sclib with its server extra, and tuspy; curl on
``PATH``, e.g. ``apt-get install -y curl``)::

    python benchmarks/upload.py                 # full run: one 2 GiB file
    python benchmarks/upload.py --quick         # 256 MiB, fewer chunk sizes
    python benchmarks/upload.py --json          # one JSON object on stdout
    python benchmarks/upload.py --size 1GiB --repeat 5 --chunk-sizes 32,64
    python benchmarks/upload.py --quick --profile   # adds py-spy profiles (stderr)

It starts ONE ``sclib serve`` process on 127.0.0.1 (``--no-auth``, ``--workers
0``: no job runs, so nothing reads the stored file behind the next run's back),
with its data folder on the same filesystem as the source file, and measures in
one run, in MB/s (10^6 bytes/s):

1. sclib: ``Client.upload_file(path, chunked=True)`` with the client's default
   ``parallel`` (4) and the server's default chunk size (32 MiB), and again
   with each ``--chunk-sizes`` (default 16, 32, 64 MiB); timed until
   ``upload_file`` returns, when the server has received every BLAKE3-checked
   chunk, re-read the whole file to check the client's whole-file BLAKE3, and
   committed it to the dataset folder;
2. ``curl -F file=@PATH -F dataset_name=... -F sensor=OTHER .../api/upload/upload``
   (one streamed multipart request; the server hashes while it writes and
   commits at the end);
3. tuspy (``tusclient``) to ``/files/`` with 64 MiB PATCHes (the server
   completes the upload after the last one); reported as unavailable, with the
   error, if the tus endpoint does not work;
4. ``cp --reflink=never`` of the same file on the same filesystem, and ``cp``
   then ``sync FILE DIR``;
5. a diagnostic (only with ``--diagnose``): sclib with its default settings
   through ``Client(transport=...)``, a transport that hands each request body to
   httpcore as 1 MiB memoryview slices instead of one ``bytes`` (httpcore's sync
   write copies the unsent rest of a ``bytes`` body after every ``send``).

Every sclib run goes through a timing transport, so the report also shows the
chunk POSTs and the final ``complete`` request (the server's re-read and commit);
every run records the CPU seconds of the server and of the client. A last
section times the pieces of an sclib upload alone (``--no-phases`` skips it).

Fairness rules (as in ``transfer.py``): every contender runs ``--repeat`` times
(default 3), interleaved, the order rotated each round. Before each run the
server's data folder is emptied of the previous upload, ``gc.collect()`` runs,
``sync`` is called and the source is read once, so every run starts with the
source in the page cache, and a scratch file of the upload's size is written and
deleted, so every run writes into memory the VM holds (see
``_common.recycle_page_cache``). After each run the stored file's size and BLAKE3 are
checked (not timed) and it is deleted. The server process's peak RSS during each
run is read from ``VmHWM`` in ``/proc/<pid>/status`` (reset before the run
through ``/proc/<pid>/clear_refs``; polled ``VmRSS`` where that is not
possible); the benchmark process's own peak (where the sclib client runs)
likewise. Figures are medians; ratios compare medians from this same run;
nothing is asserted about absolute times. Progress goes to stderr, results to
stdout. Everything lives in one temporary folder that is removed at the end,
and the server is stopped.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from _common import (  # this folder: shared benchmark helpers
    GIB,
    MB,
    MIB,
    check_copy,
    empty_folder,
    filesystem_of,
    free_port,
    log,
    make_random_file,
    mem_available_gib,
    process_cpu_seconds,
    read_through,
    recycle_page_cache,
    sclib_source_state,
    serve_argv,
    started,
    stop,
    stop_all,
    summarize,
)
from _common import verdict as _verdict

import sclib
from sclib.client import Client
from sclib.settings import Settings
from sclib.transfers.hashing import tree_hashing

SERVER_DEFAULT_CHUNK = int(Settings.model_fields["chunk_size"].default)  # sclib's
TUS_CHUNK = 64 * MIB
SERVER_START_TIMEOUT = 60.0
RUN_TIMEOUT = 1800.0  # seconds one run may take before it is abandoned
RSS_POLL = 0.02  # seconds between VmRSS reads when VmHWM cannot be reset
FIELDS = {"dataset_name": "upload-bench", "sensor": "OTHER"}
DIAG = "sclib 1 MiB pieces"  # the diagnostic contender (see TimingTransport)
HASH_TWICE = "sclib two hash passes"  # the client with SCLIB_BLAKE3_TREE=0
TARGET_CURL = 1.5  # the sclib client against curl -F to the one-request route
# (sclib against cp is printed without a target: its old one, 0.6x, was retired
# as out of reach through HTTP; CPU per GiB is the data plane's measure)


def parse_size(text: str) -> int:
    """``2GiB``, ``256MiB``, ``1.5G`` (binary units), or a number of bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2GiB, 512MiB)")
    power = " kmgt".index(m.group(2).lower() or " ")
    size = int(float(m.group(1)) * 1024**power)
    if size <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return size


def human(size: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB)):
        if size >= scale and size % (scale // 4) == 0:
            return f"{size / scale:g} {unit}"
    return f"{size:,} bytes"


# -- files ---------------------------------------------------------------------------


# -- processes -----------------------------------------------------------------------


def run_tool(argv: list[str]) -> bytes:
    """Run an external program; its stdout, or an error with its stderr."""
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).decode(errors="replace").strip()[-800:]
        raise RuntimeError(f"{argv[0]} exited with {proc.returncode}: {tail}")
    return proc.stdout


def tool_version(path: str | None) -> str:
    if path is None:
        return "not found"
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, timeout=30, check=False
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return "version unknown"
    return out.splitlines()[0].strip() if out else "version unknown"


def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (curl, cp)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class PeakRss:
    """Peak resident memory of a process during a ``with`` block, in MiB.

    Resets the kernel's high-water mark (``echo 5 > /proc/PID/clear_refs``) and
    reads ``VmHWM`` at the end; where the reset is refused, polls ``VmRSS``.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mib: float | None = None
        self.start_mib: float | None = None
        self._reset = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._polled = 0

    def __enter__(self) -> PeakRss:
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            self._reset = True
        except OSError:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        rss = _status_kib(self.pid, "VmRSS")
        self.start_mib = None if rss is None else rss / 1024
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            rss = _status_kib(self.pid, "VmRSS")
            if rss is not None:
                self._polled = max(self._polled, rss)
            self._stop.wait(RSS_POLL)

    def __exit__(self, *exc: object) -> None:
        if self._reset:
            hwm = _status_kib(self.pid, "VmHWM")
            self.peak_mib = None if hwm is None else hwm / 1024
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_mib = self._polled / 1024 if self._polled else None

    @property
    def method(self) -> str:
        return "VmHWM after clear_refs" if self._reset else f"VmRSS every {RSS_POLL}s"


@contextlib.contextmanager
def sclib_server(
    tmp: Path, data_dir: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """``python -m sclib serve`` on 127.0.0.1; yields (url, process, log path)."""
    port = free_port()
    env = {
        **os.environ,
        "SCLIB_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp / "server.log"
    argv = serve_argv(port)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    started(proc)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"sclib serve exited with {proc.returncode}: "
                    + log_path.read_text(errors="replace")[-800:]
                )
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("sclib serve did not answer /health")
            time.sleep(0.1)
        yield url, proc, log_path
    finally:
        stop(proc)


# -- timing --------------------------------------------------------------------------


# -- the contenders ------------------------------------------------------------------

PIECE = 1024 * 1024  # the diagnostic transport sends request bodies in pieces this big


class _Pieces(httpx.SyncByteStream):
    """A request body handed to httpcore as memoryview slices of PIECE bytes."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __iter__(self) -> Iterator[bytes]:
        view = memoryview(self._data)
        for start in range(0, len(view), PIECE):
            yield view[start : start + PIECE]  # type: ignore[misc]


class TimingTransport(httpx.HTTPTransport):
    """httpx's own transport, timing each large-file request by kind (initiate,
    chunk, complete): the server answers a chunk or a completion only once it
    has processed it, so the time to the answer's headers is the whole request.

    With ``pieces=True`` (a diagnostic) a request body given as one ``bytes``
    goes to httpcore as 1 MiB memoryview slices instead: httpcore's sync
    ``SyncStream.write`` does ``buffer = buffer[n:]`` after every ``send``,
    which on ``bytes`` copies the rest of the body each time.
    """

    def __init__(self, *, pieces: bool = False) -> None:
        super().__init__()
        self.pieces = pieces
        self.seconds: dict[str, list[float]] = collections.defaultdict(list)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        kind = next(
            (k for k in ("chunk", "complete", "initiate") if f"/large/{k}" in path),
            "other",
        )
        if self.pieces and isinstance(request.stream, httpx.ByteStream):
            body = request.content
            if len(body) > PIECE:
                request.stream = _Pieces(body)
        start = time.perf_counter()
        try:
            return super().handle_request(request)
        finally:
            self.seconds[kind].append(time.perf_counter() - start)


class Bench:
    """One source file, one server, and the contenders that upload it."""

    def __init__(
        self,
        tmp: Path,
        url: str,
        server: subprocess.Popen[bytes],
        data_dir: Path,
        src: Path,
        digest: str,
    ) -> None:
        self.tmp = tmp
        self.url = url
        self.server = server
        self.data_dir = data_dir
        self.src = src
        self.size = src.stat().st_size
        self.digest = digest
        self.out = tmp / "cp-out"
        self.state_dir = tmp / "client-state"
        self.last_transport: TimingTransport | None = None
        self.curl = shutil.which("curl")
        self.cp = shutil.which("cp") or "/bin/cp"
        self.sync = shutil.which("sync") or "/bin/sync"

    # where the server puts a committed file: upload/<dataset_uuid>/<filename>
    def stored_file(self) -> Path:
        found = list((self.data_dir / "upload").glob(f"*/{self.src.name}"))
        if len(found) != 1:
            raise RuntimeError(
                f"expected one stored {self.src.name} in the data folder, "
                f"found {len(found)}"
            )
        return found[0]

    def clear(self) -> None:
        """Drop the previous run's files (server data folder, cp target), sync."""
        empty_folder(self.data_dir / "upload")
        empty_folder(self.data_dir / "tmp" / "uploads")
        shutil.rmtree(self.out, ignore_errors=True)
        self.out.mkdir(parents=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        os.sync()

    def sclib(
        self, chunk_size: int | None, *, pieces: bool = False, one_pass: bool = True
    ) -> Callable[[], None]:
        def run() -> None:
            transport = TimingTransport(pieces=pieces)
            self.last_transport = transport
            switch = os.environ.pop("SCLIB_BLAKE3_TREE", None)
            if not one_pass:  # the client hashes chunks, then the file in order
                os.environ["SCLIB_BLAKE3_TREE"] = "0"
            try:
                with Client(
                    self.url, state_dir=self.state_dir, transport=transport
                ) as client:
                    result = client.upload_file(
                        self.src,
                        chunk_size=chunk_size,
                        chunked=True,
                        dataset_name=FIELDS["dataset_name"],
                        sensor=FIELDS["sensor"],
                    )
            finally:
                os.environ.pop("SCLIB_BLAKE3_TREE", None)
                if switch is not None:
                    os.environ["SCLIB_BLAKE3_TREE"] = switch
            if result.file_blake3 != self.digest:
                raise RuntimeError(
                    f"sclib: the server reported BLAKE3 {result.file_blake3}"
                )

        return run

    def curl_run(self) -> None:
        assert self.curl is not None
        out = run_tool(
            [
                self.curl,
                "-sS",
                "--fail-with-body",
                "--noproxy",
                "*",
                "-F",
                f"file=@{self.src}",
                "-F",
                f"dataset_name={FIELDS['dataset_name']}",
                "-F",
                f"sensor={FIELDS['sensor']}",
                f"{self.url}/api/upload/upload",
            ]
        )
        answer = json.loads(out)
        if answer.get("file_blake3") != self.digest:
            raise RuntimeError(f"curl: the server answered {out[:300]!r}")

    def tus_run(self) -> None:
        from tusclient import client as tus

        uploader = tus.TusClient(f"{self.url}/files/").uploader(
            str(self.src),
            chunk_size=TUS_CHUNK,
            metadata={"filename": self.src.name, **FIELDS},
            retries=0,
        )
        uploader.upload()
        if uploader.offset != self.size:
            raise RuntimeError(f"tus: offset {uploader.offset} of {self.size}")

    def cp_run(self) -> None:
        run_tool([self.cp, "--reflink=never", str(self.src), str(self.out)])

    def cp_sync_run(self) -> None:
        run_tool([self.cp, "--reflink=never", str(self.src), str(self.out)])
        run_tool([self.sync, str(self.out / self.src.name), str(self.out)])

    def check(self, who: str) -> None:
        """The run's copy is complete and equal to the source (not timed)."""
        if who.startswith("cp"):
            check_copy(self.out / self.src.name, self.size, self.digest, who)
        else:
            check_copy(self.stored_file(), self.size, self.digest, who)


def tus_probe(bench: Bench) -> str | None:
    """None if tus uploads a small file end to end, else why not."""
    probe = bench.tmp / "tus-probe.bin"
    probe.write_bytes(os.urandom(256 * 1024))
    try:
        from tusclient import client as tus

        uploader = tus.TusClient(f"{bench.url}/files/").uploader(
            str(probe),
            chunk_size=64 * 1024,
            metadata={"filename": probe.name, **FIELDS},
            retries=0,
        )
        uploader.upload()
        if uploader.offset != probe.stat().st_size:
            return f"offset {uploader.offset} after the upload"
        found = list((bench.data_dir / "upload").glob(f"*/{probe.name}"))
        if len(found) != 1 or found[0].read_bytes() != probe.read_bytes():
            return "the server did not commit the uploaded file"
    except ImportError as exc:
        return f"tuspy is not installed ({exc}); pip install tuspy"
    except Exception as exc:
        detail = getattr(exc, "response_content", None)
        text = f"{type(exc).__name__}: {exc}"
        if detail:
            text += f" ({detail[:300]!r})"
        return text
    finally:
        probe.unlink()
        empty_folder(bench.data_dir / "upload")
        empty_folder(bench.data_dir / "tmp" / "uploads")
    return None


def run_all(
    bench: Bench,
    contenders: list[tuple[str, Callable[[], None]]],
    repeat: int,
    notes: list[str],
) -> tuple[dict[str, list[float]], dict[str, list[dict[str, Any]]]]:
    """Each contender ``repeat`` times, the order rotated every round; times and
    memory per run. A failing tus run drops tus (with a note); any other failure
    ends the benchmark."""
    times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    memory: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in contenders}
    for r in range(repeat):
        shift = r % len(contenders)
        for name, fn in contenders[shift:] + contenders[:shift]:
            if name not in times:
                continue
            bench.clear()
            read_through(bench.src)  # every contender starts with the source cached
            # ... and writes into memory the VM holds (see recycle_page_cache)
            recycle_page_cache(bench.tmp, bench.size)
            log(f"    round {r + 1}/{repeat}: {name} ...")
            bench.last_transport = None
            # the previous sclib run's request bodies may still sit in reference
            # cycles (httpx responses); free them so each peak is the run's own
            gc.collect()
            with PeakRss(bench.server.pid) as srv, PeakRss(os.getpid()) as me:
                server_cpu = process_cpu_seconds(bench.server.pid)
                client_cpu = own_cpu_seconds()
                start = time.perf_counter()
                try:
                    fn()
                except Exception as exc:
                    if name != "tus":
                        raise
                    notes.append(f"tus dropped after a run failed: {exc}")
                    log(f"      failed, dropped: {exc}")
                    del times[name]
                    continue
                took = time.perf_counter() - start
                client_cpu = own_cpu_seconds() - client_cpu
                server_cpu = process_cpu_seconds(bench.server.pid) - server_cpu
            times[name].append(took)
            run: dict[str, Any] = {
                "server_start_mib": srv.start_mib,
                "server_peak_mib": srv.peak_mib,
                "client_peak_mib": me.peak_mib if name.startswith("sclib") else None,
                "method": srv.method,
                "server_cpu_s": server_cpu,
                "client_cpu_s": client_cpu,
            }
            if bench.last_transport is not None:
                req = bench.last_transport.seconds
                run["chunk_requests"] = len(req.get("chunk", []))
                run["chunk_request_s"] = statistics.median(req.get("chunk", [0.0]))
                run["complete_s"] = sum(req.get("complete", [0.0]))
            memory[name].append(run)
            log(
                f"      {took:.2f} s, {bench.size / took / MB:,.0f} MB/s, server peak "
                f"RSS {srv.peak_mib or 0:,.0f} MiB, CPU s server {server_cpu:.2f} "
                f"client {client_cpu:.2f}"
                + (
                    f", complete {run['complete_s']:.2f} s"
                    if "complete_s" in run
                    else ""
                )
            )
            bench.check(name)
    bench.clear()
    return times, {k: v for k, v in memory.items() if k in times}


# -- phases: what the pieces of an sclib upload cost on their own ----------------------

# where the client's step functions live (they moved once; private, so looked up)
CLIENT_MODULES = ("sclib.client._steps", "sclib.client._base")


def _sclib_function(name: str, *modules: str) -> Callable[..., Any] | None:
    """``name`` from the first of ``modules`` that has it, or None."""
    import importlib

    for module in modules:
        try:
            fn = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if callable(fn):
            return fn  # type: ignore[no-any-return]
    return None


def bench_phases(bench: Bench, chunk: int) -> dict[str, Any]:
    """Seconds (and MB/s) of each piece of work an sclib upload does, alone,
    on the cached source: the client's whole-file BLAKE3 pass, its chunk reads
    (pread + BLAKE3 per chunk), the server's re-read at completion, and the
    ``fdatasync`` of freshly written chunks (what ``StagedWrite.durable`` pays).
    """
    from sclib.transfers.plan import ChunkPlan

    out: dict[str, Any] = {"chunk_size": chunk}
    size = bench.size
    read_through(bench.src)

    hash_file = _sclib_function("hash_file", *CLIENT_MODULES)
    out["client_whole_file_blake3_s"] = None
    if hash_file is not None:
        start = time.perf_counter()
        hash_file(str(bench.src), size, lambda: False)
        out["client_whole_file_blake3_s"] = time.perf_counter() - start

    read_chunk = _sclib_function("read_chunk", *CLIENT_MODULES)
    out["client_read_chunks_s"] = None
    if read_chunk is not None:
        plan = ChunkPlan(size, chunk)
        start = time.perf_counter()
        for i in range(plan.count):
            read_chunk(str(bench.src), plan.chunk(i))
        out["client_read_chunks_s"] = time.perf_counter() - start

    rehash = _sclib_function("hash_file", "sclib.transfers.staging") or _sclib_function(
        "_hash_file", "sclib.server.uploads"
    )
    out["server_rehash_s"] = None
    if rehash is not None:
        start = time.perf_counter()
        rehash(bench.src, {"blake3"})
        out["server_rehash_s"] = time.perf_counter() - start

    # write the file in chunk-sized pieces with pwrite (as StagedWrite does, in
    # 8 MiB batches), then fdatasync each piece: how long the syncs take alone
    target = bench.tmp / "phase-write.bin"
    bench.clear()
    buf = bytearray(8 * MIB)
    view = memoryview(buf)
    write_s = sync_s = 0.0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.ftruncate(fd, size)
        with open(bench.src, "rb", buffering=0) as f:
            pos = 0
            while True:
                t0 = time.perf_counter()
                end = min(size, pos + chunk)
                while pos < end:
                    n = f.readinto(view[: min(len(buf), end - pos)])
                    os.pwrite(fd, view[:n], pos)
                    pos += n
                t1 = time.perf_counter()
                os.fdatasync(fd)
                t2 = time.perf_counter()
                write_s += t1 - t0
                sync_s += t2 - t1
                if pos >= size:
                    break
    finally:
        os.close(fd)
        target.unlink()
        os.sync()
    out["server_pwrite_s"] = write_s
    out["server_fdatasync_s"] = sync_s
    for key in list(out):
        if key.endswith("_s") and out[key] is not None:
            out[key.removesuffix("_s") + "_mb_per_s"] = size / out[key] / MB
    return out


# -- py-spy: where the server's and the client's time goes ----------------------------


def _collapse(raw: Path, top: int) -> dict[str, Any]:
    """py-spy ``--format raw`` (collapsed stacks) into self and total counts."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        threads[frames[0]] += count
        names = [re.sub(r"\s+\(([^)]*/)?", " (", f) for f in frames[1:]]
        if names:
            own[names[-1]] += count
        for name in set(names):
            total[name] += count
    return {
        "samples": samples,
        "threads": threads.most_common(8),
        "self": own.most_common(top),
        "total": total.most_common(top),
    }


def profile_upload(bench: Bench, chunk: int | None, rate: int = 200) -> dict[str, Any]:
    """One extra sclib upload with py-spy sampling the server and this process."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"error": "py-spy not found (pip install py-spy)"}
    bench.clear()
    read_through(bench.src)
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    for who, pid in (("server", bench.server.pid), ("client", os.getpid())):
        raw = bench.tmp / f"py-spy-{who}.txt"
        argv = [spy, "record", "--pid", str(pid), "--format", "raw"]
        argv += ["--rate", str(rate), "--threads", "--output", str(raw)]
        if who == "server":
            argv.append("--idle")  # the event loop waiting on the socket shows up
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started(proc)
        procs.append((who, proc, raw))
    time.sleep(1.0)  # py-spy attaches
    start = time.perf_counter()
    bench.sclib(chunk)()
    took = time.perf_counter() - start
    out: dict[str, Any] = {"seconds": took, "chunk_size": chunk}
    for who, proc, raw in procs:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if raw.exists():
            out[who] = _collapse(raw, 15)
        else:
            out[who] = {"error": err.decode(errors="replace")[-500:]}
    bench.clear()
    return out


def print_profile(prof: dict[str, Any]) -> None:
    if "error" in prof:
        log(f"py-spy: {prof['error']}")
        return
    chunk = prof["chunk_size"]
    log(
        f"py-spy during one sclib upload ({prof['seconds']:.2f} s, chunk size "
        f"{human(chunk) if chunk else 'server default'}); samples per thread, and "
        "the frames seen most often (self = innermost frame):"
    )
    for who in ("server", "client"):
        p = prof[who]
        if "error" in p:
            log(f"  {who}: py-spy failed: {p['error']}")
            continue
        log(f"  {who}: {p['samples']} samples")
        for name, count in p["threads"]:
            log(f"    thread {name}: {count}")
        log("    self:")
        for name, count in p["self"]:
            log(f"      {count:6d}  {name}")
        log("    total (frame anywhere on the stack):")
        for name, count in p["total"]:
            log(f"      {count:6d}  {name}")


# -- output --------------------------------------------------------------------------


def _row(label: str, c: dict[str, Any], extra: str = "") -> str:
    mem = ""
    if c.get("server_peak_mib") is not None:
        mem = f"  server RSS {c['server_peak_mib']:,.0f} MiB"
    if c.get("client_peak_mib") is not None:
        mem += f", client {c['client_peak_mib']:,.0f} MiB"
    return (
        f"   {label:<32} {c['mb_per_s']:7,.0f} MB/s  (best {c['best_mb_per_s']:,.0f},"
        f" worst {c['worst_mb_per_s']:,.0f}; {c['median_seconds']:.2f} s)" + mem + extra
    )


def print_report(result: dict[str, Any]) -> None:
    s = result["settings"]
    fs = s["filesystem"]
    print(
        f"sclib {s['sclib_version']} ({s['sclib_source']}) | Python {s['python']}"
        + ("  [--quick]" if s["quick"] else "")
    )
    print(
        f"{s['cpus']} CPU(s), load average {s['load_average'][0]:.2f} at start and "
        f"{s['load_average_end'][0]:.2f} at end, "
        f"{s['mem_available_gib'] or 0:.1f} GiB memory available at start"
    )
    print(
        f"source and server data folder in {s['tmp']} on {fs['device']} "
        f"({fs['type']}, mounted at {fs['mount_point']})"
    )
    print(f"server: {s['server']}")
    print(f"curl: {s['curl']} | tuspy: {s['tuspy']}")
    print(
        f"each contender ran {s['repeat']} time(s), interleaved; figures are medians "
        "in MB/s (10^6 bytes/s); RSS = peak during the run (median of runs)"
    )
    print(
        "before every run: the previous upload deleted, `sync`, the source read "
        "once (cached), and a scratch file of its size written and deleted (so the "
        "run writes into memory the VM holds); after it, the stored file's BLAKE3 "
        "checked (not timed)"
    )
    print()
    up = result["upload"]
    c = up["contenders"]
    print(f"one {human(up['bytes'])} file of random bytes over 127.0.0.1:")
    default = f"sclib default ({human(SERVER_DEFAULT_CHUNK)})"
    print(_row(default, c["sclib"], "  verified"))
    for name in up["sclib_chunk_sizes"]:
        print(_row(name, c[name], "  verified"))
    if HASH_TWICE in c:
        print(_row(HASH_TWICE, c[HASH_TWICE], "  verified, SCLIB_BLAKE3_TREE=0"))
    if DIAG in c:
        print(_row(f"{DIAG} (diagnostic)", c[DIAG], "  verified"))
    if "curl" in c:
        print(_row("curl -F (one request)", c["curl"]))
    else:
        print(f"   curl: unavailable ({up['curl_error']})")
    if "tus" in c:
        print(_row(f"tuspy ({human(TUS_CHUNK)} PATCHes)", c["tus"]))
    else:
        print(f"   tus: unavailable ({up['tus_error']})")
    print(_row("cp --reflink=never", c["cp"], "  no fsync"))
    print(_row("cp && sync FILE DIR", c["cp+sync"], "  fsync"))
    r = up["ratios"]
    best = up["sclib_best"]
    if "sclib/curl" in r:
        print(
            f"   sclib/curl      {r['sclib/curl']:5.2f}x  (target >= {TARGET_CURL:g}: "
            f"{_verdict(r['sclib/curl'], TARGET_CURL)}); best chunk size ({best}): "
            f"{r['sclib_best/curl']:.2f}x"
        )
    print(
        f"   sclib/cp        {r['sclib/cp']:5.2f}x  (no target); best chunk size: "
        f"{r['sclib_best/cp']:.2f}x"
    )
    print(f"   sclib/cp+sync   {r['sclib/cp+sync']:5.2f}x")
    if "tus/curl" in r:
        print(f"   tuspy/curl      {r['tus/curl']:5.2f}x")
    if "curl/cp" in r:
        print(
            f"   curl/cp         {r['curl/cp']:5.2f}x  (one plain HTTP stream "
            "against cp)"
        )
    if "sclib/two_pass" in r:
        print(f"   one pass/two    {r['sclib/two_pass']:5.2f}x  (the same client)")
    if "sclib_pieces/sclib" in r:
        print(
            f"   diagnostic: 1 MiB pieces/sclib {r['sclib_pieces/sclib']:5.2f}x"
            + (
                f", 1 MiB pieces/curl {r['sclib_pieces/curl']:5.2f}x"
                if "sclib_pieces/curl" in r
                else ""
            )
        )
    print(
        "   sclib: each chunk read into a reused buffer and hashed by the client (its "
        "BLAKE3 chaining value, merged into"
    )
    print(
        "   the file's BLAKE3; two passes: its BLAKE3, then the file's in order), "
        "sent with its digest, hashed and written by the server"
    )
    print(
        "   and recorded; at completion the server checks the client's BLAKE3 "
        "(merged from the chunk records when they are"
    )
    print(
        "   chaining values written since boot, else by re-reading the whole file), "
        "flushes the file once and links it into the dataset"
    )
    print(
        "   curl/tus: the server BLAKE3-hashes while writing (tus: and re-reads the "
        "file at completion); cp: no hashing, no fsync"
    )
    print()
    print(
        "CPU seconds per run (median; the machine has "
        f"{s['cpus']} cores shared by client and server) and, for sclib, the "
        "requests as the client saw them:"
    )
    for name, cc in c.items():
        if cc.get("server_cpu_s") is None:
            continue
        line = (
            f"   {name:<28} server {cc['server_cpu_s']:5.2f}  client "
            f"{cc['client_cpu_s']:5.2f}  total "
            f"{cc['server_cpu_s'] + cc['client_cpu_s']:5.2f}"
        )
        if cc.get("chunk_requests"):
            line += (
                f"  | {cc['chunk_requests']:.0f} chunk POSTs, median "
                f"{cc['chunk_request_s']:.2f} s; complete {cc['complete_s']:.2f} s "
                f"({cc['complete_s'] / cc['median_seconds']:.0%} of the upload)"
            )
        print(line)
    ph = result.get("phases")
    if ph:
        print()
        print(
            f"pieces of an sclib upload alone, on the cached {human(up['bytes'])} "
            f"source ({human(ph['chunk_size'])} chunks), seconds (MB/s):"
        )
        for key, label in (
            ("client_whole_file_blake3", "client: whole-file BLAKE3 (hash_file)"),
            ("client_read_chunks", "client: read_chunk (pread + BLAKE3) x all"),
            ("server_rehash", "server: re-read + BLAKE3 at completion"),
            ("server_pwrite", "server: pwrite 8 MiB batches (no hash)"),
            ("server_fdatasync", "server: fdatasync after each chunk"),
        ):
            if ph.get(key + "_s") is not None:
                print(
                    f"   {label:<44} {ph[key + '_s']:6.2f} s "
                    f"({ph[key + '_mb_per_s']:,.0f} MB/s)"
                )
    for note in result["notes"]:
        print(f"note: {note}")


def _median_mem(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


class _SkipMain(Exception):
    """--plane-only: the main section does not run."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="256 MiB, one run each, chunk sizes 32,64 MiB only",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout and nothing else",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help="file size, e.g. 2GiB, 512MiB (default 2GiB; 256MiB with --quick)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per contender (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--chunk-sizes",
        default=None,
        help="extra sclib chunk sizes in MiB, comma-separated (default 16,32,64; "
        "32,64 with --quick; '' for the server default only)",
    )
    parser.add_argument("--skip-tus", action="store_true", help="no tuspy runs")
    parser.add_argument(
        "--no-plane",
        action="store_true",
        help="skip the data-plane section (one body fed by curl to sclib tus, "
        "sclib tus through ASGI, @tus/server, a bare ASGI app, a raw socket sink)",
    )
    parser.add_argument(
        "--plane-only",
        action="store_true",
        help="only the data-plane section",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="data plane: before each run, wait for the memory freed before to go "
        "back to the host instead of reusing it (what SCLIB_DIRECT_IO saves)",
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="also run the diagnostic sclib contender whose request bodies go to "
        "httpcore as 1 MiB memoryviews through its transport (the client has "
        "done this itself since the fix it measured; kept to show there is no "
        "difference left)",
    )
    parser.add_argument(
        "--no-phases",
        action="store_true",
        help="skip timing the pieces of an sclib upload on their own",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run one sclib upload under py-spy (server and client) and print "
        "the busiest frames to stderr",
    )
    parser.add_argument(
        "--tmp-dir",
        default=None,
        help="where the temporary folder (source file and server data) goes "
        "(default: the system's, /tmp)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    size = args.size or (256 * MIB if quick else 2 * GIB)
    repeat = max(1, args.repeat or (1 if quick else 3))
    sizes_text = args.chunk_sizes
    if sizes_text is None:
        sizes_text = "32,64" if quick else "16,32,64"
    chunk_sizes = [int(float(x) * MIB) for x in sizes_text.split(",") if x.strip()]
    notes: list[str] = []
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

    tmp = Path(tempfile.mkdtemp(prefix="sclib-bench-upload-", dir=args.tmp_dir))
    need = size * 3  # source, one stored copy, and staging/cp copy at once
    free = shutil.disk_usage(tmp).free
    if free < need + GIB:
        shutil.rmtree(tmp, ignore_errors=True)
        log(
            f"not enough free space in {tmp.parent}: {free / GIB:.1f} GiB free, "
            f"{(need + GIB) / GIB:.1f} GiB needed; try a smaller --size"
        )
        return 2
    curl = shutil.which("curl")
    try:
        import tusclient

        tuspy_text = f"tuspy {getattr(tusclient, '__version__', '')}".strip()
        try:
            from importlib.metadata import version

            tuspy_text = f"tuspy {version('tuspy')}"
        except Exception:  # noqa: S110 - the version is cosmetic
            pass
    except ImportError:
        tuspy_text = "not installed (pip install tuspy)"
    result: dict[str, Any] = {
        "settings": {
            "sclib_version": sclib.__version__,
            "sclib_source": sclib_source_state(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()),
            "mem_available_gib": mem_available_gib(),
            "quick": quick,
            "repeat": repeat,
            "bytes": size,
            "tmp": str(tmp),
            "filesystem": filesystem_of(str(tmp)),
            "server": "python -m sclib serve --workers 0 --no-auth (uvicorn, 1 "
            "process) on 127.0.0.1",
            "curl": tool_version(curl) if curl else "not on PATH",
            "tuspy": tuspy_text,
            "client_parallel_default": Client("http://127.0.0.1").parallel,
            "sclib_chunk_sizes": chunk_sizes,
        },
        "notes": notes,
    }
    data_dir = tmp / "server-data"
    src = tmp / "source.bin"
    try:
        log(f"writing {human(size)} of random bytes ...")
        digest = make_random_file(src, size)
        if not args.no_plane:
            from _plane import run_plane

            log(f"data plane: {human(size)} bodies, {repeat} round(s) ...")
            result["plane"] = run_plane(
                tmp, src, digest, repeat, PeakRss, cold=args.cold
            )
        with contextlib.ExitStack() as main_section:
            if args.plane_only:
                raise _SkipMain
            url, proc, _log_path = main_section.enter_context(
                sclib_server(tmp, data_dir)
            )
            log(f"sclib serve on {url} (pid {proc.pid}), data in {data_dir}")
            bench = Bench(tmp, url, proc, data_dir, src, digest)
            contenders: list[tuple[str, Callable[[], None]]] = [
                ("sclib", bench.sclib(None))
            ]
            named = []
            for cs in chunk_sizes:
                if cs == SERVER_DEFAULT_CHUNK:
                    continue
                name = f"sclib {human(cs)}"
                named.append(name)
                contenders.append((name, bench.sclib(cs)))
            up: dict[str, Any] = {"bytes": size, "sclib_chunk_sizes": named}
            if tree_hashing():  # the same client hashing every byte twice
                contenders.append((HASH_TWICE, bench.sclib(None, one_pass=False)))
            if args.diagnose:
                contenders.append((DIAG, bench.sclib(None, pieces=True)))
            if curl is not None:
                contenders.append(("curl", bench.curl_run))
            else:
                up["curl_error"] = "curl is not on PATH (apt-get install -y curl)"
                notes.append(f"no curl baseline: {up['curl_error']}")
                log(up["curl_error"])
            if args.skip_tus:
                up["tus_error"] = "skipped (--skip-tus)"
            else:
                why = tus_probe(bench)
                if why is None:
                    contenders.append(("tus", bench.tus_run))
                else:
                    up["tus_error"] = why
                    log(f"tus: unavailable ({why})")
            contenders += [("cp", bench.cp_run), ("cp+sync", bench.cp_sync_run)]
            log(f"uploading {human(size)}, {repeat} round(s) ...")
            times, memory = run_all(bench, contenders, repeat, notes)
            if "tus" not in times and "tus_error" not in up:
                up["tus_error"] = "a run failed (see notes)"
            c = {name: summarize(t, size) for name, t in times.items()}
            for name in c:
                for key in (
                    "server_start_mib",
                    "server_peak_mib",
                    "client_peak_mib",
                    "server_cpu_s",
                    "client_cpu_s",
                    "chunk_requests",
                    "chunk_request_s",
                    "complete_s",
                ):
                    c[name][key] = _median_mem(memory[name], key)
                c[name]["rss_method"] = memory[name][0]["method"]
            up["contenders"] = c
            best = max(["sclib", *named], key=lambda n: c[n]["mb_per_s"])
            up["sclib_best"] = best
            ratios: dict[str, float] = {}
            sc, sb = c["sclib"]["mb_per_s"], c[best]["mb_per_s"]
            if "curl" in c:
                ratios["sclib/curl"] = sc / c["curl"]["mb_per_s"]
                ratios["sclib_best/curl"] = sb / c["curl"]["mb_per_s"]
                ratios["curl/cp"] = c["curl"]["mb_per_s"] / c["cp"]["mb_per_s"]
            ratios["sclib/cp"] = sc / c["cp"]["mb_per_s"]
            ratios["sclib_best/cp"] = sb / c["cp"]["mb_per_s"]
            ratios["sclib/cp+sync"] = sc / c["cp+sync"]["mb_per_s"]
            if "tus" in c and "curl" in c:
                ratios["tus/curl"] = c["tus"]["mb_per_s"] / c["curl"]["mb_per_s"]
            if HASH_TWICE in c:
                ratios["sclib/two_pass"] = sc / c[HASH_TWICE]["mb_per_s"]
            if DIAG in c:
                ratios["sclib_pieces/sclib"] = c[DIAG]["mb_per_s"] / sc
                if "curl" in c:
                    ratios["sclib_pieces/curl"] = (
                        c[DIAG]["mb_per_s"] / c["curl"]["mb_per_s"]
                    )
            up["ratios"] = ratios
            result["upload"] = up
            if not args.no_phases:
                log("timing the pieces of an sclib upload alone ...")
                result["phases"] = bench_phases(bench, SERVER_DEFAULT_CHUNK)
            if args.profile:
                log("one more sclib upload under py-spy ...")
                prof = profile_upload(bench, None)
                result["profile"] = prof
                print_profile(prof)
    except _SkipMain:
        pass
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    result["settings"]["load_average_end"] = list(os.getloadavg())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        if "upload" in result:
            print_report(result)
        else:
            st = result["settings"]
            print(
                f"sclib {st['sclib_version']} ({st['sclib_source']}) | Python "
                f"{st['python']} | {st['cpus']} CPU(s), load average "
                f"{st['load_average'][0]:.2f} at start, "
                f"{st['load_average_end'][0]:.2f} at end | {st['curl']}"
            )
        if "plane" in result:
            from _plane import print_plane

            print_plane(result["plane"], _verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
