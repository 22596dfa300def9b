"""The original large-file protocol (``SCLib_UploadAPI_LargeFiles``), sent exactly
what ``LargeFileUploadClient`` and ``AsyncLargeFileUploadClient`` send: 100 MiB
chunks sliced by the client, whatever the server answers, each a multipart of
``chunk_hash`` (SHA-256) and ``chunk``.

One file of 100 MiB and 1000 bytes (two chunks) is written once for the module.
Every test's docstring names the ``docs/compat.md`` rows it covers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.compat.servers import Served
from tests.compat.wire import (
    AMY,
    CHUNK_ANSWER,
    CHUNK_STATUS,
    CHUNK_UPLOAD_RESULT,
    RESUME_INFO,
    UPLOAD_RESULT,
    AsyncLargeWire,
    LargeWire,
    Part,
    UnifiedWire,
    blake3_hex,
    file_sha256,
    read_chunk,
    reads,
    sha256_hex,
    wait_for_completion,
)

pytestmark = pytest.mark.integration

MIB = 1024**2
CHUNK = 100 * MIB
TAIL = 1000


@dataclass(frozen=True)
class Big:
    """The module's file: two chunks of the original clients' 100 MiB."""

    path: Path
    sha256: str
    blake3: str

    @property
    def size(self) -> int:
        return CHUNK + TAIL


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Big:
    """``big.bin``, 100 MiB + 1000 bytes of random data, written once."""
    path = tmp_path_factory.mktemp("large") / "big.bin"
    with open(path, "wb") as f:
        for _ in range(CHUNK // (4 * MIB)):
            f.write(os.urandom(4 * MIB))
        f.write(os.urandom(TAIL))
    return Big(path, file_sha256(path), blake3_hex(path))


@pytest.fixture
def large(original: Served) -> Iterator[LargeWire]:
    """``LargeFileUploadClient``'s wire, pointed at the ``original`` server."""
    with LargeWire(original.url) as client:
        yield client


def _committed(
    served: Served, client: LargeWire, upload_id: str, source: Path, blake3: str
) -> dict[str, Any]:
    """Completing again gives the first answer (the original: 500); the file
    it names is in the dataset, byte-identical; nothing of the upload is left
    in ``<data>/tmp/uploads``."""
    again = client.complete_upload(upload_id)
    assert again.status_code == 200, again.text
    answer = again.json()
    stored = served.stored(answer["dataset_uuid"], source.name)
    assert answer["file_path"] == str(stored)
    assert blake3_hex(stored) == blake3 == answer["file_blake3"]
    assert not (served.staging / upload_id).exists()
    return dict(answer)


def _start(client: LargeWire, big: Big, name: str = "Large") -> dict[str, Any]:
    answer = client.initiate_large_upload(
        big.path, AMY, name, "OTHER", file_hash=big.sha256
    )
    assert answer.status_code == 200, answer.text
    return reads(answer, CHUNK_UPLOAD_RESULT)


def _gone(client: LargeWire, upload_id: str) -> None:
    """A cancelled upload is gone: every route answers 404."""
    for answer in (
        client.get_chunk_status(upload_id),
        client.get_resume_info(upload_id),
        client.upload_chunk(upload_id, 0, b"x"),
        client.complete_upload(upload_id),
        client.cancel_upload(upload_id),
    ):
        assert answer.status_code == 404, answer.text


# -- info routes -----------------------------------------------------------------------


def test_large_info_routes_answer_the_original_keys(large: LargeWire) -> None:
    """Rows R27, R28, M31, M32, S02, B17: ``/health/large-files`` and
    ``/api/upload/large/limits`` carry the large-file app's keys as numbers
    (``example_large_file_upload.py`` formats ``max_file_size_tb`` with ``.1f``
    and ``chunk_size_mb`` with ``.0f``, reads ``active_uploads`` and
    ``recommended_for_files_larger_than_mb``)."""
    health = reads(
        large.health_check(),
        {
            "status": str,
            "timestamp": str,
            "active_uploads": int,
            "temp_directory_size_mb": (int, float),
            "max_file_size_tb": (int, float),
            "chunk_size_mb": (int, float),
        },
    )
    assert health["status"] == "healthy"
    assert f"{health['max_file_size_tb']:.1f} {health['chunk_size_mb']:.0f}" == (
        "10.0 100"
    )
    limits = reads(
        large.get_upload_limits(),
        {
            "max_file_size_bytes": int,
            "max_file_size_tb": float,
            "chunk_size_bytes": int,
            "chunk_size_mb": float,
            "resumable_upload_timeout_days": float,
            "supported_source_types": list,
            "recommended_for_files_larger_than_mb": int,
            "temp_directory": str,
        },
    )
    assert limits["chunk_size_bytes"] == CHUNK and limits["chunk_size_mb"] == 100.0
    assert limits["max_file_size_bytes"] == 10 * 1024**4
    assert limits["recommended_for_files_larger_than_mb"] == 100
    assert limits["resumable_upload_timeout_days"] == 7.0


# -- the protocol, step by step --------------------------------------------------------


def test_upload_file_chunked_with_100_mib_chunks(
    original: Served, large: LargeWire, big: Big
) -> None:
    """Rows R20, R21, R22, R23, R24, R25, M22, M23, M24, M25, M27, M29, M33,
    B05, B07, B08: initiate hands out the original's 100 MiB chunk size and
    ``ceil(size / 100 MiB)`` chunks; each 100 MiB chunk (and the short last
    one) is taken with the original's answer; the status lists the chunks and
    is complete, so ``wait_for_completion`` returns; nothing is missing
    (``can_resume`` false); complete answers the original's keys, and the file
    is stored byte-identical; its job completes; a cancel now is a 409."""
    started = _start(large, big)
    assert started["chunk_size"] == CHUNK and started["total_chunks"] == 2
    assert started["message"] == "Upload session created for big.bin"
    upload_id = started["upload_id"]
    for index in range(started["total_chunks"]):
        data = read_chunk(big.path, index)
        answer = large.upload_chunk(upload_id, index, data)
        assert answer.status_code == 200, answer.text
        chunk = reads(answer, CHUNK_ANSWER)
        assert chunk["message"] == f"Chunk {index} uploaded successfully"
        assert (chunk["uploaded_chunks"], chunk["total_chunks"]) == (index + 1, 2)
    status = reads(large.get_chunk_status(upload_id), CHUNK_STATUS)
    assert status["uploaded_chunks"] == [0, 1]
    assert status["is_complete"] is True and status["progress_percentage"] == 100.0
    resume = reads(large.get_resume_info(upload_id), RESUME_INFO)
    assert (resume["missing_chunks"], resume["can_resume"]) == ([], False)
    done = large.complete_upload(upload_id)
    assert done.status_code == 200, done.text
    finished = reads(
        done,
        {"message": str, "file_path": str, "file_size": int, "job_submitted": bool},
    )
    assert finished["file_size"] == big.size and finished["job_submitted"] is True
    assert _committed(original, large, upload_id, big.path, big.blake3) == finished
    assert reads(large.get_chunk_status(upload_id), CHUNK_STATUS)["is_complete"]
    with UnifiedWire(original.url) as unified:
        job = wait_for_completion(unified, finished["job_id"])
    assert job["status"] == "completed"
    refused = large.cancel_upload(upload_id)
    assert refused.status_code == 409, refused.text


def test_complete_message_is_the_originals(
    original: Served, large: LargeWire, tmp_path: Path
) -> None:
    """Row R24: complete's ``message`` is the original's ``Upload completed
    successfully: <filename>``."""
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(4096))
    started = reads(
        large.initiate_large_upload(small, AMY, "Message", "OTHER"),
        CHUNK_UPLOAD_RESULT,
    )
    large.upload_chunk(started["upload_id"], 0, small.read_bytes()).raise_for_status()
    done = large.complete_upload(started["upload_id"])
    assert done.json()["message"] == "Upload completed successfully: small.bin"


# -- the client methods that send whole files ------------------------------------------


def test_upload_file_parallel_sends_both_chunks_at_once(
    original: Served, large: LargeWire, big: Big
) -> None:
    """Row M26: ``upload_file_parallel`` (both 100 MiB chunks read first, then
    sent at once from a thread pool, each answer's ``message`` read) stores the
    file byte-identical."""
    upload_id = large.upload_file_parallel(
        big.path, AMY, "Parallel", "OTHER", file_hash=big.sha256
    )
    _committed(original, large, upload_id, big.path, big.blake3)


def test_async_client_uploads_the_file(
    original: Served, large: LargeWire, big: Big
) -> None:
    """Rows M34, M35: ``AsyncLargeFileUploadClient.upload_file_async``
    (aiohttp multipart, both chunks at once, complete with an empty
    octet-stream body) stores the file byte-identical."""
    client = AsyncLargeWire(original.url)
    upload_id = asyncio.run(
        client.upload_file_async(big.path, AMY, "Async", "OTHER", file_hash=big.sha256)
    )
    _committed(original, large, upload_id, big.path, big.blake3)


def test_resume_sends_only_the_missing_chunks(
    original: Served, large: LargeWire, big: Big
) -> None:
    """Rows R22, R23, M25, M28: after chunk 0, resume lists chunk 1 as missing with
    ``can_resume`` true; ``upload_file_chunked(resume_upload_id=...)`` sends
    only it and completes; then nothing is missing and ``can_resume`` is false
    (the client's resume would raise, as on the original)."""
    upload_id = _start(large, big, "Resume")["upload_id"]
    large.upload_chunk(upload_id, 0, read_chunk(big.path, 0)).raise_for_status()
    info = reads(large.get_resume_info(upload_id), RESUME_INFO)
    assert (info["missing_chunks"], info["total_chunks"]) == ([1], 2)
    assert info["can_resume"] is True and info["upload_id"] == upload_id
    assert reads(large.get_chunk_status(upload_id), CHUNK_STATUS)["is_complete"] is (
        False
    )
    assert (
        large.upload_file_chunked(
            big.path, AMY, "Resume", "OTHER", resume_upload_id=upload_id
        )
        == upload_id
    )
    after = reads(large.get_resume_info(upload_id), RESUME_INFO)
    assert (after["missing_chunks"], after["can_resume"]) == ([], False)
    with pytest.raises(ValueError, match="cannot be resumed"):
        large.upload_file_chunked(
            big.path, AMY, "Resume", "OTHER", resume_upload_id=upload_id
        )
    _committed(original, large, upload_id, big.path, big.blake3)


# -- chunks that are refused -----------------------------------------------------------


def test_chunk_of_another_length_is_refused(
    original: Served, large: LargeWire, big: Big
) -> None:
    """Rows R21, B16: a chunk whose length is not the upload's chunk size (or, for
    the last chunk, the rest of the file) is refused with a 400 that says the
    length expected, and nothing of it is recorded (the original kept short
    middle chunks and found out only at complete)."""
    upload_id = _start(large, big, "Lengths")["upload_id"]
    short = large.upload_chunk(upload_id, 0, os.urandom(1024))
    assert short.status_code == 400, short.text
    assert f"expected {CHUNK} bytes" in short.json()["detail"]
    for size in (TAIL - 1, TAIL + 1):
        answer = large.upload_chunk(upload_id, 1, os.urandom(size))
        assert answer.status_code == 400, answer.text
    status = reads(large.get_chunk_status(upload_id), CHUNK_STATUS)
    assert status["uploaded_chunks"] == [] and status["bytes_received"] == 0
    assert reads(large.get_resume_info(upload_id), RESUME_INFO)["missing_chunks"] == [
        0,
        1,
    ]
    assert large.cancel_upload(upload_id).status_code == 200
    assert not (original.staging / upload_id).exists()


def test_bad_chunk_sent_again_keeps_the_good_copy(
    original: Served, large: LargeWire, big: Big
) -> None:
    """Row R21: chunk 1 sent again with bytes that do not match its
    ``chunk_hash``, or of another length, is refused (400); the copy that
    arrived first stays recorded and its bytes stay as they were in the
    upload's staging file, and nothing of the refused copies is left."""
    upload_id = _start(large, big, "Again")["upload_id"]
    good = read_chunk(big.path, 1)
    large.upload_chunk(upload_id, 1, good).raise_for_status()
    corrupt = bytes([good[0] ^ 0xFF]) + good[1:]
    bad = large.upload_chunk(upload_id, 1, corrupt, chunk_hash=sha256_hex(good))
    assert bad.status_code == 400, bad.text
    longer = large.upload_chunk(upload_id, 1, good + b"x")
    assert longer.status_code == 400, longer.text
    status = reads(large.get_chunk_status(upload_id), CHUNK_STATUS)
    assert status["uploaded_chunks"] == [1]
    staging = original.staging / upload_id
    with open(staging / "data", "rb") as f:
        f.seek(CHUNK)
        assert f.read() == good
    assert sorted(p.name for p in staging.iterdir() if p.name != "lock") == ["data"]
    assert large.cancel_upload(upload_id).status_code == 200


@pytest.fixture
def small_upload(large: LargeWire, tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """A one-chunk upload of 2048 bytes (its id and bytes), cancelled after."""
    small = tmp_path / "c.bin"
    small.write_bytes(os.urandom(2048))
    upload_id = reads(
        large.initiate_large_upload(small, AMY, "Errors", "OTHER"),
        CHUNK_UPLOAD_RESULT,
    )["upload_id"]
    try:
        yield upload_id, small.read_bytes()
    finally:
        assert large.cancel_upload(upload_id).status_code == 200


def test_chunk_errors_have_the_original_codes(
    large: LargeWire, small_upload: tuple[str, bytes]
) -> None:
    """Row R21: an index out of range is 400, a bad ``chunk_hash`` 400, a
    non-integer index 422, an unknown upload 404; sending the same chunk twice
    is fine (200)."""
    upload_id, data = small_upload
    assert large.upload_chunk(upload_id, 1, data).status_code == 400
    assert large.upload_chunk(upload_id, -1, data).status_code == 400
    hashed = large.upload_chunk(upload_id, 0, data, chunk_hash=sha256_hex(b"other"))
    assert hashed.status_code == 400
    not_a_number = large.wire.post_multipart(
        f"/api/upload/large/chunk/{upload_id}/x",
        [Part("chunk_hash", sha256_hex(data)), Part("chunk", data, "chunk_x")],
    )
    assert not_a_number.status_code == 422
    assert large.upload_chunk("nope", 0, data).status_code == 404
    for _ in range(2):
        assert large.upload_chunk(upload_id, 0, data).status_code == 200


def test_chunk_without_a_hash_is_422(
    large: LargeWire, small_upload: tuple[str, bytes]
) -> None:
    """Row R21: a chunk without its ``chunk_hash`` field is the original's 422
    (a missing form field)."""
    upload_id, data = small_upload
    no_hash = large.wire.post_multipart(
        f"/api/upload/large/chunk/{upload_id}/0",
        [Part("chunk", data, "chunk_0", "application/octet-stream")],
    )
    assert no_hash.status_code == 422, no_hash.text


def test_complete_with_missing_chunks_then_cancel(
    original: Served, large: LargeWire, big: Big
) -> None:
    """Rows R24, R25, M30: completing with a chunk missing is the original's
    400 naming it; cancel answers the original's message and removes what
    arrived; then every route of the upload is a 404, cancel included."""
    upload_id = _start(large, big, "Missing")["upload_id"]
    large.upload_chunk(upload_id, 1, read_chunk(big.path, 1)).raise_for_status()
    missing = large.complete_upload(upload_id)
    assert missing.status_code == 400, missing.text
    assert "[0]" in missing.json()["detail"]
    cancelled = large.cancel_upload(upload_id)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["message"] == (
        f"Upload session {upload_id} cancelled and cleaned up"
    )
    assert not (original.staging / upload_id).exists()
    _gone(large, upload_id)


def test_whole_file_hash_is_checked(large: LargeWire, tmp_path: Path) -> None:
    """Rows R24, M22, M35: the ``file_hash`` the clients compute
    (``calculate_file_hash``: SHA-256 of the whole file) is checked at complete:
    a wrong one is 400 and the upload stays, as in the original."""
    small = tmp_path / "h.bin"
    small.write_bytes(os.urandom(3000))
    upload_id = reads(
        large.initiate_large_upload(
            small, AMY, "Hash", "OTHER", file_hash=sha256_hex(b"another file")
        ),
        CHUNK_UPLOAD_RESULT,
    )["upload_id"]
    large.upload_chunk(upload_id, 0, small.read_bytes()).raise_for_status()
    refused = large.complete_upload(upload_id)
    assert refused.status_code == 400, refused.text
    assert reads(large.get_chunk_status(upload_id), CHUNK_STATUS)["upload_id"]
    assert large.cancel_upload(upload_id).status_code == 200


def test_initiate_limits(large: LargeWire, tmp_path: Path) -> None:
    """Row R20: a file above 10 TiB or a bad sensor is 422 as in the original;
    an empty file and a missing ``file_hash`` are accepted (the original: 422)."""
    body = {
        "filename": "x.bin",
        "file_size": 11 * 1024**4,
        "file_hash": sha256_hex(b""),
        "user_email": AMY,
        "dataset_name": "Limits",
        "sensor": "OTHER",
        "convert": True,
        "is_public": False,
    }
    assert large.wire.post_json("/api/upload/large/initiate", body).status_code == 422
    bad_sensor = {**body, "file_size": 10, "sensor": "BAD"}
    assert (
        large.wire.post_json("/api/upload/large/initiate", bad_sensor).status_code
        == 422
    )
    for extra in ({"file_size": 0}, {"file_size": 10, "file_hash": None}):
        answer = large.wire.post_json("/api/upload/large/initiate", {**body, **extra})
        assert answer.status_code == 200, answer.text
        upload_id = reads(answer, CHUNK_UPLOAD_RESULT)["upload_id"]
        assert large.cancel_upload(upload_id).status_code == 200


# -- one request above 100 MiB ---------------------------------------------------------


def test_unified_upload_above_100_mib_is_chunked(original: Served, big: Big) -> None:
    """Rows R03, M01: the Unified client's one-request upload of a file above 100 MiB
    answers ``upload_type`` "chunked" and "Chunked upload initiated" as the
    original did, and the file is stored byte-identical."""
    with UnifiedWire(original.url) as unified:
        answer = unified.upload_file(big.path, AMY, "Big one", "OTHER")
        assert answer.status_code == 200, answer.text
        result = reads(answer, UPLOAD_RESULT)
        assert result["upload_type"] == "chunked"
        assert result["message"] == "Chunked upload initiated: big.bin"
        assert isinstance(result["estimated_duration"], int)
        stored = original.stored(result["dataset_uuid"], "big.bin")
        assert blake3_hex(stored) == big.blake3
        assert not (original.staging / result["upload_id"]).exists()
        assert wait_for_completion(unified, result["job_id"])["status"] == "completed"


def test_nothing_is_left_in_staging(original: Served) -> None:
    """Row B21 (last in the module): every upload above was completed or
    cancelled, and ``<data>/tmp/uploads`` holds nothing."""
    assert sorted(p.name for p in original.staging.iterdir()) == []
