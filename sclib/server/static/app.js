// sclib status page: queue overview, jobs (filters, Cancel, Retry, a detail view
// with events and attempts), failed jobs, and a tus upload form.
// Plain DOM: user data is only ever set with textContent.

import { TusUpload } from "./tus.js";

const POLL_MS = 1500;
const RECENT = 15;
const FAILED = 20;
const PAGE = 100;
const TOKEN_KEY = "sclib-token";
const FINISHED = new Set(["completed", "failed", "cancelled"]);
// the job types sclib knows; others are added as the server reports them
const JOB_TYPES = [
  "upload",
  "file_extraction",
  "dataset_conversion",
  "data_compression",
  "data_validation",
  "backup_creation",
  "google_sync",
  "rsync_transfer",
  "file_upload",
];
// a dataset name not found (404) is asked for again after this long
const NAME_RETRY_MS = 30000;
const NAMES_PER_REFRESH = 20;

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

let tokenRejected = false;

function token() {
  return window.sessionStorage.getItem(TOKEN_KEY) || "";
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

function showToken() {
  let text = "no token set";
  if (token()) {
    text = tokenRejected
      ? "the token set for this tab was rejected"
      : "a token is set for this tab";
  }
  $("token-state").textContent = text;
  $("token-state").dataset.rejected = tokenRejected ? "true" : "false";
}

// -- talking to the API ----------------------------------------------------------

async function api(path, options = {}) {
  const sent = token();
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
    const err = new ApiError(response.status, detail || `HTTP ${response.status}`);
    err.withToken = Boolean(sent);
    throw err;
  }
  return body;
}

function say(text, kind = "info", reason = "") {
  const box = $("message");
  box.textContent = text;
  box.dataset.kind = text ? kind : "";
  box.dataset.reason = reason;
}

function authProblem(err) {
  // a 401 with a token: the token is wrong (expired, another server's, mistyped);
  // without one: the server needs one
  if (err.withToken) {
    return {
      reason: "rejected",
      text:
        `The server rejected this token (${err.message}). ` +
        "Paste a valid one above and press Save.",
    };
  }
  return {
    reason: "missing",
    text: "This server needs a token: paste one above and press Save.",
  };
}

function explain(err) {
  if (err instanceof ApiError && err.status === 401) return authProblem(err).text;
  return err.message || String(err);
}

// -- small DOM helpers -------------------------------------------------------------

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function cell(label, text, className) {
  const td = el("td", text, className);
  td.dataset.label = label;
  return td;
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
  const td = cell("progress", null, "progress");
  const bar = el("progress");
  bar.max = 100;
  bar.value = percentOf(job);
  td.append(bar, el("span", `${Math.round(percentOf(job))}%`, "pct"));
  return td;
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

// "2025-03-04 14:05:09" in the browser's time zone; the ISO text as it came
// (with its UTC offset) goes into the title
function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

function dateCell(label, iso, className) {
  const td = cell(label, when(iso), className);
  if (iso) td.title = `${iso} (shown in local time)`;
  return td;
}

// Job ids begin with their creation time (48 bits of milliseconds): jobs made
// together share those digits. The last 8 hex digits are random.
function shortId(id) {
  const text = String(id);
  return text.length > 8 ? `…${text.slice(-8)}` : text;
}

function jobLink(job) {
  const button = el("button", shortId(job.job_id), "job-link");
  button.type = "button";
  button.title = `job ${job.job_id} (details)`;
  button.addEventListener("click", () => openDetail(job.job_id));
  return button;
}

// -- dataset names -------------------------------------------------------------------

const datasets = new Map(); // uuid -> {name} | {missing: time of the 404}

async function loadDatasetNames() {
  try {
    const page = await api("api/v1/datasets?limit=1000");
    for (const d of page.datasets || []) datasets.set(d.uuid, { name: d.name });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) throw err;
    // names are a nicety: the rest of the page works without them
  }
}

async function learnNames(jobs) {
  const now = Date.now();
  const wanted = [];
  for (const job of jobs) {
    const uuid = job.dataset_uuid;
    if (!uuid || wanted.includes(uuid)) continue;
    const known = datasets.get(uuid);
    if (known && (known.name !== undefined || now - known.missing < NAME_RETRY_MS)) continue;
    wanted.push(uuid);
  }
  for (const uuid of wanted.slice(0, NAMES_PER_REFRESH)) {
    try {
      const d = await api(`api/v1/datasets/${encodeURIComponent(uuid)}`);
      datasets.set(uuid, { name: d.name });
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) throw err;
      datasets.set(uuid, { missing: now });
    }
  }
}

function datasetCell(uuid) {
  const td = cell("dataset", null, "dataset");
  if (!uuid) return td;
  const known = datasets.get(uuid);
  if (known && known.name !== undefined) {
    td.textContent = known.name;
  } else {
    td.textContent = `${String(uuid).slice(0, 8)}…`;
    td.classList.add("muted");
  }
  td.title = `dataset ${uuid}`;
  return td;
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

function learnTypes(byType) {
  if (!byType || typeof byType !== "object") return;
  const select = $("filter-type");
  const have = new Set([...select.options].map((o) => o.value));
  for (const type of Object.keys(byType).sort()) {
    if (!have.has(type)) select.append(new Option(type, type));
  }
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
  if (!counts) {
    const stats = await api("api/v1/jobs/queue/stats");
    counts = stats.by_status;
    learnTypes(stats.by_type);
  } else {
    learnTypes(overview.by_type);
  }
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

// -- jobs: the tail of an oldest-first list -------------------------------------------

const tailEnds = new Map(); // query -> how many jobs it had at the last look

async function listJobs(query, limit, offset) {
  const sep = query ? "&" : "";
  return api(`api/v1/jobs?${query}${sep}limit=${limit}&offset=${offset}`);
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

function filterQuery() {
  const params = new URLSearchParams();
  const status = $("filter-status").value;
  const type = $("filter-type").value;
  if (status) params.set("status", status);
  if (type) params.set("job_type", type);
  return params.toString();
}

function cancellable(job) {
  return (job.status === "pending" || job.status === "running") && !job.cancel_requested;
}

function actionButtons(job) {
  const td = cell("", null, "actions");
  if (cancellable(job)) {
    const cancel = el("button", "Cancel", "cancel");
    cancel.type = "button";
    cancel.title = `cancel job ${job.job_id}`;
    cancel.addEventListener("click", () => cancelJob(job.job_id, cancel));
    td.append(cancel);
  } else if (job.cancel_requested && !FINISHED.has(job.status)) {
    td.append(el("span", "cancel requested", "muted"));
  }
  if (job.status === "failed" || job.status === "cancelled") {
    const retry = el("button", "Retry", "retry");
    retry.type = "button";
    retry.title = `run job ${job.job_id} again`;
    retry.addEventListener("click", () => retryJob(job.job_id, retry));
    td.append(retry);
  }
  return td;
}

function jobRow(job) {
  const row = el("tr");
  row.dataset.jobId = job.job_id;
  row.dataset.status = job.status;
  const id = cell("job", null, "id");
  id.append(jobLink(job));
  row.append(
    id,
    cell("type", job.job_type, "type"),
    cell("status", job.cancel_requested && !FINISHED.has(job.status)
      ? `${job.status} (cancelling)` : job.status, "status"),
    progressCell(job),
    datasetCell(job.dataset_uuid),
    dateCell("created", job.created_at, "created"),
    dateCell("updated", job.updated_at, "updated"),
    actionButtons(job),
  );
  return row;
}

async function refreshRecent() {
  const query = filterQuery();
  const jobs = await tail(query, RECENT);
  await learnNames(jobs);
  for (const job of jobs) learnTypes({ [job.job_type]: 1 });
  $("recent-body").replaceChildren(...jobs.map(jobRow));
  $("recent-empty").hidden = jobs.length > 0;
  $("recent-empty").textContent = query ? "No jobs match these filters." : "No jobs yet.";
  $("filter-note").textContent = jobs.length ? `the ${jobs.length} newest` : "";
}

async function retryJob(jobId, button) {
  button.disabled = true;
  try {
    const again = await api(`api/v1/jobs/${encodeURIComponent(jobId)}/retry`, {
      method: "POST",
    });
    say(`job ${jobId} queued again (${again.status})`, "ok");
    await refresh();
  } catch (err) {
    say(`retry of ${jobId} failed: ${explain(err)}`, "error");
    button.disabled = false;
  }
}

async function cancelJob(jobId, button) {
  button.disabled = true;
  try {
    const job = await api(`api/v1/jobs/${encodeURIComponent(jobId)}/cancel`, {
      method: "POST",
    });
    if (job.status === "cancelled") say(`job ${jobId} cancelled`, "ok");
    else say(`job ${jobId}: cancel requested; it stops at its next check`, "ok");
    await refresh();
  } catch (err) {
    say(`cancel of ${jobId} failed: ${explain(err)}`, "error");
    button.disabled = false;
  }
}

function failedRow(job) {
  const row = el("tr");
  row.dataset.jobId = job.job_id;
  row.dataset.status = job.status;
  const id = cell("job", null, "id");
  id.append(jobLink(job));
  const button = el("button", "Retry", "retry");
  button.type = "button";
  button.addEventListener("click", () => retryJob(job.job_id, button));
  const action = cell("", null, "actions");
  action.append(button);
  row.append(
    id,
    cell("type", job.job_type, "type"),
    datasetCell(job.dataset_uuid),
    cell("attempts", `${job.attempts}/${job.max_attempts}`, "attempts"),
    cell("error", job.error || "", "error"),
    dateCell("failed", job.finished_at || job.updated_at, "updated"),
    action,
  );
  return row;
}

async function refreshFailed() {
  const jobs = await tail("status=failed", FAILED);
  await learnNames(jobs);
  $("failed-body").replaceChildren(...jobs.map(failedRow));
  $("failed-empty").hidden = jobs.length > 0;
}

// -- one job in detail ------------------------------------------------------------------

let detailJob = null;

function openDetail(jobId) {
  detailJob = jobId;
  $("job-detail").hidden = false;
  $("detail-id").textContent = jobId;
  $("detail-fields").replaceChildren();
  $("job-detail").dataset.jobId = jobId;
  $("job-detail").dataset.loaded = "false";
  if (window.location.hash !== `#job=${jobId}`) {
    window.history.replaceState(null, "", `#job=${encodeURIComponent(jobId)}`);
  }
  refresh().then(() => $("job-detail").scrollIntoView({ block: "nearest" }));
}

function closeDetail() {
  detailJob = null;
  $("job-detail").hidden = true;
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
}

function field(list, name, value, title) {
  if (value === undefined || value === null || value === "") return;
  const dt = el("dt", name);
  const dd = el("dd", value);
  dd.dataset.field = name;
  if (title) dd.title = title;
  list.append(dt, dd);
}

function historyItem(parts) {
  const li = el("li");
  for (const [text, className] of parts) {
    if (text === undefined || text === null || text === "") continue;
    li.append(el("span", text, className));
  }
  return li;
}

function renderDetail(job) {
  const list = $("detail-fields");
  list.replaceChildren();
  const name = job.dataset_uuid && datasets.get(job.dataset_uuid);
  field(list, "type", job.job_type);
  field(list, "status", job.cancel_requested && !FINISHED.has(job.status)
    ? `${job.status} (cancel requested)` : job.status);
  field(list, "progress", `${Math.round(percentOf(job))}%` +
    (job.progress && job.progress.message ? ` · ${job.progress.message}` : ""));
  if (job.dataset_uuid) {
    const label = name && name.name !== undefined ? `${name.name} (${job.dataset_uuid})`
      : job.dataset_uuid;
    field(list, "dataset", label);
    field(list, "dataset status", job.dataset_status);
  }
  field(list, "owner", job.owner);
  field(list, "attempts", `${job.attempts} of at most ${job.max_attempts}`);
  field(list, "created", when(job.created_at), job.created_at);
  field(list, "started", when(job.started_at), job.started_at);
  field(list, "finished", when(job.finished_at), job.finished_at);
  field(list, "updated", when(job.updated_at), job.updated_at);
  if (job.run_at && !FINISHED.has(job.status)) {
    field(list, "runs at", when(job.run_at), job.run_at);
  }
  field(list, "worker", job.worker_id);
  if (Array.isArray(job.depends_on) && job.depends_on.length) {
    field(list, "waits for", job.depends_on.join(", "));
  }
  $("detail-error").textContent = job.error || "";

  const attempts = Array.isArray(job.error_history) ? job.error_history : [];
  $("detail-attempts").replaceChildren(
    ...attempts.map((e) => historyItem([
      [`attempt ${e.attempt}`, "attempt"],
      [when(e.at), "at"],
      [e.kind, "kind"],
      [e.worker_id ? `on ${e.worker_id}` : "", "worker"],
      [e.error, "error"],
    ])),
  );
  $("detail-attempts-empty").hidden = attempts.length > 0;

  const events = Array.isArray(job.events) ? job.events : [];
  $("detail-events").replaceChildren(
    ...events.map((e) => {
      const li = historyItem([
        [when(e.at), "at"],
        [e.kind, "kind"],
        [e.attempt ? `attempt ${e.attempt}` : "", "attempt"],
        [e.worker_id ? `on ${e.worker_id}` : "", "worker"],
        [e.message, "message"],
      ]);
      li.dataset.kind = e.kind;
      return li;
    }),
  );
  const noResult = FINISHED.has(job.status) ? "none" : "none yet";
  $("detail-result").textContent =
    job.result === null || job.result === undefined
      ? noResult
      : JSON.stringify(job.result, null, 2);

  const cancel = $("detail-cancel");
  cancel.hidden = !cancellable(job);
  cancel.disabled = false;
  const retry = $("detail-retry");
  retry.hidden = !(job.status === "failed" || job.status === "cancelled");
  retry.disabled = false;
  $("job-detail").dataset.status = job.status;
  $("job-detail").dataset.loaded = "true";
}

async function refreshDetail() {
  if (!detailJob) return;
  const jobId = detailJob;
  let job;
  try {
    job = await api(`api/v1/jobs/${encodeURIComponent(jobId)}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      $("detail-error").textContent = "no such job (deleted, or not visible with this token)";
      $("job-detail").dataset.loaded = "true";
      return;
    }
    throw err;
  }
  if (jobId !== detailJob) return; // another job was opened meanwhile
  await learnNames([job]);
  renderDetail(job);
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
  if (FINISHED.has(job.status)) {
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
  $("upload-state").dataset.resumedAt = "";
  $("job-box").hidden = true;
  $("job-id").textContent = "";
  $("job-status").textContent = "...";
  $("job-status").dataset.status = "";
  $("job-error").textContent = "";
  $("dataset-uuid").textContent = "";
  trackedJob = null;
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
    const problem =
      err.status === 401
        ? authProblem({ withToken: Boolean(token()), message: err.message }).text
        : err.message;
    say(`upload: ${problem}`, "error");
  } finally {
    $("upload-start").disabled = false;
    $("upload-pause").disabled = true;
    upload = null;
  }
}

// -- the loop ------------------------------------------------------------------------

let refreshing = null;
let again = false;
let namesLoaded = false;

async function refreshOnce() {
  try {
    await refreshOverview();
    if (!namesLoaded) {
      await loadDatasetNames();
      namesLoaded = true;
    }
    await refreshRecent();
    await refreshFailed();
    await refreshTracked();
    await refreshDetail();
    $("updated").textContent = when(new Date().toISOString());
    if (tokenRejected) {
      tokenRejected = false;
      showToken();
    }
    if ($("message").dataset.kind === "auth") say("");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      const problem = authProblem(err);
      if (tokenRejected !== (problem.reason === "rejected")) {
        tokenRejected = problem.reason === "rejected";
        showToken();
      }
      say(problem.text, "auth", problem.reason);
    } else {
      say(`could not refresh: ${explain(err)}`, "error");
    }
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
  for (const type of JOB_TYPES) $("filter-type").append(new Option(type, type));
  showToken();
  const saveToken = (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (value) window.sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    tokenRejected = false;
    showToken();
    monitorUsable = true;
    namesLoaded = false;
    datasets.clear();
    tailEnds.clear();
    refresh();
  };
  // Enter in the token field submits the form: handled here, never sent anywhere
  $("token-form").addEventListener("submit", saveToken);
  $("token-save").addEventListener("click", saveToken);
  $("token-clear").addEventListener("click", () => {
    window.sessionStorage.removeItem(TOKEN_KEY);
    tokenRejected = false;
    showToken();
    datasets.clear();
    tailEnds.clear();
    refresh();
  });
  const refilter = () => {
    $("recent-body").replaceChildren();
    refresh();
  };
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("filter-status").addEventListener("change", refilter);
  $("filter-type").addEventListener("change", refilter);
  $("detail-close").addEventListener("click", closeDetail);
  $("detail-cancel").addEventListener("click", () => {
    if (detailJob) cancelJob(detailJob, $("detail-cancel"));
  });
  $("detail-retry").addEventListener("click", () => {
    if (detailJob) retryJob(detailJob, $("detail-retry"));
  });
  $("job-open").addEventListener("click", () => {
    const id = $("job-id").textContent;
    if (id) openDetail(id);
  });
  $("upload-form").addEventListener("submit", startUpload);
  $("upload-pause").addEventListener("click", () => upload && upload.pause());
  const linked = /^#job=([^&]+)$/.exec(window.location.hash);
  if (linked) openDetail(decodeURIComponent(linked[1]));
  loop();
}

main();
