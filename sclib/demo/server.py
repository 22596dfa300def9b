"""``sclib demo --server``: the whole system on one machine, end to end.

It starts the reference server (with its worker thread) on a free loopback port,
with authentication on (a random secret, a token for ``demo@localhost``), writes a
small sample dataset (a few sensor files, one of them large enough to go in
parallel verified chunks), uploads the folder with :class:`sclib.client.Client`,
follows every upload job to ``completed`` printing its progress, and stops the
server. Everything lands in ``<data_dir>/demo-server/``.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sclib.settings import Settings

__all__ = ["run_server_demo"]

_MIB = 1024**2


def _sample(folder: Path) -> list[Path]:
    """A small dataset: two slices, a metadata file, and one 12 MiB volume."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "slices/slice_000.raw": os.urandom(256 * 1024),
        "slices/slice_001.raw": os.urandom(256 * 1024),
        "metadata.json": b'{"instrument": "demo", "voxel_size_um": 0.65}\n',
        "volume.raw": os.urandom(12 * _MIB),
    }
    paths = []
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


def run_server_demo(settings: Settings, out: Callable[[str], None] = print) -> bool:
    """Run the demo; ``True`` when every upload job completed."""
    from sclib.client import Client
    from sclib.server import serve_in_background
    from sclib.server.auth import Authenticator

    root = (settings.data_dir / "demo-server").resolve()
    secret = secrets.token_urlsafe(32)
    server_settings = settings.model_copy(
        update={
            "data_dir": root / "data",
            "backend": None,
            "mongo_url": None,
            "secret_key": _secret(secret),
            "no_auth": False,
            "standard_upload_limit": 1 * _MIB,
            "chunk_size": 2 * _MIB,
            "worker_concurrency": 2,
        }
    )
    server = serve_in_background(server_settings)
    url = server.url
    out(f"server: {url} (API docs at {url}/docs), data in {root / 'data'}")
    try:
        token = Authenticator(secret_key=secret).issue_token("demo@localhost")
        sample = root / "sample"
        files = _sample(sample)
        total = sum(p.stat().st_size for p in files)
        out(f"sample dataset: {len(files)} files, {total / _MIB:.1f} MiB in {sample}")
        with Client(url, token=token, state_dir=root / "client-state") as client:
            results = client.upload_directory(
                sample,
                dataset_name="Demo dataset",
                sensor="OTHER",
                convert=False,
                progress=True,
            )
            for result in results:
                out(
                    f"uploaded ({result.upload_type}): job {result.job_id} "
                    f"dataset {result.dataset_uuid}"
                )
            ok = True
            for result in results:
                ok &= _follow(client, result.job_id, out)
        dataset = results[0].dataset_uuid
        stored = root / "data" / "upload" / str(dataset)
        names = sorted(
            str(p.relative_to(stored)) for p in stored.rglob("*") if p.is_file()
        )
        out(f"dataset {dataset}: {len(names)} files stored and verified in {stored}")
        for name in names:
            out(f"  {name}")
        return ok
    finally:
        server.stop()


def _follow(client: Any, job_id: str, out: Callable[[str], None]) -> bool:
    last = None
    while True:
        status = client.get_upload_status(job_id)
        line = f"job {job_id}: {status.status} {status.progress_percentage:.0f}%"
        if line != last:
            out(line)
            last = line
        if status.finished:
            if status.error:
                out(f"  error: {status.error}")
            return bool(status.status == "completed")
        time.sleep(0.2)


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)
