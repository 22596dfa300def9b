"""The dataset_conversion job and the pipeline that queues it, on a real SQLite
queue and dataset store, with real TIFF stacks converted to OpenVisus IDX."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import blake3
import pytest

from sclib.datasets import Dataset
from sclib.jobtypes import JobType
from sclib.pipeline.conversion import MARKER, converted_dir
from sclib.pipeline.publish import publish_dir
from tests.pipeline.pipeline_setup import OWNER, Setup

np = pytest.importorskip("numpy")
tifffile = pytest.importorskip("tifffile")
ov = pytest.importorskip("OpenVisus")


def _stack(seed: int, shape: tuple[int, int, int] = (5, 24, 32)) -> Any:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 60000, size=shape, dtype=np.uint16)


def _tiff(array: Any) -> bytes:
    import io

    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return buf.getvalue()


def _read_idx(path: Path) -> Any:
    return ov.LoadDataset(str(path)).read()


def test_a_tiff_dataset_is_converted_and_reads_back_the_same(setup: Setup) -> None:
    """Queued by the pipeline, the conversion goes `conversion queued` ->
    `converting` -> `done`, publishes visus.idx under converted/<uuid>/ with a
    marker naming its input, and the volume read back equals the TIFF stack."""
    stack = _stack(1)
    record = setup.add_dataset("a" * 32, {"scan.tif": _tiff(stack)})
    setup.datasets.set_status(record.uuid, "upload queued")
    setup.datasets.set_status(record.uuid, "uploading")
    queued = setup.pipeline.queue_conversion(record)
    assert queued["next"] == "dataset_conversion"
    assert setup.datasets.get(record.uuid).status == "conversion queued"
    setup.queue.run_until_idle()
    job = setup.queue.get(queued["job_id"])
    assert job.status == "completed", job.error
    assert setup.datasets.get(record.uuid).status == "done"
    out = converted_dir(setup.data_dir, record.uuid)
    assert job.result["entry_point"] == "visus.idx"
    assert np.array_equal(_read_idx(out / "visus.idx"), stack)
    marker = json.loads((out / MARKER).read_text())
    assert marker["inputs"] == ["scan.tif"]
    assert marker["fingerprint"] == job.result["fingerprint"]
    assert not list((setup.data_dir / "tmp" / "convert").iterdir())


def test_same_input_is_not_converted_twice_but_reprocess_is(setup: Setup) -> None:
    """A second conversion of unchanged files finds the published output up to
    date and writes nothing; a forced one (reprocess) converts again and replaces
    the output in one step."""
    record = setup.add_dataset("b" * 32, {"s.tif": _tiff(_stack(2))})
    first = setup.pipeline.queue_conversion(record)
    setup.queue.run_until_idle()
    out = converted_dir(setup.data_dir, record.uuid)
    inode = (out / MARKER).stat().st_ino
    again = setup.queue.enqueue(
        JobType.DATASET_CONVERSION, {}, dataset_uuid=record.uuid, owner=OWNER
    )
    setup.queue.run_until_idle()
    assert setup.queue.get(again.id).result["up_to_date"] is True
    assert (out / MARKER).stat().st_ino == inode
    forced = setup.pipeline.queue_conversion(record, force=True)
    assert forced["job_id"] != first["job_id"]
    setup.queue.run_until_idle()
    assert setup.queue.get(forced["job_id"]).status == "completed"
    assert (out / MARKER).stat().st_ino != inode
    assert setup.datasets.get(record.uuid).status == "done"


def test_other_sensor_goes_to_done_without_a_conversion_job(setup: Setup) -> None:
    """`OTHER` has no converter: not an error, the dataset is `done` at once and
    the pipeline says why; `convert: false` does the same."""
    other = setup.add_dataset("c" * 32, {"notes.bin": os.urandom(100)}, sensor="OTHER")
    result = setup.pipeline.queue_conversion(other)
    assert result["next"] == "done"
    assert "no converter" in result["note"]
    assert setup.datasets.get(other.uuid).status == "done"
    plain = setup.add_dataset("d" * 32, {"s.tif": _tiff(_stack(3))}, convert=False)
    assert setup.pipeline.queue_conversion(plain)["next"] == "done"
    assert setup.queue.list(job_type="dataset_conversion") == []


def test_wrong_format_ends_in_conversion_error_naming_the_file(setup: Setup) -> None:
    """A text file named like a TIFF fails the job with a message naming it, the
    dataset is `conversion error` with that message, nothing is published and no
    temp folder is left."""
    record = setup.add_dataset(
        "e" * 32, {"good.tif": _tiff(_stack(4)), "bad.tif": b"not a tiff at all"}
    )
    queued = setup.pipeline.queue_conversion(record)
    setup.queue.run_until_idle()
    job = setup.queue.get(queued["job_id"])
    assert job.status == "failed"
    assert "bad.tif" in (job.error or "")
    assert job.attempts == 1  # a retry cannot help: none is made
    state = setup.datasets.get(record.uuid)
    assert state.status == "conversion error"
    assert "bad.tif" in (state.error_message or "")
    assert not converted_dir(setup.data_dir, record.uuid).exists()
    assert not list((setup.data_dir / "tmp" / "convert").iterdir())


def test_a_dataset_of_many_uploads_gets_one_conversion(setup: Setup) -> None:
    """Six upload jobs of one dataset, queued together: the ones that finish while
    others are still pending queue nothing; the last queues one conversion, which
    converts all six slices; a reprocess meanwhile waits for pending uploads."""
    uuid = "f" * 32
    planes = [_stack(20 + i, (1, 8, 8))[0] for i in range(6)]
    folder = setup.data_dir / "upload" / uuid
    folder.mkdir(parents=True)
    setup.datasets.create(Dataset(uuid=uuid, name="many", owner=OWNER, sensor="TIFF"))
    jobs = []
    for i, plane in enumerate(planes):
        data = _tiff(plane)
        (folder / f"s{i}.tif").write_bytes(data)
        entry = {"path": f"s{i}.tif", "size": len(data)}
        entry["blake3"] = blake3.blake3(data).hexdigest()
        jobs.append(
            setup.queue.enqueue(
                JobType.UPLOAD,
                {"source": "upload", "files": [entry], "dataset": {"sensor": "TIFF"}},
                dataset_uuid=uuid,
                owner=OWNER,
            ).id
        )
    forced = setup.pipeline.queue_conversion(setup.datasets.get(uuid), force=True)
    assert set(jobs) <= set(setup.queue.get(forced["job_id"]).depends_on)
    setup.queue.cancel(forced["job_id"], "not this one")
    setup.queue.run_until_idle()
    results = [setup.queue.get(j).result["pipeline"]["next"] for j in jobs]
    assert results == ["waiting"] * 5 + ["dataset_conversion"]
    conversions = [
        j
        for j in setup.queue.list(job_type="dataset_conversion")
        if j.status == "completed"
    ]
    assert len(conversions) == 1
    volume = _read_idx(converted_dir(setup.data_dir, uuid) / "visus.idx")
    assert np.array_equal(volume, np.stack(planes))
    assert setup.datasets.get(uuid).status == "done"


def test_publish_dir_replaces_a_folder_in_one_step(tmp_path: Path) -> None:
    """publish_dir puts a new folder at a path that has none, and swaps an
    existing one for the new one, deleting the old."""
    final = tmp_path / "out"
    for n in (1, 2):
        temp = tmp_path / f"t{n}"
        temp.mkdir()
        (temp / "v.txt").write_text(str(n))
        publish_dir(temp, final)
        assert (final / "v.txt").read_text() == str(n)
        assert not temp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_migrated_upload_records_what_the_old_system_left(setup: Setup) -> None:
    """An `upload` job with source `legacy` (made by `sclib migrate` for a dataset
    left `uploading`) hashes and records the files already in its folder, then
    the pipeline converts them; with an empty folder it fails at once, saying the
    data must be uploaded again."""
    stack = _stack(9)
    uuid = "0123abcd-0000-4000-8000-00000000beef"  # the legacy dashed form
    folder = setup.data_dir / "upload" / uuid
    folder.mkdir(parents=True)
    (folder / "old.tif").write_bytes(_tiff(stack))
    setup.datasets.create(Dataset(uuid=uuid, name="old", owner=OWNER, sensor="TIFF"))
    setup.datasets.set_status(uuid, "uploading")
    job = setup.queue.enqueue(
        JobType.UPLOAD, {"source": "legacy"}, dataset_uuid=uuid, owner=OWNER
    )
    setup.queue.run_until_idle()
    done = setup.queue.get(job.id)
    assert done.status == "completed", done.error
    assert done.result["pipeline"]["next"] == "dataset_conversion"
    record = setup.datasets.get(uuid)
    assert [(f.path, f.blake3) for f in record.files] == [
        ("old.tif", blake3.blake3((folder / "old.tif").read_bytes()).hexdigest())
    ]
    assert record.status == "done"
    assert np.array_equal(
        _read_idx(converted_dir(setup.data_dir, uuid) / "visus.idx"), stack
    )
    empty = "1" * 32
    setup.datasets.create(Dataset(uuid=empty, name="gone", owner=OWNER, sensor="TIFF"))
    lost = setup.queue.enqueue(
        JobType.UPLOAD, {"source": "legacy"}, dataset_uuid=empty, owner=OWNER
    )
    setup.queue.run_until_idle()
    failed = setup.queue.get(lost.id)
    assert failed.status == "failed" and failed.attempts == 1
    assert "upload the data again" in (failed.error or "")
    assert setup.datasets.get(empty).status == "upload error"


def test_output_of_a_damaged_input_is_never_published(setup: Setup) -> None:
    """A TIFF that changed on disk after it was verified on arrival still decodes,
    but its BLAKE3 no longer matches the record: the conversion fails naming it,
    publishes nothing, and is not retried."""
    stack = _stack(11)
    record = setup.add_dataset("7" * 32, {"s.tif": _tiff(stack)})
    damaged = _tiff(stack + 1)  # same shape and size, other values
    (setup.data_dir / "upload" / record.uuid / "s.tif").write_bytes(damaged)
    queued = setup.pipeline.queue_conversion(record)
    setup.queue.run_until_idle()
    job = setup.queue.get(queued["job_id"])
    assert job.status == "failed" and job.attempts == 1
    assert "s.tif" in (job.error or "") and "BLAKE3" in (job.error or "")
    assert not converted_dir(setup.data_dir, record.uuid).exists()
    assert setup.datasets.get(record.uuid).status == "conversion error"


def test_cancelling_a_queued_conversion_tells_the_dataset(setup: Setup) -> None:
    """A conversion cancelled before it ran would leave its dataset `conversion
    queued` for ever: after_cancel moves it to `conversion error` with the reason,
    unless another conversion of the dataset is still queued."""
    from sclib.pipeline.flow import after_cancel

    record = setup.add_dataset("5" * 32, {"s.tif": _tiff(_stack(12))})
    first = setup.pipeline.queue_conversion(record)["job_id"]
    second = setup.pipeline.queue_conversion(record, force=True)["job_id"]
    job = setup.queue.cancel(first, "not now")
    after_cancel(setup.queue, setup.datasets, job)
    assert setup.datasets.get(record.uuid).status == "conversion queued"
    job = setup.queue.cancel(second, "not at all")
    after_cancel(setup.queue, setup.datasets, job)
    state = setup.datasets.get(record.uuid)
    assert state.status == "conversion error"
    assert "not at all" in (state.error_message or "")
    assert second in (state.error_message or "")
