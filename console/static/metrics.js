// metrics.js: reads the Prometheus text format of GET /metrics (only what the console
// shows), estimates quantiles from histogram buckets, and turns two samples of a counter
// into a rate.

// parse returns {series: Map(name -> [{labels, value}]), at: ms}.
export function parse(text) {
  const series = new Map();
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      for (const lm of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1]] = lm[2];
    }
    const value = m[4] === '+Inf' ? Infinity : Number(m[4]);
    if (!series.has(m[1])) series.set(m[1], []);
    series.get(m[1]).push({ labels, value });
  }
  return { series, at: Date.now() };
}

// value is the sum of a series' samples whose labels match the given ones.
export function value(s, name, match) {
  const list = s.series.get(name);
  if (!list) return null;
  let sum = 0;
  for (const p of list) {
    if (match && Object.entries(match).some(([k, v]) => p.labels[k] !== v)) continue;
    sum += p.value;
  }
  return sum;
}

// buckets returns [[le, cumulative count], ...] of a histogram, sorted by le.
export function buckets(s, name) {
  const list = s.series.get(name + '_bucket') || [];
  const by = new Map();
  for (const p of list) {
    const le = p.labels.le === '+Inf' ? Infinity : Number(p.labels.le);
    by.set(le, (by.get(le) || 0) + p.value);
  }
  return [...by.entries()].sort((a, b) => a[0] - b[0]);
}

// quantile estimates the q-quantile from cumulative buckets (linear within a bucket, as
// Prometheus' histogram_quantile does); null without observations.
export function quantile(q, bs) {
  if (!bs.length) return null;
  const total = bs[bs.length - 1][1];
  if (!total) return null;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const [le, count] of bs) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      if (count === prevCount) return le;
      return prevLe + (le - prevLe) * (rank - prevCount) / (count - prevCount);
    }
    prevLe = le; prevCount = count;
  }
  return prevLe;
}

// delta subtracts two bucket lists (a later minus an earlier sample): the window between.
export function delta(later, earlier) {
  const e = new Map(earlier);
  return later.map(([le, c]) => [le, c - (e.get(le) || 0)]);
}

// rate is (later - earlier) per second between two samples; null without both.
export function rate(later, earlier, atLater, atEarlier) {
  if (later === null || earlier === null || earlier === undefined || atLater <= atEarlier) return null;
  return Math.max(0, later - earlier) / ((atLater - atEarlier) / 1000);
}
