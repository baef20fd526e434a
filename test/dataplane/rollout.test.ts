// The rollout manager end to end: real inference server, proxy, ledger; a scripted agent; a stand-in trainer
// that "trains" by returning the next checkpoint (the two fixture weights, alternately, with rising versions).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ledger, readLedger } from '../../src/dataplane/ledger';
import { TrajectoryProxy, type ProxyOptions } from '../../src/dataplane/proxy';
import {
  RolloutManager,
  UniformSampler,
  type Agent,
  type Batch,
  type RolloutOptions,
} from '../../src/dataplane/rollout';
import { buildFixture, SERVER_ADMIN, startServer, type Fixture, type RunningServer } from './servers';

let fix: Fixture;
let server: RunningServer;

beforeAll(async () => {
  fix = buildFixture();
  server = await startServer(fix.checkpoints[0]);
});

afterAll(async () => {
  await server.stop();
});

/** Two chat turns with a tool result in between; reward 1 when the reply has an even length. */
const agent: Agent = async ({ baseUrl, apiKey }, task) => {
  const messages: { role: string; content: string }[] = [{ role: 'user', content: `solve ${task.id}` }];
  let reply = '';
  for (let turn = 0; turn < 2; turn++) {
    const res = await fetch(`${baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messages, max_tokens: 40, ignore_eos: true }),
    });
    if (res.status !== 200) throw new Error(`agent got ${res.status}: ${await res.text()}`);
    reply = ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0].message
      .content;
    messages.push({ role: 'assistant', content: reply }, { role: 'tool', content: 'tests: 1 failed' });
  }
  return reply.length % 2;
};

/**
 * A small manager over a new proxy: groups of 2 sessions, batches of 2 groups, 4 sessions at once, staleness
 * 1; its stand-in trainer records each batch (and calls `onTrain`) and serves the first fixture weights.
 */
async function smallManager(
  ledger: Ledger,
  o: Pick<RolloutOptions, 'sampler' | 'agent'> & Partial<RolloutOptions>,
  proxyOptions: Partial<ProxyOptions> = {},
  onTrain: () => void = () => undefined,
): Promise<{ manager: RolloutManager; proxy: TrajectoryProxy; trained: Batch[] }> {
  const proxy = new TrajectoryProxy({
    upstreams: [server.url],
    adminToken: 'admin',
    upstreamAdminToken: SERVER_ADMIN,
    ...proxyOptions,
  });
  const port = await proxy.listen(0);
  const trained: Batch[] = [];
  const manager = new RolloutManager({
    proxy,
    proxyUrl: `http://127.0.0.1:${port}`,
    ledger,
    trainer: {
      train: (batch) => {
        trained.push(batch);
        onTrain();
        return Promise.resolve({ checkpoint: fix.checkpoints[0], version: batch.trainerVersion + 1 });
      },
    },
    groupSize: 2,
    batchGroups: 2,
    concurrency: 4,
    maxStaleness: 1,
    initialVersion: 1,
    ...o,
  });
  return { manager, proxy, trained };
}

test('groups, batches, weight updates with partial rollout, staleness bound, ledger cursor', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tf-rollout-'));
  const ledger = new Ledger(dir, { segmentRecords: 50 });
  const trained: Batch[] = [];
  const { manager, proxy } = await smallManager(
    ledger,
    {
      sampler: new UniformSampler([{ id: 'task-a' }, { id: 'task-b' }, { id: 'task-c' }], 7),
      agent,
      concurrency: 6,
      // training takes a while, and the two fixture weights alternate with rising versions
      trainer: {
        train: async (batch) => {
          trained.push(batch);
          await new Promise((r) => setTimeout(r, 150));
          const version = batch.trainerVersion + 1;
          return { checkpoint: fix.checkpoints[version % 2 === 0 ? 1 : 0], version };
        },
      },
    },
    {
      drift: 'fix',
      onTrajectory: async (t) => {
        ledger.append(t.trajectory_id, { kind: 'trajectory', ...t });
        return Promise.resolve();
      },
    },
  );
  try {
    const stats = await manager.run(3);
    expect(stats.steps).toBe(3);
    expect(trained.map((b) => b.trainerVersion)).toEqual([1, 2, 3]);
    let crossed = 0;
    for (const b of trained) {
      expect(b.groups.length + b.dropped.length).toBe(2);
      for (const g of b.groups) {
        expect(g.trajectories).toHaveLength(2);
        expect(new Set(g.trajectories.map((t) => t.group_id))).toEqual(new Set([g.group_id]));
        for (const t of g.trajectories) {
          // Staleness bound holds for every token trained on.
          expect(b.trainerVersion - t.versions!.min).toBeLessThanOrEqual(1);
          expect(t.turns).toHaveLength(2);
          if (t.versions!.min !== t.versions!.max) crossed++;
        }
      }
    }
    // Some trajectory lived through a weight update (partial rollout: its tokens carry two versions).
    expect(crossed).toBeGreaterThan(0);
    // The cursor advances over the ledger; each group trained once.
    const seen = trained.flatMap((b) => b.groups.map((g) => g.group_id).concat(b.dropped));
    expect(new Set(seen).size).toBe(seen.length);
    expect(ledger.acked()).toBe(trained[2].cursor);
    const entries = readLedger(dir, -1);
    const kinds = entries.map((e) => (e.record as { kind: string }).kind);
    expect(kinds.filter((k) => k === 'group').length).toBe(stats.groupsLaunched);
    expect(kinds.filter((k) => k === 'trajectory').length).toBe(stats.sessions);
  } finally {
    await proxy.close();
    ledger.close();
  }
});

test('groups the sampler filters out (all rewards equal) are recorded but never trained on', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tf-rollout-'));
  const ledger = new Ledger(dir);
  const uniform = new UniformSampler([{ id: 'task-a' }, { id: 'task-b' }, { id: 'task-c' }], 3);
  let steps = 0;
  const { manager, proxy, trained } = await smallManager(ledger, {
    sampler: {
      next: () => uniform.next(),
      observe: (taskId) => (taskId === 'task-b' ? { keep: false, reason: 'all-equal' } : { keep: true }),
      step: () => void steps++,
    },
    agent,
  });
  try {
    await manager.run(2);
    expect(steps).toBe(2);
    const trainedTasks = trained.flatMap((b) => b.groups.map((g) => g.task_id));
    expect(trainedTasks).toHaveLength(4);
    expect(trainedTasks).not.toContain('task-b');
    const groups = readLedger(dir, -1)
      .map((e) => e.record as { kind: string; task_id: string; filtered?: string })
      .filter((r) => r.kind === 'group');
    const filtered = groups.filter((g) => g.task_id === 'task-b');
    expect(filtered.length).toBeGreaterThan(0);
    expect(filtered.every((g) => g.filtered === 'all-equal')).toBe(true);
  } finally {
    await proxy.close();
    ledger.close();
  }
});

test('a group whose agent hangs expires with its sessions: recorded as filtered, never trained, run goes on', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tf-rollout-'));
  const ledger = new Ledger(dir);
  // task-b's agent makes one request, then hangs for good (a stuck sandbox, a lost worker).
  const hanging: Agent = async (endpoint, task) => {
    if (task.id !== 'task-b') return agent(endpoint, task);
    await fetch(`${endpoint.baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${endpoint.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }], max_tokens: 2 }),
    });
    return new Promise<number>(() => undefined);
  };
  const { manager, proxy, trained } = await smallManager(
    ledger,
    { sampler: new UniformSampler([{ id: 'task-a' }, { id: 'task-b' }], 5), agent: hanging },
    { sessionIdleMs: 600 },
  );
  try {
    const stats = await manager.run(2);
    expect(stats.steps).toBe(2);
    expect(stats.expiredGroups).toBeGreaterThan(0);
    expect(proxy.stats.expiredSessions).toBe(2 * stats.expiredGroups);
    const trainedTasks = trained.flatMap((b) => b.groups.map((g) => g.task_id));
    expect(trainedTasks).toEqual(['task-a', 'task-a', 'task-a', 'task-a']);
    const expiredGroups = readLedger(dir, -1)
      .map((e) => e.record as { kind: string; task_id: string; filtered?: string; trajectories: unknown[] })
      .filter((r) => r.kind === 'group' && r.task_id === 'task-b');
    expect(expiredGroups.length).toBe(stats.expiredGroups);
    for (const g of expiredGroups) {
      expect(g.filtered).toBe('2 of 2 sessions expired without finishing');
      expect(g.trajectories).toEqual([]);
    }
  } finally {
    await proxy.close();
    ledger.close();
  }
});

test('a resumed manager offers the groups already in the ledger after its cursor first, without waiting', async () => {
  // A previous run: one group it trained (at or before the cursor), two it finished but never trained, one
  // the sampler filtered.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tf-rollout-'));
  const ledger = new Ledger(dir);
  const group = (id: string, filtered?: string) =>
    ledger.append(id, {
      kind: 'group',
      group_id: id,
      task_id: 't',
      launch_version: 1,
      trajectories: [],
      filtered,
    });
  const cursor = group('old-trained');
  group('old-1');
  group('old-filtered', 'all rewards equal');
  group('old-2');
  // New agents finish only after the first batch was trained (or after 5 s, failing the check below).
  let release: () => void = () => undefined;
  const firstTrained = new Promise<void>((r) => (release = r));
  let agentsFinishedBeforeFirstBatch = 0;
  const { manager, proxy, trained } = await smallManager(
    ledger,
    {
      sampler: new UniformSampler([{ id: 'task-a' }], 1),
      agent: async () => {
        const timedOut = await Promise.race([
          firstTrained.then(() => false),
          new Promise<boolean>((r) => setTimeout(() => r(true), 5000)),
        ]);
        if (timedOut) agentsFinishedBeforeFirstBatch++;
        return 1;
      },
      cursor,
    },
    {},
    () => release(),
  );
  try {
    await manager.run(2);
    expect(agentsFinishedBeforeFirstBatch).toBe(0);
    expect(trained[0].groups.map((g) => g.group_id)).toEqual(['old-1', 'old-2']);
    expect(trained[1].groups.every((g) => g.group_id.startsWith('g'))).toBe(true); // new groups next
  } finally {
    await proxy.close();
    ledger.close();
  }
}, 60_000);

test('a group that can no longer be trained within max_staleness is aborted in flight: sessions cancelled, slot freed', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tf-rollout-'));
  const ledger = new Ledger(dir);
  // task-b's agents make one request, then wait until their key is refused (they poll): a response too long
  // to finish before the last batch it could join. No idle expiry: only the staleness rule can end them.
  const refused: number[] = [];
  const slow: Agent = async (endpoint, task) => {
    if (task.id !== 'task-b') return agent(endpoint, task);
    for (;;) {
      const res = await fetch(`${endpoint.baseUrl}/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${endpoint.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }], max_tokens: 2 }),
      });
      await res.text();
      if (res.status === 401) {
        refused.push(res.status);
        throw new Error('session cancelled');
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  // The first group is task-b's, every later one task-a's: the slow group holds one launch slot, the others
  // fill the batches (an all-slow window could never complete a batch, so no step would ever start).
  let drawn = 0;
  const { manager, proxy, trained } = await smallManager(ledger, {
    sampler: { next: () => ({ id: drawn++ === 0 ? 'task-b' : 'task-a' }) },
    agent: slow,
  });
  try {
    const stats = await manager.run(4);
    expect(stats.steps).toBe(4);
    expect(stats.abortedGroups).toBe(1);
    expect(stats.expiredGroups).toBe(0);
    expect(proxy.stats.cancelledSessions).toBe(2 * stats.abortedGroups);
    for (const b of trained) {
      expect(b.groups.length + b.dropped.length).toBe(2);
      expect(b.dropped).toEqual([]); // aborted in flight, never dropped at batch time
      for (const g of b.groups) expect(g.task_id).toBe('task-a');
    }
    const aborted = readLedger(dir, -1)
      .map((e) => e.record as { kind: string; task_id: string; filtered?: string; trajectories: unknown[] })
      .filter((r) => r.kind === 'group' && r.task_id === 'task-b');
    expect(aborted.length).toBe(stats.abortedGroups);
    for (const g of aborted) {
      expect(g.filtered).toMatch(
        /^aborted in flight: launched at version \d+, it could be trained no earlier/,
      );
      expect(g.trajectories).toEqual([]);
    }
    // The cancelled agents were refused on their next request (their engines stop decoding for them).
    await new Promise((r) => setTimeout(r, 200));
    expect(refused.length).toBeGreaterThan(0);
  } finally {
    await proxy.close();
    ledger.close();
  }
}, 60_000);
