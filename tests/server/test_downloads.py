"""Downloads against a real ``sclib serve`` on 127.0.0.1: the listing, ``Range``
of every shape, ``If-Range``, ``HEAD``, who may download, and paths that try to
leave the dataset's folder.

Datasets are made the way users make them (``POST /api/upload/upload``, the
in-process worker verifies and records the files); converted output by a real
conversion (a TIFF to OpenVisus IDX) where OpenVisus is installed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import httpx
import pytest

from sclib.server.routes_downloads import ByteRange, parse_range
from tests.server.live import LiveServer

pytestmark = pytest.mark.integration

ALICE = "alice@example.org"
BOB = "bob@example.org"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server (with its worker) for the module's datasets."""
    live = LiveServer(tmp_path_factory.mktemp("downloads") / "data").start()
    try:
        yield live
    finally:
        live.stop()


def _b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def _settle(server: LiveServer, uuid: str, owner: str) -> dict[str, Any]:
    """Wait until every job of the dataset finished; its status page."""
    deadline = time.monotonic() + 60
    page: dict[str, Any] = {}
    while time.monotonic() < deadline:
        page = httpx.get(
            f"{server.url}/api/v1/datasets/{uuid}/status",
            headers=server.headers(owner),
        ).json()
        jobs = page.get("jobs", [])
        if jobs and all(
            j["status"] in ("completed", "failed", "cancelled") for j in jobs
        ):
            return page
        time.sleep(0.1)
    raise AssertionError(f"dataset {uuid} did not settle: {page}")


def make_dataset(
    server: LiveServer,
    files: dict[str, bytes],
    *,
    owner: str = ALICE,
    public: bool = False,
    sensor: str = "OTHER",
    convert: bool = False,
    name: str = "downloads",
) -> str:
    """A dataset of ``files`` (path -> bytes), uploaded by ``owner`` and
    recorded by the worker; its uuid."""
    uuid = None
    for path, data in files.items():
        folder, _, filename = path.rpartition("/")
        fields = {
            "dataset_name": name,
            "sensor": sensor,
            "convert": "true" if convert else "false",
            "is_public_downloadable": "true" if public else "false",
        }
        if folder:
            fields["relative_path"] = folder
        if uuid is not None:
            fields["dataset_identifier"] = uuid
            fields["add_to_existing"] = "true"
        answer = httpx.post(
            f"{server.url}/api/upload/upload",
            files={"file": (filename, data)},
            data=fields,
            headers=server.headers(owner),
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        uuid = answer.json()["dataset_uuid"]
        _settle(server, uuid, owner)
    assert uuid is not None
    page = _settle(server, uuid, owner)
    assert page["status"] == "done", page
    return str(uuid)


@pytest.fixture(scope="module")
def dataset(server: LiveServer) -> tuple[str, dict[str, bytes]]:
    """Alice's private dataset: a 2.5 MiB file (more than two reads of the
    server's 1 MiB), a small one in a subfolder, an empty one and a name that
    needs quoting."""
    files = {
        "big.bin": os.urandom(5 * MIB // 2 + 17),
        "sub/dir/small.txt": b"0123456789" * 100,
        "empty.dat": b"",
        "odd name #1%.bin": os.urandom(3000),
    }
    return make_dataset(server, files), files


def _get(
    server: LiveServer, url: str, who: str = ALICE, **headers: str
) -> httpx.Response:
    return httpx.get(
        server.url + url, headers={**server.headers(who), **headers}, timeout=30
    )


# -- the Range header, without a server ------------------------------------------------


def test_parse_range_takes_one_range_and_ignores_the_rest() -> None:
    """One range of each form; what is unsatisfiable ('none') and what is
    ignored ('all': absent, several ranges, another unit, bad syntax)."""
    size = 1000
    assert parse_range(None, size) == "all"
    assert parse_range("bytes=0-99", size) == ByteRange(0, 99, size)
    assert parse_range("bytes=900-", size) == ByteRange(900, 999, size)
    assert parse_range("bytes=-100", size) == ByteRange(900, 999, size)
    assert parse_range("bytes=-5000", size) == ByteRange(0, 999, size)
    assert parse_range("bytes=990-5000", size) == ByteRange(990, 999, size)
    assert parse_range("Bytes = 5 - 9", size) == ByteRange(5, 9, size)
    assert parse_range("bytes=999-999", size) == ByteRange(999, 999, size)
    assert ByteRange(5, 9, size).content_range() == "bytes 5-9/1000"
    for unsatisfiable in ("bytes=1000-", "bytes=1000-2000", "bytes=-0"):
        assert parse_range(unsatisfiable, size) == "none", unsatisfiable
    assert parse_range("bytes=0-", 0) == "none"
    assert parse_range("bytes=-1", 0) == "none"
    for ignored in (
        "bytes=0-1,5-6",
        "items=0-5",
        "bytes=9-5",
        "bytes=abc",
        "bytes=-",
        "bytes=5",
        "bytes=1-x",
        "bytes=+1-2",
        "bytes=\u0661-\u0662",  # digits, but not ASCII ones
        "bytes=" + "9" * 30 + "-",
        "",
    ):
        assert parse_range(ignored, size) == "all", ignored


# -- listing ---------------------------------------------------------------------------


def test_listing_names_every_file_with_size_and_blake3(
    server: LiveServer, dataset: tuple[str, dict[str, bytes]]
) -> None:
    """The listing has each recorded file (sorted by path) with its size and
    BLAKE3; pages of it add up; a dataset without converted output lists no
    output files."""
    uuid, files = dataset
    listing = _get(server, f"/api/v1/datasets/{uuid}/downloads").json()
    assert listing["uuid"] == uuid and listing["name"] == "downloads"
    assert listing["is_public_downloadable"] is False
    assert [
        (f["path"], f["size"], f["blake3"], f["kind"]) for f in listing["files"]
    ] == [(p, len(files[p]), _b3(files[p]), "file") for p in sorted(files)]
    assert listing["total"] == 4 and listing["count"] == 4
    assert listing["total_size"] == sum(len(d) for d in files.values())
    second = _get(server, f"/api/v1/datasets/{uuid}/downloads?limit=2&offset=2").json()
    assert [f["path"] for f in second["files"]] == sorted(files)[2:]
    assert second["count"] == 2 and second["total"] == 4
    with_outputs = _get(
        server, f"/api/v1/datasets/{uuid}/downloads?include_outputs=true"
    ).json()
    assert with_outputs["files"] == listing["files"]


# -- ranges against the server ---------------------------------------------------------


def test_range_requests_of_every_shape(
    server: LiveServer, dataset: tuple[str, dict[str, bytes]]
) -> None:
    """Whole file (200) with ETag = BLAKE3, Accept-Ranges and length; 206 for
    first-last, first-, suffix and over-long ranges with their Content-Range;
    416 with 'bytes */size' past the end; several ranges, other units and bad
    syntax are ignored (200, whole file); the body of every answer is the bytes
    asked for."""
    uuid, files = dataset
    data = files["big.bin"]
    size = len(data)
    url = f"/api/v1/datasets/{uuid}/files/big.bin"
    etag = f'"{_b3(data)}"'

    whole = _get(server, url)
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["etag"] == etag
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-length"] == str(size)
    assert whole.headers["content-type"] == "application/octet-stream"
    assert (
        whole.headers["content-disposition"] == "attachment; filename*=UTF-8''big.bin"
    )
    assert "content-range" not in whole.headers

    shapes = {
        "bytes=0-99": (0, 99),
        "bytes=0-0": (0, 0),
        f"bytes={size - 1}-{size - 1}": (size - 1, size - 1),
        f"bytes={MIB - 10}-{2 * MIB + 10}": (MIB - 10, 2 * MIB + 10),  # across reads
        "bytes=1000-": (1000, size - 1),
        "bytes=-100": (size - 100, size - 1),
        f"bytes=-{size * 3}": (0, size - 1),
        f"bytes=5-{size * 3}": (5, size - 1),
    }
    for header, (first, last) in shapes.items():
        part = _get(server, url, Range=header)
        assert part.status_code == 206, header
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}", header
        assert part.headers["content-length"] == str(last - first + 1), header
        assert part.headers["etag"] == etag
        assert part.content == data[first : last + 1], header

    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
        refused = _get(server, url, Range=header)
        assert refused.status_code == 416, header
        assert refused.headers["content-range"] == f"bytes */{size}"
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "range_not_satisfiable"

    for header in ("bytes=0-1,5-6", "items=0-5", "bytes=9-5", "bytes=x-"):
        ignored = _get(server, url, Range=header)
        assert ignored.status_code == 200, header
        assert ignored.content == data

    # a file in a subfolder, and one whose name needs quoting
    small = _get(
        server, f"/api/v1/datasets/{uuid}/files/sub/dir/small.txt", Range="bytes=10-19"
    )
    assert small.status_code == 206 and small.content == b"0123456789"
    odd = _get(server, f"/api/v1/datasets/{uuid}/files/odd%20name%20%231%25.bin")
    assert odd.status_code == 200 and odd.content == files["odd name #1%.bin"]
    assert (
        "filename*=UTF-8''odd%20name%20%231%25.bin"
        in odd.headers["content-disposition"]
    )


def test_empty_file_ranges_and_head(
    server: LiveServer, dataset: tuple[str, dict[str, bytes]]
) -> None:
    """An empty file is a 200 with no body; any range of it is 416 'bytes */0'."""
    uuid, _files = dataset
    url = f"/api/v1/datasets/{uuid}/files/empty.dat"
    whole = _get(server, url)
    assert whole.status_code == 200 and whole.content == b""
    assert whole.headers["etag"] == f'"{_b3(b"")}"'
    for header in ("bytes=0-", "bytes=-1", "bytes=0-0"):
        refused = _get(server, url, Range=header)
        assert refused.status_code == 416, header
        assert refused.headers["content-range"] == "bytes */0"


def test_if_range_keeps_the_range_only_for_the_current_etag(
    server: LiveServer, dataset: tuple[str, dict[str, bytes]]
) -> None:
    """If-Range with the file's ETag: 206; with another digest, a weak tag or a
    date: the whole file (200), so a client never splices two versions; a
    bad If-Range does not rescue an unsatisfiable range from being ignored."""
    uuid, files = dataset
    data = files["big.bin"]
    url = f"/api/v1/datasets/{uuid}/files/big.bin"
    etag = f'"{_b3(data)}"'
    same = _get(server, url, Range="bytes=100-", **{"If-Range": etag})
    assert same.status_code == 206 and same.content == data[100:]
    for stale in (
        f'"{_b3(b"older")}"',
        f"W/{etag}",
        _b3(data),  # not quoted: not an entity tag
        "Wed, 21 Oct 2015 07:28:00 GMT",
    ):
        answer = _get(server, url, Range="bytes=100-", **{"If-Range": stale})
        assert answer.status_code == 200, stale
        assert answer.content == data
    beyond = _get(server, url, Range=f"bytes={len(data)}-", **{"If-Range": '"x"'})
    assert beyond.status_code == 200 and beyond.content == data


def test_head_answers_the_headers_of_get(
    server: LiveServer, dataset: tuple[str, dict[str, bytes]]
) -> None:
    """HEAD: 200 with the length, ETag and Accept-Ranges a GET has, no body; a
    Range on HEAD is ignored; a missing file is a 404."""
    uuid, files = dataset
    data = files["big.bin"]
    url = f"{server.url}/api/v1/datasets/{uuid}/files/big.bin"
    head = httpx.head(url, headers=server.headers())
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(data))
    assert head.headers["etag"] == f'"{_b3(data)}"'
    assert head.headers["accept-ranges"] == "bytes"
    ranged = httpx.head(url, headers={**server.headers(), "Range": "bytes=0-9"})
    assert ranged.status_code == 200
    assert ranged.headers["content-length"] == str(len(data))
    missing = httpx.head(
        f"{server.url}/api/v1/datasets/{uuid}/files/nope.bin", headers=server.headers()
    )
    assert missing.status_code == 404


# -- who may download ------------------------------------------------------------------


def test_private_datasets_are_404_to_others_public_downloadable_ones_are_not(
    server: LiveServer, dataset: tuple[str, dict[str, bytes]]
) -> None:
    """Bob gets 404 for Alice's private dataset (listing, GET, HEAD), exactly
    as for a dataset that does not exist; her is_public_downloadable dataset he
    may list and download; an admin may download the private one; without a
    token everything is 401."""
    private, files = dataset
    public = make_dataset(
        server, {"shared.bin": b"shared bytes"}, public=True, name="shared"
    )
    unknown = "0" * 32
    for uuid in (private, unknown):
        for url in (
            f"/api/v1/datasets/{uuid}/downloads",
            f"/api/v1/datasets/{uuid}/files/big.bin",
            f"/api/v1/datasets/{uuid}/outputs/visus.idx",
        ):
            answer = _get(server, url, BOB)
            assert answer.status_code == 404, url
            assert answer.json()["code"] == "dataset_not_found"
            assert answer.json()["detail"] == f"404: no dataset with uuid '{uuid}'"
        head = httpx.head(
            f"{server.url}/api/v1/datasets/{uuid}/files/big.bin",
            headers=server.headers(BOB),
        )
        assert head.status_code == 404

    listing = _get(server, f"/api/v1/datasets/{public}/downloads", BOB).json()
    assert listing["is_public_downloadable"] is True
    assert [f["path"] for f in listing["files"]] == ["shared.bin"]
    assert "user" not in listing and "owner" not in listing  # no email shown
    got = _get(server, f"/api/v1/datasets/{public}/files/shared.bin", BOB)
    assert got.status_code == 200 and got.content == b"shared bytes"
    # downloading is all it opens: the dataset's record stays Alice's
    assert _get(server, f"/api/v1/datasets/{public}", BOB).status_code == 404

    admin = _get(
        server,
        f"/api/v1/datasets/{private}/files/big.bin",
        **{"Authorization": f"Bearer {server.token('ops@example.org', admin=True)}"},
    )
    assert admin.status_code == 200 and admin.content == files["big.bin"]

    for url in (
        f"/api/v1/datasets/{public}/downloads",
        f"/api/v1/datasets/{public}/files/shared.bin",
    ):
        assert httpx.get(server.url + url).status_code == 401


# -- paths -----------------------------------------------------------------------------


def test_paths_that_leave_the_dataset_are_refused(
    server: LiveServer, tmp_path: Path
) -> None:
    """'..', absolute paths, backslashes and control characters are 422 (also
    percent-encoded); a file on disk that is not recorded is 404; a recorded
    file replaced by a link to a file outside the folder is refused (422) and
    its bytes never sent; a link in the output folder is neither listed nor
    sent."""
    uuid = make_dataset(server, {"a.bin": b"A" * 64, "sub/b.bin": b"B" * 64})
    folder = server.data_dir / "upload" / uuid
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"S" * 64)  # the same size as a.bin
    base = f"/api/v1/datasets/{uuid}/files/"
    for bad in (
        "../a.bin",
        "sub/../../a.bin",
        "%2e%2e/%2e%2e/secret.txt",
        "sub%2F..%2F..%2Fa.bin",
        "..%5Ca.bin",
        "sub%00/b.bin",
        "%2e/a.bin",
    ):
        answer = _get(server, base + bad)
        assert answer.status_code in (404, 422), bad
        assert b"S" * 64 not in answer.content
        if answer.status_code == 404:  # only where the client's URL dropped it
            assert answer.json()["code"] in ("not_found", "dataset_not_found")
    assert _get(server, base + "%2e%2e/a.bin").status_code == 422
    assert _get(server, base + "..%5Ca.bin").status_code == 422
    assert _get(server, base + "sub%00/b.bin").status_code == 422
    absolute = _get(server, base + "/etc/passwd")  # .../files//etc/passwd
    assert absolute.status_code == 422
    assert b"root:" not in absolute.content

    (folder / "planted.bin").write_bytes(b"not recorded")
    assert _get(server, base + "planted.bin").status_code == 404

    (folder / "a.bin").unlink()
    (folder / "a.bin").symlink_to(secret)
    linked = _get(server, base + "a.bin")
    assert linked.status_code == 422
    assert "leaves its folder" in linked.json()["detail"]
    assert b"S" * 64 not in linked.content
    assert (
        httpx.head(server.url + base + "a.bin", headers=server.headers()).status_code
        == 422
    )

    outputs = server.data_dir / "converted" / uuid
    outputs.mkdir(parents=True)
    (outputs / "real.bin").write_bytes(b"output bytes")
    (outputs / "leak.bin").symlink_to(secret)
    (outputs / "dir-link").symlink_to(tmp_path, target_is_directory=True)
    (outputs / ".sclib-conversion.json").write_text("{}")
    listing = _get(
        server, f"/api/v1/datasets/{uuid}/downloads?include_outputs=true"
    ).json()
    assert [(f["kind"], f["path"]) for f in listing["files"]] == [
        ("file", "a.bin"),
        ("file", "sub/b.bin"),
        ("output", "real.bin"),
    ]
    out = f"/api/v1/datasets/{uuid}/outputs/"
    assert _get(server, out + "real.bin").content == b"output bytes"
    assert _get(server, out + "leak.bin").status_code == 422
    assert _get(server, out + "dir-link/secret.txt").status_code == 422
    assert _get(server, out + "../../upload/" + uuid + "/sub/b.bin").status_code in (
        404,
        422,
    )
    assert _get(server, out + "%2e%2e/x").status_code == 422
    assert _get(server, out + ".sclib-conversion.json").status_code == 404


def test_a_file_that_differs_from_its_record_in_size_is_409(
    server: LiveServer,
) -> None:
    """A recorded file whose size on disk is not the recorded one (being
    replaced, or damaged) is not sent under the recorded ETag: 409."""
    uuid = make_dataset(server, {"c.bin": b"C" * 100})
    (server.data_dir / "upload" / uuid / "c.bin").write_bytes(b"C" * 50)
    answer = _get(server, f"/api/v1/datasets/{uuid}/files/c.bin")
    assert answer.status_code == 409
    assert answer.json()["code"] == "dataset_conflict"


# -- converted output ------------------------------------------------------------------


def test_converted_output_is_listed_and_served_with_ranges(
    server: LiveServer, tmp_path: Path
) -> None:
    """A TIFF converted by the real pipeline: with include_outputs the listing
    has the published IDX files (not the conversion's marker), each with the
    BLAKE3 of its bytes on the server; GET with a range and HEAD serve them
    like the dataset's own files."""
    np = pytest.importorskip("numpy")
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("OpenVisus")
    image = tmp_path / "plane.tif"
    tifffile.imwrite(image, np.arange(64 * 48, dtype=np.uint16).reshape(64, 48))
    uuid = make_dataset(
        server,
        {"plane.tif": image.read_bytes()},
        sensor="TIFF",
        convert=True,
        name="converted",
    )
    published = server.data_dir / "converted" / uuid
    on_disk = sorted(
        p.relative_to(published).as_posix()
        for p in published.rglob("*")
        if p.is_file() and p.name != ".sclib-conversion.json"
    )
    assert on_disk, "the conversion published nothing"
    listing = _get(
        server, f"/api/v1/datasets/{uuid}/downloads?include_outputs=true"
    ).json()
    outputs = [f for f in listing["files"] if f["kind"] == "output"]
    assert [f["path"] for f in outputs] == on_disk
    for f in outputs:
        data = (published / f["path"]).read_bytes()
        assert f["size"] == len(data) and f["blake3"] == _b3(data)
    idx = next(f for f in outputs if f["path"].endswith(".idx"))
    data = (published / idx["path"]).read_bytes()
    url = f"/api/v1/datasets/{uuid}/outputs/{idx['path']}"
    part = _get(server, url, Range="bytes=10-")
    assert part.status_code == 206 and part.content == data[10:]
    assert part.headers["etag"] == f'"{idx["blake3"]}"'
    head = httpx.head(server.url + url, headers=server.headers())
    assert head.status_code == 200 and head.headers["etag"] == f'"{idx["blake3"]}"'
    assert _get(server, f"/api/v1/datasets/{uuid}/outputs/nope.bin").status_code == 404


def test_a_file_recorded_without_a_digest_is_served_with_its_blake3(
    server: LiveServer,
) -> None:
    """A dataset migrated from the original system has files recorded without a
    BLAKE3 until its data_validation job runs: the listing and the download
    compute it (the ETag is the file's real BLAKE3)."""
    from sclib.datasets import Dataset, DatasetFile, open_dataset_store

    data = os.urandom(4000)
    store = open_dataset_store(f"sqlite:///{server.data_dir}/sclib.db")
    try:
        made = store.create(Dataset(name="legacy", owner=ALICE, sensor="OTHER"))
        store.add_files(made.uuid, [DatasetFile("old.raw", len(data), None)])
    finally:
        store.close()
    folder = server.data_dir / "upload" / made.uuid
    folder.mkdir(parents=True)
    (folder / "old.raw").write_bytes(data)
    listing = _get(server, f"/api/v1/datasets/{made.uuid}/downloads").json()
    assert [(f["path"], f["blake3"]) for f in listing["files"]] == [
        ("old.raw", _b3(data))
    ]
    answer = _get(server, f"/api/v1/datasets/{made.uuid}/files/old.raw")
    assert answer.status_code == 200 and answer.content == data
    assert answer.headers["etag"] == f'"{_b3(data)}"'
