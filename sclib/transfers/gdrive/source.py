"""The Drive source itself: listing folders, reading files and exporting Google
documents (see :mod:`sclib.transfers.gdrive`)."""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from sclib.errors import (
    ConfigurationError,
    InvalidInput,
    SourceChanged,
    SourceError,
    SourceNotFound,
)
from sclib.transfers.gdrive.auth import (
    _AuthTransport,
    _google_auth,
    _google_refresher,
    _load_service_account,
    _read_service_account_file,
    _Refresher,
    _Tokens,
)
from sclib.transfers.gdrive.common import (
    _CHECK_FIELDS,
    _FILE_FIELDS,
    _ID,
    _LIST_FIELDS,
    _MAX_ERROR_BODY,
    _MIB,
    _RATE_LIMIT_REASONS,
    DEFAULT_EXPORT_FORMATS,
    DEFAULT_FALLBACK_EXPORT,
    DEFAULT_TOKEN_URI,
    DRIVE_READONLY_SCOPE,
    FOLDER_MIME,
    GOOGLE_APPS_PREFIX,
    NOT_EXPORTABLE,
    SHORTCUT_MIME,
    _drive_error,
    _extension,
    _permanent,
    _safe_name,
    _with_suffix,
    drive_file_id,
)
from sclib.transfers.sources import Source, SourceObject

log = logging.getLogger("sclib.transfers.gdrive")


# -- exports ----------------------------------------------------------------------


@dataclass(slots=True)
class _Spool:
    """One exported Google Doc, held until the source is closed."""

    file: tempfile.SpooledTemporaryFile[bytes]
    size: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, offset: int, length: int) -> bytes:
        with self.lock:
            self.file.seek(offset)
            return self.file.read(length)


_SpoolKey = tuple[str, tuple[tuple[str, str], ...]]


class DriveSource(Source):
    """Files and folders on Google Drive, by id: ``gdrive://<id>``.

    :param base_url: the API root (tests point it at a stand-in).
    :param service_account_file: path to a service account's JSON key.
    :param service_account_info: the same JSON, as a dict.
    :param access_token: a ready OAuth 2.0 access token (not refreshable).
    :param oauth_refresh_token: a user's OAuth refresh token; needs ``client_id``
        and ``client_secret``, and ``token_uri`` unless it is Google's.
    :param scopes: scopes asked for with a service account.
    :param subject: user to impersonate (service account, domain-wide delegation).
    :param export_formats: Google Docs MIME type -> export MIME type, merged over
        :data:`DEFAULT_EXPORT_FORMATS`.
    :param fallback_export: export type of other exportable Google types (None to
        skip them).
    :param follow_shortcuts: copy what shortcuts point to (else skip them).
    :param timeout: seconds for each HTTP request.
    :param transport: an httpx transport (tests).
    :param spool_dir: where exports larger than ``spool_memory`` are spooled.
    :param spool_memory: bytes of an export kept in memory before spooling to disk.
    :param max_export_size: refuse exports larger than this many bytes.
    """

    schemes: ClassVar[tuple[str, ...]] = ("gdrive",)

    def __init__(
        self,
        *,
        base_url: str = "https://www.googleapis.com",
        service_account_file: str | Path | None = None,
        service_account_info: Mapping[str, Any] | None = None,
        access_token: str | None = None,
        oauth_refresh_token: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        token_uri: str = DEFAULT_TOKEN_URI,
        scopes: Sequence[str] = (DRIVE_READONLY_SCOPE,),
        subject: str | None = None,
        export_formats: Mapping[str, str] | None = None,
        fallback_export: str | None = DEFAULT_FALLBACK_EXPORT,
        follow_shortcuts: bool = True,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        spool_dir: str | Path | None = None,
        spool_memory: int = _MIB,
        max_export_size: int = 64 * _MIB,
    ) -> None:
        modes = [
            name
            for name, given in (
                ("service_account_file", service_account_file is not None),
                ("service_account_info", service_account_info is not None),
                ("access_token", access_token is not None),
                ("oauth_refresh_token", oauth_refresh_token is not None),
            )
            if given
        ]
        if len(modes) != 1:
            raise ConfigurationError(
                "the Google Drive source needs exactly one kind of credentials: "
                "service_account_file, service_account_info, access_token, or "
                "oauth_refresh_token with client_id and client_secret; got "
                f"{', '.join(modes) if modes else 'none'}"
            )
        self.base_url = base_url.rstrip("/")
        self.export_formats: dict[str, str] = {
            **DEFAULT_EXPORT_FORMATS,
            **(export_formats or {}),
        }
        self.fallback_export = fallback_export
        self.follow_shortcuts = follow_shortcuts
        self.timeout = timeout
        self.spool_dir = str(spool_dir) if spool_dir is not None else None
        self.spool_memory = spool_memory
        self.max_export_size = max_export_size
        self._spools: dict[_SpoolKey, _Spool] = {}
        self._spools_lock = threading.Lock()
        self._closed = False

        refresher: _Refresher | None = None
        if service_account_file is not None or service_account_info is not None:
            info = (
                _read_service_account_file(service_account_file)
                if service_account_file is not None
                else service_account_info
            )
            assert info is not None
            creds = _load_service_account(info, scopes, subject)
        elif oauth_refresh_token is not None:
            if not client_id or not client_secret:
                raise ConfigurationError(
                    "oauth_refresh_token needs client_id and client_secret too"
                )
            creds = _google_auth()["credentials"].Credentials(
                token=None,
                refresh_token=oauth_refresh_token,
                client_id=client_id,
                client_secret=client_secret,
                token_uri=token_uri,
            )
        elif not access_token:
            raise ConfigurationError("access_token is empty")
        else:
            creds = None

        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            follow_redirects=True,
            headers={"User-Agent": "sclib-gdrive"},
        )
        if creds is not None:
            refresher = _google_refresher(creds, _AuthTransport(self._client, timeout))
        self._tokens = _Tokens(refresher, access_token)

    def __repr__(self) -> str:
        return f"<DriveSource {self.base_url}>"

    # -- HTTP -----------------------------------------------------------------------

    def _open(
        self,
        path: str,
        params: Mapping[str, str],
        what: str,
        *,
        headers: Mapping[str, str] | None = None,
        missing: type[Exception] = SourceNotFound,
    ) -> httpx.Response:
        """A streamed 2xx (or 416) response to ``GET path``; the caller closes it.

        Renews the token and tries once more on 401; turns every other failure
        into an sclib error about ``what``.
        """
        if self._closed:
            raise _permanent(f"{what}: the Google Drive source is closed")
        for attempt in (1, 2):
            token, generation = self._tokens.current()
            request = self._client.build_request(
                "GET",
                path,
                params=params,
                headers={**(headers or {}), "Authorization": f"Bearer {token}"},
            )
            try:
                response = self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise SourceError(
                    f"{what}: cannot reach Google Drive: {type(exc).__name__}: {exc}"
                ) from None
            if response.is_success or response.status_code == 416:
                return response
            try:
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) >= _MAX_ERROR_BODY:
                        break
            except httpx.HTTPError:
                pass
            finally:
                response.close()
            if (
                response.status_code == 401
                and attempt == 1
                and self._tokens.rejected(generation)
            ):
                log.debug("%s: access token rejected (401); renewed it", what)
                continue
            raise self._error(response.status_code, body, what, missing)
        raise AssertionError("unreachable")  # pragma: no cover

    def _get_json(
        self,
        path: str,
        params: Mapping[str, str],
        what: str,
        *,
        missing: type[Exception] = SourceNotFound,
    ) -> dict[str, Any]:
        response = self._open(path, params, what, missing=missing)
        try:
            body = response.read()
        except httpx.HTTPError as exc:
            raise SourceError(
                f"{what}: reading Google Drive's answer failed: {type(exc).__name__}"
            ) from None
        finally:
            response.close()
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise SourceError(f"{what}: Google Drive sent an answer that is not JSON")
        return data

    def _error(
        self, status: int, body: bytes, what: str, missing: type[Exception]
    ) -> Exception:
        reason, message = _drive_error(body)
        detail = f"HTTP {status}" + (f", {reason}" if reason else "")
        said = f": {message}" if message else ""
        if status == 404:
            if missing is SourceChanged:
                return SourceChanged(
                    f"{what} disappeared from Google Drive during the transfer "
                    f"(or is no longer shared with these credentials)"
                )
            return missing(
                f"{what} does not exist on Google Drive, or is not shared with these "
                f"credentials ({detail})"
            )
        if status == 401:
            if self._tokens.refreshable:
                return _permanent(
                    f"{what}: Google Drive rejected the credentials ({detail}) even "
                    "with a newly obtained access token"
                )
            return _permanent(
                f"{what}: Google Drive rejected the access token ({detail}); it has "
                "probably expired: pass a fresh access_token, or service-account or "
                "refresh-token credentials, which are renewed automatically"
            )
        if (
            status == 429
            or status >= 500
            or status == 408
            or (status == 403 and reason in _RATE_LIMIT_REASONS)
        ):
            return SourceError(
                f"{what}: Google Drive is busy or failing ({detail}){said}"
            )
        if status == 403:
            hint = (
                "; Google refuses to export Docs larger than 10 MB: pick another "
                "export format in export_formats, or download it by hand"
                if reason == "exportSizeLimitExceeded"
                else "; share the file or folder with the account these credentials "
                "belong to (a service account's client_email), and check the scopes"
            )
            return _permanent(
                f"{what}: Google Drive denied access ({detail}){said}{hint}"
            )
        return _permanent(f"{what}: Google Drive refused the request ({detail}){said}")

    # -- metadata ---------------------------------------------------------------------

    def _metadata(
        self,
        file_id: str,
        what: str,
        *,
        fields: str = _FILE_FIELDS,
        missing: type[Exception] = SourceNotFound,
    ) -> dict[str, Any]:
        return self._get_json(
            f"/drive/v3/files/{file_id}",
            {"fields": fields, "supportsAllDrives": "true"},
            what,
            missing=missing,
        )

    def _resolve(self, meta: dict[str, Any], what: str) -> dict[str, Any]:
        """The target of a shortcut (named as the shortcut), else ``meta``."""
        if meta.get("mimeType") != SHORTCUT_MIME:
            return meta
        details = meta.get("shortcutDetails") or {}
        target = str(details.get("targetId") or "")
        if not _ID.fullmatch(target):
            raise SourceNotFound(f"{what} is a shortcut whose target is unknown")
        resolved = self._metadata(target, f"{what} (shortcut to gdrive://{target})")
        resolved["name"] = meta.get("name") or resolved.get("name")
        resolved.setdefault("createdTime", meta.get("createdTime"))
        return resolved

    def _export_mime(self, mime: str) -> str | None:
        """The export type of a Google type; None if it is not copied."""
        if mime in self.export_formats:
            return self.export_formats[mime]
        if mime in NOT_EXPORTABLE:
            return None
        return self.fallback_export

    @staticmethod
    def _is_google(mime: str) -> bool:
        return mime.startswith(GOOGLE_APPS_PREFIX)

    def _identity(self, meta: Mapping[str, Any]) -> dict[str, str]:
        if self._is_google(str(meta.get("mimeType") or "")):
            keys = (("version", "version"), ("modified_time", "modifiedTime"))
        else:
            keys = (("md5", "md5Checksum"), ("head_revision_id", "headRevisionId"))
        identity = {name: str(meta[k]) for name, k in keys if meta.get(k)}
        if not identity and meta.get("modifiedTime"):
            identity["modified_time"] = str(meta["modifiedTime"])
        return identity

    def _object(self, meta: dict[str, Any], key: str) -> SourceObject | None:
        """The object for a file's metadata; None if it has nothing to copy."""
        file_id = str(meta["id"])
        url = f"gdrive://{file_id}"
        mime = str(meta.get("mimeType") or "application/octet-stream")
        identity = self._identity(meta)
        name = _safe_name(str(meta.get("name") or ""), file_id)
        if not self._is_google(mime):
            return SourceObject(
                url=url,
                key=key,
                size=int(meta.get("size") or 0),
                identity=identity,
                content_type=mime,
                name=name,
            )
        export = self._export_mime(mime)
        if export is None:
            return None
        identity["export_mime"] = export
        spool = self._spool_for(file_id, identity, url)
        ext = _extension(export)
        return SourceObject(
            url=url,
            key=key,
            size=spool.size,
            identity=identity,
            content_type=export,
            name=f"{name}.{ext}" if ext else name,
        )

    def _unsupported(self, meta: Mapping[str, Any], url: str) -> Exception:
        return _permanent(
            f"{url} is a {meta.get('mimeType')}, which Google Drive can neither "
            "download nor export"
        )

    # -- Source ---------------------------------------------------------------------

    def supports_ranges(self, obj: SourceObject) -> bool:
        """False for exported Google Docs, True for binary files."""
        return "export_mime" not in obj.identity

    def stat(self, url: str) -> SourceObject:
        file_id = drive_file_id(url)
        meta = self._resolve(self._metadata(file_id, url), url)
        if meta.get("mimeType") == FOLDER_MIME:
            raise SourceNotFound(
                f"{url} is a Google Drive folder; copy it as a folder, not as one "
                "object"
            )
        obj = self._object(meta, "")
        if obj is None:
            raise self._unsupported(meta, url)
        return obj

    def walk(self, url: str) -> Iterator[SourceObject]:
        file_id = drive_file_id(url)
        meta = self._resolve(self._metadata(file_id, url), url)
        if meta.get("mimeType") != FOLDER_MIME:
            obj = self._object(meta, "")
            if obj is None:
                raise self._unsupported(meta, url)
            yield obj
            return
        root = str(meta["id"])
        yield from self._walk_folder(root, "", (root,), meta.get("driveId"), url)

    def _list(self, folder_id: str, drive_id: Any, what: str) -> list[dict[str, Any]]:
        params = {
            "q": f"'{folder_id}' in parents and trashed=false",
            "fields": _LIST_FIELDS,
            "pageSize": "1000",
            "supportsAllDrives": "true",
            "includeItemsFromAllDrives": "true",
        }
        if isinstance(drive_id, str) and drive_id:
            params.update(corpora="drive", driveId=drive_id)
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self._get_json(
                "/drive/v3/files",
                {**params, "pageToken": token} if token else params,
                what,
            )
            items.extend(f for f in page.get("files") or [] if isinstance(f, dict))
            token = page.get("nextPageToken")
            if not token:
                return items

    def _named(self, items: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        """Each item with its unique, safe name in its folder, sorted by name."""
        entries: list[tuple[str, str, str, dict[str, Any]]] = []
        for item in items:
            file_id = str(item.get("id") or "")
            if not _ID.fullmatch(file_id):
                continue
            mime = str(item.get("mimeType") or "")
            if mime == SHORTCUT_MIME:
                if not self.follow_shortcuts:
                    log.info(
                        "skipping shortcut %r (gdrive://%s)", item.get("name"), file_id
                    )
                    continue
                mime = str(
                    (item.get("shortcutDetails") or {}).get("targetMimeType") or ""
                )
            name = _safe_name(str(item.get("name") or ""), file_id)
            if mime != FOLDER_MIME and self._is_google(mime):
                export = self._export_mime(mime)
                if export is None:
                    log.warning(
                        "skipping %r (gdrive://%s): a %s cannot be exported",
                        item.get("name"),
                        file_id,
                        mime,
                    )
                    continue
                ext = _extension(export)
                if ext and not name.lower().endswith("." + ext):
                    name = f"{name}.{ext}"
            entries.append((name, str(item.get("createdTime") or ""), file_id, item))
        entries.sort(key=lambda e: e[:3])
        used = {e[0] for e in entries}
        seen: set[str] = set()
        named: list[tuple[str, dict[str, Any]]] = []
        for name, _, _, item in entries:
            final = name
            if name in seen:
                n = 2
                while _with_suffix(name, n) in used:
                    n += 1
                final = _with_suffix(name, n)
                used.add(final)
            seen.add(name)
            named.append((final, item))
        named.sort(key=lambda e: e[0])
        return named

    def _walk_folder(
        self,
        folder_id: str,
        prefix: str,
        ancestors: tuple[str, ...],
        drive_id: Any,
        url: str,
    ) -> Iterator[SourceObject]:
        what = f"{url} (folder gdrive://{folder_id})" if prefix else url
        for name, item in self._named(self._list(folder_id, drive_id, what)):
            key = f"{prefix}{name}"
            item_url = f"gdrive://{item['id']}"
            if item.get("mimeType") == SHORTCUT_MIME:
                try:
                    item = self._resolve(item, item_url)
                except SourceNotFound:
                    log.warning(
                        "skipping %s: its shortcut target is gone or not shared", key
                    )
                    continue
            if item.get("mimeType") == FOLDER_MIME:
                sub = str(item["id"])
                if sub in ancestors:
                    log.warning("skipping %s: a shortcut to a folder above it", key)
                    continue
                yield from self._walk_folder(
                    sub,
                    key + "/",
                    (*ancestors, sub),
                    item.get("driveId", drive_id),
                    url,
                )
                continue
            obj = self._object(item, key)
            if obj is not None:
                yield obj

    def read(self, obj: SourceObject, offset: int, length: int) -> bytes:
        file_id = drive_file_id(obj.url)
        if offset < 0 or length < 0:
            raise InvalidInput(f"bad range: offset {offset}, length {length}")
        export = obj.identity.get("export_mime")
        if export is not None:
            return self._read_export(obj, file_id, offset, length)
        if length == 0 or offset >= obj.size:
            return b""
        end = min(offset + length, obj.size) - 1
        want = end - offset + 1
        response = self._open(
            f"/drive/v3/files/{file_id}",
            {"alt": "media", "supportsAllDrives": "true"},
            obj.url,
            headers={"Range": f"bytes={offset}-{end}"},
            missing=SourceChanged,
        )
        try:
            data = self._range_body(obj, response, offset, want)
        finally:
            response.close()
        # the bytes are good only if the file is still the version described now that
        # they have been read (a change before or during the read shows up here)
        self._check_unchanged(obj, file_id)
        if len(data) < want:
            raise SourceError(
                f"{obj.url}: Google Drive sent {len(data)} of {want} bytes at {offset}"
            )
        return data

    def _range_body(
        self, obj: SourceObject, response: httpx.Response, offset: int, want: int
    ) -> bytes:
        status = response.status_code
        if status == 416:
            raise SourceChanged(
                f"{obj.url} is shorter than the {obj.size} bytes it had when the "
                "transfer started"
            )
        skip = 0
        if status == 206:
            match = re.fullmatch(
                r"bytes (\d+)-(\d+)/(\d+|\*)",
                response.headers.get("content-range", "").strip(),
            )
            if match is None or int(match[1]) != offset:
                raise SourceError(
                    f"{obj.url}: Google Drive answered a range request with a "
                    "wrong Content-Range"
                )
            if match[3] != "*" and int(match[3]) != obj.size:
                raise SourceChanged(
                    f"{obj.url} changed since the transfer started (size {obj.size} "
                    f"-> {match[3]}); start a new transfer to copy the new version"
                )
        else:  # 200: the whole file; keep the range
            skip = offset
        parts: list[bytes] = []
        have = 0
        try:
            for chunk in response.iter_bytes():
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                parts.append(chunk)
                have += len(chunk)
                if have >= want:
                    break
        except httpx.HTTPError as exc:
            raise SourceError(
                f"{obj.url}: reading at {offset} failed: {type(exc).__name__}: {exc}"
            ) from None
        return b"".join(parts)[:want]

    def _check_unchanged(self, obj: SourceObject, file_id: str) -> None:
        """Raise :class:`SourceChanged` if ``obj`` is no longer the same version."""
        meta = self._metadata(
            file_id, obj.url, fields=_CHECK_FIELDS, missing=SourceChanged
        )
        now = self._identity(meta)
        size = obj.size if "export_mime" in obj.identity else int(meta.get("size") or 0)
        changed = {
            k: (v, now.get(k))
            for k, v in obj.identity.items()
            if k != "export_mime" and now.get(k) != v
        }
        if changed or size != obj.size:
            what = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
            if size != obj.size:
                what = ", ".join(filter(None, [f"size {obj.size} -> {size}", what]))
            raise SourceChanged(
                f"{obj.url} changed on Google Drive since the transfer started "
                f"({what}); start a new transfer to copy the new version"
            )

    # -- exports ----------------------------------------------------------------------

    @staticmethod
    def _spool_key(file_id: str, identity: Mapping[str, str]) -> _SpoolKey:
        return file_id, tuple(sorted(identity.items()))

    def _spool_for(self, file_id: str, identity: Mapping[str, str], url: str) -> _Spool:
        key = self._spool_key(file_id, identity)
        with self._spools_lock:
            spool = self._spools.get(key)
        if spool is not None:
            return spool
        spool = self._export(file_id, identity["export_mime"], url)
        with self._spools_lock:
            if self._closed:
                spool.file.close()
                raise SourceError(f"{url}: the Google Drive source is closed")
            kept = self._spools.setdefault(key, spool)
        if kept is not spool:
            spool.file.close()
        return kept

    def _export(self, file_id: str, export: str, url: str) -> _Spool:
        """Export a Google Doc into a new spool."""
        log.debug("exporting %s as %s", url, export)
        # kept open past this call: the spool is closed by close()
        spool_file: tempfile.SpooledTemporaryFile[bytes] = (
            tempfile.SpooledTemporaryFile(  # noqa: SIM115
                max_size=self.spool_memory, dir=self.spool_dir, prefix="sclib-gdrive-"
            )
        )
        size = 0
        try:
            response = self._open(
                f"/drive/v3/files/{file_id}/export", {"mimeType": export}, url
            )
            try:
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_export_size:
                        raise _permanent(
                            f"{url}: its export as {export} is larger than "
                            f"max_export_size ({self.max_export_size} bytes)"
                        )
                    spool_file.write(chunk)
            except httpx.HTTPError as exc:
                raise SourceError(
                    f"{url}: exporting as {export} failed: {type(exc).__name__}: {exc}"
                ) from None
            finally:
                response.close()
        except BaseException:
            spool_file.close()
            raise
        log.debug("exported %s as %s: %d bytes", url, export, size)
        return _Spool(spool_file, size)

    def _read_export(
        self, obj: SourceObject, file_id: str, offset: int, length: int
    ) -> bytes:
        key = self._spool_key(file_id, obj.identity)
        with self._spools_lock:
            spool = self._spools.get(key)
        if spool is None:
            # a later process (a resumed transfer): export the same version again
            self._check_unchanged(obj, file_id)
            spool = self._spool_for(file_id, obj.identity, obj.url)
            if spool.size != obj.size:
                with self._spools_lock:
                    self._spools.pop(key, None)
                spool.file.close()
                raise SourceChanged(
                    f"{obj.url}: Google Drive exported it as {spool.size} bytes, not "
                    f"the {obj.size} of the export the transfer started with; start "
                    "a new transfer"
                )
        if length == 0 or offset >= spool.size:
            return b""
        return spool.read(offset, length)

    def close(self) -> None:
        """Close the HTTP client and free the export spools."""
        with self._spools_lock:
            self._closed = True
            spools, self._spools = list(self._spools.values()), {}
        for spool in spools:
            spool.file.close()
        self._client.close()
