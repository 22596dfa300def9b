"""The NetCDF converter (netCDF4): one output per variable.

Which files: ``params["file"]``, else every ``.nc``/``.nc4``/``.cdf``/``.netcdf``
file in natural order. Which variables: ``params["variables"]`` (a
list of names, in the order to write them), else every numeric variable of the
root group with 2 to 5 dimensions, in the file's order.

Values are written as stored: no scale_factor/add_offset is applied and fill
values are kept as they are (``set_auto_maskandscale(False)``); the result's note
says when a variable has scaling attributes.

Output: IDX writes ``<variable>.idx`` (and its ``<variable>/`` data folder) per
variable, the field named after the variable (``<file stem>_<variable>`` when the
dataset has several NetCDF files); the entry point is the first
variable's ``.idx``. Zarr writes one multiscale group per variable,
``data.zarr/<variable>/``, with the variable's dimension names as axis names; the
root's ``sclib`` attribute lists the groups. Names are made file-safe
(``[A-Za-z0-9_.-]``, others become ``_``).
"""

from __future__ import annotations

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

__all__ = ["NetCDFConverter"]

NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf")


def _numeric(var: Any) -> bool:
    dtype = getattr(var, "dtype", None)
    kind = getattr(dtype, "kind", "")
    return kind in "iufb" and kind != "" and 2 <= len(var.shape) <= 5


def _describe(var: Any) -> str:
    return f"{var.name} ({'x'.join(str(d) for d in var.shape)} {var.dtype})"


class NetCDFConverter:
    """``NETCDF``: the numeric variables of a NetCDF file, one array each."""

    name = "netcdf"
    sensors = ("NETCDF",)

    def _variables(self, request: ConversionRequest, rel: str, ds: Any) -> list[Any]:
        wanted = request.params.get("variables")
        numeric = [v for v in ds.variables.values() if _numeric(v)]
        if wanted is None:
            if not numeric:
                listing = ", ".join(_describe(v) for v in ds.variables.values())
                raise ConversionError(
                    f"{rel} has no numeric variable with 2 to 5 dimensions "
                    f"(variables: {listing or 'none'})"
                )
            return numeric
        if isinstance(wanted, str):
            wanted = [wanted]
        if not isinstance(wanted, list | tuple) or not all(
            isinstance(w, str) for w in wanted
        ):
            raise InvalidInput(
                "conversion parameter 'variables' must be a list of variable names"
            )
        if not wanted:
            raise InvalidInput("conversion parameter 'variables' is empty")
        chosen = []
        for name in dict.fromkeys(wanted):
            var = ds.variables.get(name)
            if var is None or not _numeric(var):
                what = "no variable" if var is None else "no numeric 2-5-D variable"
                options = ", ".join(_describe(v) for v in numeric) or "none"
                raise ConversionError(
                    f"{rel} has {what} {name!r}; numeric variables: {options}"
                )
            chosen.append(var)
        return chosen

    def convert(self, request: ConversionRequest) -> ConversionResult:
        """Every NetCDF file of the dataset (or the one ``file`` names); one
        output per variable, named ``<variable>`` for a single file and
        ``<file stem>_<variable>`` for several."""
        netcdf4 = require("netCDF4", "NetCDF conversion")
        files = pick_files(request, NETCDF_SUFFIXES, "NetCDF")
        wanted = param_str(request, "file")
        if wanted is not None and wanted not in files:
            raise InvalidInput(
                f"conversion parameter 'file': {wanted!r} is not a NetCDF file of "
                f"the dataset; NetCDF files: {', '.join(files)}"
            )
        rels = [wanted] if wanted is not None else files
        volumes: list[Volume] = []
        notes: list[str] = []
        for rel in rels:
            path = input_path(request, rel)
            with input_errors(rel, "is not a readable NetCDF file"):
                ds = netcdf4.Dataset(str(path), "r")
            try:
                with input_errors(rel, "is not a readable NetCDF file"):
                    ds.set_auto_maskandscale(False)
                    variables = self._variables(request, rel, ds)
                    total = sum(v.size * v.dtype.itemsize for v in variables) or 1
                    file_size = path.stat().st_size
                    scaled = []
                    for var in variables:
                        if (
                            "scale_factor" in var.ncattrs()
                            or "add_offset" in var.ncattrs()
                        ):
                            scaled.append(var.name)
                        volumes.append(
                            Volume(
                                name=var.name
                                if len(rels) == 1
                                else f"{rel.rsplit('.', 1)[0]}_{var.name}",
                                source=f"{rel}:{var.name}",
                                shape=tuple(int(d) for d in var.shape),
                                dtype=var.dtype,
                                read=_reader(netcdf4, path, rel, var.name),
                                input_bytes=file_size
                                * var.size
                                * var.dtype.itemsize
                                // total,
                                axes=tuple(str(d) for d in var.dimensions),
                            )
                        )
                    note = f"{rel}: variables {', '.join(v.name for v in variables)}"
                    if scaled:
                        note += (
                            "; stored values written, scaling not applied: "
                            + ", ".join(scaled)
                        )
                    notes.append(note)
            finally:
                ds.close()
            request.check()
        entry, outputs = write_volumes(request, volumes, single_name=False)
        return ConversionResult(entry, outputs, rels, "; ".join(notes))


def _reader(netcdf4: Any, path: Any, rel: str, name: str) -> Any:
    """``read(start, stop)`` for one variable, opening the file for each slab (so
    a dataset of many files never holds them all open)."""

    def read(start: int, stop: int) -> Any:
        with (
            input_errors(f"{rel}:{name}: items {start}-{stop}", "cannot be read"),
            netcdf4.Dataset(str(path), "r") as ds,
        ):
            ds.set_auto_maskandscale(False)
            return ds.variables[name][start:stop]

    return read
