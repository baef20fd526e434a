/* eslint-disable @typescript-eslint/no-explicit-any -- the OpenAI JSON is untyped on purpose */
// A fleet of two real CPU engines behind the proxy: kill -9 of one while requests are in flight (they fail
// over and all complete; the engine comes back, restarted by the fleet), and taking an engine back / giving
// it back (tag scheduling) without a request failing.
import { Fleet, ProcessLauncher, shareOut } from '../../src/dataplane/fleet';
import { TrajectoryProxy } from '../../src/dataplane/proxy';
import { buildFixture, PYTHON, SERVER_ADMIN, TRAINER, type Fixture } from './servers';

const ADMIN = 'proxy-admin';
let fix: Fixture;
let fleet: Fleet;
let proxy: TrajectoryProxy;
let base: string;

beforeAll(async () => {
  fix = buildFixture();
  const launcher = new ProcessLauncher(
    {
      argv: [
        PYTHON,
        '-m',
        'trainflow_trainer.serve',
        '--checkpoint',
        '{checkpoint}',
        '--policy-version',
        '{version}',
        '--port',
        '{port}',
        '--threads',
        '{threads}',
        '--admin-token',
        SERVER_ADMIN,
      ],
      cwd: TRAINER,
      health_path: '/health',
      ready_timeout_s: 120,
      python: PYTHON,
    },
    () => undefined, // the engines' logs stay out of the test output
  );
  fleet = new Fleet({
    launcher,
    shares: shareOut(2, [0, 1]),
    weights: { checkpoint: fix.checkpoints[0], version: 0 },
    adminToken: SERVER_ADMIN,
    backoffMs: 200,
    log: () => undefined,
  });
  const urls = await fleet.start();
  proxy = new TrajectoryProxy({ upstreams: urls, adminToken: ADMIN, upstreamAdminToken: SERVER_ADMIN });
  proxy.pool.waitForUpstreamMs = 60_000;
  fleet.attach(proxy.pool);
  base = `http://127.0.0.1:${await proxy.listen(0)}`;
}, 180_000);

afterAll(async () => {
  await proxy?.close();
  await fleet?.close();
});

async function chat(key: string, maxTokens: number): Promise<{ status: number; json: any }> {
  const res = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({
      messages: [{ role: 'user', content: 'count' }],
      max_tokens: maxTokens,
      allowed_token_ids: [fix.letters.X, fix.letters.Y, fix.letters.Z],
    }),
  });
  return { status: res.status, json: await res.json() };
}

function until(cond: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) return resolve();
      if (Date.now() > deadline) return reject(new Error('condition not met in time'));
      setTimeout(tick, 50);
    };
    tick();
  });
}

test('kill -9 of one of two engines mid-request: every request completes, the engine is restarted', async () => {
  expect(fleet.serving()).toBe(2);
  const sessions = Array.from({ length: 8 }, (_, i) => proxy.sessions.issue(`t${i}`, `g${i}`, {}));
  // Sessions spread over both engines (least sessions first), so some are in flight on the victim.
  const inflight = sessions.map((s) => chat(s.key, 48));
  await new Promise((r) => setTimeout(r, 150));
  const victim = fleet.pid(1)!;
  process.kill(victim, 'SIGKILL');
  const results = await Promise.all(inflight);
  expect(results.map((r) => r.status)).toEqual(Array(8).fill(200));
  expect(proxy.pool.failovers).toBeGreaterThan(0); // requests were in flight there and moved
  for (const r of results) expect(r.json.choices[0].token_ids).toHaveLength(48);
  // Every session recorded exactly one turn: a retried request is recorded once, where it ran.
  for (const s of sessions) expect(proxy.sessions.get(s.session.id)!.turns).toHaveLength(1);
  await until(() => fleet.serving() === 2, 120_000);
  expect(fleet.restarts()).toBe(1);
  expect(fleet.pid(1)).not.toBe(victim);
  const ev = fleet.events.filter((e) => e.engine === 1).map((e) => e.event);
  expect(ev.slice(-3)).toEqual(['died', 'restart', 'serving']);
  // The restarted engine serves again.
  const after = await Promise.all(sessions.map((s) => chat(s.key, 4)));
  expect(after.every((r) => r.status === 200)).toBe(true);
  expect(proxy.pool.upstreams.every((u) => u.sessions >= 0)).toBe(true);
}, 180_000);

test('taken back for training and given back: requests keep completing on the engine left', async () => {
  const s = proxy.sessions.issue('t', 'g', {});
  await fleet.take([0]);
  expect(fleet.serving()).toBe(1);
  expect(proxy.pool.upstreams[0].enabled).toBe(false);
  expect((await chat(s.key, 4)).status).toBe(200);
  expect(s.session.upstream).toBe(1);
  // A weight update while engine 0 sleeps: it catches up (reload) when it wakes.
  fleet.setWeights({ checkpoint: fix.checkpoints[1], version: 1 });
  await proxy.reloadAll(fix.checkpoints[1], 1);
  fleet.give([0]);
  await until(() => fleet.serving() === 2, 120_000);
  expect(proxy.pool.upstreams.map((u) => u.version)).toEqual([1, 1]);
  expect(fleet.restarts()).toBe(1); // a given-back engine wakes (SIGCONT + reload): not a restart
}, 180_000);
