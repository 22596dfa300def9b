"""An example sclib source plugin: the members of a ZIP archive.

URLs: ``zip:///path/to/archive.zip`` is a folder (every member, keyed by its path
inside the archive); ``zip:///path/to/archive.zip#inner/file.tif`` is one member.

It shows the three things a plugin decides:

* **identity**: the archive's size and mtime plus the member's CRC-32, so a resumed
  copy notices when the archive was replaced;
* **ranges**: stored (uncompressed) members can be read at any offset; deflated
  members can only be read front to back, so ``supports_ranges`` says so and the
  engine reads them sequentially;
* **errors**: a missing archive or member is :class:`~sclib.errors.SourceNotFound`;
  a changed archive is :class:`~sclib.errors.SourceChanged`.
"""

from __future__ import annotations

import os
import threading
import zipfile
from collections.abc import Iterator
from typing import Any

from sclib.errors import InvalidInput, SourceChanged, SourceNotFound
from sclib.transfers.sources import Source, SourceObject

__all__ = ["ZipSource"]


def _split(url: str) -> tuple[str, str]:
    if not url.startswith("zip://"):
        raise InvalidInput(f"not a zip:// URL: {url!r}")
    path, _, member = url[len("zip://") :].partition("#")
    return path, member


class ZipSource(Source):
    """Reads members of ZIP archives on this machine."""

    schemes = ("zip",)

    def __init__(self, **options: Any) -> None:
        if options:
            raise InvalidInput(f"the zip source takes no options: {sorted(options)}")
        self._lock = threading.Lock()
        # one sequential reader per member, for deflated members: (url, position)
        self._streams: dict[str, tuple[Any, int]] = {}

    def _archive(self, path: str) -> tuple[zipfile.ZipFile, dict[str, str]]:
        try:
            st = os.stat(path)
            archive = zipfile.ZipFile(path)
        except FileNotFoundError as exc:
            raise SourceNotFound(f"no archive at {path}") from exc
        except zipfile.BadZipFile as exc:
            raise SourceNotFound(f"{path} is not a ZIP archive: {exc}") from exc
        return archive, {
            "archive_size": str(st.st_size),
            "archive_mtime_ns": str(st.st_mtime_ns),
        }

    def _object(
        self, path: str, info: zipfile.ZipInfo, key: str, base: dict[str, str]
    ) -> SourceObject:
        return SourceObject(
            url=f"zip://{path}#{info.filename}",
            key=key,
            size=info.file_size,
            identity={**base, "crc32": f"{info.CRC:08x}"},
        )

    def stat(self, url: str) -> SourceObject:
        path, member = _split(url)
        archive, base = self._archive(path)
        with archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise SourceNotFound(f"{path} has no member {member!r}") from None
            return self._object(path, info, "", base)

    def walk(self, url: str) -> Iterator[SourceObject]:
        path, member = _split(url)
        if member:
            yield self.stat(url)
            return
        archive, base = self._archive(path)
        with archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                if not info.is_dir():
                    yield self._object(path, info, info.filename, base)

    def supports_ranges(self, obj: SourceObject) -> bool:
        path, member = _split(obj.url)
        with zipfile.ZipFile(path) as archive:
            return archive.getinfo(member).compress_type == zipfile.ZIP_STORED

    def read(self, obj: SourceObject, offset: int, length: int) -> bytes:
        path, member = _split(obj.url)
        now = self.stat(obj.url)
        if dict(now.identity) != dict(obj.identity):
            raise SourceChanged(f"{obj.url} changed since the transfer started")
        with zipfile.ZipFile(path) as archive, archive.open(member) as fh:
            fh.seek(offset)  # stored: a real seek; deflated: decompresses forward
            return fh.read(length)
