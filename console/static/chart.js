// chart.js: a line chart drawn as inline SVG (no library), for the lag history a page samples.

import { num } from './fmt.js';

const NS = 'http://www.w3.org/2000/svg';

function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// lineChart draws points [{t: ms, v: number}] over the last windowMs, with the y axis from 0
// to the maximum, and a text alternative for screen readers.
export function lineChart(points, label, windowMs) {
  const W = 720, H = 160, L = 56, R = 8, T = 10, B = 22;
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' });
  const now = Date.now();
  // The x axis spans what was sampled (at least 30 s), up to windowMs.
  const first = points.length ? points[0].t : now;
  const span = Math.min(windowMs, Math.max(30000, now - first));
  const from = now - span;
  const pts = points.filter((p) => p.t >= from);
  const ago = span >= 120000 ? `-${Math.round(span / 60000)} min` : `-${Math.round(span / 1000)} s`;
  const max = Math.max(1, ...pts.map((p) => p.v));
  const last = pts.length ? pts[pts.length - 1].v : null;
  svg.append(el('title', {}, `${label}: ${pts.length} samples over the last ${Math.round(span / 1000)} seconds, ` +
    `maximum ${num(max)}, latest ${last === null ? 'none' : num(last)}`));
  svg.append(el('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'axis' }));
  svg.append(el('line', { x1: L, y1: T, x2: L, y2: H - B, class: 'axis' }));
  svg.append(el('text', { x: L - 6, y: T + 8, 'text-anchor': 'end' }, num(max)));
  svg.append(el('text', { x: L - 6, y: H - B, 'text-anchor': 'end' }, '0'));
  svg.append(el('text', { x: L, y: H - 6 }, ago));
  svg.append(el('text', { x: W - R, y: H - 6, 'text-anchor': 'end' }, 'now'));
  const x = (t) => L + (W - L - R) * (t - from) / span;
  const y = (v) => H - B - (H - B - T) * v / max;
  if (pts.length === 1) {
    svg.append(el('circle', { cx: x(pts[0].t), cy: y(pts[0].v), r: 3, class: 'line' }));
  } else if (pts.length > 1) {
    svg.append(el('polyline', { points: pts.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' '), class: 'line' }));
  }
  return svg;
}
