"""Bearer-token authentication, user_email checks and credential sealing.

Tokens are made and checked with the real PyJWT; the JWKS comes from a real HTTP
server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import SecretStr

from sclib.errors import ConfigurationError, Forbidden, InvalidInput, Unauthorized
from sclib.secrets import (
    SENSITIVE_KEYS,
    SecretBox,
    is_sealed,
    redact,
    split_secrets,
)
from sclib.server.auth import (
    Authenticator,
    Identity,
    check_bind_address,
    validate_settings,
)
from sclib.settings import Settings

SECRET = "test-secret-key-with-at-least-32-bytes-0123456789"  # noqa: S105 - test key
OTHER_SECRET = "another-secret-key-with-at-least-32-bytes-987654"  # noqa: S105
NOW = 1_800_000_000.0


class Clock:
    """A settable clock for the authenticator."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def bearer(token: str) -> str:
    return f"Bearer {token}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hand_made_token(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """A JWT assembled by hand, signed with HMAC-SHA256 over ``key`` (or unsigned
    when ``key`` is empty), so tests can build tokens PyJWT refuses to make."""
    signing_input = (
        b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    )
    signature = (
        b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())
        if key
        else ""
    )
    return f"{signing_input}.{signature}"


def claims_for(email: str = "alice@example.org", **extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"email": email, "iat": int(NOW), "exp": int(NOW) + 600}
    claims.update(extra)
    return claims


def settings(**values: Any) -> Settings:
    return Settings(**values)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(clock: Clock) -> Authenticator:
    return Authenticator(secret_key=SECRET, clock=clock)


# -- HS256 tokens --------------------------------------------------------------------


def test_issued_token_round_trips(auth: Authenticator) -> None:
    """A token from issue_token authenticates as the same, normalised user."""
    token = auth.issue_token("  Alice@Example.ORG ", roles=["reader"])
    identity = auth.authenticate(bearer(token))
    assert identity == Identity(
        email="alice@example.org",
        roles=frozenset({"reader"}),
        method="jwt",
        is_admin=False,
    )


def test_issued_token_carries_the_expected_claims(auth: Authenticator) -> None:
    """issue_token writes email, sub, roles, iat and exp = iat + ttl, HS256."""
    token = auth.issue_token("bob@example.org", roles=["b", "a"], ttl=120)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {
        "sub": "bob@example.org",
        "email": "bob@example.org",
        "roles": ["a", "b"],
        "iat": int(NOW),
        "exp": int(NOW) + 120,
    }


def test_issue_token_needs_a_secret_key() -> None:
    """Without a secret key there is nothing to sign with: ConfigurationError."""
    with pytest.raises(ConfigurationError, match="SCLIB_SECRET_KEY"):
        Authenticator(jwks_url="https://idp.example.org/jwks").issue_token(
            "a@example.org"
        )


@pytest.mark.parametrize(("email", "ttl"), [("not-an-email", 60), ("a@example.org", 0)])
def test_issue_token_refuses_bad_arguments(
    auth: Authenticator, email: str, ttl: float
) -> None:
    """issue_token refuses a non-email and a non-positive ttl."""
    with pytest.raises(InvalidInput):
        auth.issue_token(email, ttl=ttl)


def test_expired_token_is_refused(auth: Authenticator, clock: Clock) -> None:
    """Past exp plus the leeway the token is refused as expired."""
    token = auth.issue_token("alice@example.org", ttl=60)
    clock.now = NOW + 60 + 29
    assert auth.authenticate(bearer(token)).email == "alice@example.org"
    clock.now = NOW + 60 + 31
    with pytest.raises(Unauthorized, match="token expired"):
        auth.authenticate(bearer(token))


def test_token_from_the_future_is_refused(auth: Authenticator) -> None:
    """A token whose nbf lies beyond the leeway is not valid yet."""
    token = jwt.encode(claims_for(nbf=int(NOW) + 3600), SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="not valid yet"):
        auth.authenticate(bearer(token))


def test_token_without_exp_is_refused(auth: Authenticator) -> None:
    """exp is required: a token that never expires is refused, naming the claim."""
    claims = claims_for()
    del claims["exp"]
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="'exp'"):
        auth.authenticate(bearer(token))


def test_wrong_signature_is_refused(auth: Authenticator) -> None:
    """A token signed with another key does not verify."""
    token = jwt.encode(claims_for(), OTHER_SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="token signature does not verify"):
        auth.authenticate(bearer(token))


def test_alg_none_is_refused(auth: Authenticator) -> None:
    """An unsigned token (alg "none") is refused whatever it claims."""
    token = hand_made_token({"alg": "none", "typ": "JWT"}, claims_for(), b"")
    with pytest.raises(Unauthorized, match="algorithm is not accepted"):
        auth.authenticate(bearer(token))


def test_hs384_is_refused(auth: Authenticator) -> None:
    """Only HS256 is accepted for the secret key, even though HS384 would verify."""
    token = jwt.encode(claims_for(), SECRET, algorithm="HS384")
    with pytest.raises(Unauthorized, match="algorithm is not accepted"):
        auth.authenticate(bearer(token))


def test_audience_and_issuer_are_checked(clock: Clock) -> None:
    """With aud/iss configured, tokens must name them; issued tokens do."""
    auth = Authenticator(
        secret_key=SECRET, audience="sclib", issuer="https://id.example", clock=clock
    )
    assert auth.authenticate(bearer(auth.issue_token("a@example.org"))).email == (
        "a@example.org"
    )
    good = {"aud": "sclib", "iss": "https://id.example"}
    cases = [
        ({**good, "aud": "other"}, "audience"),
        ({**good, "iss": "https://evil.example"}, "issuer"),
        ({"iss": "https://id.example"}, "'aud'"),
        ({"aud": "sclib"}, "'iss'"),
    ]
    for extra, message in cases:
        token = jwt.encode(claims_for(**extra), SECRET, algorithm="HS256")
        with pytest.raises(Unauthorized, match=message):
            auth.authenticate(bearer(token))


def test_audience_is_ignored_when_not_configured(auth: Authenticator) -> None:
    """A token with an aud claim is accepted when no audience is configured."""
    token = jwt.encode(claims_for(aud="whatever"), SECRET, algorithm="HS256")
    assert auth.authenticate(bearer(token)).email == "alice@example.org"


def test_missing_email_claim_is_refused(clock: Clock) -> None:
    """The email claim is required (no fallback to sub); the error names it."""
    auth = Authenticator(secret_key=SECRET, email_claim="mail", clock=clock)
    token = jwt.encode(
        {"sub": "alice@example.org", "exp": int(NOW) + 60}, SECRET, algorithm="HS256"
    )
    with pytest.raises(Unauthorized, match="'mail'"):
        auth.authenticate(bearer(token))


def test_email_claim_must_be_an_email(auth: Authenticator) -> None:
    """A user id in the email claim is refused."""
    token = jwt.encode(claims_for(email="auth0|12345"), SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="not an email address"):
        auth.authenticate(bearer(token))


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (["admin", "reader"], {"admin", "reader"}),
        ("reader  writer", {"reader", "writer"}),
        ([], set()),
        (None, set()),
    ],
)
def test_roles_from_list_or_space_separated_string(
    auth: Authenticator, roles: object, expected: set[str]
) -> None:
    """Roles come from a list of strings or one space-separated string."""
    claims = claims_for() if roles is None else claims_for(roles=roles)
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    identity = auth.authenticate(bearer(token))
    assert identity.roles == frozenset(expected)
    assert identity.is_admin == ("admin" in expected)


def test_roles_of_the_wrong_type_are_refused(auth: Authenticator) -> None:
    """A roles claim that is neither a string nor a list of strings is refused."""
    token = jwt.encode(claims_for(roles={"admin": True}), SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="'roles'"):
        auth.authenticate(bearer(token))


def test_custom_roles_claim_and_admin_role(clock: Clock) -> None:
    """The roles claim name and the admin role are configurable."""
    auth = Authenticator(
        secret_key=SECRET,
        roles_claim="https://example.org/roles",
        admin_role="sclib-admin",
        clock=clock,
    )
    token = auth.issue_token("ops@example.org", roles=["sclib-admin"])
    assert "https://example.org/roles" in jwt.decode(
        token, options={"verify_signature": False}
    )
    identity = auth.authenticate(bearer(token))
    assert identity.is_admin
    assert not auth.authenticate(bearer(auth.issue_token("u@example.org"))).is_admin


@pytest.mark.parametrize(
    "header",
    [None, "", "   ", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc"],
)
def test_missing_bearer_token(auth: Authenticator, header: str | None) -> None:
    """No header, or one that is not 'Bearer <token>', is a missing token."""
    with pytest.raises(Unauthorized, match="missing bearer token"):
        auth.authenticate(header)


def test_bearer_scheme_is_case_insensitive(auth: Authenticator) -> None:
    """'bearer' in any case is accepted."""
    token = auth.issue_token("a@example.org")
    assert auth.authenticate(f"bearer {token}").email == "a@example.org"


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "x" * 20_000])
def test_garbage_tokens_are_refused(auth: Authenticator, token: str) -> None:
    """Tokens that are neither API tokens nor JWTs are refused without echoing."""
    with pytest.raises(Unauthorized) as info:
        auth.authenticate(bearer(token))
    assert token not in str(info.value)


# -- algorithm confusion -------------------------------------------------------------


def test_hs256_forged_with_the_rsa_public_key_is_refused(
    jwks_server: JwksServer, clock: Clock
) -> None:
    """An HS256 token whose HMAC key is the provider's public key never verifies,
    whether or not the server also has a secret key."""
    public_pem = jwks_server.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = hand_made_token(
        {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"},
        claims_for(roles=["admin"]),
        public_pem,
    )
    only_jwks = Authenticator(jwks_url=jwks_server.url, clock=clock)
    with pytest.raises(Unauthorized, match="HS256 tokens are not accepted"):
        only_jwks.authenticate(bearer(forged))
    both = Authenticator(secret_key=SECRET, jwks_url=jwks_server.url, clock=clock)
    with pytest.raises(Unauthorized, match="signature does not verify"):
        both.authenticate(bearer(forged))


# -- static API tokens ---------------------------------------------------------------


def test_static_api_tokens_from_settings(clock: Clock) -> None:
    """SCLIB_API_TOKENS maps tokens to an email or to an email with roles."""
    raw = json.dumps(
        {
            "tok-alice-0123456789": "Alice@Example.org",
            "tok-ops-0123456789": {"email": "ops@example.org", "roles": ["admin"]},
            "tok-ci-0123456789": {"email": "ci@example.org", "roles": "deploy ci"},
        }
    )
    auth = Authenticator.from_settings(settings(SCLIB_API_TOKENS=raw))
    alice = auth.authenticate(bearer("tok-alice-0123456789"))
    assert alice == Identity("alice@example.org", frozenset(), "api_token", False)
    ops = auth.authenticate(bearer("tok-ops-0123456789"))
    assert ops.is_admin
    assert ops.method == "api_token"
    ci = auth.authenticate(bearer("tok-ci-0123456789"))
    assert ci.roles == frozenset({"deploy", "ci"})
    with pytest.raises(Unauthorized):
        auth.authenticate(bearer("tok-alice-012345678"))


def test_static_api_tokens_passed_directly(clock: Clock) -> None:
    """Identities given to the constructor become api_token identities."""
    auth = Authenticator(
        api_tokens={
            "t" * 40: Identity("a@example.org", frozenset({"admin"}), "x", False)
        },
        clock=clock,
    )
    identity = auth.authenticate(bearer("t" * 40))
    assert identity.method == "api_token"
    assert identity.is_admin


def test_api_tokens_checked_before_jwts(auth: Authenticator, clock: Clock) -> None:
    """A static token that happens to look like a JWT is matched as a static token."""
    token = jwt.encode(claims_for(email="jwt@example.org"), SECRET, algorithm="HS256")
    both = Authenticator(
        secret_key=SECRET,
        api_tokens={token: Identity("static@example.org", frozenset(), "", False)},
        clock=clock,
    )
    assert both.authenticate(bearer(token)).email == "static@example.org"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"super-secret-token-value": ', "not valid JSON"),
        ('["super-secret-token-value"]', "JSON object"),
        ('{"super-secret-token-value": 42}', "entry 1"),
        ('{"super-secret-token-value": {"roles": ["admin"]}}', "'email'"),
        ('{"super-secret-token-value": "nobody"}', "not an email"),
        ('{"super-secret-token-value": {"email": "a@b.c", "roles": 3}}', "roles"),
        ('{"super-secret-token-value": {"email": "a@b.c", "admin": true}}', "unknown"),
        ('{"  ": "a@b.c"}', "empty token"),
    ],
)
def test_bad_api_tokens_setting(raw: str, message: str) -> None:
    """A bad SCLIB_API_TOKENS is a ConfigurationError that never echoes a token."""
    with pytest.raises(ConfigurationError, match=message) as info:
        Authenticator.from_settings(settings(SCLIB_API_TOKENS=raw))
    assert "super-secret-token-value" not in str(info.value)


def test_from_settings_reads_every_auth_variable() -> None:
    """from_settings wires the secret key, aud, iss, claim names and admin role."""
    auth = Authenticator.from_settings(
        settings(
            SECRET_KEY=SECRET,
            SCLIB_JWT_AUDIENCE="sclib",
            SCLIB_JWT_ISSUER="https://id.example",
            SCLIB_JWT_EMAIL_CLAIM="mail",
            SCLIB_JWT_ROLES_CLAIM="groups",
            SCLIB_ADMIN_ROLE="ops",
        )
    )
    token = auth.issue_token("x@example.org", roles=["ops"])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == "sclib"
    assert claims["iss"] == "https://id.example"
    assert claims["mail"] == "x@example.org"
    assert claims["groups"] == ["ops"]
    assert auth.authenticate(bearer(token)).is_admin
    assert auth.enabled


# -- no-auth mode --------------------------------------------------------------------


def test_no_auth_mode_is_the_local_admin() -> None:
    """With no_auth every request, with or without a header, is the local admin."""
    auth = Authenticator(no_auth=True, admin_role="boss")
    assert not auth.enabled
    for header in (None, "Bearer whatever"):
        assert auth.authenticate(header) == Identity(
            "local@localhost", frozenset({"boss"}), "no_auth", True
        )


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]
)
def test_no_auth_allowed_on_loopback(host: str) -> None:
    """--no-auth may bind to loopback addresses."""
    check_bind_address(host, no_auth=True)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "", "::", "192.168.1.10", "10.0.0.1", "example.org"]
)
def test_no_auth_refused_elsewhere(host: str) -> None:
    """--no-auth on every interface or a non-loopback address is refused."""
    with pytest.raises(ConfigurationError, match="--no-auth"):
        check_bind_address(host, no_auth=True)
    check_bind_address(host, no_auth=False)


def test_validate_settings_wants_a_token_verifier() -> None:
    """With auth on, one of secret key, API tokens or JWKS URL must be set."""
    with pytest.raises(ConfigurationError) as info:
        validate_settings(settings())
    for name in ("SCLIB_SECRET_KEY", "SCLIB_API_TOKENS", "SCLIB_JWKS_URL", "no-auth"):
        assert name in str(info.value)
    validate_settings(settings(SCLIB_NO_AUTH=True))
    validate_settings(settings(SCLIB_SECRET_KEY=SECRET))
    validate_settings(settings(SCLIB_API_TOKENS='{"t0123456789": "a@example.org"}'))
    with pytest.raises(ConfigurationError, match="SCLIB_JWT_AUDIENCE"):
        validate_settings(settings(SCLIB_JWKS_URL="https://id.example/jwks.json"))
    validate_settings(
        settings(
            SCLIB_JWKS_URL="https://id.example/jwks.json",
            SCLIB_JWT_AUDIENCE="https://api.example",
            SCLIB_JWT_ISSUER="https://id.example/",
        )
    )
    with pytest.raises(ConfigurationError, match="JSON"):
        validate_settings(settings(SCLIB_API_TOKENS="{"))


def test_unverified_email_is_refused() -> None:
    """A token whose provider says email_verified: false does not identify anyone:
    anybody can sign up with somebody else's address."""
    import jwt

    auth = Authenticator(secret_key=SECRET)
    now = int(time.time())
    claims = {"email": "alice@example.org", "iat": now, "exp": now + 60}
    ok = jwt.encode({**claims, "email_verified": True}, SECRET, algorithm="HS256")
    assert auth.authenticate(f"Bearer {ok}").email == "alice@example.org"
    bad = jwt.encode({**claims, "email_verified": False}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="not verified"):
        auth.authenticate(f"Bearer {bad}")


# -- user_email and visibility -------------------------------------------------------


ALICE = Identity("alice@example.org", frozenset(), "jwt", False)
ADMIN = Identity("ops@example.org", frozenset({"admin"}), "jwt", True)


@pytest.mark.parametrize(
    ("identity", "user_email", "expected"),
    [
        (ALICE, None, "alice@example.org"),
        (ALICE, "", "alice@example.org"),
        (ALICE, " ALICE@example.org ", "alice@example.org"),
        (ALICE, "bob@example.org", Forbidden),
        (ADMIN, None, "ops@example.org"),
        (ADMIN, "Bob@Example.org", "bob@example.org"),
        (ADMIN, "not an email", InvalidInput),
    ],
)
def test_check_user_email(
    auth: Authenticator,
    identity: Identity,
    user_email: str | None,
    expected: str | type[Exception],
) -> None:
    """user_email defaults to the caller; another user's needs the admin role."""
    if isinstance(expected, str):
        assert auth.check_user_email(identity, user_email) == expected
    else:
        with pytest.raises(expected, match="user_email"):
            auth.check_user_email(identity, user_email)


def test_can_see(auth: Authenticator) -> None:
    """Admins see everything; others see only what they own."""
    assert auth.can_see(ALICE, "alice@example.org")
    assert auth.can_see(ALICE, "Alice@Example.org")
    assert not auth.can_see(ALICE, "bob@example.org")
    assert not auth.can_see(ALICE, None)
    assert auth.can_see(ADMIN, "bob@example.org")
    assert auth.can_see(ADMIN, None)


# -- JWKS ----------------------------------------------------------------------------


@dataclass
class JwksServer:
    url: str
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    hits: list[str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_server(rsa_key: rsa.RSAPrivateKey) -> Iterator[JwksServer]:
    """A JWKS with one RSA and one EC key, served on 127.0.0.1."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    ec_jwk = ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    rsa_jwk.update(kid="rsa-1", use="sig", alg="RS256")
    ec_jwk.update(kid="ec-1", use="sig", alg="ES256")
    body = json.dumps({"keys": [rsa_jwk, ec_jwk]}).encode()
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            if self.path == "/not-json":
                self.send_response(200)
                self.send_header("Content-Length", "5")
                self.end_headers()
                self.wfile.write(b"hello")
                return
            if self.path != "/.well-known/jwks.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        port = server.server_address[1]
        yield JwksServer(
            url=f"http://127.0.0.1:{port}/.well-known/jwks.json",
            rsa_key=rsa_key,
            ec_key=ec_key,
            hits=hits,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_jwks_rs256_token_verifies_and_keys_are_cached(
    jwks_server: JwksServer, clock: Clock
) -> None:
    """An RS256 token with a kid verifies against the fetched JWKS, fetched once."""
    auth = Authenticator(
        jwks_url=jwks_server.url,
        audience="https://api.example.org",
        issuer="https://id.example/",
        clock=clock,
    )
    claims = claims_for(
        roles="admin", aud="https://api.example.org", iss="https://id.example/"
    )
    token = jwt.encode(
        claims, jwks_server.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}
    )
    for _ in range(3):
        identity = auth.authenticate(bearer(token))
    assert identity == Identity("alice@example.org", frozenset({"admin"}), "jwks", True)
    assert jwks_server.hits == ["/.well-known/jwks.json"]


def test_jwks_es256_token_verifies(jwks_server: JwksServer, clock: Clock) -> None:
    """An ES256 token verifies against the EC key of the JWKS."""
    auth = Authenticator(jwks_url=jwks_server.url, clock=clock)
    token = jwt.encode(
        claims_for(), jwks_server.ec_key, algorithm="ES256", headers={"kid": "ec-1"}
    )
    assert auth.authenticate(bearer(token)).method == "jwks"


def test_jwks_token_signed_by_another_key_is_refused(
    jwks_server: JwksServer, clock: Clock
) -> None:
    """An RS256 token naming a known kid but signed by another key does not verify."""
    auth = Authenticator(jwks_url=jwks_server.url, clock=clock)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(
        claims_for(), stranger, algorithm="RS256", headers={"kid": "rsa-1"}
    )
    with pytest.raises(Unauthorized, match="signature does not verify"):
        auth.authenticate(bearer(token))


def test_jwks_token_with_an_unknown_kid_is_refused(
    jwks_server: JwksServer, clock: Clock
) -> None:
    """A kid that is not in the JWKS is refused as Unauthorized."""
    auth = Authenticator(jwks_url=jwks_server.url, clock=clock)
    token = jwt.encode(
        claims_for(), jwks_server.rsa_key, algorithm="RS256", headers={"kid": "nope"}
    )
    with pytest.raises(Unauthorized, match="kid"):
        auth.authenticate(bearer(token))


def test_jwks_token_expiry_is_checked(jwks_server: JwksServer, clock: Clock) -> None:
    """JWKS tokens must carry exp and are refused once expired."""
    auth = Authenticator(jwks_url=jwks_server.url, clock=clock)
    token = jwt.encode(
        claims_for(), jwks_server.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}
    )
    clock.now = NOW + 3600
    with pytest.raises(Unauthorized, match="token expired"):
        auth.authenticate(bearer(token))


def test_rs256_refused_without_jwks_url(
    auth: Authenticator, jwks_server: JwksServer
) -> None:
    """Without a JWKS URL, RS256 tokens are refused with the reason."""
    token = jwt.encode(
        claims_for(), jwks_server.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}
    )
    with pytest.raises(Unauthorized, match="no JWKS URL"):
        auth.authenticate(bearer(token))


def test_jwks_server_down_is_unauthorized(rsa_key: rsa.RSAPrivateKey) -> None:
    """When the JWKS cannot be fetched the request is Unauthorized, not a crash."""
    auth = Authenticator(
        jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json", clock=Clock()
    )
    token = jwt.encode(claims_for(), rsa_key, algorithm="RS256", headers={"kid": "k"})
    with pytest.raises(Unauthorized, match="could not be fetched"):
        auth.authenticate(bearer(token))


def test_jwks_that_is_not_json_is_unauthorized(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    """A JWKS address that answers 404, or 200 with a body that is not JSON, gives
    Unauthorized, not a server error."""
    token = jwt.encode(claims_for(), rsa_key, algorithm="RS256", headers={"kid": "k"})
    base = jwks_server.url.removesuffix("/.well-known/jwks.json")
    for path in ("/missing.json", "/not-json"):
        auth = Authenticator(jwks_url=base + path, clock=Clock())
        with pytest.raises(Unauthorized, match="could not be fetched"):
            auth.authenticate(bearer(token))


def test_jwks_url_must_be_http() -> None:
    """A JWKS URL that is not http(s) is a configuration error."""
    with pytest.raises(ConfigurationError, match="JWKS"):
        Authenticator(jwks_url="file:///etc/passwd")


# -- sealing credentials -------------------------------------------------------------


CREDENTIALS = {
    "access_key_id": "AKIAEXAMPLEKEY123",
    "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}


def test_secret_box_round_trip() -> None:
    """open(seal(x)) == x, and the sealed text hides the values."""
    box = SecretBox(SECRET)
    sealed = box.seal(CREDENTIALS)
    assert sealed.startswith("sclib-sealed:v1:")
    assert is_sealed(sealed)
    for value in CREDENTIALS.values():
        assert value not in sealed
    assert "secret_access_key" not in sealed
    assert box.open(sealed) == CREDENTIALS
    assert SecretBox(SECRET).open(sealed) == CREDENTIALS


def test_secret_box_wrong_key() -> None:
    """Opening with another SECRET_KEY fails with InvalidInput naming the cause."""
    sealed = SecretBox(SECRET).seal(CREDENTIALS)
    with pytest.raises(InvalidInput, match="wrong SECRET_KEY") as info:
        SecretBox(OTHER_SECRET).open(sealed)
    assert sealed[16:] not in str(info.value)


def test_secret_box_tampered_data() -> None:
    """A changed byte in the sealed text is detected."""
    box = SecretBox(SECRET)
    sealed = box.seal(CREDENTIALS)
    middle = len(sealed) // 2
    flipped = "A" if sealed[middle] != "A" else "B"
    tampered = sealed[:middle] + flipped + sealed[middle + 1 :]
    for bad in (tampered, sealed[:-10], "sclib-sealed:v1:", "sclib-sealed:v1:é"):
        with pytest.raises(InvalidInput, match="cannot be opened"):
            box.open(bad)


def test_secret_box_refuses_unsealed_text_and_empty_keys() -> None:
    """open() wants sealed text; an empty key is a configuration error."""
    with pytest.raises(InvalidInput, match="not sealed") as info:
        SecretBox(SECRET).open("plain-secret-value")
    assert "plain-secret-value" not in str(info.value)
    with pytest.raises(ConfigurationError):
        SecretBox("")
    with pytest.raises(InvalidInput, match="JSON"):
        SecretBox(SECRET).seal({"token": b"bytes"})
    assert repr(SecretBox(SECRET)) == "SecretBox(<key hidden>)"
    assert not is_sealed(None)
    assert not is_sealed("sclib-sealed:v2:x")


def test_split_secrets_and_redact() -> None:
    """Secret keys (any case) are split off and redacted; the rest stays."""
    config = {
        "bucket": "data",
        "Access_Key_ID": "AKIA",
        "SECRET_ACCESS_KEY": "s3cr3t",
        "endpoint_url": "http://127.0.0.1:9000",
        "token": None,
        "nested": {"password": "pw", "user": "u", "list": [{"api_key": "k"}]},
    }
    public, secret = split_secrets(config)
    assert public == {
        "bucket": "data",
        "endpoint_url": "http://127.0.0.1:9000",
        "nested": config["nested"],
    }
    assert secret == {
        "Access_Key_ID": "AKIA",
        "SECRET_ACCESS_KEY": "s3cr3t",
        "token": None,
    }
    assert redact(config) == {
        "bucket": "data",
        "Access_Key_ID": "***",
        "SECRET_ACCESS_KEY": "***",
        "endpoint_url": "http://127.0.0.1:9000",
        "token": None,
        "nested": {"password": "***", "user": "u", "list": [{"api_key": "***"}]},
    }
    assert {"service_account_json", "refresh_token", "client_secret"} <= SENSITIVE_KEYS
    # the Google Drive and URL sources' credential-carrying options too
    assert {"access_token", "oauth_refresh_token", "headers"} <= SENSITIVE_KEYS


def test_settings_secret_key_is_a_secret_str() -> None:
    """Settings keep the key hidden; from_settings unwraps it for signing."""
    s = settings(SCLIB_SECRET_KEY=SECRET)
    assert isinstance(s.secret_key, SecretStr)
    assert SECRET not in repr(s)
    auth = Authenticator.from_settings(s)
    assert auth.authenticate(bearer(auth.issue_token("a@example.org"))).email == (
        "a@example.org"
    )
