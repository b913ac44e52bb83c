// api.js: the console's only door to the server, the public HTTP API. It adds the bearer
// token when one is kept, and asks for one (once per tab) when the server answers 401.

const KEY = 'imago.token';
let asking = null; // the pending token prompt, shared by concurrent calls

export function token() { return sessionStorage.getItem(KEY) || ''; }

export function forgetToken() { sessionStorage.removeItem(KEY); }

// ApiError carries the API's error body: {"error": {"code", "message"}}.
export class ApiError extends Error {
  constructor(status, body, url) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status; this.code = e.code || ''; this.body = body; this.url = url;
  }
}

function askToken(message) {
  if (asking) return asking;
  const dlg = document.getElementById('token-dialog');
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  document.getElementById('token-error').textContent = message || '';
  input.value = '';
  asking = new Promise((resolve) => {
    form.addEventListener('submit', function onSubmit(ev) {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      form.removeEventListener('submit', onSubmit);
      sessionStorage.setItem(KEY, t);
      dlg.close();
      asking = null;
      resolve(t);
    });
  });
  // Escape would close the dialog with no token and leave the call waiting: keep it open.
  dlg.addEventListener('cancel', (ev) => ev.preventDefault());
  if (!dlg.open) dlg.showModal();
  input.focus();
  return asking;
}

// call sends one request and returns the decoded JSON (or text for non-JSON answers). A 401
// asks for a token and retries; other errors throw ApiError.
export async function call(method, url, body) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = {};
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
    const text = await res.text();
    let data = text;
    if ((res.headers.get('Content-Type') || '').includes('json')) {
      try { data = JSON.parse(text); } catch { /* keep the text */ }
    }
    if (res.status === 401) {
      if (t) forgetToken();
      await askToken(t ? 'That token was refused: ' + ((data.error && data.error.message) || '') : '');
      continue;
    }
    if (!res.ok) throw new ApiError(res.status, data, url);
    return data;
  }
  throw new ApiError(401, { error: { code: 'unauthorized', message: 'no accepted token' } }, url);
}

export const get = (url) => call('GET', url);
export const post = (url, body) => call('POST', url, body);

// status answers an unauthenticated health endpoint: {ok, status, body}.
export async function probe(url) {
  try {
    const res = await fetch(url, { cache: 'no-store' });
    let body = await res.text();
    try { body = JSON.parse(body); } catch { /* text */ }
    return { ok: res.ok, status: res.status, body };
  } catch (e) {
    return { ok: false, status: 0, body: String(e) };
  }
}

// whoami tells what the kept token may do: {auth, name, admin, producer, consumer}.
let who = null;
export async function whoami(force) {
  if (who && !force) return who;
  who = await get('/v1/whoami');
  return who;
}
