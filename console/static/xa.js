// xa.js: the broker's prepared XA branches (GET /v1/xa/recover) and the outbox sources
// (GET /v1/outbox/sources).

import { get } from './api.js';
import { h, num, time, v, src, table, row, n } from './fmt.js';

const RECOVER = '/v1/xa/recover';
const OUTBOX = '/v1/outbox/sources';

// ascii shows a hex id as text when every byte is printable.
function ascii(hex) {
  if (!/^([0-9a-f]{2})+$/i.test(hex)) return '';
  const s = hex.match(/../g).map((b) => String.fromCharCode(parseInt(b, 16))).join('');
  return /^[\x20-\x7e]+$/.test(s) ? s : '';
}

export async function renderXA(main) {
  const live = h('div', { 'data-live': '' });
  main.replaceChildren(h('h1', {}, 'XA branches of the broker'),
    h('p', { class: 'muted' }, 'Every prepared or heuristically completed branch the broker holds, as a transaction manager sees it in recovery.'), live);
  return async function refresh() {
    const r = await get(RECOVER);
    live.replaceChildren(table(src(RECOVER), [['Format id', 'num'], 'gtrid (hex)', 'bqual (hex)', 'As text'],
      r.xids.map((x) => row([n(v(num(x.format_id), RECOVER)), h('code', {}, v(x.gtrid, RECOVER)), h('code', {}, v(x.bqual, RECOVER)),
        [ascii(x.gtrid), ascii(x.bqual)].filter(Boolean).join(' / ')])), 'No prepared branch.'));
  };
}

export async function renderOutbox(main) {
  const live = h('div', { 'data-live': '' });
  main.replaceChildren(h('h1', {}, 'Outbox sources'), live);
  return async function refresh() {
    const r = await get(OUTBOX);
    live.replaceChildren(table(src(OUTBOX), ['Source', 'Relaying here', ['Backlog', 'num'], ['Relayed', 'num'], 'Last relayed (UTC)', ['Lag', 'num'], 'Last error'],
      r.sources.map((s) => row([v(s.name, OUTBOX), v(s.active ? 'yes' : 'no', OUTBOX), n(v(s.backlog === null ? 'not sampled' : num(s.backlog), OUTBOX)),
        n(v(num(s.relayed_total), OUTBOX)), time(s.last_relayed_at), n(v(num(s.lag_ms) + ' ms', OUTBOX)),
        s.last_error ? h('span', { class: 'error' }, s.last_error) : ''])), 'No outbox source configured on this server.'));
  };
}
