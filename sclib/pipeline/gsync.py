"""The ``google_sync`` job: import a Google Drive folder (or file) into a dataset.

The folder is named by ``folder_id``, or by ``google_drive_link`` as the legacy
documents carry it (``https://drive.google.com/drive/folders/<id>``,
``.../file/d/<id>/view``, ``...open?id=<id>``, or a bare id). It is copied
recursively by the :class:`~sclib.transfers.engine.TransferEngine` from the
``gdrive://`` source (:class:`~sclib.transfers.gdrive.DriveSource`): binary files
by ranged reads, Google Docs exported (Docs to .docx, Sheets to .xlsx, ...),
every file verified with BLAKE3.

**Credentials** travel sealed, as an upload's import does: ``parameters["sealed"]``
holds :meth:`sclib.secrets.SecretBox.seal` of ``{"service_account_json":
...}`` (the seed's service-account key, as JSON text or an object) or
``{"access_token": ...}``, and is opened only here, in memory, with the worker's
``SECRET_KEY``. Credentials in plain job parameters are refused: they would sit in
the job store and its API in clear text. A service-account key must name Google's
token endpoint (``token_uri``), or the worker would send signed requests wherever
a user points it.

**Resuming.** Files land in the job's staging folder (:mod:`sclib.pipeline._staging`),
kept across attempts; the engine's sessions (shared store) point there, so a retry
skips the files already copied and continues a file cut off in the middle. Once
all are there, a commit plan is written and the entries are renamed into
``<data>/upload/<uuid>/`` (or its ``relative_path`` folder); a retry that finds
the plan only finishes the renames. The Drive folder's contents arrive at that
folder's top; an entry the dataset already has is refused, naming it.

**Status.** ``sync queued`` -> ``syncing`` -> what the pipeline decides
(:func:`sclib.pipeline.flow.after_files`: extraction, conversion or ``done``), or
``sync error`` with the message.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sclib.datasets import DatasetStore
from sclib.errors import ConfigurationError, InvalidInput
from sclib.jobs.context import JobContext
from sclib.paths import safe_relative_path
from sclib.pipeline._staging import Stage, run_sync_job
from sclib.pipeline._transfer import engine_copy
from sclib.pipeline.flow import Pipeline
from sclib.transfers.engine import TransferConfig, TransferEngine
from sclib.transfers.sessions import SessionStore

__all__ = ["GOOGLE_TOKEN_URI", "GoogleSyncHandler", "drive_id_from"]

log = logging.getLogger(__name__)

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_PATH_ID = re.compile(r"/(?:folders|d)/([A-Za-z0-9_-]+)")
_PLAIN_SECRETS = ("service_account_json", "service_account_info", "access_token")


def drive_id_from(folder_id: object = None, link: object = None) -> str:
    """The Drive id in ``folder_id`` or in a ``google_drive_link``; InvalidInput
    naming the field when neither holds one."""
    if folder_id:
        if not isinstance(folder_id, str) or not _ID.match(folder_id):
            raise InvalidInput(
                "folder_id: must be a Google Drive id (letters, digits, '-' and '_')"
            )
        return folder_id
    if not link:
        raise InvalidInput("folder_id or google_drive_link: field required")
    if not isinstance(link, str):
        raise InvalidInput("google_drive_link: must be a link or an id")
    text = link.strip()
    if _ID.match(text):
        return text
    parts = urlsplit(text)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not (
        host == "google.com" or host.endswith(".google.com")
    ):
        raise InvalidInput(
            "google_drive_link: not a Google Drive link "
            "(https://drive.google.com/drive/folders/<id>)"
        )
    match = _PATH_ID.search(parts.path)
    ident = match.group(1) if match else (parse_qs(parts.query).get("id") or [""])[0]
    if not _ID.match(ident):
        raise InvalidInput(f"google_drive_link: no folder or file id in {text!r}")
    return ident


class GoogleSyncHandler:
    """The ``google_sync`` job handler; see the module docstring.

    :param secret_key: the worker's ``SECRET_KEY``, to open sealed credentials.
    :param sessions: where the engine keeps resumable state (share it).
    :param drive_options: extra :class:`~sclib.transfers.gdrive.DriveSource`
        options (``base_url`` for a stand-in, ``timeout``, ``export_formats``...).
    :param token_uris: token endpoints a service-account key may name (Google's).
    :param pipeline: what comes after the files are recorded; ``None``: ``done``.
    :param service_account_file: a service-account key (JSON) used for jobs that
        carry no sealed credentials (``SCLIB_GDRIVE_SERVICE_ACCOUNT_FILE``).

    Parameters of the job: ``folder_id`` or ``google_drive_link``; ``sealed``
    (credentials); ``relative_path`` (optional, a folder inside the dataset).
    """

    def __init__(
        self,
        data_dir: Path,
        datasets: DatasetStore | None = None,
        sessions: SessionStore | None = None,
        *,
        secret_key: str | None = None,
        drive_options: Mapping[str, Any] | None = None,
        token_uris: Collection[str] = (GOOGLE_TOKEN_URI,),
        pipeline: Pipeline | None = None,
        config: TransferConfig | None = None,
        service_account_file: Path | None = None,
    ) -> None:
        self.service_account_file = service_account_file
        self.data_dir = Path(data_dir)
        self.datasets = datasets
        self.secret_key = secret_key
        self.drive_options = dict(drive_options or {})
        self.token_uris = frozenset(token_uris)
        self.pipeline = pipeline
        self.engine = TransferEngine(sessions=sessions, config=config)

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        return run_sync_job(
            ctx, self.datasets, self.pipeline, "a google_sync job", self._run
        )

    def credentials(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The DriveSource credentials of the job, from its sealed parameters."""
        plain = [k for k in _PLAIN_SECRETS if params.get(k)]
        if plain:
            raise InvalidInput(
                f"{plain[0]}: credentials must be sealed (parameters['sealed'], "
                "made with the server's SecretBox), never sent in clear job "
                "parameters"
            )
        sealed = params.get("sealed")
        if not sealed and self.service_account_file is not None:
            return {"service_account_info": self._default_account()}
        if not sealed:
            raise InvalidInput(
                "sealed: a Google Drive sync needs sealed credentials "
                "(service_account_json or access_token), or the worker's "
                "SCLIB_GDRIVE_SERVICE_ACCOUNT_FILE"
            )
        if not self.secret_key:
            raise ConfigurationError(
                "this job carries sealed credentials but the worker has no "
                "SECRET_KEY to open them"
            )
        from sclib.secrets import SecretBox

        opened = SecretBox(self.secret_key).open(str(sealed))
        unknown = sorted(set(opened) - {"service_account_json", "access_token"})
        if unknown:
            raise InvalidInput(
                f"sealed: unknown credential(s) {', '.join(unknown)}; give "
                "service_account_json or access_token"
            )
        if opened.get("service_account_json"):
            info = self._account(
                opened["service_account_json"], "sealed.service_account_json"
            )
            return {"service_account_info": info}
        if opened.get("access_token"):
            return {"access_token": str(opened["access_token"])}
        raise InvalidInput(
            "sealed: holds neither service_account_json nor access_token"
        )

    def _default_account(self) -> dict[str, Any]:
        path = Path(str(self.service_account_file))
        what = "SCLIB_GDRIVE_SERVICE_ACCOUNT_FILE"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"{what}: cannot read {path}: {exc}") from None
        try:
            return self._account(text, what)
        except InvalidInput as exc:
            raise ConfigurationError(str(exc)) from None

    def _account(self, info: Any, what: str) -> dict[str, Any]:
        """A service-account key as a dict, its token URI checked."""
        if isinstance(info, str):
            try:
                info = json.loads(info)
            except ValueError:
                raise InvalidInput(f"{what}: not valid JSON") from None
        if not isinstance(info, dict):
            raise InvalidInput(f"{what}: must be an object")
        uri = info.get("token_uri", GOOGLE_TOKEN_URI)
        if uri not in self.token_uris:
            raise InvalidInput(
                f"{what}: token_uri must be {' or '.join(sorted(self.token_uris))}"
            )
        return info

    def _run(
        self, ctx: JobContext, uuid: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        relative = safe_relative_path(
            str(params.get("relative_path") or ""), "relative_path"
        )
        ident = drive_id_from(params.get("folder_id"), params.get("google_drive_link"))
        stage = Stage(self.data_dir, "gsync", ctx.job.id, uuid)
        plan = stage.plan()
        copied = 0
        if plan is None:
            options = {**self.drive_options, **self.credentials(params)}
            data = stage.prepare()
            result = engine_copy(
                ctx,
                self.engine,
                f"gdrive://{ident}",
                str(data) + "/",
                source_options=options,
            )
            root = data.resolve()
            known = {
                Path(f.dest_url).resolve().relative_to(root).as_posix(): (
                    f.size,
                    f.blake3,
                )
                for f in result.files
            }
            copied = sum(1 for f in result.files if f.chunks_sent)
            plan = stage.write_plan(relative, stage.hash_files(known))
        files = stage.commit(plan)
        stage.remove()
        log.info("dataset %s: %d files from Google Drive %s", uuid, len(files), ident)
        return {
            "files": files,
            "bytes": sum(int(f["size"]) for f in files),
            "source": f"gdrive://{ident}",
            "sent": copied,
        }
