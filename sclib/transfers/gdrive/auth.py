"""Access tokens for the Drive source: a bearer token as given, or one minted
and refreshed from a service account's key (see :mod:`sclib.transfers.gdrive`)."""

from __future__ import annotations

import importlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from sclib.errors import (
    ConfigurationError,
    MissingDependency,
    SourceError,
)
from sclib.transfers.gdrive.common import (
    DEFAULT_TOKEN_URI,
)

log = logging.getLogger("sclib.transfers.gdrive")


#: returns a new access token and its lifetime in seconds (None if unknown)
_Refresher = Callable[[], tuple[str, float | None]]


class _Tokens:
    """Hands out the current access token; renews it when due or rejected.

    Thread-safe. A token is renewed a minute before it expires (halfway through its
    life if it lives less than two minutes), and when a request with it gets 401 --
    once per token, however many threads saw the 401.
    """

    def __init__(self, refresher: _Refresher | None, token: str | None) -> None:
        self._refresher = refresher
        self._token = token
        self._renew_at = math.inf if refresher is None else 0.0
        self._generation = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<_Tokens refreshable={self.refreshable}>"

    @property
    def refreshable(self) -> bool:
        return self._refresher is not None

    def current(self) -> tuple[str, int]:
        """The token to send, and its generation (to pass to :meth:`rejected`)."""
        with self._lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                self._renew()
            assert self._token is not None
            return self._token, self._generation

    def rejected(self, generation: int) -> bool:
        """The token of ``generation`` got a 401. Renew it unless another thread
        already did; False if it cannot be renewed."""
        if self._refresher is None:
            return False
        with self._lock:
            if generation == self._generation:
                self._renew()
        return True

    def _renew(self) -> None:
        if self._refresher is None:  # pragma: no cover - a static token is set
            raise ConfigurationError("no Google Drive credentials were given")
        token, lifetime = self._refresher()
        now = time.monotonic()
        if lifetime is None:
            lifetime = 3600.0  # Google's usual; a 401 renews it sooner if needed
        self._renew_at = now + max(lifetime - 60.0, lifetime / 2)
        self._token = token
        self._generation += 1
        log.debug("got a new Google access token, valid for %.0f s", lifetime)


@dataclass(frozen=True, slots=True)
class _AuthResponse:
    """google-auth's ``transport.Response`` interface."""

    status: int
    headers: Mapping[str, str]
    data: bytes


class _AuthTransport:
    """google-auth's ``transport.Request`` interface over the source's httpx client,
    so token requests use the same connection settings (and test transport)."""

    def __init__(self, client: httpx.Client, timeout: float) -> None:
        self._client = client
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _AuthResponse:
        try:
            response = self._client.request(
                method,
                url,
                content=body,
                headers=headers,
                timeout=timeout if timeout is not None else self._timeout,
            )
        except httpx.HTTPError as exc:
            raise SourceError(
                f"cannot reach the Google token endpoint {url.split('?')[0]}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        return _AuthResponse(
            response.status_code, dict(response.headers), response.content
        )


def _google_auth(feature: str = "The Google Drive source") -> dict[str, Any]:
    """google-auth's modules, imported on first use."""
    names = (
        "google.auth.exceptions",
        "google.auth.crypt",
        "google.oauth2.service_account",
        "google.oauth2.credentials",
    )
    try:
        return {name.rsplit(".", 1)[1]: importlib.import_module(name) for name in names}
    except ImportError as exc:
        raise MissingDependency("google-auth", "gdrive", feature) from exc


def _refresh_failed(exc: Any) -> Exception:
    """A non-secret exception for a google-auth ``RefreshError``."""
    error, description = "", ""
    args: Sequence[Any] = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[1], Mapping):
        error = str(args[1].get("error") or "")[:80]
        description = str(args[1].get("error_description") or "")[:200]
    detail = f"{error} ({description})" if description else error or "refused"
    if getattr(exc, "retryable", False):
        return SourceError(f"the Google token endpoint failed for now: {detail}")
    return ConfigurationError(
        "the Google token endpoint refused these credentials: "
        f"{detail}; check the service account key (or refresh token and client) "
        "and that it is still enabled"
    )


def _google_refresher(creds: Any, request: _AuthTransport) -> _Refresher:
    errors = _google_auth()["exceptions"]

    def refresh() -> tuple[str, float | None]:
        try:
            creds.refresh(request)
        except errors.RefreshError as exc:
            raise _refresh_failed(exc) from None
        except errors.GoogleAuthError as exc:
            raise SourceError(
                f"could not get a Google access token ({type(exc).__name__})"
            ) from None
        token = creds.token
        if not isinstance(token, str) or not token:
            raise SourceError("the Google token endpoint returned no access token")
        expiry = creds.expiry
        lifetime: float | None = None
        if isinstance(expiry, datetime):
            if expiry.tzinfo is None:
                expiry = expiry.replace(tzinfo=UTC)
            lifetime = max((expiry - datetime.now(UTC)).total_seconds(), 1.0)
        return token, lifetime

    return refresh


def _load_service_account(
    info: Mapping[str, Any], scopes: Sequence[str], subject: str | None
) -> Any:
    """google-auth service-account credentials, with clear, secret-free errors."""
    if not isinstance(info, Mapping):
        raise ConfigurationError("service_account_info must be a dict (the JSON key)")
    kind = info.get("type")
    if kind not in (None, "service_account"):
        raise ConfigurationError(
            f"the credentials JSON is of type {str(kind)[:40]!r}, not a service "
            "account key; for a user's OAuth credentials pass oauth_refresh_token, "
            "client_id and client_secret instead"
        )
    missing = [k for k in ("client_email", "private_key") if not info.get(k)]
    if missing:
        raise ConfigurationError(
            f"the service account JSON lacks {', '.join(missing)}; download a new "
            "JSON key for the service account from the Google Cloud console"
        )
    modules = _google_auth()
    info = dict(info)
    info.setdefault("token_uri", DEFAULT_TOKEN_URI)
    try:
        modules["crypt"].RSASigner.from_string(
            info["private_key"], info.get("private_key_id")
        )
    except Exception:
        # the key's text must not reach a message or a traceback: no chaining
        raise ConfigurationError(
            "the service account JSON's private_key is not a valid PEM-encoded RSA "
            "private key; download a new JSON key for the service account"
        ) from None
    try:
        return modules["service_account"].Credentials.from_service_account_info(
            info, scopes=list(scopes), subject=subject
        )
    except Exception:
        raise ConfigurationError(
            "the service account JSON could not be loaded (a field is malformed); "
            "download a new JSON key for the service account"
        ) from None


def _read_service_account_file(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the service account file {str(path)!r}: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    try:
        info = json.loads(text)
    except ValueError:
        raise ConfigurationError(
            f"the service account file {str(path)!r} is not valid JSON"
        ) from None
    if not isinstance(info, dict):
        raise ConfigurationError(
            f"the service account file {str(path)!r} is not a JSON object"
        )
    return info
