"""The chunk planner and the ordered hasher: pure logic, checked with hypothesis."""

from __future__ import annotations

import sys

import pytest
from blake3 import blake3
from hypothesis import given
from hypothesis import strategies as st

from sclib.errors import InvalidInput, MissingDependency, UnsupportedScheme
from sclib.transfers.hashing import OrderedHasher
from sclib.transfers.plan import (
    KIB,
    MAX_PARTS,
    MIB,
    ChunkPlan,
    auto_chunk_size,
    check_chunk_size,
    parse_size,
)
from sclib.transfers.sources import open_source

sizes = st.integers(min_value=0, max_value=10**13)


@given(
    size=st.integers(min_value=0, max_value=10**7),
    shift=st.integers(min_value=0, max_value=14),
)
def test_plan_covers_every_byte_once(size: int, shift: int) -> None:
    """Chunks are contiguous, in order, cover [0, size) exactly; only the last is
    short."""
    plan = ChunkPlan(size, KIB << shift)
    chunks = list(plan)
    assert len(chunks) == plan.count
    assert sum(c.length for c in chunks) == size
    position = 0
    for c in chunks:
        assert c.offset == position and c.length > 0
        position = c.end
    assert all(c.length == plan.chunk_size for c in chunks[:-1])


@given(
    size=st.integers(min_value=0, max_value=10**6),
    done=st.sets(st.integers(min_value=0, max_value=2000)),
)
def test_pending_is_the_complement_of_verified(size: int, done: set[int]) -> None:
    """pending() returns exactly the chunks not verified, in order."""
    plan = ChunkPlan(size, KIB)
    pending = plan.pending(done)
    assert [c.index for c in pending] == [i for i in range(plan.count) if i not in done]
    assert (
        plan.bytes_in(done & set(range(plan.count))) + sum(c.length for c in pending)
        == size
    )


@given(size=sizes)
def test_auto_chunk_size_respects_object_store_limits(size: int) -> None:
    """Power of two x 1 KiB; for object stores >= 5 MiB and <= 10,000 parts."""
    for store in (False, True):
        chunk = auto_chunk_size(size, object_store=store)
        assert chunk % KIB == 0 and (chunk & (chunk - 1)) == 0
        if store:
            assert chunk >= 5 * MIB
            assert -(-size // chunk) <= MAX_PARTS
            check_chunk_size(chunk, size, object_store=True)


def test_bad_sizes_are_explained() -> None:
    """Chunk sizes that are not powers of two, or break S3's limits, are refused."""
    with pytest.raises(InvalidInput, match="power of two"):
        check_chunk_size(5 * MIB, 10)
    with pytest.raises(InvalidInput, match="at least 5 MiB"):
        check_chunk_size(MIB, 10, object_store=True)
    with pytest.raises(InvalidInput, match="more than 10000 parts"):
        check_chunk_size(8 * MIB, 10**12, object_store=True)
    assert parse_size("8MiB") == 8 * MIB and parse_size("64k") == 64 * KIB
    with pytest.raises(InvalidInput, match="as a size"):
        parse_size("lots")


@given(st.lists(st.binary(max_size=300), max_size=20), st.randoms())
def test_ordered_hasher_equals_one_shot_blake3(parts: list[bytes], rnd) -> None:  # type: ignore[no-untyped-def]
    """Chunks given in any order hash to the BLAKE3 of their concatenation."""
    order = list(range(len(parts)))
    rnd.shuffle(order)
    hasher = OrderedHasher(sha256=True)
    for i in order:
        hasher.add(i, parts[i])
    assert hasher.hexdigest() == blake3(b"".join(parts)).hexdigest()


def test_missing_extra_and_unknown_scheme_are_explained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A missing optional package names the extra; an unknown scheme lists options."""
    monkeypatch.setitem(sys.modules, "sclib.transfers.s3", None)
    with pytest.raises(MissingDependency, match=r"pip install 'sclib\[s3\]'"):
        open_source("s3://bucket/key")
    with pytest.raises(UnsupportedScheme, match="no source plugin for 'nope'"):
        open_source("nope://x")
