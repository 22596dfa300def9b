"""The IDX converter: the dataset already is OpenVisus IDX; publish it as is.

Which ``.idx``: ``params["file"]``, else ``visus.idx`` if there is one, else the
first in natural order. It is opened with OpenVisus first (a file that does not
open is a :class:`ConversionError` naming it), then copied to ``visus.idx`` in the
output folder with its ``(filename_template)`` written out explicitly (OpenVisus
would otherwise derive the data folder from the new name), and its data folder is
hard-linked (copied where links are not possible, e.g. across filesystems) beside
it under its own name. A template that is not a relative path inside the dataset
(absolute, ``..``, a URL) is refused. ``output_format="zarr"`` is not offered.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from sclib.errors import ConversionError, InvalidInput
from sclib.paths import safe_join, safe_relative_path
from sclib.pipeline.convert.base import (
    ConversionRequest,
    ConversionResult,
    input_errors,
    input_path,
    natural_key,
    param_str,
    pick_files,
    require,
)

__all__ = ["IdxConverter", "link_or_copy"]

_TEMPLATE = re.compile(r"^\(filename_template\)\n[^\n]*\n?", re.MULTILINE)


def link_or_copy(src: Path, dst: Path) -> bool:
    """Hard-link ``src`` to ``dst``, or copy it if links are refused; True if linked."""
    try:
        os.link(src, dst)
        return True
    except OSError:
        shutil.copy2(src, dst)
        return False


def _data_folder(template: str, rel: str) -> str:
    """The folder the template's block files live in, relative to the .idx file."""
    if not template.startswith("./"):
        raise ConversionError(
            f"{rel}: its data files ({template!r}) are not in a folder beside it; "
            "only relative templates (./name/...) are published"
        )
    parts = PurePosixPath(template[2:]).parts
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        raise ConversionError(
            f"{rel}: unsupported data file template {template!r} "
            "(expected ./<folder>/...)"
        )
    try:
        return safe_relative_path(parts[0], "data folder")
    except InvalidInput as exc:
        raise ConversionError(f"{rel}: {exc}") from exc


class IdxConverter:
    """``IDX``: an existing OpenVisus dataset, published as ``visus.idx``."""

    name = "idx"
    sensors = ("IDX",)

    def convert(self, request: ConversionRequest) -> ConversionResult:
        if request.output_format != "idx":
            raise ConversionError(
                "the IDX sensor's data is published as IDX only; "
                f"output_format {request.output_format!r} is not offered"
            )
        ov = require("OpenVisus", "IDX conversion")
        files = pick_files(request, (".idx",), "IDX")
        wanted = param_str(request, "file")
        if wanted is not None and wanted not in files:
            raise InvalidInput(
                f"conversion parameter 'file': {wanted!r} is not an .idx file of the "
                f"dataset; .idx files: {', '.join(files)}"
            )
        named = [f for f in files if PurePosixPath(f).name == "visus.idx"]
        rel = wanted or (sorted(named, key=natural_key) or files)[0]
        path = input_path(request, rel)
        with input_errors(rel, "is not a readable IDX file"):
            db = ov.LoadDataset(str(path))  # OpenVisus raises SystemError for all
            if db is None:
                raise ConversionError(f"{rel} is not a readable IDX file")
            template = str(db.db.idxfile.filename_template)
            folder = _data_folder(template, rel)
            box = db.getLogicBox()
            dims = [int(b) - int(a) for a, b in zip(box[0], box[1], strict=True)]
            fields = [(str(f.name), str(f.dtype.toString())) for f in db.db.getFields()]
        request.check()

        text = path.read_text(encoding="utf-8", errors="replace")
        text = _TEMPLATE.sub("", text).rstrip("\n")
        text += f"\n(filename_template)\n{template}\n"
        (request.output_dir / "visus.idx").write_text(text, encoding="utf-8")
        source = safe_join(path.parent, folder)
        target = request.output_dir / folder
        linked = copied = 0
        used = [rel]
        if source.is_dir():
            total = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
            done = 0
            for item in sorted(source.rglob("*")):
                request.check()
                if item.is_symlink():
                    continue  # never follow links out of the dataset
                dest = target / item.relative_to(source)
                if item.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                if link_or_copy(item, dest):
                    linked += 1
                else:
                    copied += 1
                done += item.stat().st_size
                request.progress(done, total, f"{folder}/{item.name}")
                used.append(item.relative_to(request.input_dir).as_posix())
        with input_errors(rel, "does not open once copied"):
            check = ov.LoadDataset(str(request.output_dir / "visus.idx"))
        del check
        outputs: list[dict[str, Any]] = [
            {"name": name, "path": "visus.idx", "shape": dims[::-1], "dtype": dtype}
            for name, dtype in fields
        ]
        note = f"{rel} published as visus.idx with {folder}/ "
        note += f"({linked} file(s) hard-linked, {copied} copied)"
        others = [f for f in files if f != rel]
        if others:
            note += f"; other .idx files not published: {', '.join(others)}"
        return ConversionResult("visus.idx", outputs, used, note)
