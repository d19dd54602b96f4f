// Bad requests to `sana serve`: each gets a 4xx in OpenAI's error shape with our code and a message that names
// the problem, and the server (one for the whole file) goes on serving.
import { request } from 'node:http'
import test from 'ava'
import { SanaPipeline } from '../dist/index.js'
import { SANA_TINY } from './helpers/paths.mjs'
import { postJson, startServer, TINY } from './helpers/server.mjs'

let pipe
let app
let url
test.before(async () => {
  pipe = await SanaPipeline.load(SANA_TINY)
  ;({ app, url } = await startServer(null, pipe, { apiKey: 'k' }))
})
test.after.always(async () => {
  await app?.close()
  pipe?.dispose()
})

const AUTH = { authorization: 'Bearer k' }
const GEN = '/v1/images/generations'

/** POST a raw body; resolves { status, body } even when the server stops reading early. */
function rawPost(path, body, headers) {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method: 'POST', headers: { ...AUTH, ...headers } }, (res) => {
      let text = ''
      res.on('data', (c) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(text) }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** POST /v1/images/edits as a multipart form with `image` (when given) and a prompt. */
function editForm(image) {
  const form = new FormData()
  form.set('prompt', 'x')
  if (image) form.set('image', new Blob([image], { type: 'image/png' }), 'x.png')
  return fetch(`${url}/v1/images/edits`, { method: 'POST', headers: AUTH, body: form })
}

async function expectError(t, res, status, code, message) {
  const { status: got, body } = res instanceof Response ? { status: res.status, body: await res.json() } : res
  t.is(got, status)
  t.is(body.error.code, code)
  t.is(typeof body.error.type, 'string')
  t.regex(body.error.message, message)
  // …and the server still serves.
  const ok = await postJson(`${url}${GEN}`, { prompt: 'still here', ...TINY, steps: 1 }, AUTH)
  t.is(ok.status, 200)
}

const cases = [
  ['malformed JSON', () => rawPost(GEN, '{"prompt": "a fox",', { 'content-type': 'application/json' }), 400, 'SANA_INVALID_ARGUMENT', /JSON/],
  ['a wrong type (n as a string)', () => postJson(`${url}${GEN}`, { prompt: 'x', n: '2' }, AUTH), 400, 'SANA_INVALID_ARGUMENT', /body\/n must be integer/],
  ['a missing prompt', () => postJson(`${url}${GEN}`, { n: 1 }, AUTH), 400, 'SANA_INVALID_ARGUMENT', /must have required property 'prompt'/],
  ['size 0x0', () => postJson(`${url}${GEN}`, { prompt: 'x', size: '0x0' }, AUTH), 400, 'SANA_INVALID_ARGUMENT', /Expected a width from 32 to 4096 in size but received 0/],
  ['a huge size', () => postJson(`${url}${GEN}`, { prompt: 'x', size: '100000x100000' }, AUTH), 400, 'SANA_INVALID_ARGUMENT', /width from 32 to 4096/],
  ['a size that is not WxH', () => postJson(`${url}${GEN}`, { prompt: 'x', size: 'large' }, AUTH), 400, 'SANA_INVALID_ARGUMENT', /body\/size must match pattern/],
  ['n = 0', () => postJson(`${url}${GEN}`, { prompt: 'x', n: 0, ...TINY }, AUTH), 400, 'SANA_INVALID_ARGUMENT', /Expected n from 1 to 10 but received 0/],
  ['n = 1000', () => postJson(`${url}${GEN}`, { prompt: 'x', n: 1000, ...TINY }, AUTH), 400, 'SANA_INVALID_ARGUMENT', /Expected n from 1 to 10 but received 1000/],
  ['steps = 0', () => postJson(`${url}${GEN}`, { prompt: 'x', ...TINY, steps: 0 }, AUTH), 400, 'SANA_INVALID_ARGUMENT', /Expected steps from 1 to 1000 but received 0/],
  ['an unknown scheduler', () => postJson(`${url}${GEN}`, { prompt: 'x', scheduler: 'ddim' }, AUTH), 400, 'SANA_INVALID_ARGUMENT', /body\/scheduler must be equal to one of the allowed values/],
  ['a scheduler that does not fit the model', () => postJson(`${url}${GEN}`, { prompt: 'x', ...TINY, scheduler: 'scm' }, AUTH), 400, 'SANA_INVALID_ARGUMENT', /does not fit a Sana pipeline/],
  ['stream: true', () => postJson(`${url}${GEN}`, { prompt: 'x', stream: true }, AUTH), 400, 'SANA_INVALID_ARGUMENT', /body\/stream must be equal to constant/],
  ['a 100 MB body', () => rawPost(GEN, Buffer.alloc(100 * 2 ** 20, 0x20), { 'content-type': 'application/json' }), 413, 'SANA_INVALID_ARGUMENT', /Request body is too large/],
  ['a text body', () => rawPost(GEN, 'prompt=x', { 'content-type': 'text/plain' }), 400, 'SANA_INVALID_ARGUMENT', /body must be object/],
  ['an XML body', () => rawPost(GEN, '<prompt>x</prompt>', { 'content-type': 'application/xml' }), 415, 'SANA_INVALID_ARGUMENT', /Unsupported Media Type/],
  ['an upload that is not an image', () => editForm(Buffer.from('not an image at all')), 400, 'SANA_INVALID_ARGUMENT', /image: not a decodable PNG, JPEG or WebP image/],
  ['an edit without an image', () => editForm(undefined), 400, 'SANA_INVALID_ARGUMENT', /Expected an image file in the "image" field/],
  ['an edit as JSON', () => postJson(`${url}/v1/images/edits`, { prompt: 'x' }, AUTH), 400, 'SANA_INVALID_ARGUMENT', /multipart\/form-data/],
  ['a wrong key', () => postJson(`${url}${GEN}`, { prompt: 'x' }, { authorization: 'Bearer K' }), 401, 'SANA_UNAUTHORIZED', /wrong API key/],
  ['no key', () => fetch(`${url}/v1/models`), 401, 'SANA_UNAUTHORIZED', /missing or wrong API key/],
  ['an unknown route', () => fetch(`${url}/v1/images/variations`, { method: 'POST', headers: AUTH }), 404, 'SANA_NOT_FOUND', /no route POST \/v1\/images\/variations/],
  ['a result id that is not one', () => fetch(`${url}/v1/images/results/..%2F..%2Fetc%2Fpasswd`), 404, 'SANA_NOT_FOUND', /no such image/],
]
for (const [name, send, status, code, message] of cases) {
  test.serial(`${name} → ${status} ${code}`, async (t) => expectError(t, await send(), status, code, message))
}
