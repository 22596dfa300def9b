"""One-pass hashing: chunk chaining values (sclib_blake3tree) merged into the
file's BLAKE3, checked against the blake3 package's plain digest."""

from __future__ import annotations

import itertools
import os

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sclib.errors import ConfigurationError, InvalidInput
from sclib.transfers import hashing
from sclib.transfers.hashing import (
    CV_PREFIX,
    ChunkTree,
    chunk_cv,
    chunk_digest,
    digest_matches,
    new_chunk_hasher,
)
from tests.hashing_modes import require_tree

KIB = 1024


@pytest.fixture(autouse=True)
def _tree() -> None:
    require_tree()


def tree_digest(data: bytes, chunk: int, pieces: list[int]) -> str:
    """The file digest from its chunks' chaining values, each chunk streamed to
    its hasher in the given piece sizes (cycled)."""
    count = -(-len(data) // chunk)
    tree = ChunkTree(count)
    for index in reversed(range(count)):  # any order
        offset = index * chunk
        part = memoryview(data)[offset : offset + chunk]
        hasher = new_chunk_hasher(offset)
        at = step = 0
        while at < len(part):
            size = pieces[step % len(pieces)]
            hasher.update(part[at : at + size])
            at += size
            step += 1
        tree.add(index, hasher.chaining_value())
    return tree.hexdigest()


@settings(max_examples=150, deadline=None)
@given(
    chunk_kib=st.sampled_from([1, 2, 4, 16, 64, 256]),
    kind=st.sampled_from(["multiple", "plus1", "minus1", "any"]),
    n=st.integers(min_value=2, max_value=40),
    extra=st.integers(min_value=0, max_value=1023),
    pieces=st.lists(st.integers(min_value=1, max_value=70_000), min_size=1, max_size=4),
)
def test_merged_chaining_values_equal_the_plain_digest(
    chunk_kib: int, kind: str, n: int, extra: int, pieces: list[int]
) -> None:
    """For any power-of-two chunk size, any file of two chunks or more (exact
    multiples, off by one either way, ragged tails) and any way the bytes are
    streamed in, merging the chunks' chaining values gives b3sum's digest."""
    chunk = chunk_kib * KIB
    size = {
        "multiple": n * chunk,
        "plus1": n * chunk + 1,
        "minus1": n * chunk - 1,
        "any": (n - 1) * chunk + extra + 1,
    }[kind]
    data = os.urandom(size)
    assert tree_digest(data, chunk, pieces) == blake3.blake3(data).hexdigest()


def test_one_shot_and_streamed_chaining_values_agree() -> None:
    """chunk_cv on the whole chunk equals a hasher fed in small pieces."""
    data = os.urandom(64 * KIB)
    hasher = new_chunk_hasher(128 * KIB)
    for at in range(0, len(data), 1000):
        hasher.update(data[at : at + 1000])
    assert hasher.length == len(data) and hasher.offset == 128 * KIB
    assert hasher.chaining_value() == chunk_cv(data, 128 * KIB)


def test_a_chunk_digest_binds_its_offset() -> None:
    """The same bytes at another offset have another digest, so a chunk written
    at the wrong place in a file cannot pass its check."""
    data = os.urandom(4 * KIB)
    at_0 = chunk_digest(data, 0, 4 * KIB, tree=True)
    at_4 = chunk_digest(data, 4 * KIB, 4 * KIB, tree=True)
    assert at_0.startswith(CV_PREFIX) and at_4.startswith(CV_PREFIX)
    assert at_0 != at_4
    assert digest_matches(at_4, data, 4 * KIB) is True
    assert digest_matches(at_4, data, 8 * KIB) is False
    # without tree hashing, the plain digest of the bytes
    assert chunk_digest(data, 4 * KIB, 4 * KIB, tree=False) == (
        blake3.blake3(data).hexdigest()
    )
    assert digest_matches(blake3.blake3(data).hexdigest(), data, 4 * KIB) is True


def test_a_chaining_value_cannot_be_checked_without_the_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process without sclib_blake3tree says it cannot tell (None) rather than
    calling a recorded chaining value wrong. (The module's absence is simulated:
    it is installed in this environment.)"""
    data = os.urandom(2 * KIB)
    recorded = chunk_digest(data, 2 * KIB, 2 * KIB, tree=True)
    monkeypatch.setattr(hashing, "_tree_module", lambda: None)
    assert digest_matches(recorded, data, 2 * KIB) is None
    assert not hashing.tree_hashing()
    with pytest.raises(ConfigurationError, match=r"pip install \./native/blake3tree"):
        chunk_cv(data, 2 * KIB)


def test_switch_turns_tree_hashing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """SCLIB_BLAKE3_TREE=0 turns one-pass hashing off; unset, it is on."""
    monkeypatch.delenv("SCLIB_BLAKE3_TREE", raising=False)
    assert hashing.tree_hashing()
    monkeypatch.setenv("SCLIB_BLAKE3_TREE", "0")
    assert not hashing.tree_hashing()


@pytest.mark.parametrize(
    ("offset", "chunk", "message"),
    [
        (1000, 1024, "power of two"),
        (3 * KIB, 2 * KIB, "power of two"),
        (0, 3 * KIB, "power of two"),
        (0, 512, "power of two"),
    ],
)
def test_misaligned_chunks_are_refused(offset: int, chunk: int, message: str) -> None:
    """A chunk that is not a whole BLAKE3 subtree is refused with the reason."""
    with pytest.raises(InvalidInput, match=message):
        chunk_digest(b"x" * 10, offset, chunk, tree=True)


def test_the_compiled_hasher_refuses_bad_input() -> None:
    """Offsets off the 1 KiB grid or out of range, bytes past the subtree, an
    empty subtree, a root digest away from offset 0, short chaining values and a
    second __init__ are all refused; a hasher made without __init__ is usable."""
    import sclib_blake3tree as tree

    with pytest.raises(ValueError, match="multiple of 1024"):
        tree.SubtreeHasher(1000)
    hasher = tree.SubtreeHasher(4 * KIB)
    with pytest.raises(ValueError, match="no chaining value"):
        hasher.chaining_value()
    hasher.update(b"a" * (4 * KIB))
    with pytest.raises(ValueError, match="at most 4096 bytes"):
        hasher.update(b"b")
    assert hasher.length == 4 * KIB  # the refused bytes were not taken
    with pytest.raises(ValueError, match="offset 0"):
        hasher.digest()
    with pytest.raises(ValueError, match="32 bytes"):
        tree.merge(b"x" * 31, b"y" * 32)
    with pytest.raises(TypeError):
        hasher.update("text")
    for offset in (-1024, 2**64 + 1024):  # never wrapped around to another offset
        with pytest.raises(OverflowError):
            tree.SubtreeHasher(offset)
    with pytest.raises(TypeError, match="only once"):
        hasher.__init__(8 * KIB)  # would race with an update running without the GIL
    assert hasher.offset == 4 * KIB and hasher.length == 4 * KIB
    bare = tree.SubtreeHasher.__new__(tree.SubtreeHasher)  # no __init__: offset 0
    bare.update(b"abc")
    assert bare.digest() == blake3.blake3(b"abc").digest()


def test_offset_zero_digest_is_the_plain_hash() -> None:
    """At offset 0 the hasher's digest is the BLAKE3 of its input, for any size."""
    import sclib_blake3tree as tree

    for size in (0, 1, 1024, 1025, 100_000):
        data = os.urandom(size)
        hasher = tree.SubtreeHasher()
        hasher.update(data)
        assert hasher.digest() == blake3.blake3(data).digest()


def test_chunk_tree_refuses_bad_input() -> None:
    """A tree of one chunk, a chunk outside it, a plain digest, a missing chunk
    and a chaining value of the wrong size are refused with the reason."""
    with pytest.raises(InvalidInput, match="at least 2 chunks"):
        ChunkTree(1)
    tree = ChunkTree(3)
    with pytest.raises(InvalidInput, match="outside"):
        tree.add(3, b"x" * 32)
    with pytest.raises(InvalidInput, match="not a chaining value"):
        tree.add(0, "ab" * 32)
    with pytest.raises(InvalidInput, match="not hex"):
        tree.add(0, CV_PREFIX + "zz")
    with pytest.raises(InvalidInput, match="32 bytes"):
        tree.add(0, b"x" * 31)
    tree.add(0, b"x" * 32)
    with pytest.raises(InvalidInput, match=r"\[1, 2\]"):
        tree.hexdigest()


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(min_value=2 * KIB + 1, max_value=9 * KIB),
    cuts=st.lists(st.integers(min_value=1, max_value=9 * KIB - 1), max_size=5),
    piece=st.integers(min_value=1, max_value=3000),
    seed=st.binary(min_size=8, max_size=8),
)
def test_tree_recorder_over_patches_gives_the_file_digest(
    size: int, cuts: list[int], piece: int, seed: bytes
) -> None:
    """A file sent as tus PATCHes split anywhere, each PATCH fed in pieces of any
    size: the pieces each PATCH covered whole, plus those read back, merge into
    the file's BLAKE3; a piece a PATCH only began or ended inside is never
    recorded by it."""
    from sclib.transfers.hashing import TreeRecorder

    data = blake3.blake3(seed).digest(length=size)
    chunk = KIB
    bounds = sorted({0, size, *(c for c in cuts if c < size)})
    recorded: dict[int, bytes] = {}
    for start, end in itertools.pairwise(bounds):
        recorder = TreeRecorder(start, chunk)
        view = memoryview(data)[start:end]
        for pos in range(0, len(view), piece):
            recorder.update(view[pos : pos + piece])
        if end == size:
            recorder.close_last()
        got = recorder.below(end, size)
        for index in got:
            assert start <= index * chunk and min((index + 1) * chunk, size) <= end
        recorded.update(got)
    count = -(-size // chunk)
    tree = ChunkTree(count)
    for index, cv in recorded.items():
        assert cv == chunk_cv(data[index * chunk : (index + 1) * chunk], index * chunk)
        tree.add(index, cv)
    for index in tree.missing():
        tree.add(
            index, chunk_cv(data[index * chunk : (index + 1) * chunk], index * chunk)
        )
    assert tree.hexdigest() == blake3.blake3(data).hexdigest()
