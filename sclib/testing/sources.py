"""The Source contract: what every source plugin keeps, as tests.

A plugin's test module subclasses :class:`SourceContract` and provides two
fixtures:

* ``source``: an opened :class:`~sclib.transfers.sources.Source`;
* ``tree``: a :class:`SourceTree`, the URLs the fixture prepared and the bytes
  each object must hold (one folder URL with a few objects, including an empty one
  and one larger than a few reads, plus the URL of something that does not exist).

The suite checks describing, listing, ranged and sequential reads, and errors; and
it runs the real engine over the plugin, so a plugin that passes copies correctly.

A plugin over a network service should also override the ``unreachable`` fixture:
a source pointed at a service that cannot be reached (a closed port on
127.0.0.1) and a URL on it. The suite then checks that what the client library
raises reaches the caller as sclib's error (retryable, or a
:class:`~sclib.errors.ConfigurationError`), never as the library's own class.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from blake3 import blake3

from sclib.errors import ConfigurationError, SclibError, SourceNotFound
from sclib.transfers.engine import TransferConfig, TransferEngine
from sclib.transfers.sessions import MemorySessionStore
from sclib.transfers.sources import Source, SourceObject

__all__ = ["SourceContract", "SourceTree"]


@dataclass(frozen=True)
class SourceTree:
    """What a source fixture prepared.

    :param folder: URL of a folder or prefix holding ``files``.
    :param files: key (relative path) -> expected bytes.
    :param missing: URL of an object that does not exist.
    :param url_of: key -> URL of that single object.
    """

    folder: str
    files: Mapping[str, bytes]
    missing: str
    url_of: Mapping[str, str]


def _read_all(source: Source, obj: SourceObject, step: int) -> bytes:
    parts, offset = [], 0
    while offset < obj.size:
        block = source.read(obj, offset, step)
        assert block, f"empty read at {offset} of {obj.size}"
        parts.append(block)
        offset += len(block)
    return b"".join(parts)


class SourceContract:
    """Subclass and provide ``source`` and ``tree`` fixtures."""

    @pytest.fixture
    def source(self) -> Iterator[Source]:  # pragma: no cover - overridden
        raise NotImplementedError("provide a `source` fixture")

    @pytest.fixture
    def tree(self) -> SourceTree:  # pragma: no cover - overridden
        raise NotImplementedError("provide a `tree` fixture")

    @pytest.fixture
    def unreachable(self) -> tuple[Source, str] | None:
        """Override for a network source: (a source whose service cannot be
        reached, a URL on it). ``None`` skips the test that uses it."""
        return None

    def test_stat_describes_each_object(self, source: Source, tree: SourceTree) -> None:
        """stat() gives the size, an empty key and a non-empty identity."""
        for key, data in tree.files.items():
            obj = source.stat(tree.url_of[key])
            assert obj.size == len(data)
            assert obj.key == ""
            assert obj.identity, "an identity is needed to refuse changed sources"

    def test_walk_lists_every_object_with_relative_keys(
        self, source: Source, tree: SourceTree
    ) -> None:
        """walk() on the folder yields each object once, keyed by relative path."""
        found = {o.key: o.size for o in source.walk(tree.folder)}
        assert found == {k: len(v) for k, v in tree.files.items()}

    def test_reads_reassemble_every_object(
        self, source: Source, tree: SourceTree
    ) -> None:
        """Reading front to back, in any step size, gives the exact bytes."""
        for key, data in tree.files.items():
            obj = source.stat(tree.url_of[key])
            for step in (1024, 7777, max(1, len(data))):
                assert _read_all(source, obj, step) == data

    def test_ranged_reads_in_any_order(self, source: Source, tree: SourceTree) -> None:
        """Where ranges are supported, reads at arbitrary offsets are exact."""
        for key, data in tree.files.items():
            obj = source.stat(tree.url_of[key])
            if not source.supports_ranges(obj) or len(data) < 3:
                continue
            cuts = [len(data) // 2, 0, len(data) - 1, len(data) // 3]
            for offset in cuts:
                assert source.read(obj, offset, 1000) == data[offset : offset + 1000]

    def test_missing_object_is_not_found(
        self, source: Source, tree: SourceTree
    ) -> None:
        """A URL that names nothing raises SourceNotFound, with the URL in it."""
        with pytest.raises(SourceNotFound):
            source.stat(tree.missing)
        with pytest.raises(SourceNotFound):
            list(source.walk(tree.missing))

    def test_engine_copies_the_folder(
        self,
        source: Source,
        tree: SourceTree,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The real engine copies the folder byte for byte, with the right digests."""
        from sclib.transfers import sources as registry

        scheme = tree.folder.split("://", 1)[0] if "://" in tree.folder else "file"
        monkeypatch.setitem(registry._registry, scheme, lambda **_: source)
        monkeypatch.setattr(source, "close", lambda: None)
        result = TransferEngine(
            sessions=MemorySessionStore(), config=TransferConfig(chunk_size=4096)
        ).copy(tree.folder, str(tmp_path / "copy") + "/")
        assert {f.key for f in result.files} == set(tree.files)
        for f in result.files:
            assert (tmp_path / "copy" / f.key).read_bytes() == tree.files[f.key]
            assert f.blake3 == blake3(tree.files[f.key]).hexdigest()

    def test_unreachable_service_raises_sclib_errors(
        self, unreachable: tuple[Source, str] | None
    ) -> None:
        """A service that cannot be reached gives sclib's error, retryable (or a
        ConfigurationError with a hint), not the client library's exception."""
        if unreachable is None:
            pytest.skip("this source has no `unreachable` fixture")
        source, url = unreachable
        for call in (lambda: source.stat(url), lambda: list(source.walk(url))):
            with pytest.raises(SclibError) as excinfo:
                call()
            error = excinfo.value
            assert error.retryable or isinstance(error, ConfigurationError), error
            assert str(error), "the message says what went wrong"
