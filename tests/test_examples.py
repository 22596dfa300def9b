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
    "05_sdk_tour": [
        "copied 4 files: sent 4 chunks, reused 0",
        "thumbnail job: completed, result {'bytes_read': 3145728}",
        "upload job: completed",
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
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TMPDIR": str(tmp_path),
        "SCLIB_STATE_DIR": str(tmp_path / "state"),
    }
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


def test_the_sdk_tour_resumes_in_a_new_process(tmp_path: Path) -> None:
    """The 20-line user script, run again in a new process with the same
    folder, copies nothing again (every file reused from the per-user session
    store). That it passes ``mypy --strict`` as written, with no casts, is
    checked by the project's mypy run (pyproject.toml lists it)."""
    script = ROOT / "examples" / "05_sdk_tour" / "run.py"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TMPDIR": str(tmp_path),
        "SCLIB_STATE_DIR": str(tmp_path / "state"),
    }
    outs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "tour")],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        outs.append(done.stdout)
    assert "sent 4 chunks, reused 0" in outs[0]
    assert "copied 4 files: sent 0 chunks, reused 4" in outs[1]


def test_notebook_runs_in_a_jupyter_kernel(tmp_path: Path) -> None:
    """The quickstart notebook runs top to bottom in a real IPython kernel
    (nbclient): its progress bars are widgets (the notebook extra), no tqdm
    warning is printed, its jobs and upload complete, and it leaves no temp
    folder behind."""
    nbclient = pytest.importorskip("nbclient", reason="needs nbclient (dev extra)")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipywidgets", reason="needs the notebook extra")
    notebook = nbformat.read(
        ROOT / "examples" / "notebooks" / "quickstart.ipynb", as_version=4
    )
    checks = (
        "import json\n"
        "print(json.dumps({'job': job.status.value, 'files': len(result.files),"
        " 'upload': uploaded.upload_type, 'status': status.status,"
        " 'label': result.files[0].source_url}))"
    )
    notebook.cells.insert(len(notebook.cells) - 1, nbformat.v4.new_code_cell(checks))
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONWARNINGS": "default"}
    client = nbclient.NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=env)
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    streams = "".join(
        o.get("text", "") for o in outputs if o["output_type"] == "stream"
    )
    assert "TqdmWarning" not in streams and "IProgress not found" not in streams
    widgets = [
        o
        for o in outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets, "the copy's progress bar is a widget"
    found = json.loads(streams.strip().splitlines()[-1])
    assert found["job"] == "completed" and found["files"] == 3
    assert found["upload"] == "chunked" and found["status"] == "completed"
    assert list(temp.iterdir()) == [], "the notebook cleans up its temp folder"
