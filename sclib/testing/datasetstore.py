"""The DatasetStore contract: what every dataset store keeps, as tests.

Subclass :class:`DatasetStoreContract` and provide a ``datasets`` fixture (a fresh,
empty store), as ``tests/contract/test_dataset_stores.py`` does for memory, SQLite
and MongoDB. The ``test_concurrent_*`` tests use threads; a stand-in that is not
thread-safe (mongomock) should skip them.
"""

from __future__ import annotations

import threading
import uuid as uuid_module
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from sclib.datasets import (
    Dataset,
    DatasetConflict,
    DatasetFile,
    DatasetNotFound,
    DatasetStore,
    find_dataset,
)
from sclib.errors import InvalidInput, InvalidTransition, NotFound
from sclib.jobtypes import DatasetStatus, SensorType

__all__ = ["DatasetStoreContract"]

T0 = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
OWNER = "ana@example.org"
OTHER = "bo@example.org"


def _digest(n: int) -> str:
    return f"{n:064x}"


def _dataset(name: str = "My Data", owner: str = OWNER, **kw: object) -> Dataset:
    return Dataset(name=name, owner=owner, sensor="TIFF", **kw)  # type: ignore[arg-type]


def _run_threads(target: Callable[[int], object], count: int) -> None:
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            target(n)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


class DatasetStoreContract:
    """Subclass and provide a ``datasets`` fixture."""

    @pytest.fixture
    def datasets(self) -> Iterator[DatasetStore]:  # pragma: no cover - overridden
        raise NotImplementedError("provide a `datasets` fixture")

    # -- create / get ------------------------------------------------------------

    def test_create_and_get_round_trip(self, datasets: DatasetStore) -> None:
        """A stored dataset comes back with every field as given."""
        given = Dataset(
            name="Scan 42",
            owner=OWNER,
            sensor="tiff_rgb",
            convert=False,
            is_public=True,
            is_public_downloadable=True,
            folder="upload/x",
            team_uuid="team-1",
            tags=("xray", "2024"),
            files=(DatasetFile("a/b.tif", 10, _digest(1)),),
            error_message=None,
            created_at=T0,
            updated_at=T0 + timedelta(seconds=1),
        )
        made = datasets.create(given)
        got = datasets.get(given.uuid)
        assert got == made
        assert got.slug == "scan-42"
        assert got.sensor is SensorType.TIFF_RGB
        assert (got.convert, got.is_public, got.is_public_downloadable) == (
            False,
            True,
            True,
        )
        assert (got.folder, got.team_uuid, got.tags) == (
            "upload/x",
            "team-1",
            ("xray", "2024"),
        )
        assert got.files == (DatasetFile("a/b.tif", 10, _digest(1)),)
        assert got.total_size == 10
        assert got.status is DatasetStatus.SUBMITTED
        assert (got.created_at, got.updated_at) == (T0, T0 + timedelta(seconds=1))

    def test_new_dataset_defaults(self, datasets: DatasetStore) -> None:
        """A dataset built from name, owner and sensor gets a 32-hex uuid, status
        ``submitted``, no files and aware UTC timestamps."""
        made = datasets.create(_dataset())
        assert len(made.uuid) == 32 and int(made.uuid, 16) >= 0
        assert made.status == "submitted" and made.error_message is None
        assert made.files == () and made.total_size == 0
        assert made.created_at.tzinfo is not None
        assert datasets.get(made.uuid) == made

    def test_unknown_uuid_raises_not_found(self, datasets: DatasetStore) -> None:
        """Every operation on an unknown uuid raises DatasetNotFound (a NotFound)."""
        missing = "0" * 32
        calls: list[Callable[[], object]] = [
            lambda: datasets.get(missing),
            lambda: datasets.add_files(missing, [DatasetFile("a", 1, _digest(1))]),
            lambda: datasets.set_status(missing, "uploading"),
            lambda: datasets.update(missing, name="x"),
            lambda: datasets.delete(missing),
        ]
        for call in calls:
            with pytest.raises(DatasetNotFound) as info:
                call()
            assert isinstance(info.value, NotFound) and missing in str(info.value)

    def test_duplicate_uuid_is_refused(self, datasets: DatasetStore) -> None:
        """Creating a second dataset with a stored uuid raises InvalidInput and
        leaves the first one alone."""
        first = datasets.create(_dataset("One"))
        with pytest.raises(InvalidInput, match=first.uuid):
            datasets.create(_dataset("Two", uuid=first.uuid))
        assert datasets.get(first.uuid).name == "One"
        assert len(datasets.list()) == 1

    def test_a_uuid_in_its_other_spelling_is_refused(
        self, datasets: DatasetStore
    ) -> None:
        """A dataset whose uuid is a stored one spelt with or without dashes is
        refused too: one uuid must never become two datasets."""
        dashed = str(uuid_module.uuid4())
        datasets.create(_dataset("One", uuid=dashed))
        with pytest.raises(InvalidInput, match=dashed):
            datasets.create(_dataset("Two", uuid=dashed.replace("-", "")))
        hexed = uuid_module.uuid4().hex
        datasets.create(_dataset("Three", uuid=hexed))
        with pytest.raises(InvalidInput, match=hexed):
            datasets.create(_dataset("Four", uuid=str(uuid_module.UUID(hexed))))
        assert len(datasets.list()) == 2

    def test_bad_input_is_refused(self) -> None:
        """A bad sensor, an empty name or owner, a bad uuid or status, naive times
        and bad tags raise InvalidInput naming the problem."""
        cases: list[tuple[dict[str, object], str]] = [
            ({"sensor": "LIDAR"}, "sensor"),
            ({"name": "  "}, "name"),
            ({"owner": ""}, "owner"),
            ({"uuid": "../not-a-folder"}, "uuid"),
            ({"uuid": "has space"}, "uuid"),
            ({"status": "conversion failed"}, "status"),
            ({"created_at": datetime(2024, 1, 1)}, "created_at"),
            ({"tags": "one"}, "tags"),
            ({"slug": "a/b"}, "slug"),
            ({"number": -1}, "number"),
            ({"convert": "yes"}, "convert"),
        ]
        for changes, word in cases:
            fields: dict[str, object] = {
                "name": "n",
                "owner": OWNER,
                "sensor": "TIFF",
                **changes,
            }
            with pytest.raises(InvalidInput, match=word):
                Dataset(**fields)  # type: ignore[arg-type]

    # -- slugs -------------------------------------------------------------------

    def test_slug_is_unique_per_owner(self, datasets: DatasetStore) -> None:
        """Same name, same owner: my-data, my-data-2, my-data-3; another owner
        gets my-data again."""
        slugs = [datasets.create(_dataset("My Data")).slug for _ in range(3)]
        assert slugs == ["my-data", "my-data-2", "my-data-3"]
        assert datasets.create(_dataset("my  data!", owner=OTHER)).slug == "my-data"

    def test_slug_fills_the_first_gap_and_keeps_explicit_ones(
        self, datasets: DatasetStore
    ) -> None:
        """A freed slug is reused; an explicit slug is kept or numbered; a name
        without letters gives ``dataset``; accents are folded."""
        a = datasets.create(_dataset("Data"))
        datasets.create(_dataset("Data"))
        datasets.delete(a.uuid)
        assert datasets.create(_dataset("Data")).slug == "data"
        assert datasets.create(_dataset("x", slug="custom")).slug == "custom"
        assert datasets.create(_dataset("y", slug="custom")).slug == "custom-2"
        assert datasets.create(_dataset("???")).slug == "dataset"
        assert datasets.create(_dataset("Été Ñandú")).slug == "ete-nandu"

    def test_numbers_are_given_in_order_and_kept(self, datasets: DatasetStore) -> None:
        """A new dataset gets the next number after the highest; a number given
        (a migrated dataset's) is kept."""
        first = datasets.create(_dataset("One"))
        kept = datasets.create(_dataset("Two", number=41000))
        third = datasets.create(_dataset("Three"))
        assert first.number is not None and kept.number == 41000
        assert third.number == 41001
        assert datasets.get(first.uuid).number == first.number

    def test_find_dataset_the_way_the_original_did(
        self, datasets: DatasetStore
    ) -> None:
        """find_dataset takes a uuid in either spelling, an identifier a dataset
        was created under, a number, a slug (the original's, with dots and
        underscores) or an exact name; only the owner's datasets count when an
        owner is given."""
        plain = datasets.create(_dataset("Beamline Run 7"))
        dashed = datasets.create(
            _dataset("Old", uuid="550e8400-e29b-41d4-a716-446655440000")
        )
        legacy = datasets.create(
            _dataset("Mine", uuid="my-own-id", slug="ben.kim-run_1--final-2024")
        )
        other = datasets.create(_dataset("Beamline Run 7", owner=OTHER))
        dashed_plain = str(uuid_module.UUID(plain.uuid))
        cases = {
            plain.uuid: plain,
            dashed_plain: plain,
            dashed.uuid: dashed,
            dashed.uuid.replace("-", ""): dashed,
            "my-own-id": legacy,
            str(legacy.number): legacy,
            "ben.kim-run_1--final-2024": legacy,
            plain.slug: plain,
            "Beamline Run 7": plain,
        }
        for identifier, want in cases.items():
            found = find_dataset(datasets, identifier, OWNER)
            assert found is not None and found.uuid == want.uuid, identifier
        assert find_dataset(datasets, other.uuid, OWNER) is None
        assert find_dataset(datasets, str(other.number), OWNER) is None
        found = find_dataset(datasets, other.uuid)
        assert found is not None and found.uuid == other.uuid
        for missing in ("nope", "999999", "", "  "):
            assert find_dataset(datasets, missing, OWNER) is None

    def test_legacy_slug_wildcards_are_plain_text(self, datasets: DatasetStore) -> None:
        """A slug with '_' or '%' (the original's) is matched as text when the
        store numbers a repeat: 'a_b' takes 'a_b-2', and 'axb' is not taken."""
        assert datasets.create(_dataset("x", slug="a_b")).slug == "a_b"
        assert datasets.create(_dataset("y", slug="axb-1")).slug == "axb-1"
        assert datasets.create(_dataset("z", slug="a_b")).slug == "a_b-2"
        assert datasets.create(_dataset("w", slug="a%b")).slug == "a%b"

    def test_find_by_slug(self, datasets: DatasetStore) -> None:
        """find_by_slug finds the owner's dataset, and nothing for other owners."""
        mine = datasets.create(_dataset("Shared Name"))
        theirs = datasets.create(_dataset("Shared Name", owner=OTHER))
        found = datasets.find_by_slug(OWNER, "shared-name")
        assert found is not None and found.uuid == mine.uuid
        found = datasets.find_by_slug(OTHER, "shared-name")
        assert found is not None and found.uuid == theirs.uuid
        assert datasets.find_by_slug(OWNER, "nope") is None
        assert datasets.find_by_slug("carl@example.org", "shared-name") is None

    def test_concurrent_creates_get_distinct_slugs(
        self, datasets: DatasetStore
    ) -> None:
        """Eight threads creating datasets of one name for one owner all succeed,
        each with its own slug."""
        _run_threads(lambda n: [datasets.create(_dataset("Race")) for _ in range(3)], 8)
        slugs = sorted(d.slug for d in datasets.list(owner=OWNER))
        assert len(slugs) == 24 and len(set(slugs)) == 24
        assert "race" in slugs and "race-24" in slugs

    def test_concurrent_creates_get_distinct_numbers(
        self, datasets: DatasetStore
    ) -> None:
        """Eight threads creating datasets of other names and owners (so no slug
        clash orders them) all get their own numbers, one after another: a number
        names one dataset, as the original's numeric id did."""
        _run_threads(
            lambda n: [
                datasets.create(_dataset(f"Race {n} {i}", owner=f"u{n}@example.org"))
                for i in range(3)
            ],
            8,
        )
        numbers = sorted(d.number or 0 for d in datasets.list(limit=100))
        assert numbers == list(range(1, 25)), numbers

    # -- list --------------------------------------------------------------------

    def test_list_is_newest_first(self, datasets: DatasetStore) -> None:
        """list() orders by creation time, newest first."""
        made = [
            datasets.create(_dataset(f"d{i}", created_at=T0 + timedelta(minutes=i)))
            for i in (2, 0, 3, 1)
        ]
        names = [d.name for d in datasets.list()]
        assert names == ["d3", "d2", "d1", "d0"]
        assert {d.uuid for d in made} == {d.uuid for d in datasets.list()}

    def test_list_filters_by_owner_and_status(self, datasets: DatasetStore) -> None:
        """list(owner=..., status=...) keeps only matching datasets."""
        a = datasets.create(_dataset("a"))
        b = datasets.create(_dataset("b", owner=OTHER))
        c = datasets.create(_dataset("c"))
        datasets.set_status(c.uuid, DatasetStatus.UPLOADING)
        assert {d.uuid for d in datasets.list(owner=OWNER)} == {a.uuid, c.uuid}
        assert [d.uuid for d in datasets.list(owner=OTHER)] == [b.uuid]
        assert [d.uuid for d in datasets.list(status="uploading")] == [c.uuid]
        got = datasets.list(owner=OWNER, status=DatasetStatus.SUBMITTED)
        assert [d.uuid for d in got] == [a.uuid]
        assert datasets.list(owner=OTHER, status="uploading") == []

    def test_list_pagination(self, datasets: DatasetStore) -> None:
        """limit and offset page through the newest-first order; negative values
        are refused."""
        for i in range(5):
            datasets.create(_dataset(f"d{i}", created_at=T0 + timedelta(minutes=i)))
        pages = [
            [d.name for d in datasets.list(limit=2, offset=o)] for o in (0, 2, 4, 6)
        ]
        assert pages == [["d4", "d3"], ["d2", "d1"], ["d0"], []]
        assert datasets.list(limit=0) == []
        with pytest.raises(InvalidInput, match="limit"):
            datasets.list(limit=-1)
        with pytest.raises(InvalidInput, match="offset"):
            datasets.list(offset=-1)

    # -- files -------------------------------------------------------------------

    def test_add_files_sums_sizes(self, datasets: DatasetStore) -> None:
        """add_files stores each file (sorted by path) and the total size."""
        made = datasets.create(_dataset())
        got = datasets.add_files(
            made.uuid,
            [
                DatasetFile("z.tif", 5, _digest(1)),
                DatasetFile("a/b.tif", 7, _digest(2)),
            ],
        )
        assert [f.path for f in got.files] == ["a/b.tif", "z.tif"]
        assert got.total_size == 12
        assert datasets.get(made.uuid) == got
        assert got.updated_at >= made.updated_at

    def test_add_files_replaces_by_path(self, datasets: DatasetStore) -> None:
        """A file added again at the same path replaces the old record; the total
        size follows; of two files at one path in one call, the later wins."""
        made = datasets.create(_dataset(files=(DatasetFile("a.tif", 100, _digest(1)),)))
        datasets.add_files(made.uuid, [DatasetFile("b.tif", 1, _digest(2))])
        got = datasets.add_files(
            made.uuid,
            [
                DatasetFile("a.tif", 40, _digest(3)),
                DatasetFile("a.tif", 30, _digest(4)),
            ],
        )
        assert got.files == (
            DatasetFile("a.tif", 30, _digest(4)),
            DatasetFile("b.tif", 1, _digest(2)),
        )
        assert got.total_size == 31
        assert datasets.add_files(made.uuid, []).total_size == 31

    def test_bad_files_are_refused(self, datasets: DatasetStore) -> None:
        """Negative sizes, bad digests and paths leaving the folder raise
        InvalidInput; a dataset cannot list one path twice."""
        cases: list[tuple[str, object, str]] = [
            ("a.tif", -1, _digest(1)),
            ("a.tif", 1.5, _digest(1)),
            ("a.tif", 1, "xyz"),
            ("a.tif", 1, _digest(1)[:-1] + "g"),
            ("../etc/passwd", 1, _digest(1)),
            ("a/../../b", 1, _digest(1)),
            ("/abs/path", 1, _digest(1)),
            ("", 1, _digest(1)),
        ]
        for path, size, digest in cases:
            with pytest.raises(InvalidInput):
                DatasetFile(path, size, digest)  # type: ignore[arg-type]
        upper = DatasetFile("a.tif", 1, _digest(255).upper())
        assert upper.blake3 == _digest(255)
        with pytest.raises(InvalidInput, match="twice"):
            _dataset(files=(upper, upper))

    def test_concurrent_add_files_lose_nothing(self, datasets: DatasetStore) -> None:
        """Eight threads adding different paths to one dataset lose no file, and
        the total size is the sum of all of them."""
        made = datasets.create(_dataset())

        def add(n: int) -> None:
            for i in range(10):
                path = f"t{n}/f{i}.bin"
                datasets.add_files(
                    made.uuid, [DatasetFile(path, n * 10 + i, _digest(i))]
                )

        _run_threads(add, 8)
        got = datasets.get(made.uuid)
        assert len(got.files) == 80
        assert got.total_size == sum(range(80))

    # -- status ------------------------------------------------------------------

    def test_status_follows_legal_transitions(self, datasets: DatasetStore) -> None:
        """A dataset walks submitted -> uploading -> unzipping -> conversion queued
        -> converting -> done."""
        made = datasets.create(_dataset())
        path = ["uploading", "unzipping", "conversion queued", "converting", "done"]
        for status in path:
            got = datasets.set_status(made.uuid, status)
            assert got.status == status
        assert datasets.get(made.uuid).status is DatasetStatus.DONE

    def test_illegal_transition_names_both_statuses(
        self, datasets: DatasetStore
    ) -> None:
        """An illegal change raises InvalidTransition naming both statuses and
        leaves the status unchanged; an unknown status is InvalidInput."""
        made = datasets.create(_dataset())
        with pytest.raises(InvalidTransition) as info:
            datasets.set_status(made.uuid, "converting")
        assert "'submitted'" in str(info.value) and "'converting'" in str(info.value)
        assert datasets.get(made.uuid).status == "submitted"
        with pytest.raises(InvalidInput, match="conversion failed"):
            datasets.set_status(made.uuid, "conversion failed")

    def test_same_status_is_a_no_op(self, datasets: DatasetStore) -> None:
        """Setting the current status and message again writes nothing."""
        made = datasets.create(_dataset(updated_at=T0))
        again = datasets.set_status(made.uuid, "submitted")
        assert again == made and again.updated_at == T0

    def test_error_message_is_set_and_cleared(self, datasets: DatasetStore) -> None:
        """An error status carries its message; the next status clears it."""
        made = datasets.create(_dataset())
        datasets.set_status(made.uuid, "uploading")
        failed = datasets.set_status(made.uuid, "upload error", "disk full on x.tif")
        assert failed.error_message == "disk full on x.tif"
        assert datasets.get(made.uuid).error_message == "disk full on x.tif"
        retried = datasets.set_status(made.uuid, "retrying")
        assert retried.error_message is None

    def test_compare_and_set(self, datasets: DatasetStore) -> None:
        """With ``expected`` the change happens only from that status; otherwise
        DatasetConflict and nothing changes."""
        made = datasets.create(_dataset())
        got = datasets.set_status(made.uuid, "uploading", expected="submitted")
        assert got.status == "uploading"
        with pytest.raises(DatasetConflict, match="uploading"):
            datasets.set_status(made.uuid, "unzipping", expected="submitted")
        assert datasets.get(made.uuid).status == "uploading"
        with pytest.raises(InvalidInput):
            datasets.set_status(made.uuid, "done", expected="nonsense")

    def test_concurrent_compare_and_set_has_one_winner(
        self, datasets: DatasetStore
    ) -> None:
        """Eight threads moving submitted -> uploading with expected='submitted':
        exactly one succeeds, the others get DatasetConflict."""
        made = datasets.create(_dataset())
        wins: list[int] = []
        conflicts: list[int] = []

        def claim(n: int) -> None:
            try:
                datasets.set_status(made.uuid, "uploading", expected="submitted")
                wins.append(n)
            except DatasetConflict:
                conflicts.append(n)

        _run_threads(claim, 8)
        assert len(wins) == 1 and len(conflicts) == 7

    # -- update / delete ---------------------------------------------------------

    def test_update_changes_only_given_fields(self, datasets: DatasetStore) -> None:
        """update() changes the given fields; a new name keeps the slug, files and
        status."""
        made = datasets.create(
            _dataset(files=(DatasetFile("a", 3, _digest(1)),), created_at=T0)
        )
        got = datasets.update(
            made.uuid,
            name="Renamed",
            tags=["t1", "t2"],
            is_public=True,
            is_public_downloadable=True,
            sensor="hdf5",
            convert=False,
            folder="f",
            team_uuid="team-9",
        )
        assert (got.name, got.slug) == ("Renamed", "my-data")
        assert got.tags == ("t1", "t2") and got.sensor is SensorType.HDF5
        assert (got.is_public, got.is_public_downloadable, got.convert) == (
            True,
            True,
            False,
        )
        assert (got.folder, got.team_uuid) == ("f", "team-9")
        assert got.files == made.files and got.status == made.status
        assert got.created_at == T0 and got.updated_at >= made.updated_at
        assert datasets.get(made.uuid) == got
        assert datasets.find_by_slug(OWNER, "my-data") == got
        assert datasets.update(made.uuid) == got

    def test_update_refuses_bad_fields(self, datasets: DatasetStore) -> None:
        """update() refuses fields it does not own (status, files, slug, uuid) and
        bad values, leaving the dataset unchanged."""
        made = datasets.create(_dataset())
        for fields in (
            {"status": "done"},
            {"files": ()},
            {"slug": "other"},
            {"uuid": "1" * 32},
            {"owner": OTHER},
            {"sensor": "LIDAR"},
            {"name": ""},
            {"is_public": "yes"},
        ):
            with pytest.raises(InvalidInput):
                datasets.update(made.uuid, **fields)
        assert datasets.get(made.uuid) == made

    def test_delete_removes_dataset_and_files(self, datasets: DatasetStore) -> None:
        """delete() removes the dataset and its files; its uuid and slug are free
        again."""
        made = datasets.create(_dataset(files=(DatasetFile("a", 3, _digest(1)),)))
        keep = datasets.create(_dataset("Keep"))
        datasets.delete(made.uuid)
        with pytest.raises(DatasetNotFound):
            datasets.get(made.uuid)
        assert datasets.find_by_slug(OWNER, "my-data") is None
        assert [d.uuid for d in datasets.list()] == [keep.uuid]
        again = datasets.create(_dataset(uuid=made.uuid))
        assert again.files == () and again.slug == "my-data"
