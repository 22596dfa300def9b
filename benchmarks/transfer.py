"""Transfer throughput: sclib's TransferEngine against cp and rclone, and hashing.

Run from the repository root (sclib with its s3 extra, moto[server] and boto3
installed; rclone optional, e.g. ``apt-get install -y rclone``)::

    python benchmarks/transfer.py              # full run: 2 GiB local, 1 GiB S3
    python benchmarks/transfer.py --quick      # 256 MiB local, 128 MiB S3
    python benchmarks/transfer.py --json       # one JSON object on stdout
    python benchmarks/transfer.py --skip-s3 --skip-rclone --size-gib 1

It measures, in one run:

1. local -> local: one file of random bytes copied on the same filesystem by
   ``TransferEngine(config=TransferConfig(parallel=4))`` (default chunk size,
   BLAKE3-verified, fsync at commit), by ``cp``, by ``cp && sync FILE DIR`` and by
   ``rclone copy``;
2. S3 -> local: one object served by a moto server on 127.0.0.1 (started here, in
   a child process), copied by sclib and by ``rclone copy``;
3. hashing: BLAKE3 (all cores, and one thread) against SHA-256 on one in-memory
   buffer.

Every contender runs the same number of times, interleaved, with the destination
removed and ``sync`` called before each run, the source read once right before
it (so every run starts with the source in the page cache), and a scratch file of
the copy's size written and deleted last (so every run writes into memory the VM
holds; see ``_common.recycle_page_cache``). Figures are medians;
ratios compare medians from this same run. Progress goes to stderr, results to
stdout. Every file lives in a temporary folder that is removed at the end, and the
moto server is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import io
import json
import os
import platform
import pstats
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import blake3
from _common import (  # this folder: shared benchmark helpers
    GIB,
    MB,
    MIB,
    check_copy,
    filesystem_of,
    free_port,
    log,
    make_random_file,
    mem_available_gib,
    read_through,
    recycle_page_cache,
    sclib_source_state,
    started,
    stop,
    stop_all,
    summarize,
)
from _common import verdict as _verdict

import sclib
from sclib.transfers import TransferConfig, TransferEngine
from sclib.transfers.hashing import tree_hashing

PARALLEL = 4
BUCKET = "sclib-bench"
# dummy credentials for the local moto server (never real ones)
S3_KEY = "bench-key-id"
S3_SECRET = "bench-secret-key"  # noqa: S105 - a dummy for a local test server
S3_REGION = "us-east-1"
SERVER_START_TIMEOUT = 60.0
RUN_TIMEOUT = 1800.0  # seconds one external copy may take before it is abandoned


# -- files ---------------------------------------------------------------------------


def clear(folder: Path) -> None:
    """Empty ``folder`` (the previous run's copy) and flush dirty pages to disk."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.sync()


# -- processes -----------------------------------------------------------------------


def run_tool(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run an external copy; raise with its stderr if it fails."""
    proc = subprocess.run(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip()[-800:]
        raise RuntimeError(f"{argv[0]} exited with {proc.returncode}: {tail}")


def rclone_info() -> tuple[str | None, str]:
    """rclone's path and version, or (None, why it cannot be used)."""
    path = shutil.which("rclone")
    if path is None:
        return None, "rclone is not on PATH (Debian/Ubuntu: apt-get install -y rclone)"
    try:
        out = subprocess.run(
            [path, "version"], capture_output=True, timeout=30, check=True
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"`rclone version` failed: {exc}"
    return path, out.splitlines()[0].strip() if out else "rclone (version unknown)"


def peak_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@contextlib.contextmanager
def local_s3_env() -> Iterator[None]:
    """What botocore needs for a plain-HTTP server on 127.0.0.1; restored after."""
    saved = dict(os.environ)
    for name in ("AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(name, None)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    no_proxy = ",".join(
        p for p in (os.environ.get("NO_PROXY"), "127.0.0.1,localhost") if p
    )
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = no_proxy
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def moto_server(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """moto's S3 in server mode, in a child process; yields (endpoint, proc, log).

    A child process, not a thread here, so the server does not share this
    process's GIL with sclib's engine (rclone gets the same server). moto keeps
    each object in a SpooledTemporaryFile: past 5 MiB it goes to an unnamed file
    in TMPDIR, which is set to the benchmark's temp folder.
    """
    port = free_port()
    spool = tmp / "moto-tmp"
    spool.mkdir()
    env = dict(os.environ, TMPDIR=str(spool), PYTHONUNBUFFERED="1")
    env.pop("AWS_CA_BUNDLE", None)
    log_path = tmp / "moto.log"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    started(proc)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"moto server exited with {proc.returncode}: "
                    + log_path.read_text(errors="replace")[-800:]
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", proc, log_path
    finally:
        stop(proc)


# -- timing --------------------------------------------------------------------------


def interleaved(
    contenders: list[tuple[str, Callable[[], None]]],
    repeat: int,
    before: Callable[[], None],
    after: Callable[[str], None],
    notes: list[str],
    warmup: int = 0,
) -> dict[str, list[float]]:
    """Run each contender ``repeat`` times, rotating the order every round, after
    ``warmup`` untimed rounds (whichever run came first after the test file was
    written was often 2-3x slower, whatever the tool: that measures the machine).

    An external baseline (rclone) that fails is dropped, with a note; a failure of
    sclib or cp ends the benchmark.
    """
    times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for r in range(-warmup, repeat):
        shift = r % len(contenders)
        for name, fn in contenders[shift:] + contenders[:shift]:
            if name not in times:
                continue
            before()
            label = (
                f"warm-up {r + warmup + 1}/{warmup}"
                if r < 0
                else f"round {r + 1}/{repeat}"
            )
            log(f"    {label}: {name} ...")
            start = time.perf_counter()
            try:
                fn()
            except RuntimeError as exc:
                if name != "rclone":
                    raise
                notes.append(f"rclone baseline dropped after it failed: {exc}")
                log(f"      failed, dropped: {exc}")
                del times[name]
                continue
            took = time.perf_counter() - start
            if r >= 0:
                times[name].append(took)
            log(f"      {took:.2f} s" + (" (warm-up, not counted)" if r < 0 else ""))
            after(name)
    return times


# -- 1. local -> local ---------------------------------------------------------------


def bench_local(
    tmp: Path,
    size: int,
    repeat: int,
    rclone: str | None,
    profile: bool,
    notes: list[str],
    warmup: int = 1,
) -> dict[str, Any]:
    src = tmp / "source.bin"
    out = tmp / "out"
    final = out / src.name
    log(f"  writing {size / GIB:g} GiB of random bytes ...")
    digest = make_random_file(src, size)
    first_read = read_through(src)
    rclone_conf = tmp / "rclone.conf"
    rclone_conf.touch()
    cp = shutil.which("cp") or "/bin/cp"
    sync = shutil.which("sync") or "/bin/sync"

    def sclib_run(fsync: bool, one_pass: bool = True) -> Callable[[], None]:
        def run() -> None:
            engine = TransferEngine(config=TransferConfig(parallel=PARALLEL))
            switch = os.environ.pop("SCLIB_BLAKE3_TREE", None)
            if not one_pass:  # chunk digests hashed on their own, then in order
                os.environ["SCLIB_BLAKE3_TREE"] = "0"
            try:
                result = engine.copy(
                    str(src), str(final), dest_options={"fsync": fsync}
                )
            finally:
                os.environ.pop("SCLIB_BLAKE3_TREE", None)
                if switch is not None:
                    os.environ["SCLIB_BLAKE3_TREE"] = switch
            if result.files[0].blake3 != digest:
                raise RuntimeError(
                    "sclib reported a different BLAKE3 than the source's"
                )

        return run

    def run_cp() -> None:
        run_tool([cp, "--reflink=never", str(src), str(final)])

    def run_cp_sync() -> None:
        run_tool([cp, "--reflink=never", str(src), str(final)])
        run_tool([sync, str(final), str(out)])

    contenders: list[tuple[str, Callable[[], None]]] = [
        ("sclib", sclib_run(True)),
        ("sclib-nofsync", sclib_run(False)),
        ("cp", run_cp),
        ("cp+sync", run_cp_sync),
    ]
    if tree_hashing():  # the same copy hashing every byte twice, for comparison
        contenders.insert(2, ("sclib-nofsync-2pass", sclib_run(False, one_pass=False)))
    if rclone is not None:

        def run_rclone() -> None:
            run_tool([rclone, "--config", str(rclone_conf), "copy", str(src), str(out)])

        contenders.append(("rclone", run_rclone))

    def before() -> None:
        clear(out)
        read_through(src)  # every contender starts with the source cached
        recycle_page_cache(out, size)  # ... and writes into memory the VM holds

    times = interleaved(
        contenders,
        repeat,
        before,
        lambda who: check_copy(final, size, digest, who),
        notes,
        warmup,
    )
    clear(out)
    if profile:
        profile_local(src, final)
        clear(out)
    src.unlink()
    os.sync()
    result: dict[str, Any] = {
        "bytes": size,
        "source_first_read_mb_per_s": size / first_read / MB,
        "contenders": {name: summarize(t, size) for name, t in times.items()},
    }
    c = result["contenders"]
    result["ratio_sclib_cp"] = c["sclib"]["mb_per_s"] / c["cp"]["mb_per_s"]
    result["ratio_sclib_cp_sync"] = c["sclib"]["mb_per_s"] / c["cp+sync"]["mb_per_s"]
    result["ratio_sclib_nofsync_cp"] = (
        c["sclib-nofsync"]["mb_per_s"] / c["cp"]["mb_per_s"]
    )
    result["one_pass_hashing"] = tree_hashing()
    if "sclib-nofsync-2pass" in c:
        result["ratio_one_pass_two_pass"] = (
            c["sclib-nofsync"]["mb_per_s"] / c["sclib-nofsync-2pass"]["mb_per_s"]
        )
    if "rclone" in c:
        result["ratio_sclib_rclone"] = c["sclib"]["mb_per_s"] / c["rclone"]["mb_per_s"]
        result["ratio_sclib_nofsync_rclone"] = (
            c["sclib-nofsync"]["mb_per_s"] / c["rclone"]["mb_per_s"]
        )
    return result


def profile_local(src: Path, final: Path) -> None:
    """cProfile of one local copy, to stderr.

    cProfile sees only the thread it runs in, so this copy uses
    ``executor="serial"`` (every chunk in the calling thread): the per-chunk costs
    are the same, the overlap of 4 threads is not.
    """
    engine = TransferEngine(config=TransferConfig(parallel=PARALLEL, executor="serial"))
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    engine.copy(str(src), str(final))
    profiler.disable()
    took = time.perf_counter() - start
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("tottime").print_stats(15)
    log(
        f"cProfile of one local copy with executor='serial' ({took:.2f} s, "
        f"{src.stat().st_size / took / MB:,.0f} MB/s under the profiler):"
    )
    log("(a function's own time includes work done inline, e.g. comparing buffers)")
    log(text.getvalue())


# -- 2. S3 -> local ------------------------------------------------------------------


def _big_chunk(size: int) -> int:
    """A power-of-two chunk size giving about 4 chunks (at most 512 MiB)."""
    chunk = 1024
    while chunk * 4 < size and chunk < 512 * MIB:
        chunk *= 2
    return chunk


def _count_gets(log_path: Path, start: int, key: str) -> tuple[int, int]:
    """GET requests for ``key`` logged by moto after byte ``start``; new end."""
    time.sleep(0.3)  # werkzeug writes the line just after the response
    data = log_path.read_bytes()
    pattern = re.compile(rb"GET /" + re.escape(f"{BUCKET}/{key}".encode()) + rb"[ ?]")
    return len(pattern.findall(data, start)), len(data)


def bench_s3(
    tmp: Path,
    size: int,
    repeat: int,
    rclone: str | None,
    notes: list[str],
    warmup: int = 1,
) -> dict[str, Any]:
    import boto3  # type: ignore[import-untyped, unused-ignore]

    key = f"object-{size}.bin"
    out = tmp / "out"
    final = out / key
    staging = tmp / "s3-upload.bin"
    result: dict[str, Any] = {"bytes": size, "key": key}
    with local_s3_env(), moto_server(tmp) as (endpoint, proc, log_path):
        result["endpoint"] = endpoint
        log(f"  moto server on {endpoint} (pid {proc.pid})")
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name=S3_REGION,
        )
        client.create_bucket(Bucket=BUCKET)
        log(f"  uploading {size / GIB:g} GiB with one PutObject (not timed) ...")
        digest = make_random_file(staging, size)
        start = time.perf_counter()
        with open(staging, "rb") as f:
            client.put_object(Bucket=BUCKET, Key=key, Body=f)
        result["upload_seconds"] = time.perf_counter() - start
        staging.unlink()
        head = client.head_object(Bucket=BUCKET, Key=key)
        result["etag"] = head["ETag"]
        # what one small ranged GET costs this server (moto reads the whole object
        # for every GET, then slices it)
        probes = []
        for i in range(3):
            offset = (i * 8 * MIB) % max(1, size - 8 * MIB)
            t0 = time.perf_counter()
            body = client.get_object(
                Bucket=BUCKET, Key=key, Range=f"bytes={offset}-{offset + 8 * MIB - 1}"
            )["Body"]
            body.read()
            body.close()
            probes.append(time.perf_counter() - t0)
        result["moto_8mib_range_get_seconds"] = statistics.median(probes)
        client.close()

        url = f"s3://{BUCKET}/{key}"
        options = {
            "endpoint_url": endpoint,
            "access_key_id": S3_KEY,
            "secret_access_key": S3_SECRET,
            "region": S3_REGION,
        }
        big = _big_chunk(size)
        result["big_chunk_size"] = big

        def sclib_run(chunk_size: int | None) -> Callable[[], None]:
            def run() -> None:
                engine = TransferEngine(
                    config=TransferConfig(parallel=PARALLEL, chunk_size=chunk_size)
                )
                res = engine.copy(url, str(final), source_options=options)
                if res.files[0].blake3 != digest:
                    raise RuntimeError("sclib reported a different BLAKE3")

            return run

        contenders: list[tuple[str, Callable[[], None]]] = [("sclib", sclib_run(None))]
        if big > 8 * MIB:  # the default chunk size for a local destination
            # diagnostic: about as few GETs as rclone's multi-thread download makes
            contenders.append(("sclib-big-chunks", sclib_run(big)))
        if rclone is not None:
            conf = tmp / "rclone.conf"
            conf.touch()
            env = dict(os.environ)
            env.pop("AWS_CA_BUNDLE", None)  # rclone fails against plain HTTP with it
            env.update(
                {
                    "RCLONE_CONFIG_MOTO_TYPE": "s3",
                    "RCLONE_CONFIG_MOTO_PROVIDER": "Other",
                    "RCLONE_CONFIG_MOTO_ENDPOINT": endpoint,
                    "RCLONE_CONFIG_MOTO_ACCESS_KEY_ID": S3_KEY,
                    "RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY": S3_SECRET,
                    "RCLONE_CONFIG_MOTO_REGION": S3_REGION,
                }
            )
            argv = [rclone, "--config", str(conf), "copy", f"moto:{BUCKET}/{key}"]

            def run_rclone() -> None:
                run_tool([*argv, str(out)], env=env)

            contenders.append(("rclone", run_rclone))

        gets: dict[str, list[int]] = {name: [] for name, _ in contenders}
        log_end = [log_path.stat().st_size]

        def before() -> None:
            clear(out)
            recycle_page_cache(out, size)
            log_end[0] = log_path.stat().st_size

        def after(who: str) -> None:
            count, log_end[0] = _count_gets(log_path, log_end[0], key)
            gets[who].append(count)
            check_copy(final, size, digest, who)

        times = interleaved(contenders, repeat, before, after, notes, warmup)
        clear(out)
        result["moto_peak_rss_mib"] = peak_rss_mib(proc.pid)
    c = {name: summarize(t, size) for name, t in times.items()}
    for name in c:
        c[name]["get_requests"] = max(gets[name]) if gets[name] else None
    result["contenders"] = c
    if "rclone" in c:
        rc = c["rclone"]["mb_per_s"]
        result["ratio_sclib_rclone"] = c["sclib"]["mb_per_s"] / rc
        if "sclib-big-chunks" in c:
            big_mb_per_s = c["sclib-big-chunks"]["mb_per_s"]
            result["ratio_sclib_big_chunks_rclone"] = big_mb_per_s / rc
    return result


# -- 3. hashing ----------------------------------------------------------------------


def bench_hashing(size: int, repeat: int) -> dict[str, Any]:
    log(f"  filling a {size // MIB} MiB buffer with random bytes ...")
    buf = os.urandom(size)
    piece = 8 * MIB

    def b3_auto() -> None:
        blake3.blake3(buf, max_threads=blake3.blake3.AUTO).digest()

    def b3_one() -> None:
        blake3.blake3(buf).digest()

    def b3_pieces() -> None:
        view = memoryview(buf)
        for off in range(0, size, piece):
            h = blake3.blake3(max_threads=blake3.blake3.AUTO)
            h.update(view[off : off + piece])
            h.digest()

    def sha256() -> None:
        hashlib.sha256(buf).digest()

    cases = {
        "blake3_auto": b3_auto,
        "blake3_1_thread": b3_one,
        "blake3_auto_8mib_pieces": b3_pieces,
        "sha256": sha256,
    }
    out: dict[str, Any] = {"bytes": size}
    for name, fn in cases.items():
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = summarize(times, size)
        log(f"    {name}: {out[name]['mb_per_s']:,.0f} MB/s")
    out["ratio_blake3_auto_sha256"] = (
        out["blake3_auto"]["mb_per_s"] / out["sha256"]["mb_per_s"]
    )
    out["ratio_blake3_1_thread_sha256"] = (
        out["blake3_1_thread"]["mb_per_s"] / out["sha256"]["mb_per_s"]
    )
    return out


# -- output --------------------------------------------------------------------------


def _row(label: str, c: dict[str, Any], extra: str = "") -> str:
    return (
        f"   {label:<34} {c['mb_per_s']:8,.0f} MB/s  (best {c['best_mb_per_s']:,.0f},"
        f" worst {c['worst_mb_per_s']:,.0f}; median {c['median_seconds']:.2f} s)"
        + extra
    )


def _ratio(
    label: str, value: float, target: float | None, note: str = "neither fsyncs"
) -> str:
    line = f"   {label:<24} {value:5.2f}x"
    if target is None:
        return line
    return f"{line}  {note:<14} (target >= {target:g}: {_verdict(value, target)})"


def print_report(result: dict[str, Any]) -> None:
    s = result["settings"]
    fs = s["filesystem"]
    print(
        f"sclib {s['sclib_version']} ({s['sclib_source']}) | blake3 "
        f"{s['blake3_version']} | Python {s['python']}"
        + ("  [--quick: small sizes]" if s["quick"] else "")
    )
    print(
        f"{s['cpus']} CPU(s), load average {s['load_average'][0]:.2f} at start and "
        f"{s['load_average_end'][0]:.2f} at end, "
        f"{s['mem_available_gib'] or 0:.1f} GiB memory available at start"
    )
    print(
        f"temp folder {s['tmp']} on {fs['device']} ({fs['type']}, mounted at "
        f"{fs['mount_point']}); source and destination on that same filesystem"
    )
    print(f"rclone: {s['rclone']}")
    print(
        f"each contender ran {s['repeat']} time(s), interleaved (order rotated each "
        f"round), after {s.get('warmup', 0)} untimed warm-up round(s); figures are "
        "medians in MB/s (10^6 bytes/s), ratios compare medians"
    )
    print(
        "before every run: the destination removed, `sync`, the source read "
        "once, so every run starts with the source in the page cache, and a "
        "scratch file of the copy's size written and deleted (the run then writes "
        "into memory the VM holds, not memory handed back to its host); every "
        "copy's BLAKE3 checked after its run (not timed)"
    )
    print()
    loc = result.get("local")
    if loc is not None:
        c = loc["contenders"]
        print(
            f"1. local -> local, one {loc['bytes'] / GIB:g} GiB file of random bytes "
            f"(source first read at {loc['source_first_read_mb_per_s']:,.0f} MB/s)"
        )
        print(
            _row(
                f"sclib TransferEngine(parallel={PARALLEL})",
                c["sclib"],
                "  verified, fsync",
            )
        )
        print(
            _row(
                "sclib, dest_options fsync=False",
                c["sclib-nofsync"],
                "  verified, no fsync",
            )
        )
        if "sclib-nofsync-2pass" in c:
            print(
                _row(
                    "sclib, fsync=False, two hash passes",
                    c["sclib-nofsync-2pass"],
                    "  SCLIB_BLAKE3_TREE=0",
                )
            )
        print(_row("cp --reflink=never", c["cp"], "  no verify, no fsync"))
        print(_row("cp && sync FILE DIR", c["cp+sync"], "  no verify, fsync"))
        if "rclone" in c:
            print(_row("rclone copy", c["rclone"], "  MD5, no fsync"))
        print("   like for like (the targets are judged on these lines):")
        print(
            _ratio("sclib/(cp && sync)", loc["ratio_sclib_cp_sync"], 0.8, "both fsync")
        )
        print(_ratio("sclib(no fsync)/cp", loc["ratio_sclib_nofsync_cp"], 0.8))
        if "ratio_sclib_nofsync_rclone" in loc:
            print(
                _ratio("sclib(no fsync)/rclone", loc["ratio_sclib_nofsync_rclone"], 2)
            )
        print("   mixed (sclib's default fsyncs at commit; cp and rclone do not):")
        print(_ratio("sclib/cp", loc["ratio_sclib_cp"], None))
        if "ratio_sclib_rclone" in loc:
            print(_ratio("sclib/rclone", loc["ratio_sclib_rclone"], None))
        if "ratio_one_pass_two_pass" in loc:
            print(
                _ratio(
                    "one hash pass / two (no fsync)",
                    loc["ratio_one_pass_two_pass"],
                    None,
                    "same engine",
                )
            )
        print(
            "   sclib: 8 MiB chunks; each is read, BLAKE3-hashed, written with "
            "pwrite and compared where"
        )
        print(
            "   it landed (memory-mapped, memcmp); "
            + (
                "the file's BLAKE3 is merged from the chunks' chaining values "
                "(sclib_blake3tree: one pass)"
                if loc.get("one_pass_hashing")
                else "then hashed again, in order, into the whole-file BLAKE3 "
                "(sclib_blake3tree is not installed)"
            )
            + ";"
        )
        print(
            "   with fsync, each verified chunk's writeback starts at once "
            "(sync_file_range) and the file and its folder are fsynced at commit"
        )
        print(
            "   cp returns with the copy still in the page cache (no fsync)"
            + ("; so does rclone, which checks an MD5" if "rclone" in c else "")
        )
        print()
    s3 = result.get("s3")
    if s3 is not None:
        c = s3["contenders"]
        print(
            f"2. S3 -> local, one {s3['bytes'] / GIB:g} GiB object from moto_server "
            f"on 127.0.0.1 (a child process)"
        )

        def gets(name: str) -> str:
            n = c[name].get("get_requests")
            return f"  {n} GET(s)" if n is not None else ""

        big = f"sclib, chunk_size={s3['big_chunk_size'] // MIB} MiB"
        print(
            _row(
                f"sclib TransferEngine(parallel={PARALLEL})", c["sclib"], gets("sclib")
            )
        )
        if "sclib-big-chunks" in c:
            print(_row(big, c["sclib-big-chunks"], gets("sclib-big-chunks")))
        if "rclone" in c:
            print(_row("rclone copy", c["rclone"], gets("rclone")))
            print(
                f"   sclib/rclone    {s3['ratio_sclib_rclone']:5.2f}x  (target >= 1: "
                f"{_verdict(s3['ratio_sclib_rclone'], 1)})"
            )
            if "ratio_sclib_big_chunks_rclone" in s3:
                print(
                    f"   sclib {s3['big_chunk_size'] // MIB} MiB chunks/rclone "
                    f"{s3['ratio_sclib_big_chunks_rclone']:5.2f}x  (diagnostic)"
                )
        print(
            f"   moto serves one 8 MiB ranged GET of this object in "
            f"{s3['moto_8mib_range_get_seconds']:.2f} s: it reads the whole object for "
            "every GET, one GET at a time per object"
        )
        print(
            "   so time here grows with the number of GETs, not the bytes; real S3 "
            "does not behave like this"
        )
        print(
            f"   upload (not timed): one PutObject, {s3['upload_seconds']:.1f} s, ETag "
            f"{s3['etag']}; moto peak RSS {s3['moto_peak_rss_mib'] or 0:,.0f} MiB"
        )
        print()
    h = result.get("hashing")
    if h is not None:
        print(f"3. hashing one {h['bytes'] // MIB} MiB in-memory buffer (median MB/s)")
        print(_row("blake3, max_threads=AUTO", h["blake3_auto"]))
        print(_row("blake3, one thread", h["blake3_1_thread"]))
        print(_row("blake3 AUTO, new hasher per 8 MiB", h["blake3_auto_8mib_pieces"]))
        print(_row("hashlib.sha256", h["sha256"]))
        print(
            f"   blake3 AUTO/sha256 {h['ratio_blake3_auto_sha256']:.2f}x, "
            f"blake3 1 thread/sha256 {h['ratio_blake3_1_thread_sha256']:.2f}x"
        )
    for note in result["notes"]:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes: 256 MiB local, 128 MiB S3, 128 MiB hash buffer",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout and nothing else",
    )
    parser.add_argument(
        "--size-gib",
        type=float,
        default=None,
        help="local file size in GiB (default 2; 0.25 with --quick)",
    )
    parser.add_argument(
        "--s3-size-gib",
        type=float,
        default=None,
        help="S3 object size in GiB (default 1; 0.125 with --quick)",
    )
    parser.add_argument(
        "--hash-mib",
        type=int,
        default=None,
        help="hash buffer size in MiB (default 512; 128 with --quick)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per contender (default 3)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed rounds of every contender before the timed ones (default 1)",
    )
    parser.add_argument("--skip-s3", action="store_true", help="skip the S3 case")
    parser.add_argument("--skip-rclone", action="store_true", help="no rclone runs")
    parser.add_argument(
        "--tmp-dir",
        default=None,
        help="where the temporary folder goes (default: the system's, /tmp)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print (to stderr) a cProfile of one sclib local copy",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    local_size = int((args.size_gib or (0.25 if quick else 2.0)) * GIB)
    s3_size = int((args.s3_size_gib or (0.125 if quick else 1.0)) * GIB)
    hash_size = (args.hash_mib or (128 if quick else 512)) * MIB
    repeat = max(1, args.repeat)
    warmup = max(0, args.warmup)
    notes: list[str] = []

    rclone: str | None = None
    if args.skip_rclone:
        rclone_text = "skipped (--skip-rclone)"
    else:
        rclone, rclone_text = rclone_info()
        if rclone is None:
            notes.append(f"no rclone baseline: {rclone_text}")
            log(f"rclone: {rclone_text}; going on without it")

    tmp = Path(tempfile.mkdtemp(prefix="sclib-bench-transfer-", dir=args.tmp_dir))
    need = local_size * 2 + (0 if args.skip_s3 else s3_size * 3)
    free = shutil.disk_usage(tmp).free
    if free < need + GIB:
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"not enough free space in {tmp.parent}: {free / GIB:.1f} GiB free")
        return 2
    result: dict[str, Any] = {
        "settings": {
            "sclib_version": sclib.__version__,
            "sclib_source": sclib_source_state(),
            "blake3_version": getattr(blake3, "__version__", "?"),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()),
            "mem_available_gib": mem_available_gib(),
            "quick": quick,
            "repeat": repeat,
            "warmup": warmup,
            "parallel": PARALLEL,
            "tmp": str(tmp),
            "filesystem": filesystem_of(str(tmp)),
            "rclone": rclone_text,
        },
        "notes": notes,
    }
    try:
        log(f"1. local -> local, {local_size / GIB:g} GiB ...")
        result["local"] = bench_local(
            tmp, local_size, repeat, rclone, args.profile, notes, warmup
        )
        if args.skip_s3:
            notes.append("S3 case skipped (--skip-s3)")
        else:
            log(f"2. S3 (moto) -> local, {s3_size / GIB:g} GiB ...")
            result["s3"] = bench_s3(tmp, s3_size, repeat, rclone, notes, warmup)
        log(f"3. hashing {hash_size // MIB} MiB ...")
        result["hashing"] = bench_hashing(hash_size, repeat)
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    result["settings"]["load_average_end"] = list(os.getloadavg())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
