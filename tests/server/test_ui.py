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
                "sclib.pipeline:handlers_from_settings",
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


# -- the jobs list, the detail view, the token, narrow screens ------------------------


def _tab(browser: Any, width: int = 1200, height: int = 1000, **context: Any) -> Any:
    """A fresh context and tab like the ``page`` fixture's, of the given size
    (and ``timezone_id``...); close its ``context`` when done."""
    ctx = browser.new_context(viewport={"width": width, "height": height}, **context)
    ctx.add_init_script(RECORDER)
    tab = ctx.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.page_errors = errors
    return tab


def _queue(server: LiveServer) -> JobQueue:
    return JobQueue.open(Settings(data_dir=server.data_dir).backend_url())


def _upload_dataset(
    server: LiveServer, name: str, who: str = "alice@example.org"
) -> Any:
    """A dataset named ``name`` made by a one-request upload (its upload job
    stays pending on a server without workers); the upload's answer."""
    answer = httpx.post(
        f"{server.url}/api/upload/upload",
        files={"file": ("scan.bin", b"0123456789")},
        data={"dataset_name": name, "sensor": "OTHER", "convert": "false"},
        headers=server.headers(who),
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _rows(tab: Any, body: str = "#recent-body") -> list[dict[str, Any]]:
    return list(
        tab.evaluate(
            """(body) => [...document.querySelectorAll(`${body} tr`)].map((tr) => ({
                id: tr.dataset.jobId,
                status: tr.dataset.status,
                link: tr.querySelector('.job-link').textContent,
                title: tr.querySelector('.job-link').title,
                type: tr.querySelector('td.type').textContent,
                dataset: (tr.querySelector('td.dataset') || {}).textContent,
                datasetTitle: (tr.querySelector('td.dataset') || {}).title,
                created: (tr.querySelector('td.created') || {}).textContent,
                cancel: Boolean(tr.querySelector('button.cancel')),
            }))""",
            body,
        )
    )


def test_jobs_show_distinct_ids_dataset_names_and_local_dates(
    tmp_path: Path, browser: Any
) -> None:
    """Six jobs made within a second (their ids share the leading time digits)
    show six different short ids, the random end of each id, with the full id
    in the title; the dataset column names the dataset (its uuid in the title);
    creation times are full dates in the browser's time zone (here
    America/Chicago), to the second."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    server = LiveServer(tmp_path / "data", workers=0).start()
    tab = _tab(browser, timezone_id="America/Chicago")
    try:
        made = _upload_dataset(server, "Beamline run 42")
        uuid = made["dataset_uuid"]
        with _queue(server) as queue:
            for _ in range(5):
                queue.enqueue(
                    "data_validation", dataset_uuid=uuid, owner="alice@example.org"
                )
            jobs = {j.id: j for j in queue.list(limit=100)}
        assert len({i[:8] for i in jobs}) == 1  # the defect: one prefix for all

        tab.goto(server.url + "/ui/")
        _save_token(tab, server.token())
        tab.wait_for_function(
            "() => document.querySelectorAll('#recent-body tr').length === 6"
            " && [...document.querySelectorAll('#recent-body td.dataset')]"
            ".every((td) => td.textContent === 'Beamline run 42')"
        )
        rows = _rows(tab)
        assert len({r["link"] for r in rows}) == 6
        for row in rows:
            assert row["link"] == "…" + row["id"][-8:]
            assert row["id"] in row["title"]
            assert row["datasetTitle"] == f"dataset {uuid}"
            created = jobs[row["id"]].created_at.astimezone(ZoneInfo("America/Chicago"))
            assert row["created"] == created.strftime("%Y-%m-%d %H:%M:%S")
            assert datetime.strptime(row["created"], "%Y-%m-%d %H:%M:%S")
        _no_violations(tab)
    finally:
        tab.context.close()
        server.stop()


def test_cancel_buttons_cancel_pending_and_stop_running_jobs(
    tmp_path: Path, page: Any
) -> None:
    """A pending job's Cancel cancels it (the row turns cancelled, the API
    agrees); a running job's asks it to stop (shown as cancelling, the worker
    sees cancel_requested); finished jobs have no Cancel button."""
    server = LiveServer(tmp_path / "data", workers=0).start()
    try:
        with _queue(server) as queue:
            done = queue.enqueue("data_validation", owner="alice@example.org")
            claimed = queue.claim("test-worker")
            assert claimed is not None and claimed.id == done.id
            queue.complete(claimed.lease, {"ok": True})
            running = queue.enqueue("data_validation", owner="alice@example.org")
            lease = queue.claim("test-worker")
            assert lease is not None and lease.id == running.id
            pending = queue.enqueue("backup_creation", owner="alice@example.org")

        page.goto(server.url + "/ui/")
        _save_token(page, server.token())
        row = "#recent-body tr[data-job-id='{}']"
        page.wait_for_selector(row.format(pending.id) + "[data-status='pending']")
        assert page.query_selector(row.format(done.id) + " button.cancel") is None
        assert page.query_selector(row.format(running.id) + " button.cancel")

        page.click(row.format(pending.id) + " button.cancel")
        page.wait_for_selector(row.format(pending.id) + "[data-status='cancelled']")
        assert f"job {pending.id} cancelled" in page.text_content("#message")
        # a cancelled job may be run again
        assert page.query_selector(row.format(pending.id) + " button.retry")

        page.click(row.format(running.id) + " button.cancel")
        page.wait_for_function(
            "(sel) => document.querySelector(sel + ' td.status').textContent"
            " === 'running (cancelling)'",
            arg=row.format(running.id),
        )
        assert "cancel requested" in page.text_content("#message")
        assert page.query_selector(row.format(running.id) + " button.cancel") is None
        with _queue(server) as queue:
            assert queue.get(pending.id).status == "cancelled"
            assert queue.get(running.id).cancel_requested
        _no_violations(page)
    finally:
        server.stop()


def test_job_detail_shows_its_attempts_events_and_error(
    tmp_path: Path, page: Any
) -> None:
    """Clicking a job's id opens its detail: the full id, type, status,
    attempts, dates, the dataset's name, every failed attempt with its error,
    the event history (created, claimed, failed, retried); its Retry button
    queues it again and the view follows; Close hides it; the address
    (#job=<id>) opens it again after a reload."""
    server = LiveServer(
        tmp_path / "data", workers=0, env={"SCLIB_NO_AUTH": "1"}
    ).start()
    try:
        made = _upload_dataset(server, "Detail dataset", who="local@localhost")
        with _queue(server) as queue:
            job = queue.enqueue(
                "data_validation",
                dataset_uuid=made["dataset_uuid"],
                owner="local@localhost",
                max_attempts=1,
            )
            first = queue.claim("worker-a", types=["data_validation"])
            assert first is not None and first.id == job.id
            queue.fail(first.lease, "first boom: <b>not bold</b>")
            queue.retry(job.id)
            second = queue.claim("worker-b", types=["data_validation"])
            assert second is not None and second.id == job.id
            queue.fail(second.lease, "second boom")

        page.goto(server.url + "/ui/")
        link = f"#recent-body tr[data-job-id='{job.id}'] .job-link"
        page.wait_for_selector(link)
        page.click(link)
        page.wait_for_selector("#job-detail[data-loaded='true'][data-status='failed']")
        assert page.text_content("#detail-id") == job.id
        fields = page.evaluate(
            "() => Object.fromEntries([...document.querySelectorAll("
            "'#detail-fields dd')].map((dd) => [dd.dataset.field, dd.textContent]))"
        )
        assert fields["type"] == "data_validation"
        assert fields["status"] == "failed"
        assert fields["attempts"].startswith("2 of at most")
        assert fields["dataset"] == f"Detail dataset ({made['dataset_uuid']})"
        assert fields["worker"] == "worker-b"
        for name in ("created", "started", "finished", "updated"):
            assert len(fields[name]) == 19, (name, fields[name])  # YYYY-MM-DD hh:mm:ss
        assert page.text_content("#detail-error") == "second boom"
        attempts = page.eval_on_selector_all(
            "#detail-attempts li", "(items) => items.map((li) => li.textContent)"
        )
        assert len(attempts) == 2
        assert (
            "first boom: <b>not bold</b>" in attempts[0] and "worker-a" in attempts[0]
        )
        assert "second boom" in attempts[1] and "attempt 2" in attempts[1]
        assert page.query_selector("#detail-attempts b") is None
        kinds = page.eval_on_selector_all(
            "#detail-events li", "(items) => items.map((li) => li.dataset.kind)"
        )
        assert kinds[0] == "created"
        assert kinds.count("claimed") == 2 and kinds.count("failed") == 2
        assert "retried" in kinds
        assert page.is_visible("#detail-retry") and not page.is_visible(
            "#detail-cancel"
        )
        assert page.evaluate("location.hash") == f"#job={job.id}"

        page.reload()
        page.wait_for_selector("#job-detail[data-loaded='true'][data-status='failed']")
        assert page.text_content("#detail-id") == job.id
        page.click("#detail-retry")
        page.wait_for_selector("#job-detail[data-status='pending']")
        assert page.is_visible("#detail-cancel")
        page.click("#detail-close")
        assert not page.is_visible("#job-detail")
        assert page.evaluate("location.hash") == ""
        _no_violations(page)
    finally:
        server.stop()


def test_filters_show_only_jobs_of_the_chosen_status_and_type(
    tmp_path: Path, page: Any
) -> None:
    """The status and type filters narrow the jobs list (and combine); a
    filter nothing matches says so; 'any' shows everything again."""
    server = LiveServer(
        tmp_path / "data", workers=0, env={"SCLIB_NO_AUTH": "1"}
    ).start()
    try:
        with _queue(server) as queue:
            failed_v = queue.enqueue(
                "data_validation", owner="local@localhost", max_attempts=1
            )
            claimed = queue.claim("w")
            assert claimed is not None and claimed.id == failed_v.id
            queue.fail(claimed.lease, "broken")
            pending_v = queue.enqueue("data_validation", owner="local@localhost")
            pending_b = queue.enqueue("backup_creation", owner="local@localhost")

        page.goto(server.url + "/ui/")
        page.wait_for_function(
            "() => document.querySelectorAll('#recent-body tr').length === 3"
        )

        def shown() -> set[str]:
            return {r["id"] for r in _rows(page)}

        def settle(expected: set[str]) -> None:
            page.wait_for_function(
                "(ids) => { const rows = [...document.querySelectorAll("
                "'#recent-body tr')].map((tr) => tr.dataset.jobId).sort();"
                " return JSON.stringify(rows) === JSON.stringify(ids); }",
                arg=sorted(expected),
            )
            assert shown() == expected

        page.select_option("#filter-status", "failed")
        settle({failed_v.id})
        page.select_option("#filter-status", "pending")
        settle({pending_v.id, pending_b.id})
        page.select_option("#filter-type", "backup_creation")
        settle({pending_b.id})
        page.select_option("#filter-status", "failed")
        settle(set())
        assert page.text_content("#recent-empty") == "No jobs match these filters."
        page.select_option("#filter-status", "")
        page.select_option("#filter-type", "data_validation")
        settle({pending_v.id, failed_v.id})
        page.select_option("#filter-type", "")
        settle({pending_v.id, pending_b.id, failed_v.id})
        _no_violations(page)
    finally:
        server.stop()


def test_the_page_fits_a_390px_wide_screen(tmp_path: Path, browser: Any) -> None:
    """On a 390 px wide screen nothing scrolls sideways: not the overview, the
    jobs (shown as labelled cards), a long error or dataset name, nor the open
    detail view. Screenshot in test-artifacts/ui-390.png."""
    server = LiveServer(
        tmp_path / "data", workers=0, env={"SCLIB_NO_AUTH": "1"}
    ).start()
    tab = _tab(browser, width=390, height=844, is_mobile=True, has_touch=True)
    try:
        made = _upload_dataset(
            server, "A dataset with a rather long name " * 3, who="local@localhost"
        )
        with _queue(server) as queue:
            job = queue.enqueue(
                "data_validation",
                dataset_uuid=made["dataset_uuid"],
                owner="local@localhost",
                max_attempts=1,
            )
            lease = queue.claim(
                "a-worker-with-a-long-name-" + "x" * 40, types=["data_validation"]
            )
            assert lease is not None
            queue.fail(lease.lease, "Traceback: " + "a_very_long_identifier_" * 12)

        tab.goto(server.url + "/ui/")
        tab.wait_for_selector(f"#failed-body tr[data-job-id='{job.id}']")
        tab.wait_for_function(
            "() => document.querySelectorAll('#recent-body tr').length === 2"
        )
        width = "document.documentElement.scrollWidth"
        assert tab.evaluate(width) <= 390, tab.evaluate(width)
        # the cards label their cells
        label = tab.evaluate(
            "() => getComputedStyle(document.querySelector("
            "'#recent-body td.type'), '::before').content"
        )
        assert label == '"type: "'
        tab.click(f"#recent-body tr[data-job-id='{job.id}'] .job-link")
        tab.wait_for_selector("#job-detail[data-loaded='true']")
        assert tab.evaluate(width) <= 390, tab.evaluate(width)
        ARTIFACTS.mkdir(exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / "ui-390.png"), full_page=True)
        _no_violations(tab)
    finally:
        tab.context.close()
        server.stop()


def test_a_rejected_token_is_told_apart_from_a_missing_one(
    tmp_path: Path, page: Any
) -> None:
    """No token: the page says the server needs one. A wrong token (an unknown
    string, an expired JWT): it says the server rejected this token, with the
    server's reason, and the token state turns red. A valid token clears
    both."""
    import time as _time

    import jwt

    server = LiveServer(tmp_path / "data", workers=0).start()
    try:
        page.goto(server.url + "/ui/")
        page.wait_for_selector("#message[data-reason='missing']")
        assert "needs a token" in page.text_content("#message")
        assert page.get_attribute("#message", "data-kind") == "auth"

        page.fill("#token", "not-a-token")
        page.click("#token-save")
        page.wait_for_selector("#message[data-reason='rejected']")
        message = page.text_content("#message")
        assert "rejected this token" in message
        assert "not a known API token" in message  # the server's own reason
        assert "needs a token" not in message
        assert page.text_content("#token-state") == (
            "the token set for this tab was rejected"
        )

        expired = jwt.encode(
            {"email": "alice@example.org", "exp": int(_time.time()) - 3600},
            SECRET,
            algorithm="HS256",
        )
        page.fill("#token", expired)
        page.click("#token-save")
        page.wait_for_function(
            "() => document.getElementById('message').textContent.includes('expired')"
        )
        assert page.get_attribute("#message", "data-reason") == "rejected"

        _save_token(page, server.token())
        assert page.text_content("#message") == ""
        assert page.text_content("#token-state") == "a token is set for this tab"
        _no_violations(page)
    finally:
        server.stop()


def test_the_same_file_for_another_dataset_is_a_new_upload(
    tmp_path: Path, page: Any
) -> None:
    """The page's tus client forgets a finished upload and keys the ones it
    remembers by file and dataset fields: the same file uploaded again for
    another dataset is a new upload (POST) and a new dataset, never a HEAD of
    the finished one; a paused upload for dataset 'third' is not continued
    when the file is chosen for 'fourth', and is continued (HEAD, PATCH from
    its offset, no POST) when it is chosen for 'third' again."""
    server = LiveServer(tmp_path / "data").start()
    try:
        source = _tiff(tmp_path / "same.tif", seed=4)
        page.goto(server.url + "/ui/")
        _save_token(page, server.token())

        def upload(name: str) -> tuple[str, list[tuple[str, str, str | None]]]:
            requests = _record_requests(page)
            _fill_upload(page, source, name)
            page.click("#upload-start")
            page.wait_for_function(  # the page clears the last upload's job
                "() => document.getElementById('job-id').textContent !== ''"
                " && document.getElementById('job-status').textContent"
                " === 'completed'",
                timeout=60_000,
            )
            return page.text_content("#dataset-uuid"), list(requests)

        first, seen_first = upload("first")
        assert [m for m, _, _ in seen_first].count("POST") == 1
        assert page.evaluate("Object.keys(localStorage)") == []
        second, seen_second = upload("second")
        assert second != first
        assert seen_second[0][0] == "POST"
        assert "HEAD" not in [m for m, _, _ in seen_second]

        # an upload for 'third', paused after its first chunk
        patches = {"n": 0}

        def one_patch_only(route: Any) -> None:
            if route.request.method == "PATCH":
                patches["n"] += 1
                if patches["n"] > 1:
                    route.abort("connectionreset")
                    return
            route.continue_()

        page.route("**/files/**", one_patch_only)
        _fill_upload(page, source, "third")
        page.click("#upload-start")
        while patches["n"] < 2:
            page.wait_for_timeout(20)
        page.click("#upload-pause")
        page.wait_for_function(
            "() => document.getElementById('upload-state').textContent === 'paused'"
        )
        page.unroute("**/files/**")
        third = page.text_content("#dataset-uuid")
        stored = page.evaluate("Object.values(localStorage)")
        assert len(stored) == 1
        third_url = json.loads(stored[0])["url"]

        fourth, seen_fourth = upload("fourth")
        assert fourth not in (first, second, third)
        assert seen_fourth[0][0] == "POST"
        assert third_url not in [u for _, u, _ in seen_fourth]
        assert len(page.evaluate("Object.keys(localStorage)")) == 1  # third's

        again, seen_again = upload("third")
        assert again == third
        assert seen_again[0][:2] == ("HEAD", third_url)
        assert "POST" not in [m for m, _, _ in seen_again]
        assert seen_again[1][2] == str(CHUNK)  # continued after the first chunk
        assert page.evaluate("Object.keys(localStorage)") == []
        folders = {p.name for p in (server.data_dir / "upload").iterdir()}
        assert folders == {first, second, third, fourth}
        _no_violations(page)
    finally:
        server.stop()
