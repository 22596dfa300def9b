"""The OpenAPI document tells the truth: Schemathesis against a real server.

Schemathesis (its CLI, as an operator would run it) generates requests from the
server's own ``/openapi.json`` and checks every answer against it: documented
status codes and media types (every error is ``application/problem+json``),
response schemas, no 5xx, schema-invalid requests refused, unsupported methods
405 with a true ``Allow``, required headers required. The few exceptions are in
``schemathesis.toml`` beside this file, each with its reason. The run is bounded
(examples per operation, a fixed seed) so it takes well under a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.live import LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with authentication on and no worker (generated imports and
    uploads stay queued; nothing is fetched)."""
    live = LiveServer(tmp_path_factory.mktemp("schema") / "data", workers=0).start()
    try:
        yield live
    finally:
        live.stop()


def test_schemathesis_finds_nothing(server: LiveServer) -> None:
    """Every check Schemathesis has, on every operation, with an admin token: no
    failure and no error."""
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.skip("schemathesis is not installed (it comes with the dev extra)")
    token = server.token("ops@example.org", admin=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.server.schemathesis_hooks",
    }
    run = subprocess.run(
        [
            st,
            "--config-file",
            str(HERE / "schemathesis.toml"),
            "run",
            f"{server.url}/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "8",
            "--seed",
            "20261207",
            "--workers",
            "1",
            "--no-color",
            "--generation-database",
            "none",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in summary and "failure" not in summary, summary


def test_the_defects_schemathesis_first_found(server: LiveServer) -> None:
    """OPTIONS on an upload's address declares its path parameter; a method tus
    does not take is a 405 naming the ones it does, before the version check;
    every error a route documents is problem+json."""
    doc = httpx.get(f"{server.url}/openapi.json").json()
    options = doc["paths"]["/files/{upload_id}"]["options"]
    assert [p["name"] for p in options["parameters"]] == ["upload_id"]
    r = httpx.request("TRACE", f"{server.url}/files")
    assert r.status_code == 405
    assert r.headers["allow"] == "OPTIONS, POST"
    r = httpx.request("GET", f"{server.url}/files/abc", headers=server.headers())
    assert r.status_code == 405
    assert r.headers["allow"] == "DELETE, HEAD, OPTIONS, PATCH"
    r = httpx.options(f"{server.url}/api/v1/jobs")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status in ("401", "404", "422"):
                content = op["responses"][status]["content"]
                assert "application/problem+json" in content, (method, path)
