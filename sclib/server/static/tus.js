// A small tus 1.0.0 client for sclib's status page (creation, HEAD, PATCH).
//
// Resume: the upload's URL is kept in localStorage under the file's fingerprint
// (endpoint, name, type, size, last modified) and the upload's metadata (the
// dataset fields). Starting the same file for the same dataset again asks the
// server for its offset (HEAD) and sends only the rest; the same file for
// another dataset is a new upload. A finished upload's URL is forgotten at once
// (tus-js-client keeps it unless told `removeFingerprintOnSuccess`, and then
// choosing the file again only HEADs the old upload: no new dataset).
//
// Inside one run, a dropped connection, a 409 (offset mismatch), 423 (busy) or a
// 5xx is retried after the delays in `retryDelays`, each time from the offset the
// server reports; the counter starts over after every chunk that got through.
//
// Written for this page rather than vendored: the server's tus subset is known,
// and 250 readable lines are easier to audit than a 60 KB bundle.

export const STORAGE_PREFIX = "sclib-tus::";

export class TusError extends Error {
  constructor(message, status = 0, resumable = false) {
    super(message);
    this.name = "TusError";
    this.status = status;
    this.resumable = resumable;
  }
}

export function fingerprint(file, endpoint, metadata = {}) {
  const fields = Object.entries(metadata)
    .filter(([, value]) => value !== undefined && value !== null)
    .map(([key, value]) => [key, String(value)])
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return STORAGE_PREFIX + JSON.stringify([
    endpoint, file.name, file.type, file.size, file.lastModified, fields,
  ]);
}

function base64(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export function encodeMetadata(metadata) {
  return Object.entries(metadata)
    .filter(([, value]) => value !== undefined && value !== null)
    .map(([key, value]) => `${key} ${base64(String(value))}`)
    .join(",");
}

function problemDetail(xhr) {
  try {
    const body = JSON.parse(xhr.responseText);
    if (body && typeof body.detail === "string") return body.detail;
  } catch {
    // not JSON: fall through
  }
  return xhr.statusText || `HTTP ${xhr.status}`;
}

const RETRY_STATUSES = new Set([409, 423, 429, 500, 502, 503, 504]);

export class TusUpload {
  /**
   * @param {File} file
   * @param {object} options endpoint, headers, metadata, chunkSize, retryDelays,
   *   storage, onProgress(sent, total), onStatus(text), onCreated({url, datasetUuid})
   */
  constructor(file, options) {
    this.file = file;
    this.endpoint = options.endpoint;
    this.headers = options.headers || {};
    this.metadata = options.metadata || {};
    this.chunkSize = Math.max(1, options.chunkSize || 8 * 1024 * 1024);
    this.retryDelays = options.retryDelays || [0, 1000, 3000, 5000];
    this.storage = options.storage || window.localStorage;
    this.onProgress = options.onProgress || (() => {});
    this.onStatus = options.onStatus || (() => {});
    this.onCreated = options.onCreated || (() => {});
    this.key = fingerprint(file, this.endpoint, this.metadata);
    this.url = null;
    this.offset = 0;
    this.resumed = false;
    this.stopped = false;
    this.xhr = null;
  }

  /** Stop after the request in flight (which is aborted); start() resumes. */
  pause() {
    this.stopped = true;
    if (this.xhr) this.xhr.abort();
  }

  /** Upload the file; resolves to {jobId, datasetUuid, url, resumedAt}. */
  async start() {
    this.stopped = false;
    const found = await this._resume();
    if (found) return found;
    if (this.url === null) {
      const created = await this._create();
      if (created) return created;
    }
    return this._send();
  }

  _request(method, url, headers, body, onUploadProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      xhr.open(method, url, true);
      const all = { "Tus-Resumable": "1.0.0", ...this.headers, ...headers };
      for (const [name, value] of Object.entries(all)) xhr.setRequestHeader(name, value);
      if (onUploadProgress) xhr.upload.onprogress = (e) => onUploadProgress(e.loaded);
      xhr.onload = () => {
        this.xhr = null;
        resolve(xhr);
      };
      xhr.onerror = () => {
        this.xhr = null;
        reject(new TusError(`${method}: the connection failed`, 0, true));
      };
      xhr.onabort = () => {
        this.xhr = null;
        reject(new TusError(`${method}: stopped`, 0, true));
      };
      xhr.send(body === undefined ? null : body);
    });
  }

  _remember(datasetUuid) {
    const entry = { url: this.url, dataset_uuid: datasetUuid, created: Date.now() };
    try {
      this.storage.setItem(this.key, JSON.stringify(entry));
    } catch {
      // storage full or disabled: the upload works, it just cannot resume later
    }
  }

  _forget() {
    try {
      this.storage.removeItem(this.key);
    } catch {
      // nothing to forget
    }
  }

  _done(xhr) {
    const jobId = xhr.getResponseHeader("X-Job-Id");
    if (!jobId) return null;
    this._forget();
    this.onProgress(this.file.size, this.file.size);
    return {
      jobId,
      datasetUuid: xhr.getResponseHeader("X-Dataset-Uuid"),
      url: this.url,
      resumedAt: this.resumed ? this.resumedAt : null,
    };
  }

  async _resume() {
    let stored = null;
    try {
      stored = JSON.parse(this.storage.getItem(this.key) || "null");
    } catch {
      stored = null;
    }
    if (!stored || typeof stored.url !== "string") return null;
    this.onStatus("asking the server how much of this file it already has");
    const xhr = await this._request("HEAD", stored.url, {});
    if (xhr.status === 200) {
      this.url = stored.url;
      this.offset = Number(xhr.getResponseHeader("Upload-Offset") || 0);
      this.resumed = true;
      this.resumedAt = this.offset;
      this.onCreated({ url: this.url, datasetUuid: xhr.getResponseHeader("X-Dataset-Uuid") });
      this.onProgress(this.offset, this.file.size);
      return this._done(xhr);
    }
    if (xhr.status === 401) throw new TusError(problemDetail(xhr), 401);
    // 404/410 (expired, terminated, another user's): start over
    this._forget();
    return null;
  }

  async _create() {
    this.onStatus("creating the upload");
    const xhr = await this._request("POST", this.endpoint, {
      "Upload-Length": String(this.file.size),
      "Upload-Metadata": encodeMetadata(this.metadata),
    });
    if (xhr.status !== 201) throw new TusError(problemDetail(xhr), xhr.status);
    const location = xhr.getResponseHeader("Location");
    if (!location) throw new TusError("the server sent no Location for the upload", 201);
    this.url = new URL(location, this.endpoint).href;
    this.offset = Number(xhr.getResponseHeader("Upload-Offset") || 0);
    const datasetUuid = xhr.getResponseHeader("X-Dataset-Uuid");
    this._remember(datasetUuid);
    this.onCreated({ url: this.url, datasetUuid });
    return this._done(xhr);
  }

  async _head() {
    const xhr = await this._request("HEAD", this.url, {});
    if (xhr.status !== 200) {
      if (xhr.status === 404 || xhr.status === 410) this._forget();
      throw new TusError(problemDetail(xhr), xhr.status);
    }
    this.offset = Number(xhr.getResponseHeader("Upload-Offset") || 0);
    return xhr;
  }

  async _send() {
    let attempt = 0;
    for (;;) {
      if (this.stopped) throw new TusError("paused", 0, true);
      try {
        if (attempt > 0) {
          const head = await this._head();
          const done = this._done(head);
          if (done) return done;
        }
        const end = Math.min(this.offset + this.chunkSize, this.file.size);
        const start = this.offset;
        this.onStatus(`sending bytes ${start} to ${end}`);
        const xhr = await this._request(
          "PATCH",
          this.url,
          { "Upload-Offset": String(start), "Content-Type": "application/offset+octet-stream" },
          this.file.slice(start, end),
          (loaded) => this.onProgress(start + loaded, this.file.size),
        );
        if (xhr.status === 204) {
          this.offset = Number(xhr.getResponseHeader("Upload-Offset") || end);
          this.onProgress(this.offset, this.file.size);
          attempt = 0;
          const done = this._done(xhr);
          if (done) return done;
          if (this.offset >= this.file.size) {
            // every byte is there but no job yet (being committed): ask again
            attempt = 1;
          }
          continue;
        }
        if (xhr.status === 404 || xhr.status === 410) this._forget();
        throw new TusError(problemDetail(xhr), xhr.status, RETRY_STATUSES.has(xhr.status));
      } catch (err) {
        if (!(err instanceof TusError) || !err.resumable || this.stopped) throw err;
        if (attempt >= this.retryDelays.length) {
          throw new TusError(
            `${err.message}; stopped at byte ${this.offset} after ${attempt} retries ` +
              "(choose the same file again to continue from there)",
            err.status,
            true,
          );
        }
        const delay = this.retryDelays[attempt];
        attempt += 1;
        this.onStatus(`${err.message}; retrying in ${delay} ms`);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }
}
