"""Downloads: a dataset's files and its converted output, over HTTP with ``Range``.

* ``GET /api/v1/datasets/{uuid}/downloads`` lists what can be downloaded: the
  dataset's recorded files (path, size, BLAKE3) and, with
  ``include_outputs=true``, the files of its published conversion
  (``<data>/converted/<uuid>/``, see :mod:`sclib.pipeline.conversion`).
* ``GET``/``HEAD /api/v1/datasets/{uuid}/files/{path}`` sends one recorded file;
  ``.../outputs/{path}`` one file of the converted output.

Who may download: the owner, an admin, and, for a dataset marked
``is_public_downloadable``, any authenticated user. Anyone else gets the 404 an
unknown dataset gets, as everywhere in the API.

Every file answer carries ``ETag: "<blake3>"`` (a recorded file's BLAKE3; for an
output file, its BLAKE3 computed once and remembered while the file is unchanged:
published output is never modified in place), ``Accept-Ranges: bytes`` and its
length. ``Range`` takes one range (``bytes=0-99``, ``bytes=100-``,
``bytes=-100``): ``206`` with ``Content-Range``; a range that starts past the end
is ``416`` with ``Content-Range: bytes */<size>``. A header that is not one
satisfiable byte range of this syntax (several ranges, another unit, bad syntax)
is ignored and the whole file sent, as RFC 9110 allows. ``If-Range`` with the
file's ETag keeps the range; any other value (an older digest, a date) sends the
whole file, so a client resuming a partial file never splices two versions.
``HEAD`` answers the headers of a ``GET`` without a range.

Paths from the request are checked with :func:`sclib.paths.safe_relative_path`
(``..``, absolute paths, backslashes: 422) and must name a recorded file (or an
output file); the file is then opened through :func:`sclib.paths.safe_join`, so a
symbolic link that leads out of the dataset's folder is refused (422), and only a
regular file is ever sent. Bodies are streamed from the open file in 1 MiB reads;
no file is held in memory.
"""

from __future__ import annotations

import collections
import errno
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from sclib.datasets import Dataset, DatasetNotFound
from sclib.errors import NotFound
from sclib.paths import safe_join, safe_relative_path
from sclib.server.auth import Identity
from sclib.server.common import MAX_OFFSET
from sclib.server.deps import IdentityDep, ServerState, StateDep

__all__ = ["ByteRange", "parse_range", "router"]

router = APIRouter(prefix="/api/v1/datasets", tags=["downloads"])

#: bytes read from the file per piece of the body
READ_SIZE = 1024**2
#: output files whose digest is remembered (per server process)
DIGEST_CACHE_SIZE = 50_000
#: the file a conversion publishes beside its output (not downloadable)
_MARKER = ".sclib-conversion.json"


# -- who may download -------------------------------------------------------------


def downloadable(state: ServerState, identity: Identity, uuid: str) -> Dataset:
    """The dataset if the caller may download it: its owner, an admin, or anyone
    authenticated when it is ``is_public_downloadable``; else 404."""
    dataset = state.datasets.get(uuid)
    if dataset.is_public_downloadable or state.auth.can_see(identity, dataset.owner):
        return dataset
    raise DatasetNotFound(uuid)


def _input_root(state: ServerState, dataset: Dataset) -> Path:
    return state.settings.data_dir / "upload" / dataset.uuid


def _output_root(state: ServerState, dataset: Dataset) -> Path:
    from sclib.pipeline.conversion import converted_dir

    return converted_dir(state.settings.data_dir, dataset.uuid)


# -- ranges -----------------------------------------------------------------------


@dataclass(frozen=True)
class ByteRange:
    """``start`` to ``end`` inclusive, of a file of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | Literal["all", "none"]:
    """What a ``Range`` header asks of a file of ``size`` bytes: one
    :class:`ByteRange`; ``"all"`` when the header is absent or is to be ignored
    (not one byte range of valid syntax); ``"none"`` when it is one valid range
    that no byte of the file satisfies (416)."""
    if header is None:
        return "all"
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip().lower() != "bytes" or "," in spec:
        return "all"
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (not _digits(first) and not _digits(last)):
        return "all"
    if (first and not _digits(first)) or (last and not _digits(last)):
        return "all"
    if not first:  # a suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "none"
        return ByteRange(max(0, size - suffix), size - 1, size)
    start = int(first)
    if last and int(last) < start:
        return "all"  # syntactically invalid: ignored
    if start >= size:
        return "none"
    end = min(int(last), size - 1) if last else size - 1
    return ByteRange(start, end, size)


def _digits(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit() and len(text) <= 19


def etag_of(blake3: str) -> str:
    """The strong entity tag of a file: its BLAKE3, quoted."""
    return f'"{blake3}"'


# -- digests of output files ----------------------------------------------------------


class _DigestCache:
    """BLAKE3 of output files, keyed by what changes when a file is replaced
    (device, inode, size, mtime, ctime); published output is never written in
    place, so a key's digest stays true."""

    def __init__(self, limit: int = DIGEST_CACHE_SIZE) -> None:
        self._limit = limit
        self._known: collections.OrderedDict[tuple[int, ...], str] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def digest(self, path: Path, st: os.stat_result) -> str:
        from sclib.transfers.hashing import blake3_file

        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            found = self._known.get(key)
            if found is not None:
                self._known.move_to_end(key)
                return found
        digest, size = blake3_file(path)
        if size == st.st_size:
            with self._lock:
                self._known[key] = digest
                while len(self._known) > self._limit:
                    self._known.popitem(last=False)
        return digest


_DIGESTS = _DigestCache()


# -- what can be downloaded -----------------------------------------------------------


@dataclass(frozen=True)
class _Output:
    path: str
    full: Path
    st: os.stat_result


def _outputs(root: Path) -> list[_Output]:
    """The regular files of a published conversion, sorted by path (links, the
    marker and names that are not safe paths are left out)."""
    found: list[_Output] = []
    if not root.is_dir() or root.is_symlink():
        return found
    for folder, dirs, files in os.walk(root):  # never follows links
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(folder, d)))
        for name in files:
            full = Path(folder, name)
            rel = full.relative_to(root).as_posix()
            if rel == _MARKER:
                continue
            try:
                st = full.lstat()
                clean = safe_relative_path(rel, "output path")
            except (OSError, ValueError):
                continue
            if stat.S_ISREG(st.st_mode) and clean == rel:
                found.append(_Output(rel, full, st))
    found.sort(key=lambda o: o.path)
    return found


class DownloadEntry(BaseModel):
    """One downloadable file."""

    path: str = Field(description="relative to the dataset (or its output) folder")
    size: int = Field(ge=0)
    blake3: str = Field(description="64 hex digits; also the file's ETag")
    kind: Literal["file", "output"] = Field(
        description="'file': the dataset's own; 'output': of its converted output"
    )


class DownloadListing(BaseModel):
    """A page of a dataset's downloadable files: its own, then its output's."""

    uuid: str
    name: str
    is_public_downloadable: bool
    files: list[DownloadEntry]
    count: int = Field(description="files on this page")
    total: int = Field(description="files in every page")
    total_size: int = Field(description="bytes in every page")
    limit: int
    offset: int


@router.get("/{uuid}/downloads", response_model=DownloadListing)
def list_downloads(
    uuid: str,
    include_outputs: bool = Query(
        False, description="list the files of the converted output too"
    ),
    limit: int = Query(1000, ge=1, le=100_000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """What the caller may download of a dataset: its files (path, size, BLAKE3),
    sorted by path, then (``include_outputs``) its converted output's. Fetch one
    with ``GET .../files/{path}`` or ``GET .../outputs/{path}``."""
    dataset = downloadable(state, identity, uuid)
    files = sorted(dataset.files, key=lambda f: f.path)
    outputs = _outputs(_output_root(state, dataset)) if include_outputs else []
    total = len(files) + len(outputs)
    page: list[dict[str, Any]] = []
    for i in range(offset, min(total, offset + limit)):
        if i < len(files):
            f = files[i]
            digest = f.blake3 or _unrecorded_digest(state, dataset, f.path)
            page.append(
                {"path": f.path, "size": f.size, "blake3": digest, "kind": "file"}
            )
        else:
            o = outputs[i - len(files)]
            digest = _DIGESTS.digest(o.full, o.st)
            size = o.st.st_size
            page.append(
                {"path": o.path, "size": size, "blake3": digest, "kind": "output"}
            )
    return {
        "uuid": dataset.uuid,
        "name": dataset.name,
        "is_public_downloadable": dataset.is_public_downloadable,
        "files": page,
        "count": len(page),
        "total": total,
        "total_size": sum(f.size for f in files) + sum(o.st.st_size for o in outputs),
        "limit": limit,
        "offset": offset,
    }


# -- sending one file ----------------------------------------------------------------


class _OpenFile:
    """A file opened for sending; closed once, by whoever gets there first."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self._lock = threading.Lock()
        self._open = True

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._open = False
                os.close(self.fd)

    def chunks(self, start: int, length: int) -> Iterator[bytes]:
        """``length`` bytes from ``start``, in pieces of :data:`READ_SIZE`."""
        try:
            position, left = start, length
            while left > 0:
                data = os.pread(self.fd, min(READ_SIZE, left), position)
                if not data:  # the file shrank: the connection ends short
                    return
                position += len(data)
                left -= len(data)
                yield data
        finally:
            self.close()


def _open_regular(root: Path, rel: str, what: str) -> _OpenFile:
    """``rel`` under ``root``, opened: refuses a path that leaves ``root``
    (through a link too) and anything but a regular file."""
    target = safe_join(root, rel).resolve()
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR):
            raise NotFound(f"{what} {rel!r} is not on the server") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotFound(f"{what} {rel!r} is not a regular file")
    return _OpenFile(fd, st.st_size)


def _headers(name: str, size: int, blake3: str) -> dict[str, str]:
    filename = name.rsplit("/", 1)[-1]
    return {
        "ETag": etag_of(blake3),
        "Accept-Ranges": "bytes",
        "Content-Length": str(size),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
        "Cache-Control": "private, no-cache",
        "X-Content-Type-Options": "nosniff",
    }


def _problem(
    status: int, title: str, detail: str, code: str, **headers: str
) -> JSONResponse:
    body = {
        "type": f"https://sclib.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    return JSONResponse(
        body,
        status_code=status,
        media_type="application/problem+json",
        headers={k.replace("_", "-"): v for k, v in headers.items()},
    )


def _send(
    opened: _OpenFile,
    rel: str,
    blake3: str,
    *,
    range_header: str | None,
    if_range: str | None,
    head: bool,
) -> Response:
    """The answer for an opened file: whole, one range, 416, or headers only."""
    size = opened.size
    headers = _headers(rel, size, blake3)
    wanted = "all" if head else parse_range(range_header, size)
    if wanted != "all" and if_range is not None and if_range.strip() != etag_of(blake3):
        wanted = "all"  # the client's copy is of another version: send it whole
    if head:
        opened.close()
        return Response(
            status_code=200, headers=headers, media_type="application/octet-stream"
        )
    if wanted == "none":
        opened.close()
        return _problem(
            416,
            "Range not satisfiable",
            f"{rel!r} has {size} bytes; the range {range_header!r} asks for none "
            "of them",
            "range_not_satisfiable",
            Content_Range=f"bytes */{size}",
            ETag=etag_of(blake3),
        )
    if wanted == "all":
        return StreamingResponse(
            opened.chunks(0, size),
            status_code=200,
            headers=headers,
            media_type="application/octet-stream",
        )
    headers["Content-Length"] = str(wanted.length)
    headers["Content-Range"] = wanted.content_range()
    return StreamingResponse(
        opened.chunks(wanted.start, wanted.length),
        status_code=206,
        headers=headers,
        media_type="application/octet-stream",
    )


def _input_file(
    state: ServerState, identity: Identity, uuid: str, path: str
) -> tuple[_OpenFile, str, str]:
    dataset = downloadable(state, identity, uuid)
    rel = safe_relative_path(path, "path")
    recorded = next((f for f in dataset.files if f.path == rel), None)
    if recorded is None:
        raise NotFound(f"dataset {uuid} has no file {rel!r}")
    opened = _open_regular(_input_root(state, dataset), rel, "file")
    if opened.size != recorded.size:
        opened.close()
        raise _Changed(
            f"{rel!r} is {opened.size} bytes on the server but recorded with "
            f"{recorded.size}: it is being replaced; try again shortly"
        )
    return opened, rel, recorded.blake3 or _unrecorded_digest(state, dataset, rel)


def _unrecorded_digest(state: ServerState, dataset: Dataset, rel: str) -> str:
    """The BLAKE3 of a file recorded without one (a dataset migrated from the
    original system, until its data_validation job records it): computed once
    and remembered, as for output files."""
    from sclib.paths import safe_join

    path = safe_join(_input_root(state, dataset), rel)
    return _DIGESTS.digest(path, path.stat())


def _output_file(
    state: ServerState, identity: Identity, uuid: str, path: str
) -> tuple[_OpenFile, str, str]:
    dataset = downloadable(state, identity, uuid)
    rel = safe_relative_path(path, "path")
    if not rel or rel == _MARKER:
        raise NotFound(f"dataset {uuid} has no output file {rel!r}")
    root = _output_root(state, dataset)
    opened = _open_regular(root, rel, "output file")
    try:
        st = os.fstat(opened.fd)
        digest = _DIGESTS.digest(root / rel, st)
    except BaseException:
        opened.close()
        raise
    return opened, rel, digest


class _Changed(Exception):
    """A recorded file differs in size from its record (409)."""


def _conflict(exc: _Changed) -> JSONResponse:
    return _problem(409, "Conflict", str(exc), "dataset_conflict")


# -- the routes' documentation --------------------------------------------------------

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_BINARY = {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
}
_FILE_HEADERS: dict[str, Any] = {
    "ETag": {
        "description": "the file's BLAKE3, quoted",
        "schema": {"type": "string"},
    },
    "Accept-Ranges": {"schema": {"type": "string", "enum": ["bytes"]}},
    "Content-Length": {"schema": {"type": "integer", "minimum": 0}},
}
_GET_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The whole file",
        "content": _BINARY,
        "headers": _FILE_HEADERS,
    },
    206: {
        "description": "The requested range of the file",
        "content": _BINARY,
        "headers": {
            **_FILE_HEADERS,
            "Content-Range": {
                "description": "bytes <first>-<last>/<size>",
                "schema": {"type": "string"},
            },
        },
    },
    409: {
        "description": "The file on the server differs from its record (it is "
        "being replaced); try again",
        "content": {"application/problem+json": {"schema": _PROBLEM_REF}},
    },
    416: {
        "description": "The range asks for no byte of the file",
        "content": {"application/problem+json": {"schema": _PROBLEM_REF}},
        "headers": {
            "Content-Range": {
                "description": "bytes */<size>",
                "schema": {"type": "string"},
            }
        },
    },
}
_HEAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The headers a GET would send", "headers": _FILE_HEADERS},
    409: _GET_RESPONSES[409],
}
_RANGE = Header(
    None,
    alias="Range",
    description="one byte range: bytes=<first>-<last>, bytes=<first>- or "
    "bytes=-<suffix length>; anything else is ignored (the whole file is sent)",
)
_IF_RANGE = Header(
    None,
    alias="If-Range",
    description="the ETag the client's partial copy has: the range is sent only "
    "if the file still has it, else the whole file",
)


# -- the routes -----------------------------------------------------------------------


@router.get(
    "/{uuid}/files/{path:path}",
    response_class=Response,
    responses=_GET_RESPONSES,
)
def download_file(
    uuid: str,
    path: str,
    range_header: str | None = _RANGE,
    if_range: str | None = _IF_RANGE,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> Response:
    """One of the dataset's files, streamed, with ``ETag: "<blake3>"``.

    Owner, admins, and anyone signed in for an ``is_public_downloadable``
    dataset; others 404. ``Range`` takes one range (``bytes=0-99``,
    ``bytes=100-``, ``bytes=-100``): 206 with ``Content-Range``; a range past
    the end is 416 (``Content-Range: bytes */<size>``); several ranges or bad
    syntax are ignored (200, the whole file). With ``If-Range`` other than the
    ETag the whole file is sent (200). A path with ``..``, an absolute path or
    a link out of the dataset's folder is 422; a file whose size on disk is not
    the recorded one 409."""
    try:
        opened, rel, digest = _input_file(state, identity, uuid, path)
    except _Changed as exc:
        return _conflict(exc)
    return _send(
        opened, rel, digest, range_header=range_header, if_range=if_range, head=False
    )


@router.head(
    "/{uuid}/files/{path:path}",
    response_class=Response,
    responses=_HEAD_RESPONSES,
)
def download_file_head(
    uuid: str,
    path: str,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> Response:
    """The headers of ``GET`` for one of the dataset's files (size, ETag)."""
    try:
        opened, rel, digest = _input_file(state, identity, uuid, path)
    except _Changed as exc:
        return _conflict(exc)
    return _send(opened, rel, digest, range_header=None, if_range=None, head=True)


@router.get(
    "/{uuid}/outputs/{path:path}",
    response_class=Response,
    responses={k: v for k, v in _GET_RESPONSES.items() if k != 409},
)
def download_output(
    uuid: str,
    path: str,
    range_header: str | None = _RANGE,
    if_range: str | None = _IF_RANGE,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> Response:
    """One file of the dataset's converted output (``<data>/converted/<uuid>/``),
    as ``GET .../files/{path}`` sends the dataset's own: ETag (the file's BLAKE3),
    ``Range`` (206, 416), ``If-Range``, the same access rules."""
    opened, rel, digest = _output_file(state, identity, uuid, path)
    return _send(
        opened, rel, digest, range_header=range_header, if_range=if_range, head=False
    )


@router.head(
    "/{uuid}/outputs/{path:path}",
    response_class=Response,
    responses={200: _HEAD_RESPONSES[200]},
)
def download_output_head(
    uuid: str,
    path: str,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> Response:
    """The headers of ``GET`` for one file of the converted output."""
    opened, rel, digest = _output_file(state, identity, uuid, path)
    return _send(opened, rel, digest, range_header=None, if_range=None, head=True)
