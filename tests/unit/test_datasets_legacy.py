"""Reading the original ScientistCloud's dataset documents (sclib.models.legacy).

The documents are built in the shapes the original's code writes them (see
tests/integration/legacy_fixture.py for the whole collection).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from sclib.datasets import Dataset, DatasetFile, MemoryDatasetStore
from sclib.errors import InvalidInput
from sclib.jobtypes import DatasetStatus, SensorType
from sclib.models.legacy import (
    read_bool,
    read_date,
    read_document,
    read_status,
    read_tags,
)

UUID = "3f2a8c1e-5b7d-4e9f-a1c3-0d4e6f8a9b2c"
NAIVE = datetime(2025, 11, 20, 15, 4, 5, 123456)


def upload_doc(**changes: Any) -> dict[str, Any]:
    """A dataset as the upload processor inserts it (main, late 2025)."""
    doc: dict[str, Any] = {
        "uuid": UUID,
        "name": "Scan 1",
        "slug": "ben.kim-scan-1-2025",
        "id": 48213,
        "user": "ben.kim@visus.net",
        "user_id": "ben.kim@visus.net",
        "sensor": "TIFF",
        "convert": True,
        "is_public": False,
        "is_public_downloadable": False,
        "folder_uuid": None,
        "team_uuid": None,
        "source_type": "local",
        "source_path": "/tmp/tmpq1w2e3/scan1.tif",
        "destination_path": f"/mnt/visus_datasets/upload/{UUID}/scan1.tif",
        "total_size_bytes": 0,
        "status": "done",
        "tags": "",
        "created_at": NAIVE,
        "updated_at": NAIVE,
        "files": [
            {
                "source_path": "/tmp/tmpq1w2e3/scan1.tif",
                "destination_path": f"/mnt/visus_datasets/upload/{UUID}/scan1.tif",
                "source_type": "local",
                "total_size_bytes": 0,
                "created_at": NAIVE,
            }
        ],
    }
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    ("value", "status", "noted"),
    [
        ("done", DatasetStatus.DONE, False),
        ("DONE", DatasetStatus.DONE, True),
        ("done ", DatasetStatus.DONE, True),
        ("  Conversion   Queued", DatasetStatus.CONVERSION_QUEUED, True),
        ("conversion failed", DatasetStatus.CONVERSION_ERROR, True),
        ("completed", DatasetStatus.DONE, True),
        ("cancelled", DatasetStatus.UPLOAD_ERROR, True),
        ("processing", DatasetStatus.CONVERSION_QUEUED, True),
        ("paused", None, True),
        (None, None, True),
        (7, None, True),
    ],
)
def test_statuses_match_whatever_their_case_and_spaces(
    value: object, status: DatasetStatus | None, noted: bool
) -> None:
    """sclib's 17 statuses match in any case and with stray spaces; the
    original's own words (completed, conversion failed, cancelled, processing)
    read as the sclib status meaning the same, saying so; anything else is None
    with a reason that names the known statuses."""
    got, note = read_status(value)
    assert got == status
    assert bool(note) is noted
    if status is None and isinstance(value, str):
        assert note is not None and "sync queued, syncing" in note


@pytest.mark.parametrize(
    ("value", "want", "noted"),
    [
        (True, True, False),
        ("false", False, False),
        ("False", False, False),
        ("True", True, False),
        (" true ", True, False),
        (1, True, False),
        ("0", False, False),
        ("yes", True, False),
        (None, False, False),
        ("maybe", False, True),
        (2, False, True),
    ],
)
def test_booleans_from_strings_and_numbers(
    value: object, want: bool, noted: bool
) -> None:
    """ "false" is false (it used to read as true), "True" and 1 are true, a
    missing value is the default, and anything else is the default with a note."""
    got, note = read_bool(value)
    assert got is want
    assert bool(note) is noted


def test_dates_of_every_form() -> None:
    """Datetimes (naive ones taken as UTC), ISO strings with or without a zone,
    epoch seconds and milliseconds (as numbers or text) and {"$date"} all read
    as aware UTC datetimes to the millisecond; text that is no date is None."""
    want = datetime(2025, 1, 20, 10, 0, tzinfo=UTC)
    for value in (
        datetime(2025, 1, 20, 10, 0),
        "2025-01-20T10:00:00Z",
        "2025-01-20 10:00:00",
        "2025-01-20T12:00:00+02:00",
        1737367200,
        1737367200.0,
        1737367200000,
        "1737367200",
        {"$date": "2025-01-20T10:00:00Z"},
        {"$date": {"$numberLong": "1737367200000"}},
    ):
        assert read_date(value) == want, value
    assert read_date(NAIVE) == datetime(2025, 11, 20, 15, 4, 5, 123000, tzinfo=UTC)
    for bad in ("yesterday", "", None, True, [2025], 1e300):
        assert read_date(bad) is None, bad


def test_tags_of_every_form() -> None:
    """The upload's letters-joined string is decoded (and said), a comma string
    and a JSON array string split, a list loses its empty entries."""
    assert read_tags("s,o,i,l,,,m,a,i,z,e")[0] == ("soil", "maize")
    assert "one letter each" in str(read_tags("x,r,a,y")[1])
    assert read_tags("x,r,a,y")[0] == ("xray",)
    assert read_tags("test,sample") == (("test", "sample"), None)
    assert read_tags(["a", "b", ""]) == (("a", "b"), None)
    assert read_tags([""]) == ((), None)
    assert read_tags('["soil", "maize"]')[0] == ("soil", "maize")
    assert read_tags("") == ((), None)
    assert read_tags(None) == ((), None)


def test_an_upload_processor_document_reads_whole() -> None:
    """The upload processor's document reads with nothing missing: its file
    entry becomes the path below the dataset's folder with the recorded size and
    no digest yet, the legacy slug is kept, the number is its id, the
    downloadable flag is is_public_downloadable and the folder is folder_uuid."""
    doc = upload_doc(
        is_public=True,
        is_public_downloadable=True,
        folder_uuid="CEDMAV",
        tags="s,o,i,l",
    )
    doc["files"].append(
        {
            **doc["files"][0],
            "destination_path": f"/mnt/visus_datasets/upload/{UUID}/sub/dir/b.tif",
        }
    )
    read = read_document(doc)
    ds = read.dataset
    assert read.complete and ds.complete
    assert ds.uuid == UUID and ds.slug == "ben.kim-scan-1-2025" and ds.number == 48213
    assert (ds.owner, ds.status, ds.sensor) == (
        "ben.kim@visus.net",
        DatasetStatus.DONE,
        SensorType.TIFF,
    )
    assert ds.files == (
        DatasetFile("scan1.tif", 0, None),
        DatasetFile("sub/dir/b.tif", 0, None),
    )
    assert (ds.is_public, ds.is_public_downloadable, ds.folder) == (
        True,
        True,
        "CEDMAV",
    )
    assert ds.tags == ("soil",)
    assert ds.created_at == datetime(2025, 11, 20, 15, 4, 5, 123000, tzinfo=UTC)
    assert any("no digest yet" in r for r in read.report)


def test_other_shapes_read_whole() -> None:
    """The Dataset API's document (date_imported, data_conversion_needed, a free
    sensor string), the first weeks' (user_email, folder, 'completed') and the
    portal's older one (time as text, is_public 'false', team_uuid '') all read
    without anything missing."""
    api = {
        "uuid": UUID,
        "id": 4242,
        "slug": "ana-my-set-1762200000",
        "name": "My Set",
        "user": "ana@visus.net",
        "user_email": "ana@visus.net",
        "sensor": "4D_Probe",
        "tags": ["a", "b", ""],
        "data_conversion_needed": False,
        "status": "submitted",
        "date_imported": NAIVE,
        "date_updated": NAIVE,
        "metadata": {"folder_uuid": "runs"},
    }
    read = read_document(api)
    assert read.complete
    assert read.dataset.sensor is SensorType.OTHER and read.notes
    assert read.dataset.convert is False and read.dataset.folder == "runs"
    assert read.sources["created_at"] == "date_imported"
    early = {
        "uuid": UUID,
        "name": "Old",
        "user_email": "ana@visus.net",
        "sensor": "IDX",
        "folder": "research",
        "status": "completed",
        "created_at": NAIVE,
    }
    read = read_document(early)
    assert read.complete and read.dataset.status is DatasetStatus.DONE
    assert read.dataset.owner == "ana@visus.net" and read.dataset.folder == "research"
    portal = {
        "uuid": UUID,
        "name": "Legacy",
        "user": "ana@visus.net",
        "sensor": "TIFF",
        "status": "done",
        "time": "2025-01-20T10:00:00Z",
        "is_public": "false",
        "team_uuid": "",
        "data_size": "758.16 KB",
    }
    read = read_document(portal)
    assert read.complete and read.dataset.is_public is False
    assert read.dataset.team_uuid is None
    assert read.dataset.created_at == datetime(2025, 1, 20, 10, tzinfo=UTC)


def test_private_branch_downloadable_strings() -> None:
    """is_downloadable 'public' is downloadable, 'only owner' and 'only team'
    are not (team-only said in a note); sclib's own boolean wins over the
    original's is_public_downloadable."""
    assert (
        read_document(
            upload_doc(is_downloadable="public")
        ).dataset.is_public_downloadable
        is False
    )
    del_public = upload_doc(is_downloadable="public")
    del del_public["is_public_downloadable"]
    assert read_document(del_public).dataset.is_public_downloadable is True
    team = upload_doc(is_downloadable="only team")
    del team["is_public_downloadable"]
    read = read_document(team)
    assert read.dataset.is_public_downloadable is False
    assert any("only team" in n for n in read.notes)
    both = upload_doc(is_downloadable=True, is_public_downloadable=False)
    assert read_document(both).dataset.is_public_downloadable is True


def test_what_cannot_be_read_makes_a_partial_dataset() -> None:
    """A document without uuid, owner, name or a known status still reads: it
    is shown under its _id, with an empty owner or name and its status text,
    and the notes say what is missing; a store refuses to create it."""
    bson = pytest.importorskip("bson")
    oid = bson.ObjectId()
    doc = {"_id": oid, "user_id": "65a1b2c3d4e5f60718293a4b", "status": "paused"}
    read = read_document(doc)
    ds = read.dataset
    assert not read.complete and not ds.complete
    assert ds.uuid == str(oid) and ds.owner == "" and ds.name == ""
    assert ds.status == "paused"
    text = " ".join(ds.notes)
    assert "no uuid" in text and "portal profile id" in text
    assert "no name" in text and "unknown status 'paused'" in text
    assert ds.created_at == read_date(oid.generation_time)
    with pytest.raises(InvalidInput, match="cannot be stored"):
        MemoryDatasetStore().create(ds)


def test_a_complete_dataset_has_no_relaxed_rules() -> None:
    """Without notes, an empty owner or an unknown status is refused as always;
    a file may have no digest yet, but a digest given must be 64 hex digits."""
    with pytest.raises(InvalidInput, match="owner"):
        Dataset(name="n", owner="", sensor="TIFF")
    with pytest.raises(InvalidInput, match="not a dataset status"):
        Dataset(name="n", owner="o", sensor="TIFF", status="paused")
    assert DatasetFile("a", 0, None).blake3 is None
    with pytest.raises(InvalidInput, match="64 hex"):
        DatasetFile("a", 0, "abc")
