"""Every example script and the notebook run offline, so they cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(ROOT.glob("examples/[0-9][0-9]_*/run.py"))


#: What each example promises to print (and, for the queue example, how often).
PROMISES: dict[str, list[str]] = {
    "01_job_queue": ["dataset status: done"],
    "02_resumable_copy": ["interrupted:", "(sent 0, reused 12 of 12 chunks)"],
    "03_server_upload": [
        "volume.raw: interrupted at",
        "volume.raw: resumed (chunked), job completed",
    ],
    "04_pipeline": [
        "dataset done after: upload, file_extraction, dataset_conversion",
        "equal to the input",
        "reprocessed as Zarr: done",
    ],
}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.parent.name for p in SCRIPTS])
def test_example_script_runs(script: Path, tmp_path: Path) -> None:
    """The script exits 0 and prints what it promises: the queue example
    completes its pipeline; the copy example reuses chunks; the upload example
    resumes its interrupted upload to completion; the pipeline example converts
    its TIFF slices and reads them back equal."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    promised = PROMISES.get(script.parent.name)
    assert promised is not None, f"add what {script.parent.name} promises"
    for text in promised:
        assert text in out, (text, out)
    if script.parent.name == "01_job_queue":
        assert out.count("completed") == 2


def test_notebook_cells_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebook's code cells run in order in one namespace."""
    notebook = json.loads(
        (ROOT / "examples" / "notebooks" / "quickstart.ipynb").read_text()
    )
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    namespace: dict[str, object] = {"__name__": "__notebook__"}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "<cell>", "exec"), namespace)  # noqa: S102
    assert namespace["job"].status.value == "completed"  # type: ignore[attr-defined]
    assert len(namespace["result"].files) == 3  # type: ignore[attr-defined]
    assert namespace["uploaded"].upload_type == "chunked"  # type: ignore[attr-defined]
    assert namespace["status"].status == "completed"  # type: ignore[attr-defined]
