// topics.js: the topic list (partitions, offsets, bytes, produce rate) and a topic's page with
// its partitions and a message browser (fetch by partition and offset).

import { get } from './api.js';
import { h, num, dec, bytes, time, v, src, table, row, n, errorBox, enc } from './fmt.js';

const lastEnds = new Map(); // "topic/partition" -> {end, at}: the previous sample, for rates

function rateOf(topic, p, end, at) {
  const k = topic + '/' + p;
  const prev = lastEnds.get(k);
  lastEnds.set(k, { end, at });
  if (!prev || at <= prev.at) return null;
  return Math.max(0, end - prev.end) / ((at - prev.at) / 1000);
}

const rateText = (r) => r === null ? 'sampling…' : dec(r, 1) + '/s';

export async function renderList(main) {
  const live = h('div', { 'data-live': '' });
  main.replaceChildren(h('h1', {}, 'Topics'), live);
  return async function refresh() {
    const list = await get('/v1/topics');
    const at = Date.now();
    const details = await Promise.all(list.topics.map((t) => get('/v1/topics/' + enc(t.name)).catch((e) => e)));
    const rows = list.topics.map((t, i) => {
      const d = details[i];
      const url = '/v1/topics/' + enc(t.name);
      if (d instanceof Error) return row([h('a', { href: '#/topics/' + enc(t.name) }, t.name), n(v(num(t.partitions), '/v1/topics')), d.message, '', '', '', '']);
      let start = 0, end = 0, size = 0, rate = 0, sampled = true;
      for (const p of d.partitions) {
        start += p.start_offset; end += p.end_offset; size += p.bytes;
        const r = rateOf(t.name, p.partition, p.end_offset, at);
        if (r === null) sampled = false; else rate += r;
      }
      return row([
        h('a', { href: '#/topics/' + enc(t.name), 'data-topic': t.name }, t.name),
        n(v(num(t.partitions), '/v1/topics')),
        n(v(num(start), url)),
        n(v(h('span', { 'data-end': t.name }, num(end)), url)),
        n(v(num(end - start), url)),
        n(v(bytes(size), url)),
        n(v(rateText(sampled ? rate : null), url)),
      ]);
    });
    live.replaceChildren(
      table(src('/v1/topics'), ['Topic', ['Partitions', 'num'], ['Start offsets (sum)', 'num'], ['End offsets (sum)', 'num'],
        ['Messages', 'num'], ['Bytes', 'num'], ['Produce rate', 'num']], rows, 'No topic yet.'));
  };
}

export async function renderTopic(main, name) {
  const url = '/v1/topics/' + enc(name);
  const live = h('div', { 'data-live': '' });
  const result = h('div', { 'aria-live': 'polite' });
  const part = h('select', { id: 'mb-partition', name: 'partition' });
  const offset = h('input', { id: 'mb-offset', name: 'offset', type: 'number', min: '0', value: '0', inputmode: 'numeric' });
  const max = h('input', { id: 'mb-max', name: 'max', type: 'number', min: '1', max: '1000', value: '20' });
  const form = h('form', { class: 'inline', id: 'browse' },
    h('label', { for: 'mb-partition' }, 'Partition', part),
    h('label', { for: 'mb-offset' }, 'From offset', offset),
    h('label', { for: 'mb-max' }, 'Max messages', max),
    h('button', { type: 'submit' }, 'Fetch'));
  let info = null;
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const fetchURL = `${url}/partitions/${enc(part.value)}/messages?offset=${enc(offset.value || '0')}&max_messages=${enc(max.value || '20')}`;
    result.replaceChildren(h('p', { class: 'muted' }, 'Fetching…'));
    try {
      const res = await get(fetchURL);
      result.replaceChildren(h('p', {}, src(fetchURL), ` · ${num(res.messages.length)} messages, next offset `,
        v(num(res.next_offset), fetchURL), ', end offset ', v(num(res.end_offset), fetchURL)),
      table(null, [['Offset', 'num'], 'Time (UTC)', 'Key', 'Headers', 'Value'], res.messages.map((msg) => row([
        n(v(num(msg.offset), fetchURL)), time(msg.timestamp), msg.key === null || msg.key === undefined ? h('span', { class: 'muted' }, 'none') : h('code', {}, msg.key),
        msg.headers && Object.keys(msg.headers).length ? h('pre', {}, JSON.stringify(msg.headers, null, 2)) : '',
        valueCell(msg),
      ])), 'No message at this offset.'));
    } catch (e) {
      const b = e.body && e.body.error;
      const hint = e.status === 416 && e.body ? ` Stored offsets: ${num(e.body.start_offset ?? b?.start_offset)} to ${num(e.body.end_offset ?? b?.end_offset)}.` : '';
      result.replaceChildren(errorBox(e), hint ? h('p', {}, hint) : null);
    }
  });
  main.replaceChildren(h('p', {}, h('a', { href: '#/topics' }, '← Topics')), h('h1', {}, 'Topic ', h('code', {}, name)), live,
    h('h2', {}, 'Message browser'), form, result);
  return async function refresh() {
    const at = Date.now();
    const d = await get(url);
    if (!info) {
      info = d;
      part.replaceChildren(...d.partitions.map((p) => h('option', { value: p.partition }, String(p.partition))));
      const p0 = d.partitions[0];
      if (p0) offset.value = String(Math.max(p0.start_offset, p0.end_offset - 20));
      part.addEventListener('change', () => {
        const p = info.partitions.find((x) => String(x.partition) === part.value);
        if (p) offset.value = String(Math.max(p.start_offset, p.end_offset - 20));
      });
    }
    info = d;
    live.replaceChildren(table(src(url), [['Partition', 'num'], ['Start offset', 'num'], ['End offset', 'num'], ['Messages', 'num'], ['Bytes', 'num'], ['Produce rate', 'num']],
      d.partitions.map((p) => row([n(v(num(p.partition), url)), n(v(num(p.start_offset), url)), n(v(h('span', { 'data-end': `${name}/${p.partition}` }, num(p.end_offset)), url)),
        n(v(num(p.end_offset - p.start_offset), url)), n(v(bytes(p.bytes), url)), n(v(rateText(rateOf(name, p.partition, p.end_offset, at)), url))]))));
  };
}

// valueCell shows a JSON value pretty-printed, and bytes that are not JSON as base64, labelled.
function valueCell(msg) {
  if (msg.value_base64 !== undefined && msg.value_base64 !== null) {
    return h('div', {}, h('span', { class: 'tag' }, 'base64'), ' ', h('pre', { class: 'b64' }, msg.value_base64));
  }
  return h('pre', { class: 'json' }, JSON.stringify(msg.value, null, 2));
}
