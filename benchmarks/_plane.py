"""The data-plane section of ``upload.py``: what receiving one large request body
costs a server, sclib against its anchors, every server fed by the same ``curl``.

Contenders (each its own server process on 127.0.0.1, measured by the CPU seconds
that process spent, user + system, per GiB received):

* ``raw socket sink``: Python ``recv_into`` a 1 MiB buffer, ``pwrite``, one
  ``fdatasync`` at the end; no HTTP framework, no hash. The floor for Python.
* ``bare ASGI``: a FastAPI app under uvicorn (httptools, uvloop) writing
  ``request.stream()`` to a file with BLAKE3 and ``fdatasync``: the work sclib
  does, through ASGI messages.
* ``@tus/server``: the Node reference tus server (``@tus/server`` with
  ``@tus/file-store``, installed from npm into the run's folder), ``PATCH``.
* ``sclib tus``: ``sclib serve`` (the data plane on, the default), ``PATCH`` of
  the whole file to an upload created just before (not timed); the last byte
  commits the file (the server computes its BLAKE3) as in every sclib upload.
* ``sclib tus, O_DIRECT``: the same with ``SCLIB_DIRECT_IO=1`` (the plane's
  pieces written past the page cache, a few behind the body).
* ``sclib tus, ASGI``: the same with ``SCLIB_DATA_PLANE=0``.

Fairness as in the rest of ``upload.py``: every contender runs ``repeat`` times,
interleaved, the order rotated each round; the source is read into the page cache
and a scratch file of its size written and deleted before each run; each stored
file's size is checked after the run (and its BLAKE3 for sclib, not timed).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from _common import (
    GIB,
    MB,
    check_copy,
    empty_folder,
    free_port,
    log,
    process_cpu_seconds,
    read_through,
    recycle_page_cache,
    serve_argv,
    started,
    stop,
)

TUS_SERVER = "@tus/server@2.4.5"
TUS_STORE = "@tus/file-store@2.0.0"
TARGET_CPU_PER_GIB = 0.5  # server CPU seconds per GiB, sclib tus with the plane
TARGET_VS_TUS_NODE = 1.5  # sclib tus throughput / @tus/server's
TARGET_RSS_MIB = 250  # sclib's peak RSS receiving the file

PLANE = "sclib tus"
ASGI_OFF = "sclib tus, ASGI"
DIRECT = "sclib tus, O_DIRECT"
SINK = "raw socket sink"
BARE = "bare ASGI"
NODE = "@tus/server"

_SINK_SCRIPT = textwrap.dedent(
    """
    import os, socket, sys
    port, folder = int(sys.argv[1]), sys.argv[2]
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(8)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    n_file = 0
    while True:
        conn, _ = ls.accept()
        head = b""
        while b"\\r\\n\\r\\n" not in head:
            got = conn.recv(65536)
            if not got:
                break
            head += got
        head, _, rest = head.partition(b"\\r\\n\\r\\n")
        length = 0
        for line in head.split(b"\\r\\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        n_file += 1
        fd = os.open(os.path.join(folder, f"body-{n_file}"),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, rest)
        pos = len(rest)
        while pos < length:
            n = conn.recv_into(view, min(len(buf), length - pos))
            if not n:
                break
            os.pwrite(fd, view[:n], pos)
            pos += n
        os.fdatasync(fd)
        os.close(fd)
        conn.sendall(b"HTTP/1.1 204 No Content\\r\\nConnection: close\\r\\n\\r\\n")
        conn.close()
    """
)

_BARE_SCRIPT = textwrap.dedent(
    """
    import itertools, os, sys
    import uvicorn
    from blake3 import blake3
    from fastapi import FastAPI, Request, Response

    port, folder = int(sys.argv[1]), sys.argv[2]
    app = FastAPI()
    count = itertools.count(1)

    @app.put("/upload")
    async def upload(request: Request) -> Response:
        path = os.path.join(folder, f"body-{next(count)}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        hasher = blake3()
        async for piece in request.stream():
            hasher.update(piece)
            os.write(fd, piece)
        os.fdatasync(fd)
        os.close(fd)
        return Response(status_code=204, headers={"x-blake3": hasher.hexdigest()})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning",
                http="httptools", loop="auto")
    """
)

_NODE_SCRIPT = textwrap.dedent(
    """
    import http from "node:http";
    import { Server } from "@tus/server";
    import { FileStore } from "@tus/file-store";
    const [port, folder] = process.argv.slice(2);
    const tus = new Server({
      path: "/files",
      datastore: new FileStore({ directory: folder }),
    });
    http
      .createServer((req, res) => tus.handle(req, res))
      .listen(Number(port), "127.0.0.1");
    """
)


def _wait_port(
    proc: subprocess.Popen[bytes], port: int, what: str, log_path: Path
) -> None:
    import socket

    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited: {log_path.read_text(errors='replace')[-600:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {port}") from None
            time.sleep(0.1)


@contextmanager
def _process(
    argv: list[str], what: str, tmp: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    log_path = tmp / f"{what.replace(' ', '_').replace('/', '_')}.log"
    with open(log_path, "wb") as log_file:
        proc = started(
            subprocess.Popen(
                [*argv[:1], *[a.replace("{port}", str(port)) for a in argv[1:]]],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        )
    try:
        _wait_port(proc, port, what, log_path)
        yield proc, port
    finally:
        stop(proc)


def _install_tus_node(tmp: Path) -> Path | str:
    """A folder with ``@tus/server`` installed, or why there is none."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node and npm are not on PATH"
    folder = tmp / "tus-node"
    folder.mkdir(exist_ok=True)
    (folder / "package.json").write_text('{"private": true, "type": "module"}')
    done = subprocess.run(
        [npm, "install", "--silent", "--no-audit", "--no-fund", TUS_SERVER, TUS_STORE],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        return f"npm install failed: {done.stderr.strip()[-300:]}"
    (folder / "serve.mjs").write_text(_NODE_SCRIPT)
    return folder


def _tus_metadata(name: str) -> str:
    values = {"filename": name, "dataset_name": "plane-bench", "sensor": "OTHER"}
    return ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items()
    )


def _curl(curl: str, *args: str) -> None:
    done = subprocess.run(
        [
            curl,
            "-sS",
            "--fail-with-body",
            "--noproxy",
            "*",
            "-o",
            "/dev/null",
            "-H",
            "Expect:",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"curl {' '.join(args[-1:])}: {done.stderr.strip()[-300:]}")


class _Contender:
    def __init__(
        self,
        name: str,
        pid: int,
        folder: Path,
        prepare: Callable[[], list[str]],
        curl_args: Callable[[list[str]], list[str]],
    ) -> None:
        self.name = name
        self.pid = pid
        self.folder = folder  # where its files land
        self.prepare = prepare  # untimed: e.g. create the tus upload
        self.curl_args = curl_args


def _tus_create(url: str, size: int, name: str, *, sclib: bool) -> str:
    headers = {"Tus-Resumable": "1.0.0", "Upload-Length": str(size)}
    if sclib:
        headers["Upload-Metadata"] = _tus_metadata(name)
    r = httpx.post(url + "/files/", headers=headers, timeout=30)
    if r.status_code != 201:
        raise RuntimeError(f"tus creation at {url}: {r.status_code} {r.text[:200]}")
    location = r.headers["location"]
    return location if location.startswith("http") else url + location


def _patch_args(src: Path) -> Callable[[list[str]], list[str]]:
    def args(state: list[str]) -> list[str]:
        return [
            "-X",
            "PATCH",
            "-T",
            str(src),
            "-H",
            "Tus-Resumable: 1.0.0",
            "-H",
            "Upload-Offset: 0",
            "-H",
            "Content-Type: application/offset+octet-stream",
            state[0],
        ]

    return args


def _stored(folder: Path, size: int) -> Path:
    found = [p for p in folder.rglob("*") if p.is_file() and p.stat().st_size == size]
    if len(found) != 1:
        raise RuntimeError(
            f"expected one file of {size} bytes in {folder}, found {found}"
        )
    return found[0]


#: seconds a ``--cold`` run waits before each contender (see recycle_page_cache)
COLD_WAIT = 8.0


def run_plane(
    tmp: Path,
    src: Path,
    digest: str,
    repeat: int,
    peak_rss: Any,
    *,
    cold: bool = False,
) -> dict[str, Any]:
    """Every contender ``repeat`` times, interleaved; medians and ratios.

    ``cold``: instead of writing into memory the VM just used, wait
    :data:`COLD_WAIT` seconds so that the memory freed before is handed back to
    the host (a VM with free page reporting), as on a server between uploads:
    what filling the page cache then costs is what ``SCLIB_DIRECT_IO`` saves."""
    size = src.stat().st_size
    curl = shutil.which("curl")
    if curl is None:
        return {"error": "curl is not on PATH (apt-get install -y curl)"}
    result: dict[str, Any] = {"bytes": size, "repeat": repeat, "unavailable": {}}
    scripts = tmp / "plane-scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / "sink.py").write_text(_SINK_SCRIPT)
    (scripts / "bare.py").write_text(_BARE_SCRIPT)
    contenders: list[_Contender] = []
    with ExitStack() as stack:
        for name, script in ((SINK, "sink.py"), (BARE, "bare.py")):
            folder = tmp / f"plane-{script[:-3]}"
            folder.mkdir(exist_ok=True)
            proc, port = stack.enter_context(
                _process(
                    [sys.executable, str(scripts / script), "{port}", str(folder)],
                    name,
                    tmp,
                )
            )
            target = f"http://127.0.0.1:{port}/upload"
            contenders.append(
                _Contender(
                    name,
                    proc.pid,
                    folder,
                    lambda t=target: [t],
                    lambda s: ["-X", "PUT", "-T", str(src), s[0]],
                )
            )
        node = _install_tus_node(tmp)
        if isinstance(node, str):
            result["unavailable"][NODE] = node
            log(f"{NODE}: unavailable ({node})")
        else:
            folder = tmp / "plane-tus-node"
            folder.mkdir(exist_ok=True)
            node_bin = shutil.which("node") or "node"
            proc, port = stack.enter_context(
                _process(
                    [node_bin, str(node / "serve.mjs"), "{port}", str(folder)],
                    NODE,
                    tmp,
                )
            )
            url = f"http://127.0.0.1:{port}"
            contenders.append(
                _Contender(
                    NODE,
                    proc.pid,
                    folder,
                    lambda u=url: [_tus_create(u, size, src.name, sclib=False)],
                    _patch_args(src),
                )
            )
            result["node"] = subprocess.run(
                [node_bin, "--version"], capture_output=True, text=True
            ).stdout.strip()
        for name, flag, direct in (
            (PLANE, "1", "0"),
            (DIRECT, "1", "1"),
            (ASGI_OFF, "0", "0"),
        ):
            data = tmp / f"plane-sclib-{flag}{direct}"
            proc, port = stack.enter_context(
                _process(
                    serve_argv("{port}"),
                    name,
                    tmp,
                    env={
                        "SCLIB_DATA_DIR": str(data),
                        "SCLIB_DATA_PLANE": flag,
                        "SCLIB_DIRECT_IO": direct,
                    },
                )
            )
            url = f"http://127.0.0.1:{port}"
            contenders.append(
                _Contender(
                    name,
                    proc.pid,
                    data / "upload",
                    lambda u=url: [_tus_create(u, size, src.name, sclib=True)],
                    _patch_args(src),
                )
            )
        runs: dict[str, list[dict[str, float]]] = {c.name: [] for c in contenders}
        for r in range(repeat):
            shift = r % len(contenders)
            for c in contenders[shift:] + contenders[:shift]:
                empty_folder(c.folder)
                if c.name.startswith("sclib"):
                    empty_folder(c.folder.parent / "tmp" / "uploads")
                os.sync()
                state = c.prepare()
                read_through(src)
                if cold:
                    time.sleep(COLD_WAIT)
                else:
                    recycle_page_cache(tmp, size)
                log(f"    plane round {r + 1}/{repeat}: {c.name} ...")
                with peak_rss(c.pid) as rss:
                    cpu = process_cpu_seconds(c.pid)
                    start = time.perf_counter()
                    _curl(curl, *c.curl_args(state))
                    took = time.perf_counter() - start
                    cpu = process_cpu_seconds(c.pid) - cpu
                runs[c.name].append(
                    {
                        "seconds": took,
                        "cpu_s_per_gib": cpu / (size / GIB),
                        "peak_mib": rss.peak_mib or 0.0,
                    }
                )
                log(
                    f"      {took:.2f} s, {size / took / MB:,.0f} MB/s, server CPU "
                    f"{cpu / (size / GIB):.2f} s/GiB, "
                    f"peak RSS {rss.peak_mib or 0:,.0f} MiB"
                )
                stored = _stored(c.folder, size)
                if c.name.startswith("sclib"):
                    check_copy(stored, size, digest, c.name)
                empty_folder(c.folder)
    import statistics

    table: dict[str, dict[str, float]] = {}
    for name, rs in runs.items():
        secs = statistics.median(x["seconds"] for x in rs)
        table[name] = {
            "mb_per_s": size / secs / MB,
            "cpu_s_per_gib": statistics.median(x["cpu_s_per_gib"] for x in rs),
            "peak_mib": max(x["peak_mib"] for x in rs),
            "runs": len(rs),
        }
    result["contenders"] = table
    result["cold"] = cold
    plane = table[PLANE]
    ratios: dict[str, float] = {}
    if NODE in table:
        ratios["plane/@tus/server MB/s"] = plane["mb_per_s"] / table[NODE]["mb_per_s"]
    ratios["ASGI/plane CPU"] = table[ASGI_OFF]["cpu_s_per_gib"] / plane["cpu_s_per_gib"]
    ratios["O_DIRECT/plane CPU"] = (
        table[DIRECT]["cpu_s_per_gib"] / plane["cpu_s_per_gib"]
    )
    ratios["O_DIRECT/plane MB/s"] = table[DIRECT]["mb_per_s"] / plane["mb_per_s"]
    ratios["plane/raw sink CPU"] = plane["cpu_s_per_gib"] / table[SINK]["cpu_s_per_gib"]
    ratios["plane/bare ASGI CPU"] = (
        plane["cpu_s_per_gib"] / table[BARE]["cpu_s_per_gib"]
    )
    result["ratios"] = ratios
    return result


def print_plane(plane: dict[str, Any], verdict: Callable[[float, float], str]) -> None:
    print()
    if "error" in plane:
        print(f"data plane: not measured ({plane['error']})")
        return
    gib = plane["bytes"] / GIB
    print(
        f"data plane: one {gib:.2f} GiB body per run, fed by curl, "
        f"{plane['repeat']} run(s) each, medians"
        + (", memory cold (--cold)" if plane.get("cold") else "")
    )
    print(f"  {'server':<20} {'MB/s':>8} {'CPU s/GiB':>10} {'peak RSS MiB':>13}")
    for name, row in plane["contenders"].items():
        print(
            f"  {name:<20} {row['mb_per_s']:>8,.0f} {row['cpu_s_per_gib']:>10.2f} "
            f"{row['peak_mib']:>13,.0f}"
        )
    for name, why in plane["unavailable"].items():
        print(f"  {name:<20} unavailable: {why}")
    p = plane["contenders"][PLANE]
    print("  targets:")
    cpu = p["cpu_s_per_gib"]
    print(
        f"    sclib tus server CPU {cpu:.2f} s/GiB (target <= {TARGET_CPU_PER_GIB}): "
        + ("met" if cpu <= TARGET_CPU_PER_GIB else "NOT MET")
    )
    if "plane/@tus/server MB/s" in plane["ratios"]:
        r = plane["ratios"]["plane/@tus/server MB/s"]
        print(
            f"    sclib tus / @tus/server throughput {r:.2f}x "
            f"(target >= {TARGET_VS_TUS_NODE}x): {verdict(r, TARGET_VS_TUS_NODE)}"
        )
    rss = p["peak_mib"]
    print(
        f"    sclib tus peak RSS {rss:,.0f} MiB (target < {TARGET_RSS_MIB}): "
        + ("met" if 0 < rss < TARGET_RSS_MIB else "NOT MET")
    )
    for key in (
        "ASGI/plane CPU",
        "O_DIRECT/plane CPU",
        "O_DIRECT/plane MB/s",
        "plane/raw sink CPU",
        "plane/bare ASGI CPU",
    ):
        print(f"    {key}: {plane['ratios'][key]:.2f}")


def plane_json(plane: dict[str, Any]) -> str:
    return json.dumps(plane, indent=2)
