"""The status page at ``/ui``, driven in headless Chromium.

A real ``sclib serve`` process on 127.0.0.1 (``LiveServer``), Debian's
``chromium`` driven by Playwright's Python package with ``executable_path`` set
(Playwright never downloads a browser here), real files of a real format (TIFF),
a real ``sclib worker`` subprocess. The one stand-in is the dropped connection:
Playwright's request interception aborts a chosen ``PATCH`` (the browser sees a
network error, the server never sees the request), because cutting a loopback
request at a chosen byte is not something a test can time reliably.

Without Playwright or Chromium the browser tests skip, saying why; with
``CI_REQUIRE_BROWSER=1`` (set by ``.ci/run``) they fail instead, so CI cannot
skip them silently. The screenshot of the finished upload goes to
``test-artifacts/ui.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import blake3
import httpx
import pytest

from sclib.jobs.queue import JobQueue
from sclib.server.ui import ASSETS
from sclib.settings import Settings
from tests.server.live import SECRET, LiveServer

pytestmark = pytest.mark.integration

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "sclib" / "server" / "static"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHUNK = 256 * 1024
TIMEOUT_MS = 20_000

# Recorded in the page before any script runs: CSP violations, uncaught errors,
# and every value the upload's progress bar took.
RECORDER = """
window.__csp = [];
window.__progress = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI);
});
document.addEventListener("DOMContentLoaded", () => {
  const bar = document.getElementById("upload-progress");
  new MutationObserver(() => window.__progress.push(Number(bar.value)))
    .observe(bar, { attributes: true, attributeFilter: ["value"] });
});
"""


# -- the browser ----------------------------------------------------------------------


def _chromium() -> str | None:
    """Debian's chromium (the package of that name), or one on PATH."""
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI_REQUIRE_BROWSER") == "1":
        pytest.fail(f"CI_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install playwright)")
    executable = _chromium()
    if executable is None:
        _unavailable("no chromium executable (apt-get install chromium)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (its own storage) with the recorder installed."""
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    context.add_init_script(RECORDER)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.page_errors = errors
    try:
        yield tab
    finally:
        context.close()


def _no_violations(tab: Any) -> None:
    assert tab.evaluate("window.__csp") == []
    assert tab.page_errors == []


# -- helpers --------------------------------------------------------------------------


def _tiff(path: Path, seed: int) -> Path:
    """A real 16-bit TIFF of about 4 MiB."""
    np = pytest.importorskip("numpy")
    tifffile = pytest.importorskip("tifffile")
    data = np.random.default_rng(seed).integers(0, 65535, (1024, 2048), np.uint16)
    tifffile.imwrite(path, data)
    return path


def _b3(path: Path) -> str:
    return blake3.blake3(path.read_bytes()).hexdigest()


def _save_token(tab: Any, token: str, *, enter: bool = False) -> None:
    tab.fill("#token", token)
    if enter:  # submits the token form: must stay on the page, token unsent
        tab.press("#token", "Enter")
    else:
        tab.click("#token-save")
    tab.wait_for_function(
        "() => document.getElementById('overview-source').textContent.length > 3"
        " && document.getElementById('message').dataset.kind !== 'auth'"
    )


def _fill_upload(tab: Any, path: Path, name: str) -> None:
    tab.set_input_files("#file", str(path))
    tab.fill("#dataset-name", name)
    tab.select_option("#sensor", "TIFF")
    tab.uncheck("#convert")  # no conversion job: the test is about the upload
    if not tab.is_visible("#chunk-kib"):
        tab.click("details summary")
    tab.fill("#chunk-kib", str(CHUNK // 1024))


def _record_requests(tab: Any) -> list[tuple[str, str, str | None]]:
    seen: list[tuple[str, str, str | None]] = []

    def log(request: Any) -> None:
        if "/files" in request.url:
            seen.append(
                (request.method, request.url, request.headers.get("upload-offset"))
            )

    tab.on("request", log)
    return seen


def _stored_file(server: LiveServer, dataset_uuid: str, name: str) -> Path:
    path = server.data_dir / "upload" / dataset_uuid / name
    assert path.is_file(), f"{path} is missing"
    return path


# -- without a browser ----------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_page_markup_has_nothing_inline_and_scripts_never_write_html() -> None:
    """index.html has no inline script, style or event handler (the CSP forbids
    them), and the scripts never put text into the page as HTML."""
    parser = _Tags()
    parser.feed((STATIC / "index.html").read_text())
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert scripts and all(a.get("src") for a in scripts)
    assert "<style" not in (STATIC / "index.html").read_text()
    for _tag, attrs in parser.tags:
        assert "style" not in attrs
        assert not [k for k in attrs if k.startswith("on")]
    for name in ("app.js", "tus.js"):
        code = (STATIC / name).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in code, f"{name} uses {sink}"
        assert "eval(" not in code and "new Function" not in code
    assert set(ASSETS) == {p.name for p in STATIC.iterdir()}


def test_ui_is_public_static_and_sent_with_a_strict_csp(
    live_server: LiveServer,
) -> None:
    """/ui redirects to /ui/; the page and its assets need no token, carry a
    self-only CSP and nosniff; anything not on the list is a 404, paths too."""
    with httpx.Client(base_url=live_server.url) as client:
        first = client.get("/ui")
        assert first.status_code == 307
        assert first.headers["location"] == "ui/"
        page = client.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "unsafe" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        for name, media_type in ASSETS.items():
            asset = client.get(f"/ui/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["content-type"] == media_type
            assert asset.content == (STATIC / name).read_bytes()
            assert asset.headers["content-security-policy"] == csp
        for bad in ("/ui/nope.js", "/ui/..%2Fui.py", "/ui/%2e%2e%2fapp.py"):
            answer = client.get(bad)
            assert answer.status_code == 404, bad
            assert answer.headers["content-type"] == "application/problem+json"
        # the data behind the page is not public
        assert client.get("/api/v1/jobs/queue/stats").status_code == 401


# -- in the browser -------------------------------------------------------------------


def test_upload_through_the_form_shows_progress_and_the_job_completing(
    tmp_path: Path, page: Any
) -> None:
    """Without a token the page says it needs one. With one, a 4 MiB TIFF sent
    through the form in 256 KiB tus chunks moves the progress bar through many
    values; a PATCH whose connection drops is followed by a HEAD and the same
    offset again, not a restart; the job shows as pending until a worker process
    starts, then completed; the stored file has the file's BLAKE3."""
    server = LiveServer(tmp_path / "data", workers=0).start()
    worker = None
    try:
        source = _tiff(tmp_path / "scan 1.tif", seed=1)
        page.goto(server.url + "/ui")
        page.wait_for_function(
            "() => document.getElementById('message').dataset.kind === 'auth'"
        )
        assert "needs a token" in page.text_content("#message")
        _save_token(page, server.token())
        # a user (not an admin) gets the counts from the queue stats
        assert page.text_content("#overview-source") == "queue stats"
        assert page.text_content("#health") in (
            "shown to admins only",  # the server has the monitor's overview
            "not reported by this server",  # it has not
        )

        requests = _record_requests(page)
        patches = {"n": 0}

        def drop_third_patch(route: Any) -> None:
            if route.request.method == "PATCH":
                patches["n"] += 1
                if patches["n"] == 3:
                    route.abort("connectionreset")
                    return
            route.continue_()

        page.route("**/files/**", drop_third_patch)
        _fill_upload(page, source, "beamline run 1")
        page.click("#upload-start")
        page.wait_for_function(
            "() => document.getElementById('job-status').textContent === 'pending'"
        )

        size = source.stat().st_size
        seen = page.evaluate("window.__progress")
        between = {v for v in seen if 0 < v < 100}
        assert len(between) >= 10, seen
        assert seen == sorted(seen)  # never went backwards, even across the drop
        assert page.text_content("#upload-text").startswith(f"{size / 2**20:.1f} of")

        methods = [m for m, _, _ in requests]
        assert methods.count("POST") == 1
        offsets = [off for m, _, off in requests if m == "PATCH"]
        # PATCH 3 (offset 2*CHUNK) dropped; then HEAD; then offset 2*CHUNK again
        assert offsets[:4] == [
            "0",
            str(CHUNK),
            str(2 * CHUNK),
            str(2 * CHUNK),
        ]
        third = [i for i, (m, _, _) in enumerate(requests) if m == "PATCH"][2]
        assert requests[third + 1][0] == "HEAD"
        assert len(offsets) == -(-size // CHUNK) + 1

        job_id = page.text_content("#job-id")
        dataset_uuid = page.text_content("#dataset-uuid")
        row = f"#recent-body tr[data-job-id='{job_id}']"
        page.wait_for_selector(row)
        assert page.get_attribute(row, "data-status") == "pending"

        env = {
            **os.environ,
            "SCLIB_SECRET_KEY": SECRET,
            "SCLIB_DATA_DIR": str(server.data_dir),
        }
        worker_log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sclib",
                "worker",
                "--handlers",
                "sclib.server.handlers:handlers_from_settings",
                "--poll-interval",
                "0.1",
                "--until-idle",
            ],
            env=env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        worker_log.close()
        try:
            page.wait_for_function(
                "() => document.getElementById('job-status').textContent"
                " === 'completed'",
                timeout=60_000,  # includes the worker process starting up
            )
        except Exception:
            log = (tmp_path / "worker.log").read_text(errors="replace")
            pytest.fail(f"the job did not complete; worker said:\n{log[-3000:]}")
        assert page.get_attribute("#job-progress", "value") == "100"
        page.wait_for_selector(f"{row}[data-status='completed']")
        assert page.text_content(f"{row} .pct") == "100%"

        stored = _stored_file(server, dataset_uuid, source.name)
        assert _b3(stored) == _b3(source)
        job = httpx.get(
            f"{server.url}/api/v1/jobs/{job_id}", headers=server.headers()
        ).json()
        assert job["status"] == "completed"
        assert job["dataset_uuid"] == dataset_uuid
        # the upload is forgotten once it is done: the same file would start anew
        assert page.evaluate("Object.keys(localStorage)") == []
        _no_violations(page)

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)
        assert (ARTIFACTS / "ui.png").stat().st_size > 10_000
    finally:
        if worker is not None:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)
        server.stop()


def test_reloaded_page_resumes_the_upload_from_the_server_offset(
    tmp_path: Path, page: Any
) -> None:
    """The browser loses the connection for good after three chunks and the page
    is reloaded; choosing the same file again asks the server (HEAD) for the
    stored upload's offset and continues from there: no new upload is created,
    the first PATCH starts at 3 chunks, the job completes (in-process worker) and
    the file on the server has the file's BLAKE3."""
    server = LiveServer(tmp_path / "data").start()
    try:
        source = _tiff(tmp_path / "stack.tif", seed=2)
        page.goto(server.url + "/ui/")
        _save_token(page, server.token(admin=True))
        # an admin sees the monitor's overview where the server has one
        has_monitor = (
            httpx.get(
                f"{server.url}/api/v1/monitor/overview",
                headers=server.headers(admin=True),
            ).status_code
            == 200
        )
        if has_monitor:
            page.wait_for_selector("#health-checks li")
            assert page.text_content("#overview-source") == "monitor overview"
            assert page.text_content("#health") in ("healthy", "warning", "critical")
            page.wait_for_function(  # the in-process worker, once it has beaten
                "() => document.getElementById('overview-facts').textContent"
                ".includes('live workers: 1')"
            )
        else:
            assert page.text_content("#overview-source") == "queue stats"

        patches = {"n": 0}

        def cut_after_three(route: Any) -> None:
            if route.request.method == "PATCH":
                patches["n"] += 1
                if patches["n"] > 3:
                    route.abort("internetdisconnected")
                    return
            route.continue_()

        page.route("**/files/**", cut_after_three)
        _fill_upload(page, source, "stack")
        page.click("#upload-start")
        while patches["n"] < 5:  # the third chunk went, then a retry failed too
            page.wait_for_timeout(50)
        stored = page.evaluate("Object.values(localStorage)")
        assert len(stored) == 1
        upload_url = json.loads(stored[0])["url"]
        head = httpx.head(
            upload_url, headers={**server.headers(), "Tus-Resumable": "1.0.0"}
        )
        assert head.headers["upload-offset"] == str(3 * CHUNK)

        page.unroute("**/files/**")
        page.reload()
        _save_token(page, server.token(admin=True), enter=True)
        # Enter was handled by the page (no form submission): kept for the tab only
        assert page.evaluate("sessionStorage.getItem('sclib-token')")
        assert page.input_value("#token") == ""
        requests = _record_requests(page)
        _fill_upload(page, source, "stack")
        page.click("#upload-start")
        page.wait_for_function(
            "() => document.getElementById('job-status').textContent === 'completed'"
        )
        assert page.get_attribute("#upload-state", "data-resumed-at") == str(3 * CHUNK)
        assert [m for m, _, _ in requests][:2] == ["HEAD", "PATCH"]
        assert requests[0][1] == upload_url
        assert "POST" not in [m for m, _, _ in requests]
        assert requests[1][2] == str(3 * CHUNK)

        dataset_uuid = page.text_content("#dataset-uuid")
        assert [p.name for p in (server.data_dir / "upload").iterdir()] == [
            dataset_uuid
        ]
        assert _b3(_stored_file(server, dataset_uuid, "stack.tif")) == _b3(source)
        _no_violations(page)
    finally:
        server.stop()


@pytest.mark.slow
def test_upload_continues_after_the_server_is_killed_mid_upload(
    tmp_path: Path, page: Any
) -> None:
    """The server is SIGKILLed while the fourth chunk is on its way (the browser
    gets a refused connection, a real one) and started again on the same port and
    data; the page retries on its own, learns the offset the dead server had made
    durable (HEAD) and sends the rest from there; the job completes and the
    stored file has the file's BLAKE3."""
    server = LiveServer(tmp_path / "data").start()
    try:
        source = _tiff(tmp_path / "run.tif", seed=3)
        page.goto(server.url + "/ui/")
        _save_token(page, server.token())
        requests = _record_requests(page)
        held: list[Any] = []
        patches = {"n": 0}

        def hold_fourth_patch(route: Any) -> None:
            if route.request.method == "PATCH":
                patches["n"] += 1
                if patches["n"] == 4:
                    held.append(route)  # sent on once the server is dead
                    return
            route.continue_()

        page.route("**/files/**", hold_fourth_patch)
        _fill_upload(page, source, "run")
        page.click("#upload-start")
        while not held:
            page.wait_for_timeout(20)
        server.kill()
        held[0].continue_()
        # the PATCH and the immediate HEAD both fail; the next try is in 1 s
        page.wait_for_function(
            "() => document.getElementById('upload-detail').textContent"
            ".includes('retrying in 1000 ms')"
        )
        server.start()
        page.wait_for_function(
            "() => document.getElementById('job-status').textContent === 'completed'"
        )
        offsets = [off for m, _, off in requests if m == "PATCH"]
        assert offsets[3:5] == [str(3 * CHUNK), str(3 * CHUNK)]
        assert [m for m, _, _ in requests].count("POST") == 1
        assert [m for m, _, _ in requests].count("HEAD") >= 2
        dataset_uuid = page.text_content("#dataset-uuid")
        assert _b3(_stored_file(server, dataset_uuid, "run.tif")) == _b3(source)
        _no_violations(page)
    finally:
        server.stop()


def test_failed_job_shows_its_error_as_text_and_retry_queues_it_again(
    tmp_path: Path, page: Any
) -> None:
    """On a --no-auth server the page works without a token. A failed job is
    listed with its error, shown as text even when it looks like HTML; its Retry
    button queues it again (status pending, a 'retried' event) and it leaves the
    failed list."""
    server = LiveServer(
        tmp_path / "data", workers=0, env={"SCLIB_NO_AUTH": "1"}
    ).start()
    try:
        evil = '<img src=x onerror="window.__xss=1"> no dataset with uuid'
        url = Settings(data_dir=server.data_dir).backend_url()
        with JobQueue.open(url) as queue:
            job = queue.enqueue(
                "data_validation",
                dataset_uuid=uuid.uuid4().hex,
                owner="local@localhost",
                max_attempts=1,
            )
            claimed = queue.claim("test-worker")
            assert claimed is not None and claimed.id == job.id
            assert queue.fail(claimed.lease, evil).status == "failed"

        page.goto(server.url + "/ui/")
        row = f"#failed-body tr[data-job-id='{job.id}']"
        page.wait_for_selector(row)
        assert page.text_content(f"{row} td.error") == evil
        assert page.query_selector("#failed-body img") is None
        assert page.evaluate("window.__xss") is None
        assert page.text_content("#token-state") == "no token set"
        failed = page.text_content("#counts [data-status='failed'] .n")
        assert failed == "1"

        page.click(f"{row} button.retry")
        page.wait_for_selector(row, state="detached")
        assert "queued again (pending)" in page.text_content("#message")
        page.wait_for_selector(
            f"#recent-body tr[data-job-id='{job.id}'][data-status='pending']"
        )
        with JobQueue.open(url) as queue:
            assert queue.get(job.id).status == "pending"
            assert "retried" in [e.kind for e in queue.events(job.id)]
        _no_violations(page)
    finally:
        server.stop()
