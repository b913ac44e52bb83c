// groups.js: consumer groups (members, assignment, committed offset, end, lag per partition)
// and each group's total lag over the last minutes, sampled by the page.

import { get } from './api.js';
import { lineChart } from './chart.js';
import { h, num, time, v, src, table, row, n, errorBox, enc } from './fmt.js';

const WINDOW = 10 * 60 * 1000;
const history = new Map(); // group -> [{t, v}] total lag samples of this tab

function sample(group, lag) {
  const now = Date.now();
  const pts = (history.get(group) || []).filter((p) => p.t >= now - WINDOW);
  pts.push({ t: now, v: lag });
  history.set(group, pts);
}

const offsetsURL = (g) => '/v1/groups/' + enc(g) + '/offsets';

export async function renderList(main) {
  const live = h('div', { 'data-live': '' });
  main.replaceChildren(h('h1', {}, 'Consumer groups'), live);
  return async function refresh() {
    const list = await get('/v1/groups');
    const offs = await Promise.all(list.groups.map((g) => get(offsetsURL(g.name)).catch((e) => e)));
    const rows = list.groups.map((g, i) => {
      const o = offs[i];
      const link = h('a', { href: '#/groups/' + enc(g.name) }, g.name);
      if (o instanceof Error) return row([link, g.mode || '', n(v(num(g.members), '/v1/groups')), o.message, '', '']);
      const lag = o.offsets.reduce((s, x) => s + x.lag, 0);
      sample(g.name, lag);
      return row([link, v(o.mode || g.mode || 'clustered', offsetsURL(g.name)), n(v(num(o.members.length), offsetsURL(g.name))),
        n(v(num(o.offsets.length), offsetsURL(g.name))),
        n(v(h('span', { 'data-lag': g.name, class: lag > 0 ? 'warn' : null }, num(lag)), offsetsURL(g.name)))]);
    });
    live.replaceChildren(table(src('/v1/groups'), ['Group', 'Mode', ['Live members', 'num'], ['Partitions committed', 'num'], ['Total lag', 'num']],
      rows, 'No consumer group yet.'));
  };
}

export async function renderGroup(main, name) {
  const url = offsetsURL(name);
  const live = h('div', { 'data-live': '' });
  main.replaceChildren(h('p', {}, h('a', { href: '#/groups' }, '← Consumer groups')), h('h1', {}, 'Group ', h('code', {}, name)), live);
  return async function refresh() {
    let o;
    try {
      o = await get(url);
    } catch (e) {
      live.replaceChildren(errorBox(e));
      return;
    }
    const lag = o.offsets.reduce((s, x) => s + x.lag, 0);
    sample(name, lag);
    const owner = new Map();
    for (const m of o.members) for (const a of m.assignments || []) owner.set(a.topic + '/' + a.partition, m.consumer_id || m.member_id);
    live.replaceChildren(
      h('p', {}, 'Mode ', v(o.mode || 'clustered', url), ' · generation ', v(num(o.generation), url), ' · total lag ',
        v(h('strong', { 'data-lag': name }, num(lag)), url)),
      h('h2', {}, 'Total lag, sampled by this page (up to 10 minutes)'),
      lineChart(history.get(name) || [], `Total lag of group ${name}`, WINDOW),
      h('p', { class: 'muted' }, 'One sample every few seconds from ', h('a', { href: url, class: 'mono' }, 'GET ' + url), ' while a groups page is open.'),
      h('h2', {}, 'Members'),
      table(src(url), ['Member', 'Consumer id', 'Topics', 'Assignment', ['Session timeout', 'num'], 'Last seen (UTC)'],
        o.members.map((m) => row([h('code', {}, v(m.member_id, url)), m.consumer_id || '', m.topics.join(', '),
          (m.assignments || []).map((a) => `${a.topic}/${a.partition}`).join(', ') || h('span', { class: 'muted' }, 'none'),
          n(v(num(m.session_timeout_ms) + ' ms', url)), time(m.last_seen)])), 'No live member in this server.'),
      h('h2', {}, 'Partitions'),
      table(src(url), ['Topic', ['Partition', 'num'], 'Consumer', 'Assigned to', ['Committed offset', 'num'], ['End offset', 'num'], ['Lag', 'num'], 'Committed at (UTC)'],
        o.offsets.map((x) => row([h('a', { href: '#/topics/' + enc(x.topic) }, x.topic), n(v(num(x.partition), url)), x.consumer || '',
          owner.get(x.topic + '/' + x.partition) || h('span', { class: 'muted' }, '–'),
          n(v(num(x.offset), url)), n(v(x.end_offset < 0 ? 'topic gone' : num(x.end_offset), url)),
          n(v(h('span', { class: x.lag > 0 ? 'warn' : null }, num(x.lag)), url)), time(x.updated_at)])), 'No committed offset.'));
  };
}
