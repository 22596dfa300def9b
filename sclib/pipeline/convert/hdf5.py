"""HDF5 and NeXus converters (h5py): one dataset of one file -> one array.

Which file: ``params["file"]`` (a path inside the dataset), else the first HDF5
file in natural order (``.h5``, ``.hdf5``, ``.hdf``, ``.he5``, ``.nxs``, ``.nx5``).

Which dataset, in order:

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

from typing import Any

from sclib.errors import ConversionError, InvalidInput
from sclib.pipeline.convert.base import (
    ConversionRequest,
    ConversionResult,
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

    def _choose_file(self, request: ConversionRequest) -> tuple[str, list[str]]:
        files = pick_files(request, HDF5_SUFFIXES, "HDF5")
        wanted = param_str(request, "file")
        if wanted is None:
            return files[0], files
        if wanted not in request.files:
            raise InvalidInput(
                f"conversion parameter 'file': {wanted!r} is not a file of the "
                f"dataset; HDF5 files: {', '.join(files)}"
            )
        return wanted, files

    def convert(self, request: ConversionRequest) -> ConversionResult:
        h5py = require("h5py", "HDF5 conversion")
        rel, files = self._choose_file(request)
        path = input_path(request, rel)
        wanted = param_str(request, "dataset")
        try:
            f = h5py.File(path, "r")
        except (OSError, ValueError) as exc:
            raise ConversionError(f"{rel} is not a readable HDF5 file: {exc}") from exc
        with f:
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
            chosen = str(ds.name)
            source = f"{rel}:{chosen}"
            nbytes = ds.size * ds.dtype.itemsize

            def read(start: int, stop: int) -> Any:
                try:
                    return ds[start:stop]
                except (OSError, ValueError) as exc:
                    raise ConversionError(
                        f"{source}: items {start}-{stop} cannot be read: {exc}"
                    ) from exc

            volume = Volume(
                name=chosen.rsplit("/", 1)[-1] or "data",
                source=source,
                shape=tuple(int(d) for d in ds.shape),
                dtype=ds.dtype,
                read=read,
                input_bytes=nbytes,
            )
            entry, outputs = write_volumes(request, [volume])
        note = f"{rel}: HDF5 dataset {chosen}, {why}"
        if len(files) > 1:
            note += f"; {len(files) - 1} other HDF5 file(s) not converted"
        return ConversionResult(entry, outputs, [rel], note)
