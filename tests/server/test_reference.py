"""docs/http.md is what the app's OpenAPI schema says."""

from __future__ import annotations

from pathlib import Path

from sclib.server.reference import _spec, render

ROOT = Path(__file__).resolve().parents[2]


def test_http_reference_is_current() -> None:
    """The committed HTTP reference equals the one generated from the routes;
    regenerate with `python -m sclib.server.reference > docs/http.md`."""
    generated = render(_spec())
    committed = (ROOT / "docs" / "http.md").read_text(encoding="utf-8")
    assert committed == generated


def test_every_seed_route_is_served() -> None:
    """The routes the seed document and the upload protocol name all exist."""
    paths = _spec()["paths"]
    wanted = {
        "/": {"get"},
        "/health": {"get"},
        "/health/large-files": {"get"},
        "/api/upload/upload": {"post"},
        "/api/upload/local/upload": {"post"},
        "/api/upload/initiate": {"post"},
        "/api/upload/status/{job_id}": {"get"},
        "/api/upload/cancel/{job_id}": {"post"},
        "/api/upload/jobs": {"get"},
        "/api/upload/supported-sources": {"get"},
        "/api/upload/limits": {"get"},
        "/api/upload/estimate-time": {"get"},
        "/api/upload/large/initiate": {"post"},
        "/api/upload/large/chunk/{upload_id}/{chunk_index}": {"post"},
        "/api/upload/large/status/{upload_id}": {"get"},
        "/api/upload/large/resume/{upload_id}": {"get"},
        "/api/upload/large/complete/{upload_id}": {"post"},
        "/api/upload/large/cancel/{upload_id}": {"delete"},
        "/api/upload/large/limits": {"get"},
        "/api/v1/jobs": {"get", "post"},
        "/api/v1/jobs/{job_id}": {"get"},
        "/api/v1/jobs/{job_id}/cancel": {"post"},
        "/api/v1/jobs/{job_id}/retry": {"post"},
        "/api/v1/jobs/queue/stats": {"get"},
    }
    missing = {
        path: sorted(methods - set(paths.get(path, {})))
        for path, methods in wanted.items()
        if methods - set(paths.get(path, {}))
    }
    assert missing == {}
