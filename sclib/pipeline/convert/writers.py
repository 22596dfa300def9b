"""Writing arrays, slab by slab, as OpenVisus IDX or as a Zarr v3 pyramid.

A reader describes what it has as a :class:`Volume`: a shape, a type and a
function that reads any run of items along the first (slowest) axis. The writer
asks for consecutive slabs of at most ``slab_mib`` MiB (default 64; a power of two
items, so slabs line up with IDX blocks) and hands each to a sink, so memory stays
bounded by a few slabs whatever the size of the input.

- ``idx``: one ``.idx`` file and its data folder per volume (``visus.idx`` and
  ``visus/`` for a single one), written raw, then zip-compressed block by block
  (OpenVisus's file format, streamed). IDX dims are the numpy shape reversed.
- ``zarr``: a Zarr v3 group ``data.zarr``; each volume is a multiscale group (the
  root itself for a single volume) with arrays ``0`` (full resolution), ``1``,
  ... each half the size of the one before on the spatial axes (the last three
  at most, channel excluded), made by keeping every other sample. The group's
  ``ome`` attribute describes it the OME-NGFF 0.5 way (``multiscales`` with axes
  and scale transforms).

What OpenVisus or zarr raise while writing a volume is a :class:`ConversionError`
naming the volume's source file (see
:func:`~sclib.pipeline.convert.base.conversion_error`), unless it is a failure of
the machine (a full disk), which passes unchanged and is retried.

numpy, OpenVisus and zarr are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sclib.errors import ConversionError, InvalidInput
from sclib.pipeline.convert.base import ConversionRequest, conversion_error, require

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Volume", "field_dtype", "write_volumes"]

MIB = 1 << 20
#: default slab size: the most input held in memory at once (plus the writer's copy)
SLAB_MIB = 64
_MAX_LEVELS = 10
_COARSEST = 256  # automatic pyramids stop once the largest spatial side is <= this


@dataclass
class Volume:
    """An array a reader can produce slab by slab.

    :param name: the output's name (IDX field, Zarr group, file stem when several).
    :param source: where it comes from, for messages (``scan.h5:/entry/data``).
    :param shape: numpy order; the last axis is the channel axis if
        ``components > 1``.
    :param dtype: the numpy type of what ``read`` returns.
    :param read: ``read(start, stop)`` -> the items ``[start, stop)`` along axis 0.
    :param input_bytes: the share of the input's bytes this volume stands for.
    :param axes: axis names for Zarr (default ``z, y, x`` from the end).
    """

    name: str
    source: str
    shape: tuple[int, ...]
    dtype: Any
    read: Callable[[int, int], np.ndarray]
    input_bytes: int
    components: int = 1
    axes: tuple[str, ...] | None = None

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[:-1] if self.components > 1 else self.shape


def field_dtype(dtype: Any, where: str) -> np.dtype[Any]:
    """The type values are written as: native byte order; bool -> uint8,
    float16 -> float32; :class:`ConversionError` for anything not a number."""
    np = require("numpy", "Conversion")
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return np.dtype("uint8")  # type: ignore[no-any-return]
    if dt.kind == "f" and dt.itemsize == 2:
        return np.dtype("float32")  # type: ignore[no-any-return]
    if dt.kind not in "iuf" or dt.itemsize > 8:
        raise ConversionError(
            f"{where}: values of type {dt} cannot be converted "
            "(integers and floating point numbers only)"
        )
    return dt.newbyteorder("=")  # type: ignore[no-any-return]


class _Progress:
    def __init__(self, request: ConversionRequest, total: int) -> None:
        self.request = request
        self.total = max(total, 0)
        self.done = 0

    def add(self, nbytes: int, message: str) -> None:
        self.done = min(self.total, self.done + max(nbytes, 0))
        self.request.progress(self.done, self.total, message)


def _slab_items(volume: Volume, budget: int) -> int:
    item = math.prod(volume.shape[1:]) * volume.dtype.itemsize
    items = max(1, budget // max(item, 1))
    return int(1 << (items.bit_length() - 1))  # a power of two: IDX blocks line up


def _budget(request: ConversionRequest) -> int:
    value = request.params.get("slab_mib", SLAB_MIB)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(
            f"conversion parameter 'slab_mib' must be a positive integer, got {value!r}"
        )
    return value * MIB


def _safe_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "data"
    candidate, n = base, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate.lower())
    return candidate


# -- IDX --------------------------------------------------------------------------


class _IdxSink:
    def __init__(self, path: Path, volume: Volume, field: str, compression: str):
        ov = require("OpenVisus", "IDX output")
        spatial = volume.spatial
        if not 2 <= len(spatial) <= 5:
            raise ConversionError(
                f"{volume.source}: {len(spatial)}-D data cannot be written as IDX "
                "(2 to 5 dimensions)"
            )
        self.dims = [int(d) for d in reversed(spatial)]
        name = volume.dtype.name
        if volume.components > 1:
            name = f"{name}[{volume.components}]"
        self.path = path
        self.compression = compression
        self.db = ov.CreateIdx(
            url=str(path), dims=self.dims, fields=[ov.Field(field, name)]
        )

    def write(self, start: int, slab: np.ndarray) -> None:
        p1 = [0] * len(self.dims)
        p2 = list(self.dims)
        p1[-1] = start
        p2[-1] = start + len(slab)
        self.db.write(slab, logic_box=(p1, p2))

    def close(self, check: Callable[[], None]) -> None:
        if self.compression == "zip":
            zip_idx_blocks(self.db.db, check)
            idx = self.db.db.idxfile
            fields = list(idx.fields)
            idx.fields.clear()
            for field in fields:
                field.default_compression = "zip"
                idx.fields.push_back(field)
            idx.save(str(self.path))


_HEADER = struct.Struct(">10I")
_COMPRESSION_MASK, _ZIP = 0x0F, 0x03
_BATCH = 32  # blocks read, then compressed in parallel, then written, at a time


def zip_idx_blocks(db: Any, check: Callable[[], None], threads: int = 0) -> None:
    """Zip-compress every block of an OpenVisus (modvisus, non-ARCO) dataset.

    The file format is the one ``OpenVisus.convert.CompressModVisusDataset``
    writes (a 40-byte file header, a 40-byte header per block: offset, size,
    flags; blocks compressed with zlib and flagged ``0x03``), but each data file is
    streamed through a new file a batch of blocks at a time, instead of being read
    into memory whole, and ``check`` is called for every batch. The new file
    replaces the old one atomically.
    """
    idx = db.idxfile
    if idx.arco:  # pragma: no cover - sclib writes modvisus datasets only
        raise ConversionError("ARCO IDX datasets are not compressed by sclib")
    blocks = int(idx.blocksperfile) * int(idx.fields.size())
    header_size = _HEADER.size * (1 + blocks)
    workers = threads or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for name in db.getFilenames(-1, ""):
            path = Path(str(name))
            if not path.is_file():
                continue
            temp = path.with_name(path.name + ".zip-tmp")
            with open(path, "rb") as src, open(temp, "wb") as dst:
                raw = src.read(header_size)
                if len(raw) != header_size:
                    raise ConversionError(f"{path.name}: truncated IDX data file")
                heads = [
                    list(_HEADER.unpack_from(raw, _HEADER.size * (1 + i)))
                    for i in range(blocks)
                ]
                dst.write(bytes(header_size))
                offset = header_size
                for first in range(0, blocks, _BATCH):
                    check()
                    batch = heads[first : first + _BATCH]
                    data = []
                    for head in batch:
                        src.seek(head[2] | head[3] << 32)
                        data.append((head[5] & _COMPRESSION_MASK, src.read(head[4])))
                    packed = pool.map(_zip_block, data)
                    for head, block in zip(batch, packed, strict=True):
                        dst.write(block)
                        head[2], head[3] = offset & 0xFFFFFFFF, offset >> 32
                        head[4] = len(block)
                        head[5] = (head[5] & ~_COMPRESSION_MASK) | _ZIP
                        offset += len(block)
                dst.seek(0)
                dst.write(bytes(_HEADER.size))
                for head in heads:
                    dst.write(_HEADER.pack(*head))
            os.replace(temp, path)


def _zip_block(item: tuple[int, bytes]) -> bytes:
    flags, block = item
    if not block or flags == _ZIP:
        return block
    if flags != 0:  # pragma: no cover - sclib writes raw blocks
        raise ConversionError(f"IDX block with compression flags {flags:#x}")
    return zlib.compress(block)


# -- Zarr -------------------------------------------------------------------------


class _ZarrSink:
    def __init__(self, group: Any, volume: Volume, levels: int) -> None:
        self.volume = volume
        ndim = len(volume.shape)
        nspatial = len(volume.spatial)
        self.spatial = set(range(nspatial)[-3:])
        shapes = []
        for k in range(levels):
            shapes.append(
                tuple(
                    -(-d // (1 << k)) if ax in self.spatial else d
                    for ax, d in enumerate(volume.shape)
                )
            )
        chunks = []
        for ax, d in enumerate(volume.shape):
            if ax >= nspatial:
                chunks.append(d)
            elif ax >= nspatial - 2:
                chunks.append(min(d, 512 if nspatial == 2 else 256))
            elif ax in self.spatial:
                chunks.append(min(d, 16))
            else:
                chunks.append(1)
        self.arrays = [
            group.create_array(
                name=str(k),
                shape=shape,
                dtype=volume.dtype,
                chunks=tuple(min(c, s) for c, s in zip(chunks, shape, strict=True)),
                fill_value=0,
            )
            for k, shape in enumerate(shapes)
        ]
        self.pending: list[list[np.ndarray]] = [[] for _ in shapes]
        self.written = [0] * levels
        self.group = group
        self.ndim = ndim

    def write(self, start: int, slab: np.ndarray) -> None:
        for k in range(len(self.arrays)):
            f = 1 << k
            part = slab
            if k:
                if 0 in self.spatial:
                    part = part[(-start) % f :: f]
                rest = tuple(
                    slice(None, None, f) if ax in self.spatial else slice(None)
                    for ax in range(1, self.ndim)
                )
                part = part[(slice(None), *rest)]
            if len(part):
                self.pending[k].append(part)
                self._flush(k, final=False)

    def _flush(self, k: int, *, final: bool) -> None:
        np = require("numpy", "Zarr output")
        array = self.arrays[k]
        depth = array.chunks[0]
        buffered = sum(len(p) for p in self.pending[k])
        if buffered == 0 or (buffered < depth and not final):
            return
        data = (
            np.concatenate(self.pending[k])
            if len(self.pending[k]) > 1
            else (self.pending[k][0])
        )
        full = len(data) if final else (len(data) // depth) * depth
        at = self.written[k]
        array[at : at + full] = data[:full]
        self.written[k] = at + full
        self.pending[k] = [data[full:]] if full < len(data) else []

    def close(self) -> None:
        for k in range(len(self.arrays)):
            self._flush(k, final=True)
            if self.written[k] != self.arrays[k].shape[0]:  # pragma: no cover
                raise RuntimeError(f"zarr level {k}: wrote {self.written[k]} items")
        self.group.attrs["ome"] = {
            "version": "0.5",
            "multiscales": [self._multiscale()],
        }

    def _multiscale(self) -> dict[str, Any]:
        volume = self.volume
        nspatial = len(volume.spatial)
        names = list(volume.axes or ())
        if len(names) != nspatial or len(set(names)) != nspatial:
            default = ["z", "y", "x"][-min(nspatial, 3) :]
            names = [f"dim{i}" for i in range(nspatial - len(default))] + default
        axes: list[dict[str, str]] = []
        for ax, name in enumerate(names):
            axes.append(
                {"name": name, "type": "space"}
                if ax in self.spatial
                else {"name": name}
            )
        if volume.components > 1:
            axes.append({"name": "c", "type": "channel"})
        datasets = []
        for k in range(len(self.arrays)):
            scale = [
                float(1 << k) if ax in self.spatial else 1.0 for ax in range(self.ndim)
            ]
            datasets.append(
                {
                    "path": str(k),
                    "coordinateTransformations": [{"type": "scale", "scale": scale}],
                }
            )
        return {
            "name": volume.name,
            "axes": axes,
            "datasets": datasets,
            "type": "decimation",
            "metadata": {"method": "every 2**level-th sample on each spatial axis"},
        }


def _levels(request: ConversionRequest, volume: Volume) -> int:
    value = request.params.get("levels")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(
                f"conversion parameter 'levels' must be a positive integer, "
                f"got {value!r}"
            )
        return min(value, _MAX_LEVELS)
    spatial = volume.spatial[-3:]
    levels = 1
    while levels < _MAX_LEVELS and max(
        -(-d // (1 << (levels - 1))) for d in spatial
    ) > (_COARSEST):
        levels += 1
    return levels


# -- driving ----------------------------------------------------------------------


@contextlib.contextmanager
def _writing(volume: Volume, fmt: str) -> Iterator[None]:
    """A library's failure while ``volume`` is written as ``fmt``: a
    :class:`ConversionError` naming its source (see ``conversion_error``)."""
    try:
        yield
    except Exception as exc:
        error = conversion_error(exc, volume.source, f"cannot be written as {fmt}")
        if error is None:
            raise
        if fmt == "IDX" and volume.spatial[0] == 1:
            shown = "x".join(str(d) for d in volume.spatial)
            error = ConversionError(
                f"{error} (OpenVisus writes no IDX whose first axis has a single "
                f"sample, as this {shown} array has: convert it with "
                "output_format zarr)"
            )
        raise error from exc


def _pump(
    request: ConversionRequest,
    volume: Volume,
    sink: _IdxSink | _ZarrSink,
    progress: _Progress,
    budget: int,
) -> None:
    np = require("numpy", "Conversion")
    target = volume.dtype
    n = volume.shape[0]
    step = _slab_items(volume, budget)
    share = volume.input_bytes
    sent = 0
    for start in range(0, n, step):
        request.check()
        stop = min(n, start + step)
        slab = volume.read(start, stop)
        if slab.shape[1:] != volume.shape[1:] or len(slab) != stop - start:
            raise ConversionError(  # pragma: no cover - readers check this first
                f"{volume.source}: items {start}-{stop} have shape {slab.shape}"
            )
        slab = np.ascontiguousarray(slab, dtype=target)
        sink.write(start, slab)
        part = share * stop // n - sent
        sent += part
        progress.add(part, f"{volume.name}: {stop}/{n}")


def write_volumes(
    request: ConversionRequest, volumes: Sequence[Volume], *, single_name: bool = True
) -> tuple[str, list[dict[str, Any]]]:
    """Write ``volumes`` into ``request.output_dir`` in ``request.output_format``;
    return the entry point and the outputs.

    ``single_name``: one volume is written as ``visus.idx`` (field ``data``) or at
    the root of ``data.zarr``; otherwise every volume gets its own name (a
    ``<name>.idx``, or a ``data.zarr/<name>`` group), and the entry point is the
    first one (IDX) or ``data.zarr``.
    """
    if not volumes:  # pragma: no cover - converters refuse this earlier
        raise ConversionError("nothing to convert")
    budget = _budget(request)
    compression = request.params.get("compression", "zip")
    if compression not in ("zip", "raw"):
        raise InvalidInput(
            "conversion parameter 'compression' must be zip or raw, "
            f"got {compression!r}"
        )
    for volume in volumes:  # refuse before writing anything
        volume.dtype = field_dtype(volume.dtype, volume.source)
    progress = _Progress(request, sum(v.input_bytes for v in volumes))
    out = request.output_dir
    single = single_name and len(volumes) == 1
    taken: set[str] = {"visus", "data"} if not single else set()
    outputs: list[dict[str, Any]] = []
    entry = ""
    if request.output_format == "idx":
        for volume in volumes:
            stem = "visus" if single else _safe_name(volume.name, taken)
            field = "data" if single else stem
            path = out / f"{stem}.idx"
            with _writing(volume, "IDX"):
                sink = _IdxSink(path, volume, field, str(compression))
                _pump(request, volume, sink, progress, budget)
                request.check()
                progress.request.progress(progress.done, progress.total, f"{stem}: zip")
                sink.close(request.check)
            entry = entry or path.name
            dtype = volume.dtype.name
            if volume.components > 1:
                dtype = f"{dtype}[{volume.components}]"
            outputs.append(
                {
                    "name": field,
                    "path": path.name,
                    "shape": list(volume.shape),
                    "dtype": dtype,
                    "source": volume.source,
                }
            )
        return entry, outputs
    zarr = require("zarr", "Zarr output")
    root = zarr.open_group(store=str(out / "data.zarr"), mode="w", zarr_format=3)
    names = []
    for volume in volumes:
        if single:
            group, prefix, name = root, "data.zarr", volume.name
        else:  # named as its group is (file-safe, unique), as IDX names its field
            name = _safe_name(volume.name, taken)
            names.append(name)
            group, prefix = root.create_group(name), f"data.zarr/{name}"
        with _writing(volume, "Zarr"):
            zsink = _ZarrSink(group, volume, _levels(request, volume))
            _pump(request, volume, zsink, progress, budget)
            zsink.close()
        for k, array in enumerate(zsink.arrays):
            outputs.append(
                {
                    "name": name,
                    "path": f"{prefix}/{k}",
                    "shape": list(array.shape),
                    "dtype": str(array.dtype),
                    "level": k,
                    "source": volume.source,
                }
            )
    if names:
        root.attrs["sclib"] = {"groups": names}
    return "data.zarr", outputs
