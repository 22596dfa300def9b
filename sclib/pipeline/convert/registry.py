"""Which converter handles which sensor.

Converters are found, in order, in: the runtime registry (:func:`register`), the
entry-point group ``sclib.converters`` (third-party packages; an entry point loads
to a converter instance or class, whose ``sensors`` say what it converts), and the
built-in table below, whose modules are imported on first use. Sensor names are
compared in upper case. A sensor nobody converts (``OTHER``, ``MAPIR``, an unknown
one) has no converter: :func:`converter_for` returns None, which is not an error.

Nothing here imports numpy or OpenVisus; the built-in converters import them when
they run, and say which extra to install (``pip install 'sclib[convert]'``) when
they are missing.
"""

from __future__ import annotations

import importlib
import threading
from importlib.metadata import entry_points
from typing import Any

from sclib.errors import ConfigurationError, MissingDependency
from sclib.pipeline.convert.base import Converter

__all__ = [
    "GROUP",
    "available_converters",
    "converter_for",
    "register",
    "reset_cache",
    "unregister",
]

#: The entry-point group third-party converters are declared in.
GROUP = "sclib.converters"

#: sensor -> ("module:Class", converter name); imported on first use
_BUILTIN: dict[str, tuple[str, str]] = {
    "TIFF": ("sclib.pipeline.convert.images:TiffConverter", "tiff"),
    "TIFF RGB": ("sclib.pipeline.convert.images:TiffRGBConverter", "tiff-rgb"),
    "RGB": ("sclib.pipeline.convert.images:PillowRGBConverter", "rgb-image"),
    "HDF5": ("sclib.pipeline.convert.hdf5:HDF5Converter", "hdf5"),
    "4D_NEXUS": ("sclib.pipeline.convert.hdf5:HDF5Converter", "hdf5"),
    "NETCDF": ("sclib.pipeline.convert.netcdf:NetCDFConverter", "netcdf"),
    "IDX": ("sclib.pipeline.convert.idx:IdxConverter", "idx"),
}

_registry: dict[str, Converter] = {}
_entry_cache: dict[str, Converter] | None = None
_builtin_cache: dict[str, Converter] = {}
_lock = threading.RLock()


def _key(sensor: str) -> str:
    if not isinstance(sensor, str):
        raise ConfigurationError(f"a sensor name must be a string, got {sensor!r}")
    return sensor.strip().upper()


def _as_converter(obj: Any, origin: str) -> Converter:
    """An instance from ``obj`` (a class is instantiated), checked for the protocol."""
    if isinstance(obj, type):
        try:
            obj = obj()
        except TypeError as exc:
            raise ConfigurationError(
                f"{origin}: the converter class cannot be made without arguments: {exc}"
            ) from exc
    sensors = getattr(obj, "sensors", None)
    if (
        not isinstance(getattr(obj, "name", None), str)
        or not callable(getattr(obj, "convert", None))
        or not isinstance(sensors, tuple | list)
        or not sensors
        or not all(isinstance(s, str) and s.strip() for s in sensors)
    ):
        raise ConfigurationError(
            f"{origin}: {obj!r} is not a converter (it needs a 'name' string, a "
            "non-empty 'sensors' tuple of strings and a convert(request) method)"
        )
    converter: Converter = obj
    return converter


def _entry_points() -> dict[str, Converter]:
    """sensor -> converter from the ``sclib.converters`` entry points (loaded once)."""
    global _entry_cache
    with _lock:
        if _entry_cache is not None:
            return _entry_cache
        found: dict[str, Converter] = {}
        for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
            origin = f"entry point {ep.name!r} ({ep.value}) in group {GROUP!r}"
            try:
                loaded = ep.load()
            except ImportError as exc:
                raise ConfigurationError(
                    f"{origin} cannot be imported: {exc}; install the package that "
                    "provides it, or its missing dependency"
                ) from exc
            except AttributeError as exc:
                raise ConfigurationError(f"{origin} does not exist: {exc}") from exc
            converter = _as_converter(loaded, origin)
            for sensor in converter.sensors:
                found.setdefault(_key(sensor), converter)
        _entry_cache = found
        return found


def _builtin(sensor: str) -> Converter | None:
    target = _BUILTIN.get(sensor)
    if target is None:
        return None
    with _lock:
        cached = _builtin_cache.get(target[0])
        if cached is not None:
            return cached
        module_name, _, attr = target[0].partition(":")
        # the built-in modules import only sclib at import time; numpy & co. are
        # imported when a conversion runs
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise MissingDependency(
                exc.name or module_name, "convert", f"The {sensor!r} converter"
            ) from exc
        converter = _as_converter(getattr(module, attr), f"built-in {target[0]}")
        _builtin_cache[target[0]] = converter
        return converter


def converter_for(sensor: str) -> Converter | None:
    """The converter for ``sensor``, or None when nothing converts it (``OTHER``,
    ``MAPIR``, unknown sensors): then the dataset needs no conversion."""
    key = _key(sensor)
    with _lock:
        registered = _registry.get(key)
    if registered is not None:
        return registered
    return _entry_points().get(key) or _builtin(key)


def register(converter: Any, *, replace: bool = False) -> None:
    """Use ``converter`` (an instance, or a class made without arguments) for its
    ``sensors``, ahead of entry points and built-ins.

    A sensor that already has a converter is refused with
    :class:`~sclib.errors.ConfigurationError` unless ``replace=True``; nothing is
    registered then.
    """
    conv = _as_converter(converter, "register()")
    keys = [_key(s) for s in conv.sensors]
    with _lock:
        if not replace:
            for key in keys:
                current = converter_for(key)
                if current is not None and current is not conv:
                    raise ConfigurationError(
                        f"sensor {key!r} already has the converter "
                        f"{current.name!r}; pass replace=True to register "
                        f"{conv.name!r} in its place"
                    )
        for key in keys:
            _registry[key] = conv


def unregister(sensor: str) -> None:
    """Forget the runtime registration for ``sensor`` (entry points and built-ins
    apply again)."""
    with _lock:
        _registry.pop(_key(sensor), None)


def reset_cache() -> None:
    """Read the entry points again on next use (after installing a plugin)."""
    global _entry_cache
    with _lock:
        _entry_cache = None


def available_converters() -> dict[str, str]:
    """sensor -> converter name, for every sensor something converts."""
    table = {sensor: name for sensor, (_, name) in _BUILTIN.items()}
    table.update({s: c.name for s, c in _entry_points().items()})
    with _lock:
        table.update({s: c.name for s, c in _registry.items()})
    return dict(sorted(table.items()))
