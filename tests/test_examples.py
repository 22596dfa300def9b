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


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.parent.name for p in SCRIPTS])
def test_example_script_runs(script: Path, tmp_path: Path) -> None:
    """The script exits 0 and prints something."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_example_outputs_say_what_they_promise(tmp_path: Path) -> None:
    """The queue example completes its pipeline; the copy example reuses chunks;
    the upload example resumes its interrupted upload to completion; the pipeline
    example converts its TIFF slices and reads them back equal."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, str(SCRIPTS[0])],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    assert "dataset status: done" in out and out.count("completed") == 2
    out = subprocess.run(
        [sys.executable, str(SCRIPTS[1])],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    assert "interrupted:" in out and "(sent 0, reused 12 of 12 chunks)" in out
    out = subprocess.run(
        [sys.executable, str(SCRIPTS[2])],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    assert "volume.raw: interrupted at" in out
    assert "volume.raw: resumed (chunked), job completed" in out
    out = subprocess.run(
        [sys.executable, str(SCRIPTS[3])],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    assert "dataset done after: upload, file_extraction, dataset_conversion" in out
    assert "equal to the input" in out and "reprocessed as Zarr: done" in out


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
