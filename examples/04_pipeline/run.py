"""A zip of TIFF slices through the pipeline: uploaded, unpacked, converted."""

from __future__ import annotations

import io
import secrets
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import OpenVisus as ov
import tifffile
import zarr

from sclib.client import Client
from sclib.server import serve_in_background
from sclib.server.auth import Authenticator
from sclib.settings import load_settings


def slices_zip(stack: np.ndarray, path: Path) -> None:
    """One single-page TIFF per slice, as many instruments write them."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, plane in enumerate(stack):
            page = io.BytesIO()
            tifffile.imwrite(page, plane)
            zf.writestr(f"slice{i:03d}.tif", page.getvalue())


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="sclib-example-"))
    secret = secrets.token_urlsafe(32)
    settings = load_settings(data_dir=folder / "server-data", secret_key=secret)
    token = Authenticator(secret_key=secret).issue_token("scientist@example.org")
    stack = np.random.default_rng(7).integers(0, 4096, (24, 96, 128), np.uint16)
    archive = folder / "scan.zip"
    slices_zip(stack, archive)

    with serve_in_background(settings) as server, Client(server.url, token) as client:
        up = client.upload_file(archive, dataset_name="Scan 7", sensor="TIFF")
        assert up.dataset_uuid is not None
        state = client.wait_for_dataset(up.dataset_uuid, poll_interval=0.2)
        steps = ", ".join(j["job_type"] for j in state.jobs)
        print(f"dataset {state.status} after: {steps}")
        converted = settings.data_dir / "converted" / up.dataset_uuid
        volume = ov.LoadDataset(str(converted / "visus.idx")).read()
        assert np.array_equal(volume, stack)
        print(f"visus.idx reads back {volume.shape} {volume.dtype}, equal to the input")

        client.reprocess_dataset(up.dataset_uuid, output_format="zarr")
        state = client.wait_for_dataset(up.dataset_uuid, poll_interval=0.2)
        levels = zarr.open_group(str(converted / "data.zarr"), mode="r")
        full = levels["0"][:]
        assert np.array_equal(full, stack)
        names = sorted(levels.array_keys())
        print(f"reprocessed as Zarr: {state.status}, pyramid levels {names}")


if __name__ == "__main__":
    main()
