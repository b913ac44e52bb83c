// app.js: the console's router (hash routes, so a reload never asks the server for an unknown
// path), the header's token line, and the refresh loop of the page on screen.

import { whoami, forgetToken, token } from './api.js';
import { h, errorBox } from './fmt.js';
import * as overview from './overview.js';
import * as topics from './topics.js';
import * as groups from './groups.js';
import * as global from './global.js';
import * as xa from './xa.js';

// The refresh period of the page on screen (header select), kept for the tab.
const REFRESH_KEY = 'imago.refresh';

const routes = [
  [/^\/?$/, 'overview', 'Overview', () => overview.render],
  [/^\/topics$/, 'topics', 'Topics', () => topics.renderList],
  [/^\/topics\/(.+)$/, 'topics', 'Topic', () => topics.renderTopic],
  [/^\/groups$/, 'groups', 'Consumer groups', () => groups.renderList],
  [/^\/groups\/(.+)$/, 'groups', 'Group', () => groups.renderGroup],
  [/^\/global$/, 'global', 'Global transactions', () => global.render],
  [/^\/xa$/, 'xa', 'XA branches', () => xa.renderXA],
  [/^\/outbox$/, 'outbox', 'Outbox', () => xa.renderOutbox],
];

let current = { refresh: null, seq: 0 };
let timer = null;

async function showWho() {
  const el = document.getElementById('who');
  try {
    const w = await whoami(true);
    const forget = h('button', { type: 'button', onclick: () => { forgetToken(); location.reload(); } }, 'Forget token');
    el.replaceChildren(w.auth
      ? h('span', {}, 'Token ', h('strong', { id: 'token-name' }, w.name), w.admin ? ' (admin) ' : ' ', token() ? forget : null)
      : h('span', {}, 'No auth configured (loopback only)'));
  } catch (e) {
    el.textContent = e.message;
  }
}

function liveHasFocus(main) {
  const a = document.activeElement;
  return a && a !== main && a.closest && a.closest('[data-live]') && main.contains(a);
}

async function tick(main, seq, force) {
  if (seq !== current.seq || !current.refresh) return;
  const dialogOpen = [...document.querySelectorAll('dialog')].some((d) => d.open);
  if (!force && (dialogOpen || liveHasFocus(main) || document.hidden)) return;
  try {
    await current.refresh();
    main.querySelector('.page-error')?.remove();
  } catch (e) {
    if (seq !== current.seq) return;
    main.querySelector('.page-error')?.remove();
    const box = errorBox(e);
    box.classList.add('page-error');
    main.append(box);
  }
  main.dataset.loaded = String(Number(main.dataset.loaded || 0) + 1);
}

async function route() {
  const main = document.getElementById('main');
  const path = decodeURIComponent((location.hash || '#/').slice(1));
  let match = null;
  for (const [re, page, title, fn] of routes) {
    const m = re.exec(path);
    if (m) { match = { page, title, fn: fn(), arg: m[1] }; break; }
  }
  for (const a of document.querySelectorAll('#nav a')) {
    if (match && a.dataset.page === match.page) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const seq = ++current.seq;
  main.dataset.loaded = '0';
  main.dataset.page = match ? match.page : 'none';
  if (!match) {
    main.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, 'No page at ', h('code', {}, path), '. ', h('a', { href: '#/' }, 'Overview')));
    return;
  }
  document.title = `${match.title}${match.arg ? ' ' + match.arg : ''} · Imago console`;
  current.refresh = await match.fn(main, match.arg);
  await tick(main, seq, true);
  if (document.activeElement === document.body || !main.contains(document.activeElement)) {
    if (routed) main.focus({ preventScroll: true });
  }
  routed = true;
}

let routed = false;

function schedule(ms) {
  if (timer) clearInterval(timer);
  timer = ms > 0 ? setInterval(() => tick(document.getElementById('main'), current.seq, false), ms) : null;
}

async function start() {
  const sel = document.getElementById('refresh');
  const saved = sessionStorage.getItem(REFRESH_KEY);
  if (saved !== null && [...sel.options].some((o) => o.value === saved)) sel.value = saved;
  sel.addEventListener('change', () => { sessionStorage.setItem(REFRESH_KEY, sel.value); schedule(Number(sel.value)); });
  await showWho(); // asks for a token first when the server requires one
  window.addEventListener('hashchange', route);
  await route();
  schedule(Number(sel.value));
  // A second sample soon after the first, so that rates show without waiting a full period.
  setTimeout(() => tick(document.getElementById('main'), current.seq, false), 1200);
}

start();
