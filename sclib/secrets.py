"""Credentials in job parameters are kept sealed, never in clear text.

A server-side import (from S3, GCS, Google Drive) may come with credentials: an
access key pair, a service-account JSON, an OAuth refresh token. The job that does
the import runs later, in a worker, so the credentials have to travel in the job's
parameters, which are stored in the job database, shown by ``sclib jobs show`` and
returned by the API. They are therefore split off (:func:`split_secrets`) and
sealed (:meth:`SecretBox.seal`) before the job is enqueued; the worker opens them
(:meth:`SecretBox.open`) right before use.

Sealing is Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``), so a
sealed value cannot be read or changed without the key. The Fernet key is derived
from the server's ``SECRET_KEY`` with HKDF-SHA256 and a purpose-specific ``info``
string, so the same secret used to sign HS256 tokens never doubles as an encryption
key. The sealed text is ``sclib-sealed:v1:<fernet token>``; the version lets a
later format live next to this one.

Changing ``SECRET_KEY`` makes every sealed value unreadable: :meth:`SecretBox.open`
raises :class:`~sclib.errors.InvalidInput` saying so, and the job fails with that
message. Messages never contain the sealed data or the secret values.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from sclib.errors import ConfigurationError, InvalidInput, MissingDependency

try:
    from cryptography.fernet import Fernet, InvalidToken
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError as exc:  # pragma: no cover - the server extra installs it
    raise MissingDependency(
        "cryptography", "server", "sealing import credentials"
    ) from exc

__all__ = [
    "SEALED_PREFIX",
    "SENSITIVE_KEYS",
    "SecretBox",
    "is_sealed",
    "redact",
    "split_secrets",
]

#: Start of every sealed value; the version names the format.
SEALED_PREFIX = "sclib-sealed:v1:"

#: ``info`` for HKDF: ties the derived key to this one purpose.
_HKDF_INFO = b"sclib job credentials v1"

#: Configuration keys whose values are secrets (compared case-insensitively):
#: the S3, GCS and Google Drive source options that carry credentials, and the
#: URL source's ``headers`` (which may hold an ``Authorization`` header).
SENSITIVE_KEYS: frozenset[str] = frozenset(
    {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "aws_secret_access_key",
        "token",
        "password",
        "credentials",
        "service_account_json",
        "service_account_info",
        "client_secret",
        "refresh_token",
        "api_key",
        # Google Drive's option names (docs/sources.md)
        "access_token",
        "oauth_refresh_token",
        # URL sources: request headers, e.g. {"Authorization": "Bearer ..."}
        "headers",
        "authorization",
    }
)

_REDACTED = "***"
_OPEN_FAILED = "sealed credentials cannot be opened: wrong SECRET_KEY or damaged data"


class SecretBox:
    """Seals and opens JSON-able mappings with a key derived from ``secret_key``."""

    __slots__ = ("_fernet",)

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ConfigurationError(
                "sealing credentials needs a secret key; set SCLIB_SECRET_KEY"
            )
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=_HKDF_INFO,
        ).derive(secret_key.encode("utf-8"))
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def seal(self, values: Mapping[str, Any]) -> str:
        """``values`` as JSON, encrypted and authenticated: ``sclib-sealed:v1:...``."""
        if not isinstance(values, Mapping):
            raise InvalidInput("only a mapping of credential names to values is sealed")
        try:
            plain = json.dumps(dict(values), separators=(",", ":"), sort_keys=True)
        except (TypeError, ValueError) as exc:
            # the message names a type ("Object of type bytes ..."), not a value
            raise InvalidInput(
                f"credentials must be JSON-serialisable to be sealed: {exc}"
            ) from None
        token = self._fernet.encrypt(plain.encode("utf-8"))
        return SEALED_PREFIX + token.decode("ascii")

    def open(self, sealed: str) -> dict[str, Any]:
        """The mapping that :meth:`seal` was given.

        Raises :class:`~sclib.errors.InvalidInput` if ``sealed`` is not a sealed
        value, was sealed under another ``SECRET_KEY``, or was changed.
        """
        if not is_sealed(sealed):
            raise InvalidInput(
                f"the value is not sealed credentials (expected {SEALED_PREFIX}...)"
            )
        token = sealed[len(SEALED_PREFIX) :]
        try:
            plain = self._fernet.decrypt(token.encode("ascii"))
            values = json.loads(plain.decode("utf-8"))
        except (InvalidToken, UnicodeError, ValueError):
            raise InvalidInput(_OPEN_FAILED) from None
        if not isinstance(values, dict):
            raise InvalidInput(_OPEN_FAILED)
        return values


def is_sealed(value: object) -> bool:
    """Whether ``value`` is text made by :meth:`SecretBox.seal`."""
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def _is_sensitive(key: object) -> bool:
    return isinstance(key, str) and key.lower() in SENSITIVE_KEYS


def split_secrets(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(public, secret)``: the top-level entries of ``config`` split by key name.

    A key is secret when its lower-cased name is in :data:`SENSITIVE_KEYS`.
    Nested mappings are not searched: credentials belong at the top level of an
    import's configuration.
    """
    public: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    for key, value in config.items():
        (secret if _is_sensitive(key) else public)[key] = value
    return public, secret


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` for logs and display, secret values replaced by ``***``.

    Nested mappings and lists are redacted too; ``None`` stays ``None`` so "not
    set" is still visible.
    """
    return {key: _redact_value(key, value) for key, value in config.items()}


def _redact_value(key: object, value: Any) -> Any:
    if _is_sensitive(key):
        return None if value is None else _REDACTED
    if isinstance(value, Mapping):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_redact_value(None, item) for item in value]
    return value
