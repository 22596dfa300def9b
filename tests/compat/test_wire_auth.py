"""Who is calling: the original Authenticated app's tokens and cookies, the
original's token-less clients from a trusted address, and what a server with
sclib's defaults asks of them.

Every test's docstring names the ``docs/compat.md`` rows it covers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.compat.servers import PORTAL_ORIGIN, Served, original_token
from tests.compat.wire import (
    AMY,
    BOB,
    JOB_STATUS,
    UPLOAD_RESULT,
    LargeWire,
    Part,
    UnifiedWire,
    Wire,
    reads,
)

pytestmark = pytest.mark.integration

AUTH_STATUS = {"is_authenticated": bool, "user_email": str, "access_type": str}
#: The cookies the original auth middleware took a token from, in its order.
COOKIES = (
    "auth_token",
    "auth0_session_0",
    "auth0_session",
    "auth0.is.authenticated",
    "auth0_session_1",
    "auth0_session_2",
)


def _file(folder: Path, name: str, size: int = 100) -> Path:
    path = folder / name
    path.write_bytes(os.urandom(size))
    return path


def _owner(client: UnifiedWire, dataset_uuid: str) -> str:
    found = client.wire.get(f"/api/upload/datasets/{dataset_uuid}")
    assert found.status_code == 200, found.text
    return str(found.json()["dataset"]["user"])


# -- trusted clients -------------------------------------------------------------------


def test_trusted_client_acts_for_the_named_user(
    original: Served, locked: Served, tmp_path: Path
) -> None:
    """Row B01: from an address in SCLIB_TRUSTED_CLIENTS (here 127.0.0.1/32) a
    request with no token that names ``user_email`` works and the dataset is
    that user's, as on the original servers; naming no user is refused (422,
    naming the setting). Without the setting (``locked``) the same request is
    a 401."""
    source = _file(tmp_path, "t.bin")
    with UnifiedWire(original.url) as client:
        answer = client.upload_file(source, AMY, "Trusted", "OTHER")
        assert answer.status_code == 200, answer.text
        assert _owner(client, reads(answer, UPLOAD_RESULT)["dataset_uuid"]) == AMY
        nobody = client.wire.post_multipart(
            "/api/upload/upload",
            [
                Part("dataset_name", "Nobody"),
                Part("sensor", "OTHER"),
                Part("file", b"x", "x.bin", "application/octet-stream"),
            ],
        )
        assert nobody.status_code == 422
        assert "SCLIB_TRUSTED_CLIENTS" in nobody.json()["detail"]
    with UnifiedWire(locked.url) as client:
        refused = client.upload_file(source, AMY, "Trusted", "OTHER")
        assert refused.status_code == 401, refused.text


def test_without_trusted_clients_every_user_route_needs_a_token(
    locked: Served, tmp_path: Path
) -> None:
    """Rows R29, B01: on a server with sclib's defaults, the routes that act
    for a user answer 401 without a token (as the Authenticated app's did);
    the information routes answer without one."""
    source = _file(tmp_path, "n.bin")
    with UnifiedWire(locked.url) as client, LargeWire(locked.url) as large:
        for answer in (
            client.upload_file(source, AMY, "N", "OTHER"),
            client.upload_file_by_path(str(source), AMY, "N", "OTHER"),
            client.initiate_url_upload("https://example.org/x", AMY, "N", "OTHER"),
            client.get_upload_status("job"),
            client.cancel_upload("job"),
            client.list_upload_jobs(AMY),
            client.wire.get("/api/auth/status"),
            client.wire.get("/api/upload/datasets/x"),
            client.wire.get("/api/datasets", [("user_email", AMY)]),
            large.initiate_large_upload(source, AMY, "N", "OTHER"),
            large.get_chunk_status("u"),
        ):
            assert answer.status_code == 401, (answer.request.url, answer.text)
        for answer in (
            client.get_api_info(),
            client.health_check(),
            client.get_supported_sources(),
            client.get_upload_limits(),
            large.get_upload_limits(),
            large.health_check(),
        ):
            assert answer.status_code == 200, (answer.request.url, answer.text)


# -- tokens ----------------------------------------------------------------------------


def test_original_auth_tokens_are_accepted(
    original: Served, locked: Served, tmp_path: Path
) -> None:
    """Rows R29, R30, B02: a token minted as the original auth service minted it
    (HS256 with SECRET_KEY, issuer ``sclib-auth``, audience ``sclib-api``)
    verifies with SECRET_KEY + SCLIB_JWT_AUDIENCE + SCLIB_JWT_ISSUER; without
    ``user_id`` too (the original wanted it); another audience does not; the
    token's user owns what is uploaded without ``user_email``; naming another
    user is 403 (the original silently used the token's)."""
    for token in (original_token(AMY), original_token(AMY, user_id=None)):
        headers = {"Authorization": f"Bearer {token}"}
        with UnifiedWire(original.url, headers=headers) as client:
            status = reads(client.wire.get("/api/auth/status"), AUTH_STATUS)
            assert status["user_email"] == AMY
            source = _file(tmp_path, "tok.bin")
            answer = client.wire.post_multipart(
                "/api/upload/upload",
                [
                    Part("dataset_name", "Token"),
                    Part("sensor", "OTHER"),
                    Part("file", source.read_bytes(), source.name),
                ],
            )
            assert answer.status_code == 200, answer.text
            result = reads(answer, UPLOAD_RESULT)
            assert _owner(client, result["dataset_uuid"]) == AMY
            assert reads(client.get_upload_status(result["job_id"]), JOB_STATUS)
            mine = client.wire.get("/api/upload/jobs", [("limit", 1000)]).json()
            assert result["job_id"] in {j["job_id"] for j in mine["jobs"]}
            other = client.upload_file(_file(tmp_path, "o.bin"), BOB, "Other", "OTHER")
            assert other.status_code == 403, other.text
            assert client.list_upload_jobs(BOB).status_code == 403
    wrong = original_token(AMY, aud="another-api")
    with UnifiedWire(original.url, headers={"Authorization": f"Bearer {wrong}"}) as c:
        assert c.wire.get("/api/auth/status").status_code == 401
    headers = {"Authorization": f"bearer {original_token(AMY)}"}
    with UnifiedWire(locked.url, headers=headers) as client:
        assert reads(client.wire.get("/api/auth/status"), AUTH_STATUS)


def test_auth_status_answers_the_original_keys(
    original: Served, locked: Served
) -> None:
    """Row R30: ``GET /api/auth/status`` with a token answers
    ``is_authenticated`` true, the ``user_email``, ``access_type`` "direct" and
    ``error`` null; without a token it is 401 (``locked``); a trusted client
    gets ``access_type`` "trusted"."""
    headers = {"Authorization": f"Bearer {original_token(AMY)}"}
    with Wire(original.url, UnifiedWire.AGENT, headers=headers) as wire:
        status = reads(wire.get("/api/auth/status"), AUTH_STATUS)
        assert status["is_authenticated"] is True and status["user_email"] == AMY
        assert status["access_type"] == "direct" and status["error"] is None
    with Wire(original.url, UnifiedWire.AGENT) as wire:
        assert wire.get("/api/auth/status").json()["access_type"] == "trusted"
    with Wire(locked.url, UnifiedWire.AGENT) as wire:
        assert wire.get("/api/auth/status").status_code == 401


def test_token_answers_carry_the_user_email(original: Served, tmp_path: Path) -> None:
    """Row R29: with a token, the upload and status answers carry
    ``user_email``, as the Authenticated app's did."""
    headers = {"Authorization": f"Bearer {original_token(AMY)}"}
    with UnifiedWire(original.url, headers=headers) as client:
        answer = client.upload_file(_file(tmp_path, "e.bin"), AMY, "Email", "OTHER")
        assert answer.json()["user_email"] == AMY
        status = client.get_upload_status(answer.json()["job_id"])
        assert status.json()["user_email"] == AMY


# -- cookies ---------------------------------------------------------------------------


def test_auth_cookies_carry_the_token(original: Served, tmp_path: Path) -> None:
    """Rows R31, B18: a token in any of the original middleware's cookies
    (``auth_token``, ``auth0_session_0``, ``auth0_session``,
    ``auth0.is.authenticated``, ``auth0_session_1``, ``auth0_session_2``)
    authenticates; an upload with a cookie token is taken without an
    ``Origin``, or from the server's own origin, and refused with 403 when the
    browser says another site sent it (``Origin`` or ``Referer``: cross-site
    request forgery); reading from another site is fine."""
    token = original_token(AMY)
    for name in COOKIES:
        with Wire(original.url, UnifiedWire.AGENT, cookies={name: token}) as wire:
            status = reads(wire.get("/api/auth/status"), AUTH_STATUS)
            assert status["user_email"] == AMY, name
            assert status["access_type"] == "direct"
    source = _file(tmp_path, "c.bin")
    cases = {
        (): 200,
        (("Origin", original.url),): 200,
        (("Origin", "https://evil.example"),): 403,
        (("Referer", "https://evil.example/page"),): 403,
    }
    for extra, expected in cases.items():
        with UnifiedWire(
            original.url, cookies={"auth_token": token}, headers=dict(extra)
        ) as client:
            answer = client.upload_file(source, AMY, "Cookie", "OTHER")
            assert answer.status_code == expected, (extra, answer.text)
            got = client.wire.get("/api/auth/status")
            assert got.status_code == 200 and got.json()["user_email"] == AMY


# -- browsers --------------------------------------------------------------------------


def test_cors_is_off_unless_origins_are_listed(
    original: Served, locked: Served
) -> None:
    """Row B19: the original allowed every origin, with credentials; sclib
    answers a browser's preflight only for the origins in SCLIB_CORS_ORIGINS
    (``locked`` lists one), without credentials."""
    preflight = {"Access-Control-Request-Method": "POST"}
    with Wire(locked.url, UnifiedWire.AGENT) as wire:
        allowed = wire.http.options(
            "/api/upload/upload", headers={**preflight, "Origin": PORTAL_ORIGIN}
        )
        assert allowed.headers.get("access-control-allow-origin") == PORTAL_ORIGIN
        assert "access-control-allow-credentials" not in allowed.headers
        other = wire.http.options(
            "/api/upload/upload",
            headers={**preflight, "Origin": "https://other.example"},
        )
        assert "access-control-allow-origin" not in other.headers
    with Wire(original.url, UnifiedWire.AGENT) as wire:
        plain = wire.http.get("/health", headers={"Origin": PORTAL_ORIGIN})
        assert "access-control-allow-origin" not in plain.headers
