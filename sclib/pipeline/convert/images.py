"""Image converters: TIFF stacks (tifffile) and RGB images (tifffile, Pillow).

- ``TIFF``: every page of every ``.tif``/``.tiff`` file, files in natural order
  (``slice2`` before ``slice10``), is one slice of a 3D volume (2D when there is a
  single page). Pages are read one at a time, a slab of slices is written at once.
- ``TIFF RGB``: the same with RGB(A) pages; the output has 3 components per sample
  (alpha is dropped), e.g. ``uint8[3]``.
- ``RGB``: PNG, JPEG, TIFF, BMP, GIF or WebP images read by Pillow and converted to
  8-bit RGB; several images of the same size make a 3D stack.

Every slice must have the shape and type of the first; a file that does not open
as its format, or a slice that differs, is a :class:`ConversionError` naming the
file (and page), whatever the library raised (see
:func:`~sclib.pipeline.convert.base.conversion_error`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sclib.errors import ConversionError
from sclib.pipeline.convert.base import (
    ConversionRequest,
    ConversionResult,
    input_errors,
    input_path,
    pick_files,
    require,
)
from sclib.pipeline.convert.writers import Volume, write_volumes

if TYPE_CHECKING:
    import numpy as np

__all__ = ["PillowRGBConverter", "TiffConverter", "TiffRGBConverter", "stack_volume"]

TIFF_SUFFIXES = (".tif", ".tiff")
PILLOW_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".gif",
    ".webp",
)


def stack_volume(
    request: ConversionRequest,
    source: str,
    slices: list[Callable[[], np.ndarray]],
    item_shape: tuple[int, ...],
    dtype: Any,
    components: int,
    input_bytes: int,
) -> Volume:
    """A volume whose items along axis 0 are ``slices`` (each read by calling it),
    or, with one slice, the 2D image itself (read once, handed out by rows)."""
    numpy = require("numpy", "Conversion")
    if len(slices) == 1:
        cache: list[np.ndarray] = []

        def read_rows(start: int, stop: int) -> np.ndarray:
            if not cache:
                request.check()
                cache.append(slices[0]())
            rows: np.ndarray = cache[0][start:stop]
            return rows

        return Volume(
            name="data",
            source=source,
            shape=item_shape,
            dtype=dtype,
            read=read_rows,
            input_bytes=input_bytes,
            components=components,
        )

    def read_slices(start: int, stop: int) -> np.ndarray:
        out: np.ndarray = numpy.empty((stop - start, *item_shape), dtype=dtype)
        for j in range(start, stop):
            request.check()
            out[j - start] = slices[j]()
        return out

    return Volume(
        name="data",
        source=source,
        shape=(len(slices), *item_shape),
        dtype=dtype,
        read=read_slices,
        input_bytes=input_bytes,
        components=components,
    )


def _describe(shape: tuple[int, ...], dtype: Any) -> str:
    return f"{'x'.join(str(d) for d in shape)} {dtype}"


class _Layout:
    """The first slice's shape and type, and where it came from."""

    def __init__(self) -> None:
        self.shape: tuple[int, ...] | None = None
        self.dtype: Any = None
        self.where = ""

    def check(self, shape: tuple[int, ...], dtype: Any, where: str) -> None:
        if self.shape is None:
            self.shape, self.dtype, self.where = shape, dtype, where
        elif (shape, dtype) != (self.shape, self.dtype):
            raise ConversionError(
                f"{where} is {_describe(shape, dtype)} but {self.where} is "
                f"{_describe(self.shape, self.dtype)}: every slice must have the "
                "same shape and type"
            )


class _TiffBase:
    name = "tiff"
    sensors: tuple[str, ...] = ("TIFF",)
    rgb = False

    def _page_shape(self, page: Any, where: str) -> tuple[tuple[int, ...], bool]:
        """(shape of a slice, whether the samples are stored plane by plane)."""
        shape = tuple(int(d) for d in page.shape)
        samples = int(getattr(page, "samplesperpixel", 1))
        separate = samples > 1 and int(getattr(page, "planarconfig", 1)) == 2
        if separate:
            shape = (*shape[1:], shape[0])
        if not self.rgb:
            if len(shape) == 2:
                return shape, False
            if samples > 1:
                raise ConversionError(
                    f"{where} has {samples} samples per pixel (colour?): "
                    "use the 'TIFF RGB' sensor for colour images"
                )
            raise ConversionError(f"{where} is a {len(shape)}-D page; 2-D expected")
        if len(shape) != 3 or shape[-1] not in (3, 4):
            raise ConversionError(
                f"{where} is not an RGB image ({_describe(shape, page.dtype)}); "
                "use the 'TIFF' sensor for single-channel images"
            )
        return (*shape[:-1], 3), separate

    def convert(self, request: ConversionRequest) -> ConversionResult:
        tifffile = require("tifffile", "TIFF conversion")
        files = pick_files(request, TIFF_SUFFIXES, "TIFF")
        layout = _Layout()
        pages: list[tuple[str, int, bool]] = []
        size = 0
        for rel in files:
            request.check()
            path = input_path(request, rel)
            size += path.stat().st_size
            with (
                input_errors(rel, "is not a readable TIFF file"),
                tifffile.TiffFile(path) as tif,
            ):
                for i, page in enumerate(tif.pages):
                    if getattr(page, "is_reduced", False):
                        continue  # a thumbnail or preview, not a slice
                    where = f"{rel} page {i}" if len(tif.pages) > 1 else rel
                    shape, separate = self._page_shape(page, where)
                    layout.check(shape, page.dtype, where)
                    pages.append((rel, i, separate))
        if not pages or layout.shape is None:
            raise ConversionError(f"no image pages in {', '.join(files)}")
        with contextlib.ExitStack() as stack:
            opened: dict[str, Any] = {}

            def reader(rel: str, index: int, separate: bool) -> Callable[[], Any]:
                def read() -> Any:
                    tif = opened.get(rel)
                    if tif is None:
                        for old in list(opened):  # one file open at a time
                            opened.pop(old).close()
                        with input_errors(rel, "is not a readable TIFF file"):
                            tif = tifffile.TiffFile(input_path(request, rel))
                        opened[rel] = tif
                    with input_errors(f"{rel} page {index}", "cannot be decoded"):
                        data = tif.pages[index].asarray()
                    if separate:
                        data = data.transpose(1, 2, 0)
                    return data[..., :3] if self.rgb else data

                return read

            stack.callback(lambda: [t.close() for t in opened.values()])
            volume = stack_volume(
                request,
                ", ".join(files) if len(files) <= 3 else f"{len(files)} TIFF files",
                [reader(rel, i, sep) for rel, i, sep in pages],
                layout.shape,
                layout.dtype,
                3 if self.rgb else 1,
                size,
            )
            entry, outputs = write_volumes(request, [volume])
        note = f"{len(pages)} page(s) from {len(files)} file(s)"
        return ConversionResult(entry, outputs, files, note)


class TiffConverter(_TiffBase):
    """``TIFF``: a multi-page TIFF or a sequence of TIFFs -> one 3D (or 2D) array."""

    name = "tiff"
    sensors = ("TIFF",)
    rgb = False


class TiffRGBConverter(_TiffBase):
    """``TIFF RGB``: RGB(A) TIFF pages -> an array with 3 components per sample."""

    name = "tiff-rgb"
    sensors = ("TIFF RGB",)
    rgb = True


class PillowRGBConverter:
    """``RGB``: images Pillow reads (PNG, JPEG, TIFF...) -> 8-bit RGB (``uint8[3]``)."""

    name = "rgb-image"
    sensors = ("RGB",)

    def convert(self, request: ConversionRequest) -> ConversionResult:
        pil = require("PIL.Image", "RGB image conversion")
        np = require("numpy", "RGB image conversion")
        files = pick_files(request, PILLOW_SUFFIXES, "image")
        layout = _Layout()
        size = 0
        for rel in files:
            request.check()
            path = input_path(request, rel)
            size += path.stat().st_size
            with input_errors(rel, "is not a readable image"), pil.open(path) as image:
                width, height = image.size
            layout.check((int(height), int(width), 3), np.dtype("uint8"), rel)
        assert layout.shape is not None

        def reader(rel: str) -> Callable[[], Any]:
            def read() -> Any:
                with (
                    input_errors(rel, "cannot be decoded"),
                    pil.open(input_path(request, rel)) as image,
                ):
                    rgb = image.convert("RGB")
                    return np.asarray(rgb, dtype=np.uint8)

            return read

        volume = stack_volume(
            request,
            ", ".join(files) if len(files) <= 3 else f"{len(files)} images",
            [reader(rel) for rel in files],
            layout.shape,
            np.dtype("uint8"),
            3,
            size,
        )
        entry, outputs = write_volumes(request, [volume])
        return ConversionResult(entry, outputs, files, f"{len(files)} image(s)")
