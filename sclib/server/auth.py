"""Who is calling: bearer tokens checked once, turned into an :class:`Identity`.

The reference server accepts three kinds of bearer token, tried in this order:

1. **Static API tokens** (``SCLIB_API_TOKENS``): opaque strings mapped to a user.
   The given token is hashed with SHA-256 and compared, in constant time, with the
   hash of *every* configured token, so neither the position of a match nor the
   length of a near-miss shows in the timing.
2. **HS256 JWTs** signed with ``SCLIB_SECRET_KEY``. Only ``HS256`` is accepted for
   this key, so a token that says ``alg: none``, or an HS256 token whose HMAC key is
   an identity provider's *public* key (the classic algorithm confusion), never
   verifies.
3. **RS256/ES256 JWTs** from an identity provider that publishes its keys as a JWKS
   (``SCLIB_JWKS_URL``, Auth0-style). Keys are fetched with PyJWT's
   :class:`jwt.PyJWKClient`, which caches the key set; a fetch that fails gives
   :class:`~sclib.errors.Unauthorized`, not a server error.

Which verifier a JWT goes to is decided by its ``alg`` header *before* any key is
touched, and each verifier passes PyJWT a fixed algorithm list that matches its key
type. Every JWT must carry ``exp``; ``aud`` and ``iss`` are checked when configured.
Times (``exp``, ``nbf``, ``iat``) are checked here against an injectable clock with
a leeway, so tests and servers with a skewed clock behave predictably.

The user's email comes from one claim (``email`` by default, ``SCLIB_JWT_EMAIL_CLAIM``)
and is required: there is no guessing from ``sub``. Roles come from another claim
(``roles``), either a list of strings or one space-separated string (the OAuth
``scope`` style). A user with the admin role may act for other users and see every
job.

This module has no web framework in it: the app calls
:meth:`Authenticator.authenticate` with the raw ``Authorization`` header and maps
:class:`~sclib.errors.Unauthorized` / :class:`~sclib.errors.Forbidden` to 401/403.
Error messages say what is wrong and never contain token text or secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING, Any

from sclib.errors import (
    ConfigurationError,
    Forbidden,
    InvalidInput,
    MissingDependency,
    Unauthorized,
)

try:
    import jwt
except ImportError as exc:  # pragma: no cover - the server extra installs it
    raise MissingDependency("pyjwt", "server", "token authentication") from exc

if TYPE_CHECKING:
    from sclib.settings import Settings

__all__ = [
    "AUTH_COOKIES",
    "TRUSTED_EMAIL",
    "Authenticator",
    "Identity",
    "check_bind_address",
    "parse_api_tokens",
    "validate_settings",
]

logger = logging.getLogger(__name__)

#: Cookies the original portal's auth middleware took a token from, in its order.
AUTH_COOKIES = (
    "auth_token",
    "auth0_session_0",
    "auth0_session",
    "auth0.is.authenticated",
    "auth0_session_1",
    "auth0_session_2",
)
#: The email of the identity a trusted client's requests get before they name
#: a user (it owns nothing: uploads must name ``user_email``).
TRUSTED_EMAIL = "trusted-client@sclib.invalid"

#: Algorithm accepted for tokens signed with the server's secret key.
HMAC_ALGORITHMS = ("HS256",)
#: Algorithms accepted for tokens whose key comes from the JWKS URL.
JWKS_ALGORITHMS = ("RS256", "ES256")
#: Longest bearer token looked at; anything longer is refused unread.
MAX_TOKEN_LENGTH = 16 * 1024
#: Shortest secret key that does not draw a warning (RFC 7518 section 3.2).
MIN_SECRET_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller.

    ``email`` is stripped and lower-cased and ``roles`` made a frozenset on
    construction, so identities compare equal however they were spelled.
    """

    email: str
    roles: frozenset[str]
    method: str
    is_admin: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "email", _normalise_email(self.email))
        object.__setattr__(self, "roles", frozenset(self.roles))


def _normalise_email(email: str) -> str:
    return email.strip().lower()


def _looks_like_email(email: str) -> bool:
    local, at, domain = email.partition("@")
    return bool(at and local and domain) and not any(c.isspace() for c in email)


def _parse_roles(value: object, what: str) -> frozenset[str]:
    """Roles from a list of strings or a space-separated string."""
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list | tuple | set | frozenset) and all(
        isinstance(r, str) for r in value
    ):
        return frozenset(r.strip() for r in value if r.strip())
    raise InvalidInput(f"{what} must be a list of strings or a space-separated string")


class Authenticator:
    """Turns an ``Authorization`` header into an :class:`Identity`, or refuses it.

    Thread-safe: one instance serves every request of the app.
    """

    #: Seconds to wait for the JWKS endpoint.
    JWKS_TIMEOUT = 10.0
    #: Seconds a fetched key set is reused before it is fetched again.
    JWKS_CACHE_SECONDS = 300.0

    def __init__(
        self,
        *,
        secret_key: str | None = None,
        api_tokens: Mapping[str, Identity] | None = None,
        jwks_url: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        email_claim: str = "email",
        roles_claim: str = "roles",
        admin_role: str = "admin",
        no_auth: bool = False,
        no_auth_email: str = "local@localhost",
        leeway: float = 30.0,
        clock: Callable[[], float] = time.time,
        trusted_networks: Sequence[IPv4Network | IPv6Network] = (),
    ) -> None:
        if secret_key is not None and not secret_key:
            raise ConfigurationError("the secret key is empty; set a long random value")
        if secret_key is not None:
            size = len(secret_key.encode("utf-8"))
            if size < MIN_SECRET_KEY_BYTES:
                logger.warning(
                    "SCLIB_SECRET_KEY is %d bytes long; use at least %d random bytes "
                    "for HS256 tokens",
                    size,
                    MIN_SECRET_KEY_BYTES,
                )
        if not email_claim or not roles_claim:
            raise ConfigurationError("the JWT email and roles claim names must be set")
        if leeway < 0:
            raise ConfigurationError("the JWT leeway must be >= 0 seconds")
        if jwks_url is not None and not jwks_url.lower().startswith(
            ("http://", "https://")
        ):
            raise ConfigurationError(
                "SCLIB_JWKS_URL must be an http:// or https:// address"
            )
        self._secret_key = secret_key
        self._jwks_url = jwks_url or None
        self.audience = audience or None
        self.issuer = issuer or None
        self.email_claim = email_claim
        self.roles_claim = roles_claim
        self.admin_role = admin_role
        self.no_auth = no_auth
        self.leeway = float(leeway)
        self._clock = clock
        self._tokens: list[tuple[bytes, Identity]] = []
        for n, (token, identity) in enumerate((api_tokens or {}).items(), start=1):
            if not isinstance(token, str) or not token.strip():
                raise ConfigurationError(f"API token entry {n} has an empty token")
            roles = frozenset(identity.roles)
            self._tokens.append(
                (
                    _digest(token),
                    Identity(
                        email=identity.email,
                        roles=roles,
                        method="api_token",
                        is_admin=identity.is_admin or admin_role in roles,
                    ),
                )
            )
        self._local = Identity(
            email=no_auth_email,
            roles=frozenset({admin_role}),
            method="no_auth",
            is_admin=True,
        )
        self.trusted_networks = tuple(trusted_networks)
        self._trusted = Identity(
            email=TRUSTED_EMAIL,
            roles=frozenset({admin_role, "trusted"}),
            method="trusted",
            is_admin=True,
        )
        self._jwks_client: jwt.PyJWKClient | None = None
        self._jwks_lock = threading.Lock()

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """Build from :class:`~sclib.settings.Settings` (``SCLIB_*`` variables).

        Raises :class:`~sclib.errors.ConfigurationError` when ``SCLIB_API_TOKENS`` is
        not valid; the message names the entry by position, never by its token.
        """
        secret = settings.secret_key.get_secret_value() if settings.secret_key else ""
        return cls(
            secret_key=secret or None,
            api_tokens=parse_api_tokens(settings.api_tokens, settings.admin_role),
            jwks_url=settings.jwks_url or None,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            email_claim=settings.jwt_email_claim,
            roles_claim=settings.jwt_roles_claim,
            admin_role=settings.admin_role,
            no_auth=settings.no_auth,
            trusted_networks=settings.trusted_networks(),
        )

    @property
    def enabled(self) -> bool:
        """Whether requests must carry a token (False with ``--no-auth``)."""
        return not self.no_auth

    # -- authentication ---------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Identity:
        """The caller named by a raw ``Authorization`` header value.

        Raises :class:`~sclib.errors.Unauthorized` with the reason when there is no
        ``Bearer`` token or the token does not verify.
        """
        if self.no_auth:
            return self._local
        token = _bearer_token(authorization)
        identity = self._match_api_token(token)
        if identity is not None:
            return identity
        if token.count(".") != 2:
            raise Unauthorized("the bearer token is not a known API token or a JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg in HMAC_ALGORITHMS:
            if self._secret_key is None:
                raise Unauthorized(
                    "HS256 tokens are not accepted: the server has no secret key"
                )
            claims = self._decode(token, self._secret_key, HMAC_ALGORITHMS)
            return self._identity(claims, "jwt")
        if alg in JWKS_ALGORITHMS:
            if self._jwks_url is None:
                raise Unauthorized(
                    "RS256/ES256 tokens are not accepted: the server has no JWKS URL"
                )
            key = self._jwks_key(token)
            claims = self._decode(token, key, JWKS_ALGORITHMS)
            return self._identity(claims, "jwks")
        accepted = ", ".join(HMAC_ALGORITHMS + JWKS_ALGORITHMS)
        raise Unauthorized(f"the token's algorithm is not accepted (use {accepted})")

    def authenticate_request(
        self,
        *,
        authorization: str | None,
        cookies: Mapping[str, str],
        client: str | None,
        unsafe: bool = False,
        cross_site: bool = False,
    ) -> Identity:
        """The caller of an HTTP request.

        In order: the ``Authorization`` header; else a token in one of the
        cookies the original portal's auth middleware read (:data:`AUTH_COOKIES`),
        refused for a state-changing request from another site (``unsafe`` and
        ``cross_site``: cross-site request forgery); else, for a request from a
        trusted client address (``SCLIB_TRUSTED_CLIENTS``), the trusted identity,
        which acts for the user the request names in ``user_email``; else
        :class:`~sclib.errors.Unauthorized`.
        """
        if self.no_auth:
            return self._local
        if authorization is not None and authorization.strip():
            return self.authenticate(authorization)
        token = next((cookies[n] for n in AUTH_COOKIES if cookies.get(n)), None)
        if token is not None:
            if unsafe and cross_site:
                raise Forbidden(
                    "a token in a cookie is not accepted for a change requested by "
                    "another site (cross-site request forgery); send it in the "
                    "Authorization header"
                )
            return self.authenticate(f"Bearer {token}")
        if client is not None and self.is_trusted(client):
            return self._trusted
        return self.authenticate(None)

    def is_trusted(self, client: str) -> bool:
        """Whether ``client`` (an IP address) lies in a trusted network."""
        if not self.trusted_networks:
            return False
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in net for net in self.trusted_networks)

    def _match_api_token(self, token: str) -> Identity | None:
        if not self._tokens:
            return None
        given = _digest(token)
        found: Identity | None = None
        for digest, identity in self._tokens:  # no early exit: constant time
            if hmac.compare_digest(given, digest):
                found = identity
        return found

    def _jwks_key(self, token: str) -> jwt.PyJWK:
        assert self._jwks_url is not None
        with self._jwks_lock:
            if self._jwks_client is None:
                self._jwks_client = jwt.PyJWKClient(
                    self._jwks_url,
                    cache_jwk_set=True,
                    lifespan=self.JWKS_CACHE_SECONDS,
                    timeout=self.JWKS_TIMEOUT,
                )
            client = self._jwks_client
        try:
            return client.get_signing_key_from_jwt(token)
        # PyJWT wraps connection errors, but a body that is not JSON (ValueError) or
        # a connection dropped mid-read (OSError) come through unwrapped
        except (jwt.PyJWKClientConnectionError, ValueError, OSError) as exc:
            logger.warning("fetching the JWKS from %s failed: %s", self._jwks_url, exc)
            raise Unauthorized(
                "the identity provider's signing keys (JWKS) could not be fetched; "
                "try again later"
            ) from None
        except (jwt.PyJWKClientError, jwt.PyJWKSetError, jwt.PyJWKError) as exc:
            logger.debug("no JWKS key for a token: %s", exc)
            raise Unauthorized(
                "the token's key id (kid) is not among the identity provider's "
                "signing keys"
            ) from None
        except jwt.PyJWTError:
            raise Unauthorized("the bearer token is not a well-formed JWT") from None

    def _decode(
        self, token: str, key: str | jwt.PyJWK, algorithms: Iterable[str]
    ) -> dict[str, Any]:
        """Verify the signature and ``aud``/``iss``; times are checked here."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": ["exp"],
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": self.audience is not None,
                    "verify_iss": self.issuer is not None,
                },
            )
        except jwt.InvalidSignatureError:
            raise Unauthorized("token signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(
                f"the token's audience (aud) is not {self.audience!r}"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(
                f"the token's issuer (iss) is not {self.issuer!r}"
            ) from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized("the token's algorithm is not accepted") from None
        except jwt.DecodeError:
            raise Unauthorized("the bearer token is not a well-formed JWT") from None
        except jwt.PyJWTError as exc:
            logger.debug("token refused: %s: %s", type(exc).__name__, exc)
            raise Unauthorized("the bearer token is not valid") from None
        self._check_times(claims)
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        exp = _number_claim(claims, "exp")
        if exp is None:
            raise Unauthorized("the token has no 'exp' claim")
        if exp <= now - self.leeway:
            raise Unauthorized("token expired")
        nbf = _number_claim(claims, "nbf")
        if nbf is not None and nbf > now + self.leeway:
            raise Unauthorized("token is not valid yet (nbf is in the future)")
        iat = _number_claim(claims, "iat")
        if iat is not None and iat > now + self.leeway:
            raise Unauthorized("token is not valid yet (iat is in the future)")

    def _identity(self, claims: Mapping[str, Any], method: str) -> Identity:
        email = claims.get(self.email_claim)
        if not isinstance(email, str) or not email.strip():
            raise Unauthorized(
                f"the token has no {self.email_claim!r} claim with the user's email"
            )
        email = _normalise_email(email)
        if not _looks_like_email(email):
            raise Unauthorized(
                f"the token's {self.email_claim!r} claim is not an email address"
            )
        if claims.get("email_verified") is False:
            # an identity provider vouches for the address only once verified:
            # otherwise anyone could sign up with someone else's email
            raise Unauthorized("the token's email address is not verified")
        try:
            roles = _parse_roles(
                claims.get(self.roles_claim), f"the token's {self.roles_claim!r} claim"
            )
        except InvalidInput as exc:
            raise Unauthorized(str(exc)) from None
        return Identity(
            email=email,
            roles=roles,
            method=method,
            is_admin=self.admin_role in roles,
        )

    # -- minting ----------------------------------------------------------------------

    def issue_token(
        self, email: str, *, roles: Iterable[str] = (), ttl: float = 3600
    ) -> str:
        """An HS256 token for ``email`` that this authenticator accepts.

        Carries the email and roles claims, ``sub``, ``iat``, ``exp`` (now + ``ttl``
        seconds) and ``aud``/``iss`` when configured.
        """
        if self._secret_key is None:
            raise ConfigurationError(
                "cannot issue tokens without a secret key; set SCLIB_SECRET_KEY"
            )
        normalised = _normalise_email(email)
        if not _looks_like_email(normalised):
            raise InvalidInput(f"{email!r} is not an email address")
        if not ttl > 0:
            raise InvalidInput("ttl must be a positive number of seconds")
        if isinstance(roles, str):
            raise InvalidInput("roles must be an iterable of role names, not a string")
        role_list = sorted({str(r) for r in roles})
        now = self._clock()
        claims: dict[str, Any] = {
            "sub": normalised,
            self.email_claim: normalised,
            self.roles_claim: role_list,
            "iat": int(now),
            "exp": int(now + ttl),
        }
        if self.audience is not None:
            claims["aud"] = self.audience
        if self.issuer is not None:
            claims["iss"] = self.issuer
        return jwt.encode(claims, self._secret_key, algorithm="HS256")

    # -- authorisation ----------------------------------------------------------------

    def check_user_email(self, identity: Identity, user_email: str | None) -> str:
        """The owner email a request acts for.

        No ``user_email`` (or the caller's own) gives the caller's email; another
        user's email is allowed only for admins, else
        :class:`~sclib.errors.Forbidden`.
        """
        if user_email is None or not user_email.strip():
            if identity.method == "trusted":
                raise InvalidInput(
                    "user_email: field required: a request from a trusted client "
                    "(SCLIB_TRUSTED_CLIENTS) names the user it acts for"
                )
            return identity.email
        wanted = _normalise_email(user_email)
        if wanted == identity.email:
            return identity.email
        if not identity.is_admin:
            raise Forbidden(
                f"user_email {wanted!r} does not match the authenticated user "
                f"{identity.email!r}; only users with the {self.admin_role!r} role "
                "may act for another user"
            )
        if not _looks_like_email(wanted):
            raise InvalidInput(f"user_email {wanted!r} is not an email address")
        return wanted

    def can_see(self, identity: Identity, owner: str | None) -> bool:
        """Whether ``identity`` may see a job or upload owned by ``owner``."""
        if identity.is_admin:
            return True
        if owner is None:
            return False
        return _normalise_email(owner) == identity.email


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _bearer_token(authorization: str | None) -> str:
    if authorization is None or not authorization.strip():
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "missing bearer token: the Authorization header must be 'Bearer <token>'"
        )
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("the bearer token is too long")
    return token


def _number_claim(claims: Mapping[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthorized(f"the token's {name!r} claim must be a number")
    return float(value)


def parse_api_tokens(raw: str | None, admin_role: str = "admin") -> dict[str, Identity]:
    """Parse ``SCLIB_API_TOKENS``: ``{token: email}`` or
    ``{token: {"email": ..., "roles": [...]}}``.

    Raises :class:`~sclib.errors.ConfigurationError` naming the entry by position.
    """
    if raw is None or not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"SCLIB_API_TOKENS is not valid JSON ({exc.msg} at line {exc.lineno} "
            f"column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigurationError(
            "SCLIB_API_TOKENS must be a JSON object mapping each token to an email "
            'or to {"email": ..., "roles": [...]}'
        )
    tokens: dict[str, Identity] = {}
    for n, (token, entry) in enumerate(data.items(), start=1):
        where = f"SCLIB_API_TOKENS entry {n}"
        if not token.strip():
            raise ConfigurationError(f"{where} has an empty token")
        roles: frozenset[str] = frozenset()
        email: object
        if isinstance(entry, str):
            email = entry
        elif isinstance(entry, dict):
            unknown = set(entry) - {"email", "roles"}
            if unknown:
                raise ConfigurationError(
                    f"{where} has unknown keys {sorted(unknown)}; "
                    "allowed: 'email', 'roles'"
                )
            email = entry.get("email")
            if not isinstance(email, str):
                raise ConfigurationError(f"{where} needs an 'email' string")
            try:
                roles = _parse_roles(entry.get("roles"), f"{where}: 'roles'")
            except InvalidInput as exc:
                raise ConfigurationError(str(exc)) from None
        else:
            raise ConfigurationError(
                f'{where} must be an email or {{"email": ..., "roles": [...]}}'
            )
        address = _normalise_email(email)
        if not _looks_like_email(address):
            raise ConfigurationError(f"{where}: {address!r} is not an email address")
        tokens[token] = Identity(
            email=address,
            roles=roles,
            method="api_token",
            is_admin=admin_role in roles,
        )
    return tokens


def validate_settings(settings: Settings) -> None:
    """Refuse settings under which no token could ever verify.

    With authentication on, at least one of ``SCLIB_SECRET_KEY``,
    ``SCLIB_API_TOKENS`` or ``SCLIB_JWKS_URL`` must be set. Also parses the
    token settings, so a bad ``SCLIB_API_TOKENS`` stops the server at start.
    """
    if settings.no_auth:
        return
    has_secret = bool(settings.secret_key and settings.secret_key.get_secret_value())
    has_tokens = bool(settings.api_tokens and settings.api_tokens.strip())
    has_jwks = bool(settings.jwks_url)
    has_trusted = bool(settings.trusted_networks())
    if not (has_secret or has_tokens or has_jwks or has_trusted):
        raise ConfigurationError(
            "authentication is on but nothing can verify tokens. To try sclib on "
            "this machine, run 'sclib serve --no-auth' (loopback only). To serve "
            "users, set SCLIB_SECRET_KEY to a long random string (python3 -c "
            "'import secrets; print(secrets.token_urlsafe(32))') and make each "
            "user a token with 'sclib token alice@example.org' under the same "
            "SCLIB_SECRET_KEY; static tokens (SCLIB_API_TOKENS) and an identity "
            "provider (SCLIB_JWKS_URL) are the other ways, see docs/auth.md"
        )
    if has_jwks and not (settings.jwt_audience and settings.jwt_issuer):
        raise ConfigurationError(
            "SCLIB_JWKS_URL needs SCLIB_JWT_AUDIENCE and SCLIB_JWT_ISSUER too: an "
            "identity provider signs tokens for many applications, and only those "
            "issued by it for this API may be accepted"
        )
    Authenticator.from_settings(settings)


def check_bind_address(host: str, no_auth: bool) -> None:
    """Refuse to serve without authentication on anything but a loopback address.

    Loopback is ``localhost``, 127.0.0.0/8 and ``::1`` (bracketed or not, and
    IPv4-mapped). ``0.0.0.0``, ``::`` and ``""`` listen on every interface and are
    refused, as is any other host name.
    """
    if not no_auth or _is_loopback(host):
        return
    shown = repr(host) if host.strip() else "all interfaces"
    raise ConfigurationError(
        f"--no-auth is refused when binding to {shown}: without authentication the "
        "server may only listen on a loopback address (127.0.0.1, ::1 or localhost)"
    )


def _is_loopback(host: str) -> bool:
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
