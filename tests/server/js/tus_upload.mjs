// Upload one file to a tus server with the real tus-js-client (Node.js), for
// tests/server/test_tus_js.py.
//
//   node tus_upload.mjs ENDPOINT TOKEN FILE CHUNK_SIZE MODE [INPUT]
//
// ENDPOINT    the tus creation URL, e.g. http://127.0.0.1:8000/files/
// TOKEN       a bearer token (sent as "Authorization: Bearer TOKEN")
// FILE        the file to upload (its base name is the tus "filename")
// CHUNK_SIZE  bytes per PATCH
// MODE        plain     one Upload, start to finish
//             resume    abort after the first chunk, then a new Upload finds the
//                       first one in a FileUrlStorage (findPreviousUploads +
//                       resumeFromPreviousUpload), HEADs it and finishes it
//             parallel  parallelUploads: 3 (partial uploads + a final upload,
//                       the tus concatenation extension)
// INPUT       stream (default: fs.createReadStream) or buffer (fs.readFileSync)
//
// On success, prints one JSON line on stdout:
//   {"mode", "url", "jobId", "datasetUuid", "status", "offset", "size",
//    "resumedAt", "firstUrl", "bytesSent", "requests": [...]}
// where requests lists every request the client made as
//   {"upload", "method", "url", "uploadOffset", "uploadConcat", "status",
//    "responseOffset"}.
// On failure, prints the error and that request log on stderr and exits 1.

import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import tus from 'tus-js-client'

const { Upload, FileUrlStorage } = tus

const [endpoint, token, file, chunkArg, mode = 'plain', input = 'stream'] =
  process.argv.slice(2)
if (!endpoint || !token || !file || !chunkArg) {
  console.error('usage: node tus_upload.mjs ENDPOINT TOKEN FILE CHUNK_SIZE MODE [INPUT]')
  process.exit(2)
}
const chunkSize = Number.parseInt(chunkArg, 10)
if (!['plain', 'resume', 'parallel'].includes(mode)) {
  console.error(`unknown mode ${mode}: plain, resume or parallel`)
  process.exit(2)
}
if (!['stream', 'buffer'].includes(input)) {
  console.error(`unknown input ${input}: stream or buffer`)
  process.exit(2)
}

const filename = path.basename(file)
const size = fs.statSync(file).size
const requests = []

function source() {
  return input === 'buffer' ? fs.readFileSync(file) : fs.createReadStream(file)
}

function header(thing, name) {
  const value = thing.getHeader(name)
  return value === undefined ? null : value
}

// Options shared by every Upload; `label` tags each logged request.
function options(label, extra) {
  return {
    endpoint,
    chunkSize,
    headers: { Authorization: `Bearer ${token}` },
    metadata: { filename, dataset_name: `tus-js ${mode}`, sensor: 'OTHER' },
    // Fail loudly: a retry would hide a misbehaving server from the test.
    retryDelays: null,
    onBeforeRequest(req) {
      requests.push({
        upload: label,
        method: req.getMethod(),
        url: req.getURL(),
        uploadOffset: header(req, 'Upload-Offset'),
        uploadConcat: header(req, 'Upload-Concat'),
        status: null,
        responseOffset: null,
      })
    },
    onAfterResponse(req, res) {
      // The matching entry: the newest one of this request without an answer.
      for (let i = requests.length - 1; i >= 0; i--) {
        const r = requests[i]
        if (r.status === null && r.method === req.getMethod() && r.url === req.getURL()) {
          r.status = res.getStatus()
          r.responseOffset = header(res, 'Upload-Offset')
          break
        }
      }
    },
    ...extra,
  }
}

// Start an Upload; resolves with the last response on success.
function run(upload) {
  return new Promise((resolve, reject) => {
    upload.options.onSuccess = ({ lastResponse }) => resolve(lastResponse)
    upload.options.onError = reject
    upload.start()
  })
}

function report(upload, lastResponse, extra) {
  const bytesSent = requests
    .filter((r) => r.method === 'PATCH' && r.status !== null && r.status < 300)
    .reduce((sum, r) => sum + (Number(r.responseOffset) - Number(r.uploadOffset)), 0)
  const out = {
    mode,
    input,
    url: upload.url,
    jobId: header(lastResponse, 'X-Job-Id'),
    datasetUuid: header(lastResponse, 'X-Dataset-Uuid'),
    status: lastResponse.getStatus(),
    offset: Number(header(lastResponse, 'Upload-Offset')),
    size,
    bytesSent,
    requests,
    ...extra,
  }
  process.stdout.write(`${JSON.stringify(out)}\n`)
}

async function plain() {
  const upload = new Upload(source(), options('plain'))
  report(upload, await run(upload))
}

async function parallel() {
  const upload = new Upload(source(), options('parallel', { parallelUploads: 3 }))
  report(upload, await run(upload))
}

async function resume() {
  // A URL storage of its own, so that the second Upload finds the first.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tus-js-'))
  const storage = new FileUrlStorage(path.join(dir, 'urls.json'))
  try {
    const first = new Upload(source(), options('first', { urlStorage: storage }))
    await new Promise((resolve, reject) => {
      first.options.onChunkComplete = () => {
        // Stop after the first PATCH: nothing is in flight here, the next
        // PATCH is never sent (abort sets _aborted before _performUpload).
        first.abort().then(resolve, reject)
      }
      first.options.onSuccess = () => reject(new Error('the first upload finished'))
      first.options.onError = reject
      first.start()
    })
    const firstUrl = first.url

    const second = new Upload(source(), options('second', { urlStorage: storage }))
    const previous = await second.findPreviousUploads()
    if (previous.length !== 1) {
      throw new Error(`expected one previous upload, found ${previous.length}`)
    }
    second.resumeFromPreviousUpload(previous[0])
    const last = await run(second)
    // Where the second Upload started: the offset its HEAD got from the server,
    // and the Upload-Offset of its first PATCH.
    const head = requests.find((r) => r.upload === 'second' && r.method === 'HEAD')
    const firstPatch = requests.find((r) => r.upload === 'second' && r.method === 'PATCH')
    report(second, last, {
      firstUrl,
      previousUrl: previous[0].uploadUrl,
      headOffset: head ? Number(head.responseOffset) : null,
      resumedAt: firstPatch ? Number(firstPatch.uploadOffset) : null,
    })
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const modes = { plain, resume, parallel }
try {
  await modes[mode]()
} catch (err) {
  console.error(String(err?.stack ?? err))
  console.error(JSON.stringify({ requests }, null, 1))
  process.exit(1)
}
