"""HDF5 and NeXus converters (h5py): one dataset of each file -> one array each.

Which files: ``params["file"]`` (a path inside the dataset), else every HDF5 file
in natural order (``.h5``, ``.hdf5``, ``.hdf``, ``.he5``, ``.nxs``, ``.nx5``), one
output each (a single file gives ``visus.idx``; several give ``<file stem>.idx``,
or a ``data.zarr`` group each).

Which dataset of each file, in order:

1. ``params["dataset"]``, an HDF5 path such as ``/entry/data/data``;
2. the NeXus default: the root's ``default`` attribute names an ``NXentry``, whose
   ``default`` names an ``NXdata`` group, whose ``signal`` names the dataset;
3. the largest numeric dataset with 2 to 5 dimensions.

The result's note says which was chosen and why. The dataset is read in slabs along
its first axis (HDF5 reads only the chunks it needs), so memory stays bounded.
``4D_NEXUS`` is the same converter; a 4-D signal becomes a 4-D IDX (or a Zarr
pyramid over its last three axes).
"""

from __future__ import annotations

import math
from typing import Any

from sclib.errors import ConversionError, InvalidInput
from sclib.pipeline.convert.base import (
    ConversionRequest,
    ConversionResult,
    input_errors,
    input_path,
    param_str,
    pick_files,
    require,
)
from sclib.pipeline.convert.writers import Volume, write_volumes

__all__ = ["HDF5Converter"]

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".nxs", ".nx5")


def _text(value: Any) -> str | None:
    """An HDF5 attribute as a str (they come as str, bytes or 1-element arrays)."""
    if value is None:
        return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


def _numeric(obj: Any) -> bool:
    dtype = getattr(obj, "dtype", None)
    return dtype is not None and dtype.kind in "iufb" and 2 <= len(obj.shape) <= 5


def _describe(ds: Any) -> str:
    return f"{ds.name} ({'x'.join(str(d) for d in ds.shape)} {ds.dtype})"


def _nexus_default(h5py: Any, f: Any) -> tuple[Any, str] | None:
    """The NeXus default plottable dataset, and the chain that led to it."""
    node: Any = f
    chain = []
    for attr in ("default", "default"):
        name = _text(node.attrs.get(attr))
        if name is None or name not in node or not isinstance(node[name], h5py.Group):
            return None
        node = node[name]
        chain.append(f"@default={name}")
    signal = _text(node.attrs.get("signal"))
    if signal is None or signal not in node:
        return None
    target = node[signal]
    if not isinstance(target, h5py.Dataset):
        return None
    chain.append(f"@signal={signal}")
    return target, " -> ".join(chain)


def _candidates(h5py: Any, f: Any) -> list[Any]:
    found: list[Any] = []

    def visit(_name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and _numeric(obj):
            found.append(obj)

    f.visititems(visit)
    return found


class HDF5Converter:
    """``HDF5`` and ``4D_NEXUS``: one HDF5 dataset -> one 2D-5D array."""

    name = "hdf5"
    sensors = ("HDF5", "4D_NEXUS")

    def _choose_files(self, request: ConversionRequest) -> list[str]:
        files = pick_files(request, HDF5_SUFFIXES, "HDF5")
        wanted = param_str(request, "file")
        if wanted is None:
            return files
        if wanted not in request.files:
            raise InvalidInput(
                f"conversion parameter 'file': {wanted!r} is not a file of the "
                f"dataset; HDF5 files: {', '.join(files)}"
            )
        return [wanted]

    def convert(self, request: ConversionRequest) -> ConversionResult:
        """Every HDF5 file of the dataset (or the one ``file`` names), one array
        each: a single file becomes ``visus.idx`` (or the root of
        ``data.zarr``); several become one output per file, named after it."""
        h5py = require("h5py", "HDF5 conversion")
        rels = self._choose_files(request)
        wanted = param_str(request, "dataset")
        volumes: list[Volume] = []
        notes: list[str] = []
        for rel in rels:
            path = input_path(request, rel)
            chosen, why, shape, dtype = _choose_dataset(h5py, rel, path, wanted)
            source = f"{rel}:{chosen}"
            volumes.append(
                Volume(
                    name=(chosen.rsplit("/", 1)[-1] or "data")
                    if len(rels) == 1
                    else rel.rsplit(".", 1)[0],
                    source=source,
                    shape=shape,
                    dtype=dtype,
                    read=_reader(h5py, path, chosen, source),
                    input_bytes=math.prod(shape) * dtype.itemsize,
                )
            )
            notes.append(f"{rel}: HDF5 dataset {chosen}, {why}")
            request.check()
        entry, outputs = write_volumes(request, volumes)
        return ConversionResult(entry, outputs, rels, "; ".join(notes))


def _choose_dataset(
    h5py: Any, rel: str, path: Any, wanted: str | None
) -> tuple[str, str, tuple[int, ...], Any]:
    """The dataset of one file to convert: its path, why it, its shape and type."""
    with input_errors(rel, "is not a readable HDF5 file"), h5py.File(path, "r") as f:
        if wanted is not None:
            obj = f.get(wanted)
            if not isinstance(obj, h5py.Dataset) or not _numeric(obj):
                options = ", ".join(_describe(d) for d in _candidates(h5py, f))
                what = "no dataset" if obj is None else "no numeric 2-5-D dataset"
                raise ConversionError(
                    f"{rel} has {what} {wanted!r}; numeric datasets: "
                    f"{options or 'none'}"
                )
            ds, why = obj, "given by the 'dataset' parameter"
        else:
            default = _nexus_default(h5py, f)
            if default is not None and _numeric(default[0]):
                ds, why = default[0], f"the NeXus default ({default[1]})"
            else:
                found = _candidates(h5py, f)
                if not found:
                    raise ConversionError(
                        f"{rel} has no numeric dataset with 2 to 5 dimensions"
                    )
                ds = max(found, key=lambda d: (d.size, d.name))
                why = "the largest numeric dataset"
        return str(ds.name), why, tuple(int(d) for d in ds.shape), ds.dtype


def _reader(h5py: Any, path: Any, name: str, source: str) -> Any:
    """``read(start, stop)`` for one dataset, opening the file for each slab (so
    a dataset of many files never holds them all open)."""

    def read(start: int, stop: int) -> Any:
        with (
            input_errors(f"{source}: items {start}-{stop}", "cannot be read"),
            h5py.File(path, "r") as f,
        ):
            return f[name][start:stop]

    return read
