// global.js: global transactions by status, the in-doubt list with each branch's state, and
// the operator's resolve action (admin token; confirmed by typing the transaction id).

import { get, post, whoami } from './api.js';
import { h, num, time, v, src, table, row, n, errorBox, enc } from './fmt.js';

const STATUSES = ['active', 'preparing', 'committing', 'committed', 'rolling_back', 'rolled_back', 'in_doubt'];
// Small answers only: the counts by status come with the newest few (counts cover every
// retained transaction), the resolved ones are asked for by themselves.
const RECENT_N = 15, RESOLVED_N = 20, IN_DOUBT_N = 100;
const RECENT = `/v1/global-transactions?order=newest&limit=${RECENT_N}`;
const RESOLVED = `/v1/global-transactions?resolved=true&order=newest&limit=${RESOLVED_N}`;
const IN_DOUBT = `/v1/global-transactions?status=in_doubt&limit=${IN_DOUBT_N}`;
let lastResolved = null; // the answer of the last resolve in this tab

export async function render(main) {
  const live = h('div', { 'data-live': '' });
  const notice = h('div', { 'aria-live': 'polite', id: 'resolve-result' });
  main.replaceChildren(h('h1', {}, 'Global transactions'), notice, live);
  const showResolved = () => {
    if (!lastResolved) return;
    const t = lastResolved, u = '/v1/global-transactions/' + enc(t.id);
    notice.replaceChildren(h('p', { class: 'ok', role: 'status' }, 'Resolved ', h('code', {}, t.id), ': status ',
      v(h('span', { 'data-status': t.id }, t.status), u), ', by ', v(h('span', { 'data-resolved-by': t.id }, t.resolved_by || '–'), u),
      ' at ', time(t.decided_at)));
  };
  showResolved();
  const refresh = async () => {
    const [recentList, resolvedList, doubt, who] = await Promise.all([get(RECENT), get(RESOLVED), get(IN_DOUBT), whoami().catch(() => null)]);
    const counts = recentList.counts || {}; // every retained transaction, by status
    const admin = !!(who && who.admin);
    const doubtRows = doubt.transactions.map((t) => {
      const u = '/v1/global-transactions/' + enc(t.id);
      const btn = (decision, label, cls) => h('button', {
        type: 'button', class: cls, 'data-resolve': decision, 'data-id': t.id, disabled: !admin,
        title: admin ? `${label}: POST ${u}/resolve` : 'needs an admin token',
        onclick: () => confirmResolve(t, decision, () => { showResolved(); refresh().catch(() => {}); }),
      }, label);
      return row([h('code', { class: 'id' }, v(t.id, u)), time(t.created_at),
        h('div', {}, t.branches.map((b) => h('div', {}, h('strong', {}, b.resource), ' ', v(h('span', { class: b.state === 'prepared' ? 'warn' : null }, b.state), u),
          h('span', { class: 'muted mono' }, ` ${b.xid.gtrid.slice(0, 12)}…/${b.xid.bqual}`)))),
        t.error ? h('span', {}, h('code', {}, t.error.code), ' ', t.error.message) : '',
        h('div', { class: 'actions', style: null }, btn('commit', 'Commit', null), btn('rollback', 'Roll back', 'danger'))]);
    });
    live.replaceChildren(...[
      h('h2', {}, 'By status'),
      table(src(RECENT), STATUSES.map((s) => [s.replace('_', ' '), 'num']),
        [row(STATUSES.map((s) => n(v(h('span', { 'data-count': s, class: s === 'in_doubt' && counts[s] ? 'bad' : null }, num(counts[s])),
          '/v1/global-transactions?status=' + s + '&order=newest&limit=100'))))]),
      h('h2', {}, 'In doubt'),
      admin ? null : h('p', { class: 'muted' }, 'Resolving needs an admin token; the buttons are disabled for this one.'),
      cut(doubt, 'in_doubt', 'warn', `Showing the oldest ${num(doubt.transactions.length)} of ${num(doubt.total)} transactions in doubt.`),
      table(src(IN_DOUBT), ['Id', 'Created (UTC)', 'Branches', 'Why', 'Resolve'], doubtRows, 'Nothing in doubt.'),
      h('h2', {}, 'Resolved by an operator'),
      cut(resolvedList, 'resolved', 'muted', `The newest ${num(resolvedList.transactions.length)} of ${num(resolvedList.total)} resolved by an operator.`),
      table(src(RESOLVED), ['Id', 'Status', 'Resolved by', 'Decided at (UTC)'], resolvedList.transactions.map((t) => {
        const u = '/v1/global-transactions/' + enc(t.id);
        return row([h('code', { 'data-resolved-row': t.id }, v(t.id, u)), v(t.status, u), v(t.resolved_by, u), time(t.decided_at)]);
      }), 'None.'),
      h('h2', {}, 'Most recent'),
      cut(recentList, 'recent', 'muted', `The newest ${num(recentList.transactions.length)} of ${num(recentList.total)} retained.`),
      table(src(RECENT), ['Id', 'Status', 'Branches', 'Created (UTC)', 'Decided (UTC)', 'Finished (UTC)'], recentList.transactions.map((t) => {
        const u = '/v1/global-transactions/' + enc(t.id);
        return row([h('code', { 'data-recent': t.id }, v(t.id, u)), v(t.status, u), n(v(num(t.branches.length), u)), time(t.created_at), time(t.decided_at), time(t.finished_at)]);
      }), 'None yet.')].filter(Boolean));
  };
  return refresh;
}

// cut is the note over a list the server cut at its limit (null when it is whole).
function cut(list, name, cls, text) {
  return list.truncated ? h('p', { class: cls, 'data-truncated': name }, text) : null;
}

// confirmResolve asks for the transaction id, typed in, then posts the decision.
function confirmResolve(t, decision, done) {
  const dlg = document.getElementById('resolve-dialog');
  const form = document.getElementById('resolve-form');
  const input = document.getElementById('resolve-confirm');
  const operator = document.getElementById('resolve-operator');
  const submit = document.getElementById('resolve-submit');
  const cancel = document.getElementById('resolve-cancel');
  const err = document.getElementById('resolve-error');
  const verb = decision === 'commit' ? 'Commit' : 'Roll back';
  document.getElementById('resolve-title').textContent = `${verb} ${t.id}?`;
  document.getElementById('resolve-text').textContent = `This records an operator's decision for the in-doubt global transaction ${t.id} ` +
    `(branches: ${t.branches.map((b) => `${b.resource} ${b.state}`).join(', ')}); recovery then finishes every branch that way.`;
  submit.textContent = verb;
  input.value = ''; err.textContent = ''; submit.disabled = true;
  const onInput = () => { submit.disabled = input.value.trim() !== t.id; };
  const cleanup = () => {
    input.removeEventListener('input', onInput);
    form.removeEventListener('submit', onSubmit);
    cancel.removeEventListener('click', onCancel);
  };
  const onCancel = () => { cleanup(); dlg.close(); };
  const onSubmit = async (ev) => {
    ev.preventDefault();
    if (input.value.trim() !== t.id) return;
    submit.disabled = true;
    try {
      const body = { decision };
      if (operator.value.trim()) body.operator = operator.value.trim();
      lastResolved = await post('/v1/global-transactions/' + enc(t.id) + '/resolve', body);
      cleanup(); dlg.close(); done();
    } catch (e) {
      err.textContent = e.message; submit.disabled = false;
    }
  };
  input.addEventListener('input', onInput);
  form.addEventListener('submit', onSubmit);
  cancel.addEventListener('click', onCancel);
  dlg.addEventListener('close', cleanup, { once: true });
  dlg.showModal();
  input.focus();
}
