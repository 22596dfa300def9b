"""The ``dataset_conversion`` job: a dataset's files to a streamable format.

The converter for the dataset's sensor (:mod:`sclib.pipeline.convert`) writes into
an attempt-scoped temp folder, ``<data>/tmp/convert/<job>-<attempt>/``. Once it has
finished, a marker (``.sclib-conversion.json``: the input fingerprint, the
converter, what it wrote) is added, everything is fsync'ed, and the folder is
published at ``<data>/converted/<uuid>/`` in one atomic step
(:func:`~sclib.pipeline.publish.publish_dir`). So a worker killed at any moment
leaves either the previous output or nothing at the final path, never a partial
one; the retried attempt deletes the dead attempt's temp folder and starts over.

A conversion never publishes output of files that changed while it ran: the
check of the dataset's listing and the rename hold a lock on ``<data>/converted``,
and a changed listing is converted again (up to three runs), so older files'
output never replaces newer files'.

A job whose input (file listing, sensor, parameters, format) equals the marker of
the published output does nothing: a retry after the publish, or a second
conversion queued while a multi-file upload was finishing, costs one read.

Dataset statuses: ``conversion queued`` -> ``converting`` -> ``done``, or
``conversion error`` with a message naming the file that could not be converted.
What a converter's library raises on an input (OpenVisus's ``SystemError``,
Pillow's ``SyntaxError``...) is a :class:`~sclib.errors.ConversionError`, not
retried; a failure of the machine (a full disk, no memory) is retried, and while
the job will run again the dataset says ``retrying``, never an error (see
:func:`~sclib.pipeline.convert.base.conversion_error` and
:func:`~sclib.pipeline.flow.step_failed`). A sensor without a converter
(``OTHER``) is not an error: ``done``, with a note in the job's result.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from sclib.datasets import Dataset, DatasetConflict, DatasetStore
from sclib.datasets.records import mark
from sclib.errors import ConversionError, InvalidInput
from sclib.jobs.context import JobContext
from sclib.jobtypes import DatasetStatus
from sclib.pipeline.flow import (
    enter_conversion_queued,
    files_fingerprint,
    step_failed,
)
from sclib.pipeline.publish import fsync_tree, publish_dir

__all__ = ["MARKER", "ConversionHandler", "converted_dir"]

log = logging.getLogger(__name__)

#: The file that describes a published conversion, inside its folder.
MARKER = ".sclib-conversion.json"

_FORMATS = ("idx", "zarr")
#: conversion runs of one job when the dataset's files keep changing meanwhile
_ROUNDS = 3
# read by the handler itself; the seed's input_path / output_path are ignored: a
# dataset's input and output folders are fixed by its uuid, never taken from a job
# (and the bookkeeping other parts add: migration marks, dataset fields)
_PASSED = frozenset(
    {
        "sensor",
        "sensor_type",
        "output_format",
        "force",
        "input_path",
        "output_path",
        "migrated",
        "legacy_status",
        "dataset_name",
    }
)


def converted_dir(data_dir: Path, uuid: str) -> Path:
    """Where dataset ``uuid``'s converted output is published."""
    return Path(data_dir) / "converted" / uuid


class ConversionHandler:
    """The ``dataset_conversion`` job handler; see the module docstring.

    Parameters of the job (all optional): ``sensor`` (default: the dataset's),
    ``output_format`` (``idx`` or ``zarr``; default ``output_format`` here),
    ``force`` (convert even when the published output is up to date), and the
    converter's own parameters (e.g. ``dataset`` for HDF5), also accepted nested
    under ``conversion_params`` as the seed's jobs carry them.
    """

    def __init__(
        self, data_dir: Path, datasets: DatasetStore, *, output_format: str = "idx"
    ) -> None:
        if output_format not in _FORMATS:
            raise InvalidInput(
                f"output_format must be one of {', '.join(_FORMATS)}, "
                f"got {output_format!r}"
            )
        self.data_dir = Path(data_dir)
        self.datasets = datasets
        self.output_format = output_format

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        uuid = ctx.job.dataset_uuid
        if not uuid:
            raise InvalidInput("a conversion job needs a dataset_uuid")
        try:
            return self._run(ctx, uuid)
        except Exception as exc:
            # `conversion error` once the job will not run again, else `retrying`
            step_failed(self.datasets, ctx, uuid, DatasetStatus.CONVERSION_ERROR, exc)
            raise

    def _run(self, ctx: JobContext, uuid: str) -> dict[str, Any]:
        params = dict(ctx.parameters)
        fmt = str(params.get("output_format") or self.output_format)
        if fmt not in _FORMATS:
            raise InvalidInput(
                f"output_format must be one of {', '.join(_FORMATS)}, got {fmt!r}"
            )
        options = _converter_options(params)
        final = converted_dir(self.data_dir, uuid)
        for _ in range(_ROUNDS):
            record = self.datasets.get(uuid)
            sensor = str(
                params.get("sensor") or params.get("sensor_type") or record.sensor
            )
            extra = {"sensor": sensor, "output_format": fmt, "options": options}
            fingerprint = files_fingerprint(record, extra)
            published = _read_marker(final)
            if (
                not params.get("force")
                and published is not None
                and published.get("fingerprint") == fingerprint
            ):
                # made from the same input already (a retry after the publish, or
                # an earlier job of a multi-file upload)
                self._enter(uuid)
                mark(self.datasets, uuid, DatasetStatus.DONE)
                return {**published, "up_to_date": True}

            from sclib.pipeline.convert import converter_for

            converter = converter_for(sensor)
            if converter is None:
                self._enter(uuid)
                mark(self.datasets, uuid, DatasetStatus.DONE)
                return {
                    "note": f"no converter for sensor {sensor!r}; nothing to convert"
                }
            self._enter(uuid)
            result = self._convert(ctx, record, converter, sensor, fmt, options)
            result["fingerprint"] = fingerprint
            if not self._publish(ctx, result, final, extra):
                # files were added while converting: convert the new listing
                log.info("dataset %s changed while converting; again", uuid)
                continue
            mark(self.datasets, uuid, DatasetStatus.DONE)
            log.info("dataset %s converted by %s", uuid, result["converter"])
            return result
        raise DatasetConflict(
            f"the files of dataset {uuid} changed during each of {_ROUNDS} "
            "conversion runs; nothing was published (reprocess it once its "
            "uploads are through)"
        )

    def _enter(self, uuid: str) -> None:
        """``converting``, through ``conversion queued`` when coming from elsewhere
        (a reprocessed ``done`` dataset, a retry after ``conversion error``); an
        attempt after a failed one goes from ``retrying`` to ``converting``."""
        current = self.datasets.get(uuid).status
        if current not in (
            DatasetStatus.CONVERSION_QUEUED,
            DatasetStatus.CONVERTING,
            DatasetStatus.RETRYING,
        ):
            enter_conversion_queued(self.datasets, uuid)
        mark(self.datasets, uuid, DatasetStatus.CONVERTING)

    def _temp(self, ctx: JobContext) -> Path:
        root = self.data_dir / "tmp" / "convert"
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{ctx.job.id}-*"):  # a killed attempt's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        temp = root / f"{ctx.job.id}-{ctx.attempt}"
        temp.mkdir()
        return temp

    def _convert(
        self,
        ctx: JobContext,
        record: Dataset,
        converter: Any,
        sensor: str,
        fmt: str,
        options: dict[str, Any],
    ) -> dict[str, Any]:
        from sclib.pipeline.convert import ConversionRequest

        temp = self._temp(ctx)

        def progress(done: int, total: int, message: str) -> None:
            ctx.report(bytes_done=done, bytes_total=total, message=message)

        files = sorted(f.path for f in record.files)
        name = getattr(converter, "name", type(converter).__name__)
        try:
            try:
                outcome = converter.convert(
                    ConversionRequest(
                        input_dir=self.data_dir / "upload" / record.uuid,
                        files=files,
                        output_dir=temp,
                        sensor=sensor,
                        params=options,
                        output_format=fmt,
                        check=ctx.check,
                        progress=progress,
                    )
                )
            except Exception as exc:
                error = _input_error(exc, files, name)
                if error is None:
                    raise
                raise error from exc
            ctx.check()
            self._verify_inputs(ctx, record, outcome.inputs)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return {
            "temp": str(temp),
            "converter": name,
            "sensor": sensor,
            "output_format": fmt,
            "entry_point": outcome.entry_point,
            "outputs": list(outcome.outputs),
            "inputs": list(outcome.inputs),
            "note": outcome.note,
            "options": options,
        }

    def _verify_inputs(
        self, ctx: JobContext, record: Dataset, inputs: list[str]
    ) -> None:
        """The files the converter read are still the ones verified on arrival
        (BLAKE3 and size, read again now, mostly from the page cache): output made
        from a file that rotted or was changed on disk is never published."""
        from sclib.pipeline.validate import check_files

        used = set(inputs)
        entries = [f for f in record.files if f.path in used]
        missing, corrupted = check_files(
            ctx, self.data_dir / "upload" / record.uuid, entries
        )
        if missing or corrupted:
            name = (missing + corrupted)[0]
            raise ConversionError(
                f"{name}: the input file is gone or differs from the one verified "
                "on arrival (BLAKE3); nothing was published (run data_validation "
                "to see every damaged file)"
            )

    def _publish(
        self, ctx: JobContext, result: dict[str, Any], final: Path, extra: Any
    ) -> bool:
        """Publish the temp folder unless the dataset's files changed since the
        conversion read them (then ``False``, nothing published). The check and
        the rename hold a lock on the ``converted`` folder, so a conversion of
        older files never replaces the output of newer ones."""
        temp = Path(result.pop("temp"))
        try:
            (temp / MARKER).write_text(json.dumps(result, indent=2, default=str))
            fsync_tree(temp)
            ctx.check()  # the last moment a cancel can still stop the publish
            final.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                record = self.datasets.get(final.name)
                if files_fingerprint(record, extra) != result["fingerprint"]:
                    return False
                publish_dir(temp, final)
            finally:
                os.close(fd)  # releases the lock
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        result["path"] = str(final)
        return True


def _input_error(
    exc: Exception, files: list[str], converter: str
) -> ConversionError | None:
    """What a converter raised that it did not classify itself: the input's
    fault (a :class:`ConversionError` naming the files) when a library raised
    it, by :func:`~sclib.pipeline.convert.base.conversion_error`'s rule; ``None``
    (unchanged, retried) when sclib's own code did, or the machine failed."""
    from sclib.pipeline.convert.base import conversion_error, library_of

    if library_of(exc) == "sclib":
        return None
    if len(files) == 1:
        where = files[0]
    else:
        shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
        where = f"the {len(files)} files of the dataset ({shown})"
    return conversion_error(exc, where, f"cannot be converted by {converter!r}")


def _converter_options(params: dict[str, Any]) -> dict[str, Any]:
    """The converter's own parameters: the job's, minus the handler's, plus those
    nested under ``conversion_params``."""
    options = {k: v for k, v in params.items() if k not in _PASSED}
    for name in ("conversion_params", "conversion_parameters"):
        nested = options.pop(name, None)
        if nested is None:
            continue
        if not isinstance(nested, dict):
            raise InvalidInput(f"{name} must be an object, got {type(nested).__name__}")
        options.update(nested)
    return options


def _read_marker(final: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((final / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
