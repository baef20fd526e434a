/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-return, @typescript-eslint/no-unsafe-call -- the OpenAI JSON the agent reads is untyped on purpose */
// The trajectory proxy in front of real Python inference servers, driven by a scripted tool-using agent.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Ledger, readLedger } from '../../src/dataplane/ledger';
import { TrajectoryProxy, type DriftMode } from '../../src/dataplane/proxy';
import type { TurnRecord } from '../../src/dataplane/sessions';
import { branches, countTokens, type TreeNode } from '../../src/dataplane/tree';
import { buildFixture, SERVER_ADMIN, startServer, type Fixture, type RunningServer } from './servers';

const ADMIN = 'proxy-admin';
const TOOLS = [
  {
    type: 'function',
    function: { name: 'python', parameters: { type: 'object', properties: { code: { type: 'string' } } } },
  },
];

let fix: Fixture;
let servers: RunningServer[] = [];
const proxies: TrajectoryProxy[] = [];

beforeAll(async () => {
  fix = buildFixture();
  servers = await Promise.all([startServer(fix.checkpoints[0]), startServer(fix.checkpoints[0])]);
});

afterAll(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  await Promise.all(servers.map((s) => s.stop()));
});

async function startProxy(
  drift: DriftMode = 'detect',
  upstreams = servers.map((s) => s.url),
): Promise<{ proxy: TrajectoryProxy; base: string }> {
  const proxy = new TrajectoryProxy({
    upstreams,
    adminToken: ADMIN,
    upstreamAdminToken: SERVER_ADMIN,
    drift,
  });
  proxies.push(proxy);
  const port = await proxy.listen(0);
  return { proxy, base: `http://127.0.0.1:${port}` };
}

async function call(
  base: string,
  path: string,
  token: string | null,
  body?: unknown,
  method = body === undefined ? 'GET' : 'POST',
): Promise<{ status: number; json: any; text: string }> {
  const res = await fetch(base + path, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any = null;
  try {
    json = JSON.parse(text);
  } catch {
    // SSE or text
  }
  return { status: res.status, json, text };
}

async function newSession(base: string, taskId = 'task-1'): Promise<{ id: string; key: string }> {
  const r = await call(base, '/admin/sessions', ADMIN, { task_id: taskId });
  expect(r.status).toBe(201);
  return { id: r.json.session_id, key: r.json.key };
}

function allowed(): number[] {
  return [fix.letters.X, fix.letters.Y, fix.letters.Z, fix.im_end];
}

/** One chat turn of the scripted agent; returns the server's response (as the agent got it). */
async function turn(
  base: string,
  key: string,
  messages: unknown[],
  extra: Record<string, unknown> = {},
): Promise<any> {
  const r = await call(base, '/v1/chat/completions', key, {
    messages,
    tools: TOOLS,
    max_tokens: 6,
    allowed_token_ids: allowed(),
    ...extra,
  });
  expect(r.status).toBe(200);
  return r.json;
}

function parseSse(text: string): any[] {
  return text
    .split('\n\n')
    .map((e) => e.trim())
    .filter((e) => e.startsWith('data: ') && e !== 'data: [DONE]')
    .map((e) => JSON.parse(e.slice(6)));
}

async function sessionView(
  base: string,
  id: string,
): Promise<{ turns: TurnRecord[]; tree: TreeNode; drift: { detected: number; fixed: number } }> {
  const r = await call(base, `/admin/sessions/${id}`, ADMIN);
  expect(r.status).toBe(200);
  return r.json;
}

function expectRecorded(t: TurnRecord, response: any, choice = 0): void {
  const ch = response.choices[choice];
  expect(t.promptIds).toEqual(response.prompt_token_ids);
  expect(t.outputIds).toEqual(ch.token_ids);
  expect(t.logprobs).toEqual(ch.logprobs.content.map((e: any) => e.logprob));
  expect(t.versions).toEqual(ch.policy_versions);
}

test('multi-turn tool-using agent: ids, log-probs and versions recorded exactly; one path; no drift', async () => {
  const { base } = await startProxy();
  const s = await newSession(base);
  const messages: any[] = [
    { role: 'system', content: 'You fix bugs.' },
    { role: 'user', content: 'run the tests' },
  ];
  const responses: any[] = [];
  for (let k = 0; k < 3; k++) {
    const r = await turn(base, s.key, messages, { seed: k });
    responses.push(r);
    const reply = r.choices[0].message;
    messages.push({ role: 'assistant', content: reply.content });
    messages.push({ role: 'tool', tool_call_id: `call_${k}`, content: `ok ${k}: 3 passed` });
    if (k === 1) messages.push({ role: 'tool', tool_call_id: 'call_1b', content: 'parallel tool result' });
  }
  const view = await sessionView(base, s.id);
  expect(view.turns.map((t) => t.id)).toEqual(['0.0', '1.0', '2.0']);
  expect(view.turns.map((t) => t.parent)).toEqual([null, '0.0', '1.0']);
  view.turns.forEach((t, i) => expectRecorded(t, responses[i]));
  expect(view.turns.every((t) => !t.drift)).toBe(true);
  expect(view.drift).toEqual({ detected: 0, fixed: 0 });
  // Tool messages are recorded with the request that carried them.
  expect(JSON.stringify(view.turns[2].messages)).toContain('parallel tool result');
  // One path, equal to the last prompt followed by its output; generated tokens carry their log-probs.
  const paths = branches(view.tree);
  expect(paths).toHaveLength(1);
  const last = view.turns[2];
  expect(paths[0]).toEqual(last.promptIds.concat(last.outputIds));
  const lps: (number | null)[] = [];
  const walk = (n: TreeNode): void => {
    lps.push(...n.logprobs);
    n.children.forEach(walk);
  };
  walk(view.tree);
  expect(lps.filter((x) => x !== null)).toHaveLength(view.turns.reduce((a, t) => a + t.outputIds.length, 0));
});

test("a swe episode's per-test outcomes are stored in the ledger with its trajectory", async () => {
  // the agent worker's episode carries the verifier's tests (agent/loop.py Episode.tests); the driver passes
  // them to finish, which writes them with the trajectory before the ledger append (src/rl/driver.ts)
  const dir = mkdtempSync(path.join(tmpdir(), 'tf-ledger-tests-'));
  const ledger = new Ledger(dir);
  const proxy = new TrajectoryProxy({
    upstreams: servers.map((s) => s.url),
    adminToken: ADMIN,
    upstreamAdminToken: SERVER_ADMIN,
    drift: 'detect',
    onTrajectory: (t) => Promise.resolve(ledger.append(t.trajectory_id, { kind: 'trajectory', ...t })),
  });
  proxies.push(proxy);
  const base = `http://127.0.0.1:${await proxy.listen(0)}`;
  const swe = await newSession(base, 'isodate__0.7.2.change_operator.1');
  await turn(base, swe.key, [{ role: 'user', content: 'fix the bug' }], { seed: 0 });
  const tests = {
    'tests/test_date.py::test_parse[0]': 'passed',
    'tests/test_time.py::test_format': 'failed',
  };
  await proxy.finish(swe.id, 0, tests);
  const plain = await newSession(base, 'demo-1');
  await turn(base, plain.key, [{ role: 'user', content: 'add 2 and 3' }], { seed: 1 });
  await proxy.finish(plain.id, 1); // a verifier without named tests: no field
  ledger.close();
  const records = readLedger(dir, -1).map((e) => e.record as Record<string, unknown>);
  expect(records.map((r) => [r.task_id, r.reward, r.tests])).toEqual([
    ['isodate__0.7.2.change_operator.1', 0, tests],
    ['demo-1', 1, undefined],
  ]);
});

test('n>1 choices and forks make branches; the continued choice is the parent', async () => {
  const { base } = await startProxy();
  const s = await newSession(base);
  const messages: any[] = [{ role: 'user', content: 'run the tests' }];
  // Letters only (no end-of-turn): three 5-token replies, distinct unless the dice say otherwise.
  const r0 = await turn(base, s.key, messages, {
    n: 3,
    seed: 11,
    max_tokens: 5,
    allowed_token_ids: allowed().slice(0, 3),
  });
  expect(r0.choices).toHaveLength(3);
  const chosen = r0.choices[1].message.content;
  const cont = [...messages, { role: 'assistant', content: chosen }];
  const rA = await turn(base, s.key, [...cont, { role: 'user', content: 'again' }], { seed: 1 });
  const rB = await turn(base, s.key, [...cont, { role: 'user', content: 'explain' }], { seed: 2 });
  const view = await sessionView(base, s.id);
  expect(view.turns.map((t) => t.id)).toEqual(['0.0', '0.1', '0.2', '1.0', '2.0']);
  for (let c = 0; c < 3; c++) expectRecorded(view.turns[c], r0, c);
  expectRecorded(view.turns[3], rA);
  expectRecorded(view.turns[4], rB);
  expect(view.turns[3].parent).toBe('0.1');
  expect(view.turns[4].parent).toBe('0.1');
  expect(view.drift.detected).toBe(0);
  // Leaves: choices 0 and 2 (unless two choices drew identical ids) and the two forks of choice 1.
  const distinct = new Set(r0.choices.map((c: any) => JSON.stringify(c.token_ids))).size;
  const paths = branches(view.tree);
  expect(paths).toHaveLength(distinct - 1 + 2);
  const { unique, total } = countTokens(view.tree);
  expect(unique).toBeLessThan(total);
  for (const t of [view.turns[3], view.turns[4]])
    expect(paths).toContainEqual(t.promptIds.concat(t.outputIds));
});

test('streaming: the agent gets the SSE stream; the record equals the streamed ids', async () => {
  const { base } = await startProxy();
  const s = await newSession(base);
  const r = await call(base, '/v1/chat/completions', s.key, {
    messages: [{ role: 'user', content: 'hi' }],
    max_tokens: 6,
    stream: true,
    n: 2,
    seed: 4,
  });
  expect(r.status).toBe(200);
  const events = parseSse(r.text);
  const ids: Record<number, number[]> = { 0: [], 1: [] };
  for (const ev of events) for (const c of ev.choices) ids[c.index].push(...(c.token_ids ?? []));
  const view = await sessionView(base, s.id);
  expect(view.turns.map((t) => t.outputIds)).toEqual([ids[0], ids[1]]);
  expect(view.turns[0].promptIds).toEqual(events[events.length - 1].prompt_token_ids);
});

test('planted drift is detected; in fix mode the recorded ids are sent instead (token in, token out)', async () => {
  for (const mode of ['detect', 'fix'] as const) {
    const { base } = await startProxy(mode);
    const s = await newSession(base);
    const messages: any[] = [{ role: 'user', content: 'run the tests' }];
    const r0 = await turn(base, s.key, messages, { seed: 3 });
    // Clean continuation first: no drift.
    const clean = [
      ...messages,
      { role: 'assistant', content: r0.choices[0].message.content },
      { role: 'user', content: 'next' },
    ];
    await turn(base, s.key, clean, { seed: 4 });
    // Planted: the agent rewrites the model's reply (as a re-tokenising client would) before continuing.
    const planted = [
      ...messages,
      { role: 'assistant', content: 'the fox ' + r0.choices[0].message.content },
      { role: 'user', content: 'next' },
    ];
    const r2 = await turn(base, s.key, planted, { seed: 5 });
    const view = await sessionView(base, s.id);
    expect(view.turns.map((t) => t.drift)).toEqual([false, false, true]);
    expect(view.drift).toEqual({ detected: 1, fixed: mode === 'fix' ? 1 : 0 });
    const history = view.turns[0].promptIds.concat(view.turns[0].outputIds);
    const starts = JSON.stringify(r2.prompt_token_ids.slice(0, history.length)) === JSON.stringify(history);
    expect(starts).toBe(mode === 'fix');
    if (mode === 'fix') {
      // The tree stays one trunk: both continuations share the recorded first turn exactly.
      expect(branches(view.tree)).toHaveLength(2);
      expect(view.tree.children).toHaveLength(1);
      expect(view.tree.children[0].tokens.length).toBeGreaterThanOrEqual(history.length);
    }
  }
});

test('partial rollout through the proxy: reload mid-stream, one response, two versions', async () => {
  const { base } = await startProxy('detect', [servers[0].url]);
  const s = await newSession(base);
  const res = await fetch(base + '/v1/completions', {
    method: 'POST',
    headers: { authorization: `Bearer ${s.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      prompt: 'the quick brown fox',
      max_tokens: 60,
      seed: 2,
      ignore_eos: true,
      stream: true,
    }),
  });
  const reader = res.body!.getReader();
  let text = '';
  let reloaded = false;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    text += Buffer.from(value).toString('utf8');
    if (!reloaded && parseSse(text).length >= 4) {
      reloaded = true;
      expect((await call(base, '/admin/pause', ADMIN, {})).status).toBe(200);
      const r = await call(base, '/admin/reload', ADMIN, { path: fix.checkpoints[1] });
      expect(r.status).toBe(200);
      expect(r.json.upstreams[0].policy_version).toBe(2);
      expect((await call(base, '/admin/resume', ADMIN, {})).status).toBe(200);
    }
  }
  const view = await sessionView(base, s.id);
  const t = view.turns[0];
  expect(t.outputIds).toHaveLength(60);
  const k = t.versions.indexOf(2);
  expect(k).toBeGreaterThanOrEqual(3);
  expect(t.versions).toEqual([...Array(k).fill(1), ...Array(60 - k).fill(2)]);
  // Restore version 1 weights for the other tests.
  expect((await call(base, '/admin/reload', ADMIN, { path: fix.checkpoints[0], version: 1 })).status).toBe(
    200,
  );
});

test('isolation: a session sees only itself and cannot call admin endpoints', async () => {
  const { base } = await startProxy();
  const a = await newSession(base, 'task-a');
  const b = await newSession(base, 'task-b');
  await turn(base, b.key, [{ role: 'user', content: 'secret of b' }]);
  expect((await call(base, `/admin/sessions/${b.id}`, a.key)).status).toBe(403);
  expect((await call(base, '/admin/sessions', a.key, { task_id: 'x' })).status).toBe(403);
  expect((await call(base, '/admin/reload', a.key, { path: '/x' })).status).toBe(403);
  expect((await call(base, '/admin/trajectories', a.key)).status).toBe(403);
  const own = await call(base, '/v1/session', a.key);
  expect(own.status).toBe(200);
  expect(own.json.session_id).toBe(a.id);
  expect(own.text).not.toContain('secret of b');
  expect((await call(base, '/v1/session', 'tfs_nope')).status).toBe(401);
  expect((await call(base, '/v1/chat/completions', null, { messages: [] })).status).toBe(401);
  expect(
    (await call(base, '/v1/chat/completions', ADMIN, { messages: [{ role: 'user', content: 'x' }] })).status,
  ).toBe(403);
  // A finished session's key stops working.
  const fin = await call(base, `/admin/sessions/${b.id}/finish`, ADMIN, { reward: 1 });
  expect(fin.status).toBe(200);
  expect(fin.json.task_id).toBe('task-b');
  expect((await call(base, '/v1/session', b.key)).status).toBe(401);
});

test('malformed requests get 4xx; an unreachable upstream fails over, none at all gives 503', async () => {
  const dead = 'http://127.0.0.1:9'; // discard port: nothing listens
  const { base, proxy } = await startProxy('detect', [dead, servers[1].url]);
  const s = await newSession(base);
  let r = await call(base, '/v1/chat/completions', s.key, '{oops');
  expect(r.status).toBe(400);
  expect(r.json.error.message).toMatch(/not valid JSON/);
  r = await call(base, '/v1/chat/completions', s.key, { messages: 'hi' });
  expect(r.status).toBe(400);
  expect(r.json.error.message).toMatch(/messages/);
  r = await call(base, '/v1/completions', s.key, { prompt: 'x', max_tokens: 'lots' });
  expect(r.status).toBe(400); // the server's own 400 passes through
  expect(r.json.error.message).toMatch(/max_tokens/);
  r = await call(base, '/admin/sessions/zzz/finish', ADMIN, { reward: 'high' });
  expect(r.status).toBe(400);
  for (let i = 0; i < 3; i++) {
    const s2 = await newSession(base);
    expect((await call(base, '/v1/completions', s2.key, { prompt: 'hello', max_tokens: 2 })).status).toBe(
      200,
    );
  }
  expect(proxy.pool.upstreams[0].downUntil).toBeGreaterThan(0);
  const { base: base2 } = await startProxy('detect', [dead]);
  const s3 = await newSession(base2);
  r = await call(base2, '/v1/completions', s3.key, { prompt: 'hello', max_tokens: 2 });
  expect(r.status).toBe(503);
  expect(r.json.error.message).toMatch(/no inference server is reachable/);
});

test('idle sessions expire: key revoked, record dropped, listeners told; a session mid-generation stays', async () => {
  const proxy = new TrajectoryProxy({
    upstreams: [servers[1].url],
    adminToken: ADMIN,
    upstreamAdminToken: SERVER_ADMIN,
    sessionIdleMs: 600,
  });
  proxies.push(proxy);
  const base = `http://127.0.0.1:${await proxy.listen(0)}`;
  const expired: string[] = [];
  proxy.onExpire((s) => expired.push(s.id));
  const idle = await newSession(base, 'task-idle');
  await turn(base, idle.key, [{ role: 'user', content: 'hello' }]);
  expect(proxy.pool.upstreams[0].sessions).toBe(1);
  const busy = await newSession(base, 'task-busy');
  // The busy session's request waits on a paused server for longer than the idle timeout.
  expect((await call(base, '/admin/pause', ADMIN, {})).status).toBe(200);
  let pending: Promise<{ status: number }>;
  try {
    pending = call(base, '/v1/completions', busy.key, { prompt: 'hello', max_tokens: 2 });
    await new Promise((r) => setTimeout(r, 1500));
    expect(expired).toEqual([idle.id]);
    expect((await call(base, '/v1/session', idle.key)).status).toBe(401);
    const fin = await call(base, `/admin/sessions/${idle.id}/finish`, ADMIN, { reward: 1 });
    expect(fin.status).toBe(404);
    expect(fin.json.error.message).toMatch(/expired/);
    const stats = await call(base, '/admin/stats', ADMIN);
    expect(stats.json.expiredSessions).toBe(1);
    expect(stats.json.live_sessions).toBe(1);
  } finally {
    expect((await call(base, '/admin/resume', ADMIN, {})).status).toBe(200);
  }
  expect((await pending).status).toBe(200);
  expect(proxy.pool.upstreams[0].sessions).toBe(1); // the busy one; the expired one gave its slot back
  const fin = await call(base, `/admin/sessions/${busy.id}/finish`, ADMIN, { reward: 0.5 });
  expect(fin.status).toBe(200);
  expect(fin.json.turns).toHaveLength(1);
});
