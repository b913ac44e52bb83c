// overview.js: health and readiness, version, uptime, data size, fsync latency and the
// produce and fetch rates (sampled by the page from /metrics).

import { get, probe } from './api.js';
import * as m from './metrics.js';
import { h, num, dec, bytes, duration, v, src, card, errorBox } from './fmt.js';

let prev = null; // the previous /metrics sample, for rates and the recent fsync window

async function metricsSample() {
  const res = await fetch('/metrics', { cache: 'no-store' });
  if (!res.ok) throw new Error('GET /metrics answered ' + res.status);
  return m.parse(await res.text());
}

function ms(sec) { return sec === null ? '–' : dec(sec * 1000, 2) + ' ms'; }

export async function render(main) {
  const live = h('div', { 'data-live': '' });
  main.replaceChildren(h('h1', {}, 'Overview'), live);
  return async function refresh() {
    const [health, ready, stats, cur] = await Promise.all([
      probe('/healthz'), probe('/readyz'),
      get('/v1/stats').catch((e) => e), metricsSample().catch((e) => e),
    ]);
    const out = [];
    const readyMsg = ready.ok ? 'ready' : ((ready.body && ready.body.error && ready.body.error.message) || `HTTP ${ready.status}`);
    out.push(h('div', { class: 'cards' },
      card('Health', v(h('span', { class: health.ok ? 'ok' : 'bad' }, health.ok ? 'ok' : `down (${health.status})`), '/healthz')),
      card('Readiness', v(h('span', { class: ready.ok ? 'ok' : 'bad' }, ready.ok ? 'ready' : 'not ready'), '/readyz'), ready.ok ? null : readyMsg),
      stats instanceof Error ? null : card('Version', v(stats.version || '–', '/v1/stats')),
      stats instanceof Error ? null : card('Uptime', v(duration(stats.uptime_seconds), '/v1/stats')),
      stats instanceof Error ? null : card('Data size (log)', v(bytes(stats.log_bytes), '/v1/stats'), num(stats.log_bytes) + ' bytes'),
      stats instanceof Error ? null : card('Topics / partitions', v(`${num(stats.topics)} / ${num(stats.partitions)}`, '/v1/stats')),
    ));
    if (stats instanceof Error) out.push(errorBox(stats));
    if (cur instanceof Error) {
      out.push(errorBox(cur));
    } else {
      const fs = m.buckets(cur, 'imago_fsync_duration_seconds');
      let window = null;
      if (prev) {
        const d = m.delta(fs, m.buckets(prev, 'imago_fsync_duration_seconds'));
        if (d.length && d[d.length - 1][1] > 0) window = d;
      }
      const r = (name) => prev ? m.rate(m.value(cur, name), m.value(prev, name), cur.at, prev.at) : null;
      const rateText = (x, unit) => x === null ? 'sampling…' : dec(x, 1) + ' ' + unit;
      out.push(h('h2', {}, 'Log and traffic'));
      out.push(h('div', { class: 'cards' },
        card('fsync p50 (since start)', v(ms(m.quantile(0.5, fs)), '/metrics')),
        card('fsync p99 (since start)', v(ms(m.quantile(0.99, fs)), '/metrics')),
        card('fsync p50 / p99 (last interval)', v(window ? `${ms(m.quantile(0.5, window))} / ${ms(m.quantile(0.99, window))}` : 'no fsync', '/metrics')),
        card('fsyncs', v(num(m.value(cur, 'imago_broker_fsyncs_total')), '/metrics'), rateText(r('imago_broker_fsyncs_total'), '/s')),
        card('Produce rate', v(rateText(r('imago_broker_messages_in_total'), 'msg/s'), '/metrics'),
          num(m.value(cur, 'imago_broker_messages_in_total')) + ' messages in total'),
        card('Fetch rate', v(rateText(r('imago_broker_messages_out_total'), 'msg/s'), '/metrics'),
          num(m.value(cur, 'imago_broker_messages_out_total')) + ' messages in total'),
        card('Bytes in', v(rateText(r('imago_broker_bytes_in_total') === null ? null : r('imago_broker_bytes_in_total') / 1024, 'KiB/s'), '/metrics')),
        card('Bytes out', v(rateText(r('imago_broker_bytes_out_total') === null ? null : r('imago_broker_bytes_out_total') / 1024, 'KiB/s'), '/metrics')),
      ));
      out.push(h('p', {}, src('/metrics'), ' · ', src('/v1/stats'), ' · ', src('/readyz')));
      prev = cur;
    }
    live.replaceChildren(...out.filter(Boolean));
  };
}
