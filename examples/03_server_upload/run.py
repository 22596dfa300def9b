"""Upload to the reference server: one request, then chunks interrupted and resumed."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from sclib.client import Client
from sclib.server import serve_in_background
from sclib.server.auth import Authenticator
from sclib.settings import load_settings
from sclib.transfers.hashing import blake3_hex

MIB = 1024**2


class Interrupted(Exception):
    """Stands in for a dropped connection or a closed laptop."""


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="sclib-example-"))
    secret = secrets.token_urlsafe(32)
    settings = load_settings(
        data_dir=folder / "server-data",
        secret_key=secret,
        standard_upload_limit=4 * MIB,  # larger files go in chunks
        chunk_size=2 * MIB,
    )
    token = Authenticator(secret_key=secret).issue_token("scientist@example.org")
    small = folder / "notes.txt"
    small.write_text("exposure 0.5 s, 1200 frames\n")
    big = folder / "volume.raw"
    big.write_bytes(os.urandom(24 * MIB))

    server = serve_in_background(settings)
    with server, Client(server.url, token=token, state_dir=folder / "state") as client:
        first = client.upload_file(small, dataset_name="Run 7", sensor="OTHER")
        status = client.wait_for_completion(first.job_id, poll_interval=0.2)
        print(f"{small.name}: {first.upload_type} upload, job {status.status}")

        sent: list[float] = []

        def stop_half_way(fraction: float) -> None:
            sent.append(fraction)
            if fraction >= 0.5:
                raise Interrupted()

        try:
            client.upload_file(
                big,
                dataset_name="Run 7 volume",
                sensor="OTHER",
                parallel=2,
                progress_callback=stop_half_way,
            )
        except Interrupted:
            print(f"{big.name}: interrupted at {sent[-1]:.0%}")
        missing = client.upload_file(big, dataset_name="Run 7 volume", sensor="OTHER")
        status = client.wait_for_completion(missing.job_id, poll_interval=0.2)
        print(f"{big.name}: resumed ({missing.upload_type}), job {status.status}")

    for source in (small, big):
        (stored,) = (settings.data_dir / "upload").rglob(source.name)
        digest = blake3_hex(stored.read_bytes())
        assert digest == blake3_hex(source.read_bytes())  # byte for byte
        print(f"{digest}  {stored.relative_to(folder)}")


if __name__ == "__main__":
    main()
