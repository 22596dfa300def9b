"""Converters: a dataset's sensor data -> a streamable format for the viewer.

The ``dataset_conversion`` job (:mod:`sclib.pipeline.conversion`) asks
:func:`converter_for` for the dataset's sensor and calls its ``convert`` with a
:class:`ConversionRequest`; the converter writes OpenVisus IDX (default) or a Zarr
v3 pyramid into the request's empty output folder and returns a
:class:`ConversionResult`. See docs/converters.md.

Built in: ``TIFF``, ``TIFF RGB``, ``RGB``, ``HDF5``, ``4D_NEXUS``, ``NETCDF`` and
``IDX`` (passthrough). More come from the ``sclib.converters`` entry points or
:func:`register`. Importing this package needs no optional package; the
converters import numpy, OpenVisus, tifffile, h5py, netCDF4, Pillow or zarr when
they run (``pip install 'sclib[convert]'``).
"""

from __future__ import annotations

from sclib.pipeline.convert.base import (
    OUTPUT_FORMATS,
    ConversionRequest,
    ConversionResult,
    Converter,
)
from sclib.pipeline.convert.registry import (
    GROUP,
    available_converters,
    converter_for,
    register,
    reset_cache,
    unregister,
)

__all__ = [
    "GROUP",
    "OUTPUT_FORMATS",
    "ConversionRequest",
    "ConversionResult",
    "Converter",
    "available_converters",
    "converter_for",
    "register",
    "reset_cache",
    "unregister",
]
