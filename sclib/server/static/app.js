// sclib status page: queue overview, recent jobs, failed jobs with Retry, and a
// tus upload form. Plain DOM: user data is only ever set with textContent.

import { TusUpload } from "./tus.js";

const POLL_MS = 1500;
const RECENT = 15;
const FAILED = 20;
const PAGE = 100;
const TOKEN_KEY = "sclib-token";

// The page lives at <base>/ui/; the API at <base>/.
const BASE = new URL("../", window.location.href);
const TUS_ENDPOINT = new URL("files/", BASE).href;

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// -- the token -----------------------------------------------------------------

function token() {
  return window.sessionStorage.getItem(TOKEN_KEY) || "";
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

function showToken() {
  $("token-state").textContent = token() ? "a token is set for this tab" : "no token set";
}

// -- talking to the API ----------------------------------------------------------

async function api(path, options = {}) {
  const response = await fetch(new URL(path, BASE), {
    ...options,
    headers: { Accept: "application/json", ...authHeaders(), ...(options.headers || {}) },
    cache: "no-store",
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : response.statusText;
    throw new ApiError(response.status, detail || `HTTP ${response.status}`);
  }
  return body;
}

function say(text, kind = "info") {
  const box = $("message");
  box.textContent = text;
  box.dataset.kind = kind;
}

function explain(err) {
  if (err instanceof ApiError && err.status === 401) {
    return "This server needs a token: paste one above and press Save.";
  }
  return err.message || String(err);
}

// -- small DOM helpers -------------------------------------------------------------

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function percentOf(job) {
  if (job.status === "completed") return 100;
  const p = job.progress || {};
  if (typeof p.percentage === "number") return Math.max(0, Math.min(100, p.percentage));
  if (typeof p.bytes_done === "number" && p.bytes_total) {
    return Math.max(0, Math.min(100, (100 * p.bytes_done) / p.bytes_total));
  }
  return 0;
}

function progressCell(job) {
  const cell = el("td", null, "progress");
  const bar = el("progress");
  bar.max = 100;
  bar.value = percentOf(job);
  cell.append(bar, el("span", `${Math.round(percentOf(job))}%`, "pct"));
  return cell;
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleTimeString();
}

function shortId(id) {
  return String(id).slice(0, 8);
}

// -- the queue overview ------------------------------------------------------------

let monitorUsable = true; // until /api/v1/monitor/overview says 404 or 403
let monitorWhyNot = "";

function countsFrom(overview) {
  const candidates = [
    overview.by_status,
    overview.status_counts,
    overview.counts && overview.counts.by_status,
    overview.jobs && overview.jobs.by_status,
    overview.queue && overview.queue.by_status,
  ];
  return candidates.find((c) => c && typeof c === "object") || null;
}

async function refreshOverview() {
  let overview = null;
  if (monitorUsable) {
    try {
      overview = await api("api/v1/monitor/overview");
    } catch (err) {
      if (!(err instanceof ApiError) || ![403, 404, 405].includes(err.status)) throw err;
      monitorUsable = false; // not on this server, or not for this user
      monitorWhyNot =
        err.status === 403 ? "shown to admins only" : "not reported by this server";
    }
  }
  let counts = overview ? countsFrom(overview) : null;
  if (!counts) counts = (await api("api/v1/jobs/queue/stats")).by_status;
  $("overview-source").textContent = overview ? "monitor overview" : "queue stats";
  const list = $("counts");
  list.replaceChildren();
  for (const [status, n] of Object.entries(counts)) {
    const item = el("div", null, "count");
    item.dataset.status = status;
    item.append(el("span", n, "n"), el("span", status, "label"));
    list.append(item);
  }
  const health = $("health");
  const checks = $("health-checks");
  checks.replaceChildren();
  const status = overview && overview.health_status;
  if (status && typeof status === "object") {
    health.textContent = String(status.overall || "unknown");
    health.dataset.level = String(status.overall || "unknown");
    for (const check of Array.isArray(status.checks) ? status.checks : []) {
      if (!check || typeof check !== "object") continue;
      const name = check.name || check.check || "";
      const level = check.status || check.level || "";
      const why = check.message || check.reason || check.detail || "";
      checks.append(el("li", [name, level, why].filter(Boolean).join(": ")));
    }
  } else {
    health.textContent = monitorWhyNot || "not reported by this server";
    health.dataset.level = "unknown";
  }
  const facts = [];
  if (overview) {
    const age = overview.oldest_pending_age_seconds;
    if (typeof age === "number") facts.push(`oldest waiting job: ${Math.round(age)} s`);
    if (typeof overview.live_workers === "number") {
      facts.push(`live workers: ${overview.live_workers}`);
    }
    if (typeof overview.active_uploads === "number") {
      facts.push(`uploads in progress: ${overview.active_uploads}`);
    }
  }
  $("overview-facts").textContent = facts.join(" · ");
}

// -- recent and failed jobs: the tail of an oldest-first list ----------------------

const tailEnds = new Map(); // query -> how many jobs it had at the last look

async function listJobs(query, limit, offset) {
  return api(`api/v1/jobs?${query}&limit=${limit}&offset=${offset}`);
}

async function countJobs(query) {
  // galloping search for the end of the list: about 2*log2(n) small requests, once
  const exists = async (offset) => (await listJobs(query, 1, offset)).count > 0;
  if (!(await exists(0))) return 0;
  let lo = 0;
  let hi = 1;
  while (await exists(hi)) {
    lo = hi;
    hi *= 2;
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (await exists(mid)) lo = mid;
    else hi = mid;
  }
  return hi;
}

async function tail(query, n) {
  if (!tailEnds.has(query)) tailEnds.set(query, await countJobs(query));
  const start = Math.max(0, tailEnds.get(query) - n);
  let jobs = [];
  for (;;) {
    const page = await listJobs(query, PAGE, start + jobs.length);
    jobs = jobs.concat(page.jobs);
    if (page.count < PAGE) break;
  }
  if (jobs.length === 0 && start > 0) {
    tailEnds.delete(query); // jobs were cleaned up: find the end again
    return tail(query, n);
  }
  tailEnds.set(query, start + jobs.length);
  return jobs.slice(-n).reverse();
}

function jobRow(job) {
  const row = el("tr");
  row.dataset.jobId = job.job_id;
  row.dataset.status = job.status;
  const id = el("td", shortId(job.job_id), "id");
  id.title = job.job_id;
  row.append(
    id,
    el("td", job.job_type, "type"),
    el("td", job.status, "status"),
    progressCell(job),
    el("td", job.dataset_uuid ? shortId(job.dataset_uuid) : "", "dataset"),
    el("td", when(job.updated_at), "updated"),
  );
  return row;
}

async function refreshRecent() {
  const jobs = await tail("", RECENT);
  const body = $("recent-body");
  body.replaceChildren(...jobs.map(jobRow));
  $("recent-empty").hidden = jobs.length > 0;
}

async function retry(job, button) {
  button.disabled = true;
  try {
    const again = await api(`api/v1/jobs/${encodeURIComponent(job.job_id)}/retry`, {
      method: "POST",
    });
    say(`job ${job.job_id} queued again (${again.status})`, "ok");
    await refresh();
  } catch (err) {
    say(`retry of ${job.job_id} failed: ${explain(err)}`, "error");
    button.disabled = false;
  }
}

function failedRow(job) {
  const row = el("tr");
  row.dataset.jobId = job.job_id;
  const id = el("td", shortId(job.job_id), "id");
  id.title = job.job_id;
  const button = el("button", "Retry", "retry");
  button.type = "button";
  button.addEventListener("click", () => retry(job, button));
  const action = el("td");
  action.append(button);
  row.append(
    id,
    el("td", job.job_type, "type"),
    el("td", `${job.attempts}/${job.max_attempts}`, "attempts"),
    el("td", job.error || "", "error"),
    el("td", when(job.finished_at || job.updated_at), "updated"),
    action,
  );
  return row;
}

async function refreshFailed() {
  const jobs = await tail("status=failed", FAILED);
  $("failed-body").replaceChildren(...jobs.map(failedRow));
  $("failed-empty").hidden = jobs.length > 0;
}

// -- the upload form ---------------------------------------------------------------

let upload = null;
let trackedJob = null;

function showUploadProgress(sent, total) {
  const bar = $("upload-progress");
  const pct = total ? (100 * sent) / total : 100;
  bar.value = pct;
  const mib = (n) => (n / 1048576).toFixed(1);
  $("upload-text").textContent = `${mib(sent)} of ${mib(total)} MiB (${Math.floor(pct)}%)`;
}

async function refreshTracked() {
  if (!trackedJob) return;
  let job;
  try {
    job = await api(`api/v1/jobs/${encodeURIComponent(trackedJob)}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      $("job-status").textContent = "gone (deleted, or not visible with this token)";
      trackedJob = null;
      return;
    }
    throw err;
  }
  $("job-status").textContent = job.status;
  $("job-status").dataset.status = job.status;
  $("job-progress").value = percentOf(job);
  $("job-pct").textContent = `${Math.round(percentOf(job))}%`;
  $("job-error").textContent = job.error || "";
  if (job.status === "completed" || job.status === "failed" || job.status === "cancelled") {
    trackedJob = null; // finished: stop asking
  }
}

function formValues() {
  const file = $("file").files[0];
  if (!file) throw new Error("choose a file first");
  const name = $("dataset-name").value.trim();
  if (!name) throw new Error("dataset name: required");
  const kib = Number($("chunk-kib").value);
  if (!Number.isFinite(kib) || kib < 64) throw new Error("chunk size: at least 64 KiB");
  return {
    file,
    chunkSize: Math.floor(kib) * 1024,
    metadata: {
      filename: file.name,
      filetype: file.type || "application/octet-stream",
      dataset_name: name,
      sensor: $("sensor").value,
      convert: $("convert").checked ? "true" : "false",
    },
  };
}

async function startUpload(event) {
  event.preventDefault();
  let values;
  try {
    values = formValues();
  } catch (err) {
    say(err.message, "error");
    return;
  }
  $("upload-start").disabled = true;
  $("upload-pause").disabled = false;
  $("upload-state").textContent = "uploading";
  $("job-box").hidden = true;
  upload = new TusUpload(values.file, {
    endpoint: TUS_ENDPOINT,
    headers: authHeaders(),
    metadata: values.metadata,
    chunkSize: values.chunkSize,
    onProgress: showUploadProgress,
    onStatus: (text) => {
      $("upload-detail").textContent = text;
    },
    onCreated: ({ datasetUuid }) => {
      $("dataset-uuid").textContent = datasetUuid || "";
    },
  });
  try {
    const done = await upload.start();
    $("upload-state").textContent =
      done.resumedAt === null ? "uploaded" : `uploaded (resumed at byte ${done.resumedAt})`;
    $("upload-state").dataset.resumedAt = done.resumedAt === null ? "" : String(done.resumedAt);
    $("upload-detail").textContent = "";
    $("dataset-uuid").textContent = done.datasetUuid || "";
    $("job-id").textContent = done.jobId;
    $("job-box").hidden = false;
    trackedJob = done.jobId;
    say(`upload complete; following job ${done.jobId}`, "ok");
    await refresh();
  } catch (err) {
    $("upload-state").textContent = err.resumable ? "paused" : "failed";
    say(`upload: ${err.status === 401 ? explain(new ApiError(401, "")) : err.message}`, "error");
  } finally {
    $("upload-start").disabled = false;
    $("upload-pause").disabled = true;
    upload = null;
  }
}

// -- the loop ------------------------------------------------------------------------

let refreshing = null;
let again = false;

async function refreshOnce() {
  try {
    await refreshOverview();
    await refreshRecent();
    await refreshFailed();
    await refreshTracked();
    $("updated").textContent = new Date().toLocaleTimeString();
    if ($("message").dataset.kind === "auth") say("");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) say(explain(err), "auth");
    else say(`could not refresh: ${explain(err)}`, "error");
  }
}

function refresh() {
  // one refresh at a time; asking during one runs another right after it
  if (refreshing) {
    again = true;
    return refreshing;
  }
  refreshing = (async () => {
    do {
      again = false;
      await refreshOnce();
    } while (again);
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

async function loop() {
  await refresh();
  window.setTimeout(loop, POLL_MS);
}

function main() {
  showToken();
  const saveToken = (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (value) window.sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    showToken();
    monitorUsable = true;
    tailEnds.clear();
    refresh();
  };
  // Enter in the token field submits the form: handled here, never sent anywhere
  $("token-form").addEventListener("submit", saveToken);
  $("token-save").addEventListener("click", saveToken);
  $("token-clear").addEventListener("click", () => {
    window.sessionStorage.removeItem(TOKEN_KEY);
    showToken();
    refresh();
  });
  $("upload-form").addEventListener("submit", startUpload);
  $("upload-pause").addEventListener("click", () => upload && upload.pause());
  loop();
}

main();
