"""The ``upload`` job: what a worker does once an upload arrived or an import was asked.

Two kinds of ``upload`` job exist, told apart by ``parameters["source"]``:

* ``"upload"``: the server already received, verified and committed the file(s)
  into ``<data>/upload/<dataset_uuid>/``. The job re-reads every file and checks
  its BLAKE3 against the digest recorded at commit time (bytes *stored*, not bytes
  sent), and returns the file list.
* ``"import"``: a server-side import (S3, GCS, Google Drive, HTTP(S)). The job runs
  the :class:`~sclib.transfers.engine.TransferEngine` from the source into the
  dataset folder, with its sessions in the shared store, so a retried or rescued
  job continues where the last attempt stopped. Credentials travel sealed
  (:mod:`sclib.secrets`) and are opened only here, in memory.

:func:`handlers_from_settings` builds the registry from the environment, so
``sclib worker --handlers sclib.pipeline:handlers_from_settings`` runs these
jobs in a separate worker process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sclib.datasets import DatasetFile, DatasetStore
from sclib.datasets.records import ensure_dataset, mark, record_files
from sclib.errors import ChecksumMismatch, ConfigurationError, InvalidInput
from sclib.jobs.context import JobContext
from sclib.jobs.registry import HandlerRegistry
from sclib.jobtypes import DatasetStatus, JobType
from sclib.paths import safe_filename, safe_join, safe_relative_path
from sclib.pipeline._transfer import JobProgress
from sclib.pipeline.flow import Pipeline, after_files, step_failed
from sclib.pipeline.validate import check_files
from sclib.settings import Settings, load_settings
from sclib.transfers.sessions import SessionStore, open_session_store

__all__ = [
    "ImportSpec",
    "UploadHandler",
    "check_server_path",
    "handlers_from_settings",
    "import_spec",
    "split_config",
    "supported_sources",
]

log = logging.getLogger(__name__)

#: source_type -> (URL scheme, the source_config keys it takes, the required ones)
_SOURCES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "s3": (
        "s3",
        (
            "bucket_name",
            "object_key",
            "access_key_id",
            "secret_access_key",
            "session_token",
            "region",
            "endpoint_url",
        ),
        ("bucket_name",),
    ),
    "gcs": (
        "gs",
        ("bucket_name", "object_key", "service_account_json", "endpoint_url"),
        ("bucket_name",),
    ),
    "google_drive": (
        "gdrive",
        (
            "file_id",
            "folder_id",
            "folder_link",
            "service_account_json",
            "service_account_file",
            "access_token",
        ),
        (),
    ),
    "url": ("https", ("url",), ("url",)),
}


def supported_sources() -> dict[str, dict[str, list[str]]]:
    """Each source type with its ``source_config`` keys (for the API to show)."""
    return {
        name: {"fields": list(keys), "required": list(required)}
        for name, (_, keys, required) in _SOURCES.items()
    }


@dataclass(frozen=True, slots=True)
class ImportSpec:
    """A server-side import: the source URL, its options, its secret options, and
    the ``source_config`` as it is stored (a Drive link replaced by its id)."""

    source_type: str
    url: str
    options: dict[str, Any]
    secrets: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)


#: what a Google Drive import may send instead of the original's OAuth keys
_DRIVE_CREDENTIALS = (
    "access_token (a current OAuth access token of the user's), "
    "service_account_json (a service account key), or service_account_file (a "
    "key file in the server's credentials folder, SCLIB_CREDENTIALS_DIR)"
)


def drive_link_id(link: str) -> tuple[str, str]:
    """``("folder_id" | "file_id", id)`` from a Google Drive sharing link:
    ``.../drive/folders/<id>``, ``.../file/d/<id>/view``, ``...?id=<id>``."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(link.strip())
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not (
            parts.hostname == "google.com" or parts.hostname.endswith(".google.com")
        )
    ):
        raise InvalidInput(
            "source_config.folder_link: not a Google Drive link (https://drive."
            "google.com/drive/folders/<id> or .../file/d/<id>/view)"
        )
    segments = [p for p in parts.path.split("/") if p]
    for marker, kind in (("folders", "folder_id"), ("d", "file_id")):
        if marker in segments[:-1]:
            return kind, segments[segments.index(marker) + 1]
    ids = parse_qs(parts.query).get("id")
    if ids and ids[0]:
        return "file_id", ids[0]
    raise InvalidInput(
        f"source_config.folder_link: found no file or folder id in {link!r}"
    )


def read_credentials_file(value: object, folder: Path | None) -> dict[str, Any]:
    """The service account key a Drive import names by ``service_account_file``.

    Only files inside the operator's credentials folder (``SCLIB_CREDENTIALS_DIR``,
    as the original deployment kept them) are read, by name or by a path inside
    it (symbolic links resolved first); anything else is refused, naming the
    setting, so a user can never make the server read another file of its disk.
    """
    if folder is None:
        raise InvalidInput(
            "source_config.service_account_file: this server takes no key file "
            "paths (the operator can allow a folder of them with "
            "SCLIB_CREDENTIALS_DIR); send the key's content as service_account_json"
        )
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise InvalidInput("source_config.service_account_file: must be a file name")
    base = folder.resolve()
    path = (base / value.strip()).resolve()
    if base not in path.parents:
        raise InvalidInput(
            f"source_config.service_account_file: {value!r} is not in the server's "
            "credentials folder (SCLIB_CREDENTIALS_DIR)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise InvalidInput(
            f"source_config.service_account_file: no readable key file {value!r} "
            "in the server's credentials folder (SCLIB_CREDENTIALS_DIR)"
        ) from None
    info = _json_object(text)
    _check_token_uri(info)
    return info


def import_spec(
    source_type: str,
    config: Mapping[str, Any],
    *,
    credentials_dir: Path | None = None,
) -> ImportSpec:
    """Turn the seed's ``source_type`` + ``source_config`` into a source URL.

    :class:`InvalidInput` names an unknown source type, a missing or unknown key,
    and an S3 or GCS bucket name, region or endpoint URL that breaks the store's
    naming rules (:mod:`sclib.transfers.buckets`).
    A Google Drive ``service_account_file`` is read only from
    ``credentials_dir`` (:func:`read_credentials_file`); ``folder_link`` is
    turned into its id; ``use_oauth`` (the original portal's stored OAuth
    tokens, which this server does not keep) is refused, saying what to send.
    """
    if source_type not in _SOURCES:
        raise InvalidInput(
            f"source_type: unknown source {source_type!r}; supported: "
            f"{', '.join(_SOURCES)}"
        )
    if not isinstance(config, Mapping):
        raise InvalidInput("source_config: must be an object")
    scheme, keys, required = _SOURCES[source_type]
    config = dict(config)
    if source_type == "google_drive":
        if config.get("use_oauth") or config.get("user_email") is not None:
            raise InvalidInput(
                "source_config.use_oauth: this server keeps no Google OAuth tokens "
                f"of its users; send {_DRIVE_CREDENTIALS}"
            )
        config.pop("use_oauth", None)
        config.pop("user_email", None)
        link = config.pop("folder_link", None)
        if link and not (config.get("file_id") or config.get("folder_id")):
            kind, link_id = drive_link_id(str(link))
            config[kind] = link_id
    elif "service_account_file" in config:
        raise InvalidInput(
            "source_config.service_account_file: only Google Drive imports take a "
            "key file; send the key's content as service_account_json"
        )
    unknown = sorted(set(config) - set(keys))
    if unknown:
        raise InvalidInput(
            f"source_config: unknown key(s) {', '.join(unknown)} for {source_type}; "
            f"it takes {', '.join(keys)}"
        )
    for key in required:
        if not config.get(key):
            raise InvalidInput(f"source_config.{key}: field required")
    for key, value in config.items():
        if key == "service_account_json":
            if not isinstance(value, str | dict):
                raise InvalidInput(f"source_config.{key}: must be JSON text or object")
        elif value is not None and not isinstance(value, str):
            raise InvalidInput(f"source_config.{key}: must be a string")
    options: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    if source_type == "url":
        url = str(config["url"]).strip()
        if not url.lower().startswith(("http://", "https://")):
            raise InvalidInput("source_config.url: must be an http:// or https:// URL")
    elif source_type in ("s3", "gcs"):
        _check_bucket_config(source_type, config)
        key = str(config.get("object_key") or "").lstrip("/")
        url = f"{scheme}://{config['bucket_name']}/{key}"
        for name in ("region", "endpoint_url"):
            if config.get(name):
                options[name] = config[name]
        for name in ("access_key_id", "secret_access_key", "session_token"):
            if config.get(name):
                secrets[name] = config[name]
        if config.get("service_account_json"):
            info = _json_object(config["service_account_json"])
            _check_token_uri(info)
            secrets["token"] = info
        if not secrets:
            # no credentials of the user's: anonymous access, never the server's own
            if source_type == "s3":
                options["anon"] = True
            else:
                options["token"] = "anon"  # noqa: S105 - gcsfs: no credentials
    else:
        ident = config.get("file_id") or config.get("folder_id")
        if not ident:
            raise InvalidInput("source_config.file_id: field required")
        url = f"gdrive://{ident}"
        if config.get("service_account_json"):
            info = _json_object(config["service_account_json"])
            _check_token_uri(info)
            secrets["service_account_info"] = info
        if config.get("service_account_file"):
            secrets["service_account_info"] = read_credentials_file(
                config["service_account_file"], credentials_dir
            )
        if config.get("access_token"):
            secrets["access_token"] = config["access_token"]
        if not secrets:
            raise InvalidInput(
                f"source_config: a Google Drive import needs {_DRIVE_CREDENTIALS}"
            )
    return ImportSpec(source_type, url, options, secrets, config)


def _check_bucket_config(source_type: str, config: Mapping[str, Any]) -> None:
    """An S3 or GCS import's bucket name, region and endpoint URL, checked at
    submission against the stores' rules (:mod:`sclib.transfers.buckets`), so a
    value no store takes is a 422 naming the field and the rule, not a job that
    retries the same failure."""
    from sclib.transfers import buckets

    endpoint = config.get("endpoint_url") or None
    if endpoint is not None:
        buckets.check_endpoint_url(endpoint, "source_config.endpoint_url")
    if source_type == "s3":
        buckets.check_s3_bucket(config["bucket_name"], "source_config.bucket_name")
        if config.get("region"):
            buckets.check_region(
                config["region"], "source_config.region", endpoint_url=endpoint
            )
    else:
        buckets.check_gcs_bucket(config["bucket_name"], "source_config.bucket_name")


#: source_config keys that are credentials: sealed, never stored in plain text
SECRET_KEYS = frozenset(
    {"access_key_id", "secret_access_key", "session_token", "service_account_json",
     "access_token"}
)  # fmt: skip

_GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL


def _check_token_uri(info: Mapping[str, Any]) -> None:
    """A service-account key names the URL its tokens come from: only Google's,
    or the server would POST signed requests wherever a user points it."""
    uri = info.get("token_uri", _GOOGLE_TOKEN_URI)
    if uri != _GOOGLE_TOKEN_URI:
        raise InvalidInput(
            f"source_config.service_account_json: token_uri must be {_GOOGLE_TOKEN_URI}"
        )


def split_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``config`` as (what may be stored and shown, what must be sealed).

    Credentials are secret, and so is a URL that carries any (``user:pass@`` or a
    query string, as pre-signed URLs do): the public part keeps it without them.
    """
    public: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    for key, value in config.items():
        if key in SECRET_KEYS:
            secret[key] = value
        elif key == "url" and isinstance(value, str) and _has_credentials(value):
            secret[key] = value
            public[key] = _without_credentials(value)
        else:
            public[key] = value
    return public, secret


def _has_credentials(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return bool(parts.username or parts.password or parts.query)


def _without_credentials(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _json_object(value: str | Mapping[str, Any]) -> dict[str, Any]:
    import json

    if isinstance(value, Mapping):
        return dict(value)
    try:
        data = json.loads(value)
    except ValueError:
        raise InvalidInput(
            "source_config.service_account_json: not valid JSON"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInput("source_config.service_account_json: must be an object")
    return data


def check_server_path(value: str, roots: list[Path]) -> Path:
    """``value`` resolved, if it lies inside one of ``roots``; else refused.

    With no roots the route is off (:class:`~sclib.errors.Forbidden`). Symbolic
    links are resolved first, so a link inside a root that points outside it is
    refused too."""
    from sclib.errors import Forbidden

    if not roots:
        raise Forbidden(
            "uploading from a server path is turned off on this server "
            "(the operator can allow folders with SCLIB_UPLOAD_PATH_ROOTS)"
        )
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InvalidInput("file_path: must be a path")
    path = Path(value)
    if not path.is_absolute():
        raise InvalidInput("file_path: must be an absolute path on the server")
    resolved = path.resolve()
    for root in roots:
        base = root.resolve()
        if resolved == base or base in resolved.parents:
            break
    else:
        raise Forbidden(f"file_path: {value!r} is outside the allowed folders")
    if not resolved.exists():
        raise InvalidInput(f"file_path: {value!r} does not exist")
    if not (resolved.is_file() or resolved.is_dir()):
        raise InvalidInput(f"file_path: {value!r} is not a file or folder")
    return resolved


def _recordable(rel: str) -> str:
    """``rel`` if a dataset record can hold it as a file path, else InvalidInput."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise InvalidInput(
            f"file path {shown!r} is not valid UTF-8; rename the file"
        ) from None
    return safe_relative_path(rel, "file path")


class UploadHandler:
    """The ``upload`` job handler; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        sessions: SessionStore | None = None,
        *,
        secret_key: str | None = None,
        allow_private: bool = False,
        path_roots: list[Path] | None = None,
        datasets: DatasetStore | None = None,
        pipeline: Pipeline | None = None,
        credentials_dir: Path | None = None,
    ) -> None:
        self.credentials_dir = credentials_dir
        self.datasets = datasets
        self.pipeline = pipeline
        self.data_dir = Path(data_dir)
        self.sessions = sessions
        self.secret_key = secret_key
        self.allow_private = allow_private
        self.path_roots = list(path_roots or [])

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        params = ctx.parameters
        dataset_uuid = ctx.job.dataset_uuid
        if not dataset_uuid:
            raise InvalidInput("an upload job needs a dataset_uuid")
        folder = self.data_dir / "upload" / dataset_uuid
        store = self.datasets
        if store is not None:
            owner = ctx.job.owner or "unknown@localhost"
            ensure_dataset(store, dataset_uuid, owner, params.get("dataset") or {})
            mark(store, dataset_uuid, DatasetStatus.UPLOADING)
        try:
            source = params.get("source")
            if source == "upload":
                result = self._verify(ctx, folder, params.get("files") or [])
            elif source == "import":
                result = self._import(ctx, folder, params)
            elif source == "legacy":
                result = self._legacy(ctx, folder)
            else:
                raise InvalidInput(f"unknown upload source {source!r}")
        except Exception as exc:
            if store is not None:
                # 'retrying' while the job will run again, the error once not
                step_failed(store, ctx, dataset_uuid, DatasetStatus.UPLOAD_ERROR, exc)
            raise
        if store is not None:
            record_files(store, dataset_uuid, result["files"])
            if not params.get("extract"):  # else the extraction job goes on
                result["pipeline"] = after_files(
                    self.pipeline,
                    store,
                    ctx,
                    dataset_uuid,
                    result["files"],
                    extract=source in ("import", "legacy"),
                )
        return result

    def _verify(
        self, ctx: JobContext, folder: Path, files: list[Mapping[str, Any]]
    ) -> dict[str, Any]:
        entries = [DatasetFile(f["path"], int(f["size"]), f["blake3"]) for f in files]
        missing, corrupted = check_files(ctx, folder, entries)
        if missing or corrupted:
            raise ChecksumMismatch(
                f"{(missing + corrupted)[0]}: the stored file is gone or its BLAKE3 "
                "differs from the one verified on arrival"
            )
        total = sum(f.size for f in entries)
        return {"files": [dict(f) for f in files], "bytes": total}

    def _legacy(self, ctx: JobContext, folder: Path) -> dict[str, Any]:
        """A dataset migrated in ``upload queued`` / ``uploading``: what the old
        system left in its folder is hashed and recorded; nothing is fetched."""
        from sclib.errors import SourceNotFound
        from sclib.transfers.hashing import blake3_file

        paths = (
            sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
            if folder.is_dir()
            else []
        )
        if not paths:
            raise SourceNotFound(
                f"no files in {folder} for this migrated upload: the old system "
                "never stored them; upload the data again"
            )
        # every name is checked before any hashing: one the record cannot hold
        # fails the job at once, naming it (and the dataset goes to upload error)
        names = [_recordable(path.relative_to(folder).as_posix()) for path in paths]
        files = []
        for path, rel in zip(paths, names, strict=True):
            ctx.check()
            digest, size = blake3_file(path)
            files.append({"path": rel, "size": size, "blake3": digest})
            ctx.report(message=rel)
        return {"files": files, "bytes": sum(f["size"] for f in files)}

    def _import(
        self, ctx: JobContext, folder: Path, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        from sclib.transfers.engine import TransferEngine

        name = None
        if params["source_type"] == "server_path":
            # checked again here: the roots may have changed since submission
            config = params.get("source_config") or {}
            path = check_server_path(str(config.get("path", "")), self.path_roots)
            spec = ImportSpec("server_path", path.as_uri(), {}, {})
            name = config.get("name")  # the original's original_filename
        else:
            config = dict(params.get("source_config") or {})
            if params.get("sealed"):
                from sclib.secrets import SecretBox

                if not self.secret_key:
                    raise ConfigurationError(
                        "this import carries sealed credentials but the worker has "
                        "no SECRET_KEY to open them"
                    )
                config.update(SecretBox(self.secret_key).open(params["sealed"]))
            spec = import_spec(
                params["source_type"], config, credentials_dir=self.credentials_dir
            )
        options = {**spec.options, **spec.secrets}
        if spec.source_type == "url" and self.allow_private:
            options["allow_private"] = True
        relative = safe_relative_path(
            (params.get("dataset") or {}).get("relative_path") or "", "relative_path"
        )
        target = safe_join(folder, relative) if relative else folder
        target.mkdir(parents=True, exist_ok=True)
        cancel = threading.Event()
        engine = TransferEngine(sessions=self.sessions)
        destination = target.resolve().as_uri() + "/"
        if spec.source_type == "server_path" and name:
            destination = (target.resolve() / safe_filename(str(name))).as_uri()
        result = engine.copy(
            spec.url,
            destination,
            source_options=options,
            subscribers=[JobProgress(ctx, cancel)],
            cancel=cancel,
        )
        ctx.check()
        from sclib.transfers.local import local_path

        files = []
        for f in result.files:
            path = local_path(f.dest_url)
            files.append(
                {
                    "path": path.relative_to(folder.resolve()).as_posix(),
                    "size": f.size,
                    "blake3": f.blake3,
                }
            )
        shown = split_config({"url": spec.url})[0]["url"]
        return {"files": files, "bytes": result.bytes, "source": shown}


def handlers_from_settings(settings: Settings | None = None) -> HandlerRegistry:
    """The server's job handlers, configured from ``settings`` (or the environment)."""
    settings = settings or load_settings()
    from sclib.datasets import open_dataset_store

    url = settings.backend_url()
    sessions = open_session_store(url, **settings.session_store_options(url))
    datasets = open_dataset_store(url, **settings.session_store_options(url))
    from sclib.backends import open_store
    from sclib.jobs.queue import JobQueue

    # the queue the pipeline's next steps go to (the server's, or the worker's)
    queue = JobQueue(
        open_store(url, **settings.store_options(url)),
        max_crashes=settings.max_crashes,
    )
    pipeline = Pipeline(
        queue, datasets, settings.data_dir, output_format=settings.conversion_format
    )
    handler = UploadHandler(
        settings.data_dir,
        sessions,
        secret_key=(
            settings.secret_key.get_secret_value() if settings.secret_key else None
        ),
        allow_private=settings.allow_private_addresses,
        path_roots=settings.upload_path_root_list(),
        datasets=datasets,
        pipeline=pipeline,
        credentials_dir=settings.credentials_dir,
    )
    from sclib.pipeline.conversion import ConversionHandler
    from sclib.pipeline.jobs import ExtractionHandler
    from sclib.pipeline.maintenance import maintenance_handlers
    from sclib.pipeline.validate import ValidationHandler

    extraction = ExtractionHandler(settings.data_dir, datasets, pipeline=pipeline)
    conversion = ConversionHandler(
        settings.data_dir, datasets, output_format=settings.conversion_format
    )
    validation = ValidationHandler(settings.data_dir, datasets)
    return HandlerRegistry(
        {
            JobType.UPLOAD: handler,
            JobType.FILE_EXTRACTION: extraction,
            JobType.DATASET_CONVERSION: conversion,
            JobType.DATA_VALIDATION: validation,
            **maintenance_handlers(settings, datasets, sessions, pipeline),
        }
    )
