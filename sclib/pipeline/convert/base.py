"""What a converter takes and gives back, and helpers the built-in converters share.

A converter reads a dataset's files (:class:`ConversionRequest`) and writes one or
more arrays into an empty folder, returning what it wrote
(:class:`ConversionResult`). The job handler owns the folder: it is an
attempt-scoped temp folder that is published in one step once ``convert`` returns.

Nothing here imports numpy or any other optional package.
"""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from sclib.errors import ConversionError, InvalidInput, MissingDependency, SclibError
from sclib.paths import safe_join, safe_relative_path

__all__ = [
    "OUTPUT_FORMATS",
    "ConversionRequest",
    "ConversionResult",
    "Converter",
    "conversion_error",
    "input_errors",
    "input_path",
    "library_of",
    "natural_key",
    "param_str",
    "pick_files",
    "require",
]

#: What ``ConversionRequest.output_format`` may be.
OUTPUT_FORMATS = ("idx", "zarr")


def _no_check() -> None:
    return None


def _no_progress(done: int, total: int, message: str) -> None:
    return None


_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class ConversionRequest:
    """One conversion: which files, where to write, how.

    :param input_dir: the dataset folder, ``<data>/upload/<uuid>``.
    :param files: the dataset's files, POSIX paths relative to ``input_dir``, sorted.
    :param output_dir: an existing, empty folder to write into.
    :param sensor: the dataset's sensor (``"TIFF"``, ``"HDF5"``, ...).
    :param params: the job's conversion parameters (see docs/converters.md).
    :param output_format: ``"idx"`` (OpenVisus, default) or ``"zarr"`` (Zarr v3).
    :param check: raises once the job is cancelled or past its time limit; converters
        call it for every slice or chunk.
    :param progress: ``(input bytes done, input bytes total, message)``.
    """

    input_dir: Path
    files: Sequence[str]
    output_dir: Path
    sensor: str
    params: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    output_format: str = "idx"
    check: Callable[[], None] = _no_check
    progress: Callable[[int, int, str], None] = _no_progress

    def __post_init__(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise InvalidInput(
                f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, "
                f"got {self.output_format!r}"
            )


@dataclass(frozen=True)
class ConversionResult:
    """What a converter wrote.

    :param entry_point: the path, relative to ``output_dir``, the viewer opens
        (``"visus.idx"``, or ``"data.zarr"``).
    :param outputs: one dict per array written: ``name``, ``path`` (relative to
        ``output_dir``), ``shape`` (a list, numpy order: slowest axis first) and
        ``dtype``; converters may add keys (``level`` for Zarr pyramids).
    :param inputs: the input files used, relative to ``input_dir``.
    :param note: what a person should know (which HDF5 dataset was chosen, ...).
    """

    entry_point: str
    outputs: list[dict[str, Any]]
    inputs: list[str]
    note: str = ""


@runtime_checkable
class Converter(Protocol):
    """Turns the files of datasets of some sensors into a streamable format."""

    #: a short name, shown in job results and ``available_converters()``
    name: str
    #: the sensors it converts, upper case (``("TIFF",)``)
    sensors: tuple[str, ...]

    def convert(self, request: ConversionRequest) -> ConversionResult:
        """Write ``request``'s data into ``request.output_dir``; see the module."""
        ...


# -- helpers for converters -------------------------------------------------------

_DIGITS = re.compile(r"(\d+)")


def natural_key(path: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting ``slice2.tif`` before ``slice10.tif`` (digits as numbers)."""
    parts: list[tuple[int, int | str]] = []
    for i, piece in enumerate(_DIGITS.split(path.lower())):
        if i % 2:
            parts.append((0, int(piece)))
        elif piece:
            parts.append((1, piece))
    return tuple(parts)


def _listing(files: Sequence[str], limit: int = 20) -> str:
    if not files:
        return "the dataset has no files"
    shown = ", ".join(files[:limit])
    more = f" and {len(files) - limit} more" if len(files) > limit else ""
    return f"found {len(files)} file(s): {shown}{more}"


def pick_files(
    request: ConversionRequest, suffixes: Iterable[str], what: str
) -> list[str]:
    """The request's files whose name ends with one of ``suffixes`` (any case),
    in natural order; :class:`ConversionError` listing what there is if none."""
    ends = tuple(s.lower() for s in suffixes)
    chosen = [f for f in request.files if f.lower().endswith(ends)]
    if not chosen:
        raise ConversionError(
            f"no {what} files ({', '.join(ends)}) to convert for sensor "
            f"{request.sensor!r}: {_listing(list(request.files))}"
        )
    return sorted(chosen, key=natural_key)


def input_path(request: ConversionRequest, relative: str) -> Path:
    """``relative`` inside the dataset folder; never outside it."""
    clean = safe_relative_path(relative, "file")
    if not clean:
        raise InvalidInput("file: an empty path")
    return safe_join(request.input_dir, clean)


def param_str(request: ConversionRequest, name: str) -> str | None:
    """The string parameter ``name``, or None; :class:`InvalidInput` if not a string."""
    value = request.params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(
            f"conversion parameter {name!r} must be a string, "
            f"got {type(value).__name__}"
        )
    return value


def require(module: str, feature: str) -> Any:
    """Import the optional ``module``; :class:`MissingDependency` naming the
    ``convert`` extra if it is not installed."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(exc.name or module, "convert", feature) from exc


# -- which failures are the input's ------------------------------------------------

#: errno values that name a failure of the machine, not of the input: a full or
#: read-only disk, an I/O error, no memory or file descriptors left, a permission
#: the operator set, a stale network file handle, an interrupted or timed-out call.
#: The same conversion can succeed once they are gone, so it is retried.
MACHINE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ENOSPC",
        "EDQUOT",
        "EROFS",
        "EIO",
        "ENOMEM",
        "EMFILE",
        "ENFILE",
        "EACCES",
        "EPERM",
        "ESTALE",
        "EAGAIN",
        "EINTR",
        "EBUSY",
        "ETIMEDOUT",
    )
    if hasattr(errno, name)
)

_MESSAGE_LIMIT = 400


def _machine_failure(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from, is a failure of the
    machine: :class:`MemoryError`, or an :class:`OSError` whose errno is in
    :data:`MACHINE_ERRNOS`."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain of causes, not an endless loop
        if seen is None:
            return False
        if isinstance(seen, MemoryError):
            return True
        if isinstance(seen, OSError) and seen.errno in MACHINE_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def library_of(exc: BaseException) -> str:
    """The top-level package of the code that raised ``exc`` (its innermost
    Python frame), e.g. ``OpenVisus``, ``PIL``; ``""`` if unknown."""
    tb = exc.__traceback__
    name = ""
    while tb is not None:
        name = str(tb.tb_frame.f_globals.get("__name__") or "")
        tb = tb.tb_next
    return name.split(".")[0]


def _one_line(text: str) -> str:
    """A library's message on one line (OpenVisus's span several), shortened."""
    clean = " ".join(text.split())
    if len(clean) > _MESSAGE_LIMIT:
        clean = clean[: _MESSAGE_LIMIT - 3] + "..."
    return clean


def conversion_error(
    exc: BaseException, where: str, what: str = "cannot be converted"
) -> ConversionError | None:
    """The :class:`~sclib.errors.ConversionError` for ``exc``, raised by a
    converter's library (OpenVisus, h5py, netCDF4, tifffile, Pillow, numpy, zarr,
    or a plugin's own) while it read or wrote the data of ``where`` (a file of the
    dataset, by its path inside it), or ``None`` when ``exc`` is not the input's
    fault and must pass unchanged.

    The rule (docs/converters.md): an exception of any type a library raises on a
    given input (``SystemError``, ``RuntimeError``, ``ValueError``, ``KeyError``,
    ``SyntaxError``, an ``OSError`` without an errno, ...) is the input's, since
    the same input makes it fail again: not retryable. Not the input's: sclib's
    own errors (they are classified already, :class:`~sclib.errors.JobCancelled`
    and the like included), :class:`MemoryError`, and an :class:`OSError` whose
    errno names a failure of the machine (:data:`MACHINE_ERRNOS`: a full disk, an
    I/O error...), found on ``exc`` or on the exceptions it was raised from;
    those are retried.
    """
    if isinstance(exc, SclibError) or not isinstance(exc, Exception):
        return None
    if _machine_failure(exc):
        return None
    library = library_of(exc)
    shown = library and library != "sclib" and not library.startswith("_")
    by = f" ({library})" if shown else ""
    detail = _one_line(str(exc))
    message = f"{where} {what}{by}: {type(exc).__name__}"
    return ConversionError(f"{message}: {detail}" if detail else message)


@contextlib.contextmanager
def input_errors(where: str, what: str = "cannot be converted") -> Iterator[None]:
    """Raise what a library raises inside the block as :func:`conversion_error`
    says: a :class:`~sclib.errors.ConversionError` naming ``where`` when it is
    the input's fault, the exception unchanged otherwise."""
    try:
        yield
    except Exception as exc:
        error = conversion_error(exc, where, what)
        if error is None:
            raise
        raise error from exc
