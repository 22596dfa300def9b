"""TIFF -> OpenVisus IDX conversion: sclib's TIFF converter against a plain script.

Run from the repository root (sclib with its convert extra)::

    python benchmarks/convert.py                    # full run: a 1 GiB TIFF stack
    python benchmarks/convert.py --size 256MiB      # smaller stack
    python benchmarks/convert.py --json             # one JSON object on stdout
    python benchmarks/convert.py --repeat 3 --side 1024

It writes one multi-page uint16 TIFF (``--side`` x ``--side`` pixels per page,
as many pages as make ``--size``; 12-bit noise on a gradient, so zip has
something to do) and times, in MB/s of TIFF input (10^6 bytes/s):

1. **sclib**: the whole ``dataset_conversion`` job (``ConversionHandler`` on a
   dataset whose record holds the TIFF with its BLAKE3): the TIFF converter reads
   pages one at a time, writes 64 MiB slabs and zip-compresses the blocks a batch
   at a time; then the job verifies the input against its recorded BLAKE3 again,
   writes its marker, fsyncs every output file and publishes the folder
   atomically at ``converted/<uuid>/`` (the checkpointing and verification the
   plain script does not do);
2. **plain**: the script a person would write with the same libraries::

       data = tifffile.imread(path)                      # the whole stack
       db = ov.CreateIdx(url=..., dims=[x, y, z], fields=[ov.Field("data", "uint16")])
       db.write(data)
       db.compressDataset(["zip"])

Each run is a fresh child process (so one's memory does not count against the
other) that reports its wall time and peak RSS (``ru_maxrss``). Before each run
the previous output is deleted, ``sync`` is called and the TIFF is read once, so
both start with the input in the page cache. Contenders alternate, the order
rotated each round (``--repeat``, default 2). After the runs (untimed) both
outputs are opened with OpenVisus and compared with the TIFF, slab by slab.
Figures are medians; the ratio is sclib/plain from this run (target >= 0.9).
Progress goes to stderr, results to stdout. Everything lives in one temporary
folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (  # this folder: shared benchmark helpers
    GIB,
    MB,
    MIB,
    filesystem_of,
    log,
    mem_available_gib,
    read_through,
    sclib_source_state,
    summarize,
    verdict,
)

TARGET = 0.9
CONTENDERS = ("sclib", "plain")


def parse_size(text: str) -> int:
    """``1GiB``, ``256MiB`` (binary units), or a number of bytes."""
    import re

    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 256MiB)")
    size = int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))
    if size <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return size


def make_stack(path: Path, size: int, side: int) -> tuple[int, int]:
    """A multi-page uint16 TIFF of about ``size`` bytes; returns (pages, bytes)."""
    import numpy as np
    import tifffile

    pages = max(1, size // (side * side * 2))
    rng = np.random.default_rng(1)
    ramp = (np.arange(side, dtype=np.uint16)[None, :] * 4) % 4096
    with tifffile.TiffWriter(path) as tif:
        for z in range(pages):
            noise = rng.integers(0, 4096, (side, side), dtype=np.uint16)
            tif.write(noise + ramp + np.uint16(z % 64), contiguous=True)
    return pages, path.stat().st_size


# -- the two contenders, each run in a child process ---------------------------------


UUID = "b" * 32


def sclib_output(out: Path) -> Path:
    """Where the job publishes: ``<data>/converted/<uuid>/visus.idx``."""
    return out / "data" / "converted" / UUID / "visus.idx"


def prepare_sclib(src: Path, out: Path) -> Any:
    """The dataset the job converts (untimed: this is what an upload leaves): the
    TIFF linked into ``<data>/upload/<uuid>/`` and its record with its BLAKE3."""
    from sclib.datasets import Dataset, DatasetFile, MemoryDatasetStore
    from sclib.jobs.context import JobContext
    from sclib.jobtypes import JobStatus
    from sclib.models import Job
    from sclib.pipeline.conversion import ConversionHandler
    from sclib.transfers.hashing import blake3_file

    folder = out / "data" / "upload" / UUID
    folder.mkdir(parents=True)
    os.link(src, folder / src.name)
    digest, size = blake3_file(src)
    store = MemoryDatasetStore()
    store.create(Dataset(uuid=UUID, name="bench", owner="b@example.org", sensor="TIFF"))
    store.add_files(UUID, [DatasetFile(src.name, size, digest)])
    handler = ConversionHandler(out / "data", store)
    job = Job(
        id="c" * 32,
        type="dataset_conversion",
        status=JobStatus.RUNNING,
        priority=1,
        parameters={},
        dataset_uuid=UUID,
        owner="b@example.org",
        worker_id="bench",
        attempts=1,
    )
    return lambda: handler(JobContext(job))


def run_plain(src: Path, out: Path) -> None:
    import OpenVisus as ov
    import tifffile

    data = tifffile.imread(src)
    z, y, x = data.shape
    db = ov.CreateIdx(
        url=str(out / "visus.idx"),
        dims=[x, y, z],
        fields=[ov.Field("data", str(data.dtype))],
    )
    db.write(data)
    db.compressDataset(["zip"])


def child(which: str, src: Path, out: Path) -> None:
    if which == "sclib":
        run = prepare_sclib(src, out)
    else:

        def run() -> None:
            run_plain(src, out)

    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_rss": peak}), flush=True)
    os._exit(0)  # OpenVisus's thread pools are not joined; do not wait for them


def run_child(which: str, src: Path, out: Path) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    sync = shutil.which("sync")
    if sync:
        subprocess.run([sync], check=False)
    read_through(src)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", which, str(src), str(out)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{which} failed: {proc.stderr[-2000:]}")
    line = proc.stdout.strip().splitlines()[-1]
    result: dict[str, Any] = json.loads(line)
    root = sclib_output(out).parent if which == "sclib" else out  # not the input
    result["output_bytes"] = sum(
        p.stat().st_size for p in root.rglob("*") if p.is_file()
    )
    return result


def check_output(src: Path, idx: Path, pages: int, who: str) -> None:
    """Compare the IDX with the TIFF, 32 pages at a time."""
    import numpy as np
    import OpenVisus as ov
    import tifffile

    db = ov.LoadDataset(str(idx))
    with tifffile.TiffFile(src) as tif:
        for z in range(0, pages, 32):
            stop = min(pages, z + 32)
            want = np.stack([tif.pages[i].asarray() for i in range(z, stop)])
            got = db.read(z=[z, stop])
            if not np.array_equal(want, got):
                raise RuntimeError(f"{who}: pages {z}-{stop} differ from the TIFF")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=parse_size, default=GIB, help="default 1GiB")
    parser.add_argument("--side", type=int, default=2048, help="page side, pixels")
    parser.add_argument("--repeat", type=int, default=2, help="rounds (default 2)")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--tmp-dir", default=None, help="where the files go")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0

    work = Path(tempfile.mkdtemp(prefix="sclib-convert-bench-", dir=args.tmp_dir))
    try:
        src = work / "in" / "stack.tif"
        src.parent.mkdir()
        log(f"writing a {args.size / MIB:.0f} MiB TIFF stack in {work} ...")
        pages, size = make_stack(src, args.size, args.side)
        log(f"{pages} pages of {args.side}x{args.side} uint16, {size:,} bytes")
        seconds: dict[str, list[float]] = {c: [] for c in CONTENDERS}
        peaks: dict[str, list[int]] = {c: [] for c in CONTENDERS}
        out_bytes: dict[str, int] = {}
        load = os.getloadavg()
        for round_ in range(args.repeat):
            order = CONTENDERS[round_ % 2 :] + CONTENDERS[: round_ % 2]
            for which in order:
                r = run_child(which, src, work / which)
                seconds[which].append(r["seconds"])
                peaks[which].append(r["peak_rss"])
                out_bytes[which] = r["output_bytes"]
                log(
                    f"round {round_ + 1} {which}: {r['seconds']:.2f} s, "
                    f"{size / r['seconds'] / MB:.0f} MB/s, "
                    f"peak RSS {r['peak_rss'] / MIB:.0f} MiB"
                )
        for which in CONTENDERS:
            log(f"checking {which}'s output against the TIFF ...")
            idx = (
                sclib_output(work / which)
                if which == "sclib"
                else work / which / "visus.idx"
            )
            check_output(src, idx, pages, which)
        stats = {c: summarize(seconds[c], size) for c in CONTENDERS}
        for c in CONTENDERS:
            stats[c]["peak_rss_mib"] = max(peaks[c]) / MIB
            stats[c]["output_bytes"] = out_bytes[c]
        ratio = stats["sclib"]["mb_per_s"] / stats["plain"]["mb_per_s"]
        report = {
            "benchmark": "convert",
            "input": {
                "bytes": size,
                "pages": pages,
                "side": args.side,
                "dtype": "uint16",
                "filesystem": filesystem_of(str(work)),
            },
            "sclib": stats["sclib"],
            "plain": stats["plain"],
            "ratio_sclib_to_plain": ratio,
            "target": TARGET,
            "verdict": verdict(ratio, TARGET),
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "mem_available_gib": mem_available_gib(),
                "load_start": load,
                "load_end": os.getloadavg(),
            },
            "sclib_source": sclib_source_state(),
        }
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"TIFF stack: {size / MIB:.0f} MiB, {pages} pages of {args.side}^2")
            for c in CONTENDERS:
                s = stats[c]
                print(
                    f"{c:6s} {s['mb_per_s']:8.0f} MB/s (best {s['best_mb_per_s']:.0f}, "
                    f"worst {s['worst_mb_per_s']:.0f}), peak RSS "
                    f"{s['peak_rss_mib']:.0f} MiB, "
                    f"output {s['output_bytes'] / MIB:.0f} MiB"
                )
            met = verdict(ratio, TARGET)
            print(f"sclib/plain {ratio:.2f}x (target >= {TARGET}): {met}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
