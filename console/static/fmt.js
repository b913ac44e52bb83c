// fmt.js: small helpers that build DOM nodes (never HTML strings from data) and format
// numbers, bytes and times the way every page shows them.

export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null || k === false) continue;
    el.append(k instanceof Node ? k : String(k));
  }
  return el;
}

const nf = new Intl.NumberFormat('en-US');
const nf1 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
const nf2 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });

// num formats an integer with thousands separators; dec with up to 1 or 2 decimals.
export const num = (n) => (n === null || n === undefined || Number.isNaN(n)) ? '–' : nf.format(n);
export const dec = (n, d = 1) => (n === null || n === undefined || Number.isNaN(n)) ? '–' : (d === 2 ? nf2 : nf1).format(n);

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0, v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? nf.format(v) : nf1.format(v)) + ' ' + units[i];
}

export function duration(sec) {
  if (sec === null || sec === undefined) return '–';
  sec = Math.floor(sec);
  const d = Math.floor(sec / 86400), hh = Math.floor(sec % 86400 / 3600), m = Math.floor(sec % 3600 / 60), s = sec % 60;
  if (d) return `${d}d ${hh}h ${m}m`;
  if (hh) return `${hh}h ${m}m ${s}s`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

// time shows an RFC 3339 timestamp in UTC, the local time in its title (on hover).
export function time(ts) {
  if (!ts) return h('span', { class: 'muted' }, '–');
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  const utc = d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z').replace('Z', ' UTC');
  return h('time', { datetime: d.toISOString(), title: 'local: ' + d.toLocaleString() }, utc);
}

// v is a value that links to the API call that produced it.
export function v(content, url, extraClass) {
  return h('a', { class: 'v' + (extraClass ? ' ' + extraClass : ''), href: url, title: 'GET ' + url }, content);
}

// src is the "from GET …" line of a table or section.
export function src(url, method = 'GET') {
  return h('span', { class: 'muted' }, 'from ', h('a', { href: url, class: 'mono' }, method + ' ' + url));
}

export function table(caption, heads, rows, empty) {
  const t = h('table', {},
    caption ? h('caption', {}, caption) : null,
    h('thead', {}, h('tr', {}, heads.map((c) => {
      const [label, cls] = Array.isArray(c) ? c : [c, ''];
      return h('th', { scope: 'col', class: cls || null }, label);
    }))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: heads.length, class: 'muted' }, empty || 'None.'))));
  return h('div', { class: 'scroll' }, t);
}

export function row(cells) {
  return h('tr', {}, cells.map((c) => {
    if (c && c.num !== undefined) return h('td', { class: 'num' }, c.num);
    return h('td', {}, c);
  }));
}

// cell marks a right-aligned numeric cell.
export const n = (content) => ({ num: content });

export function card(label, value, hint) {
  return h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value),
    hint ? h('div', { class: 'muted' }, hint) : null);
}

export function errorBox(e) {
  const where = e && e.url ? [' (', h('a', { href: e.url, class: 'mono' }, e.url), ')'] : [];
  return h('p', { class: 'error', role: 'alert' }, (e && e.message) || String(e), ...where);
}

export const enc = encodeURIComponent;
