// The samplers over synthetic tasks with known pass rates: draw weights, filtering and re-checks, exact
// resume from saved statistics, idempotent seeding, and the point of it all — fewer groups without signal.
import path from 'node:path';
import { loadConfigFile } from '../../src/config/load';
import type { Sampler } from '../../src/dataplane/rollout';
import {
  createSampler,
  difficultyWeight,
  Rng,
  StatsTable,
  TaskDrawer,
  type TaskSampler,
} from '../../src/sampling';

const ids = (n: number) => Array.from({ length: n }, (_, i) => `t${i}`);

function tableWith(counts: Record<string, [number, number]>): StatsTable {
  const t = new StatsTable(7);
  for (const [id, [succ, att]] of Object.entries(counts)) {
    t.record(id, [...Array(succ).fill(1), ...Array(att - succ).fill(0)]);
  }
  return t;
}

test('weights favour middle pass rates, and unseen tasks get the exploration bonus', () => {
  const stats = tableWith({ easy: [20, 20], mid: [10, 20], hard: [0, 20] });
  const s = createSampler(['easy', 'mid', 'hard', 'new'], { exploration_bonus: 0.25 }, stats);
  const w = s.weights();
  expect(w.get('mid')!).toBeGreaterThan(w.get('easy')! * 4);
  expect(w.get('mid')!).toBeGreaterThan(w.get('hard')! * 4);
  expect(w.get('new')).toBeCloseTo(0.5); // p̂ = 1/2 under Beta(1,1), plus the full bonus
  expect(w.get('mid')).toBeCloseTo(difficultyWeight(11 / 22, 20, 0.25));
  // single draws follow the weights
  const freq = new Map<string, number>();
  const n = 20000;
  for (let i = 0; i < n; i++) {
    const [id] = s.draw(1);
    freq.set(id, (freq.get(id) ?? 0) + 1);
  }
  const total = [...w.values()].reduce((a, b) => a + b, 0);
  for (const [id, wt] of w) expect(Math.abs((freq.get(id) ?? 0) / n - wt / total)).toBeLessThan(0.015);
});

test('a draw is distinct while enough tasks are eligible', () => {
  const s = createSampler(ids(10), {}, new StatsTable(3));
  for (let i = 0; i < 20; i++) expect(new Set(s.draw(6)).size).toBe(6);
  const big = s.draw(25);
  expect(big).toHaveLength(25);
  expect(new Set(big).size).toBe(10);
  expect(() => s.draw(-1)).toThrow(/cannot draw -1/);
});

test('rewards equal within all_equal_tolerance count as all equal (float noise is no signal)', () => {
  const s = createSampler(['a', 'b'], {}, new StatsTable(3));
  expect(s.observe('a', [1, 1, 1, 1 + 1e-7])).toMatchObject({ keep: false, reason: 'all-equal' });
  expect(s.observe('b', [0.5, 0.5, 0.5 + 1e-3, 0.5]).keep).toBe(true);
  const exact = createSampler(['a'], { all_equal_tolerance: 0 }, new StatsTable(4));
  expect(exact.observe('a', [1, 1, 1, 1 + 1e-7]).keep).toBe(true);
  const loose = createSampler(['a'], { all_equal_tolerance: 0.01 }, new StatsTable(5));
  expect(loose.observe('a', [0.5, 0.505, 0.5, 0.5]).keep).toBe(false);
});

test('all-equal groups are dropped; their task rests recheck_every steps, then is drawn again', () => {
  const s = createSampler(['a', 'b'], { recheck_every: 3 }, new StatsTable(1));
  expect(s.observe('a', [1, 1, 1, 1])).toMatchObject({ keep: false, reason: 'all-equal' });
  expect(s.observe('b', [1, 0, 1, 1])).toMatchObject({ keep: true });
  expect(s.weights().get('a')).toBe(0);
  for (let i = 0; i < 10; i++) expect(s.draw(1)).toEqual(['b']);
  s.step();
  s.step();
  expect(s.stats.isFiltered('a')).toBe(true);
  s.step();
  expect(s.stats.isFiltered('a')).toBe(false); // re-check due
  expect(s.weights().get('a')).toBeGreaterThan(0);
  expect(s.observe('a', [0, 1, 1, 1]).keep).toBe(true);
  expect(s.stats.get('a')).toMatchObject({ attempts: 8, successes: 7, filtered_until: null });
  // a lone sample carries no "all equal" verdict; filtering can be switched off
  expect(s.observe('b', [1]).keep).toBe(true);
  const off = createSampler(['a'], { filter_all_equal: false });
  expect(off.observe('a', [0, 0]).keep).toBe(true);
  // the uniform sampler drops no-signal groups too, but keeps drawing their tasks
  const u = createSampler(['a', 'b'], { strategy: 'uniform' }, new StatsTable(2));
  expect(u.observe('a', [0, 0, 0]).keep).toBe(false);
  expect(u.weights().get('a')).toBe(1);
  expect(() => u.observe('zzz', [1])).toThrow(/unknown task id "zzz"/);
});

test('a sampler resumed from its saved statistics draws exactly what the uninterrupted one draws', () => {
  const run = (s: TaskSampler, steps: number, out: string[]) => {
    for (let i = 0; i < steps; i++) {
      for (const id of s.draw(4)) {
        out.push(id);
        s.observe(id, [Number(id.length % 2 === 0), Number(out.length % 3 === 0), 1]);
      }
      s.step();
    }
  };
  const straight: string[] = [];
  run(createSampler(ids(30), {}, new StatsTable(42)), 20, straight);

  const resumed: string[] = [];
  const first = createSampler(ids(30), {}, new StatsTable(42));
  run(first, 8, resumed);
  const saved = JSON.parse(JSON.stringify(first.stats.toJSON())) as unknown;
  run(createSampler(ids(30), {}, StatsTable.fromJSON(saved, 'mem')), 12, resumed);
  expect(resumed).toEqual(straight);
});

test("merging RFT's statistics seeds RL once, even when seeded again", () => {
  const rft = tableWith({ a: [3, 4], b: [0, 4] });
  const rl = tableWith({ a: [1, 2] });
  expect(rl.merge(rft)).toBe(true);
  expect(rl.merge(rft)).toBe(false);
  expect(rl.get('a')).toMatchObject({ attempts: 6, successes: 4 });
  expect(rl.get('b')).toMatchObject({ attempts: 4, successes: 0, filtered_until: null });
  const copy = StatsTable.fromJSON(JSON.parse(JSON.stringify(rft.toJSON())), 'copy');
  expect(rl.merge(copy)).toBe(false); // same table id after a save/load round trip
});

test('bad statistics files are refused with the file and field named', () => {
  const good = tableWith({ a: [1, 2] }).toJSON();
  expect(() => StatsTable.fromJSON({ ...good, format: 2 }, 's3://b/stats.json')).toThrow(
    's3://b/stats.json: sampling statistics field format must be 1',
  );
  expect(() =>
    StatsTable.fromJSON(
      { ...good, tasks: { a: { attempts: 1, successes: 3, last_seen_step: 0, filtered_until: null } } },
      'f.json',
    ),
  ).toThrow('f.json: sampling statistics field tasks["a"].successes must be a number between 0 and attempts');
  expect(() => StatsTable.fromJSON({ ...good, tasks: [] }, 'f.json')).toThrow(
    /field tasks must be an object/,
  );
  expect(() => createSampler([], {})).toThrow(/no tasks/);
  expect(() => createSampler(['a'], { recheck_every: 0 })).toThrow(/recheck_every/);
  expect(() => createSampler(['a'], { strategy: 'greedy' as never })).toThrow(/strategy/);
});

test('difficulty-aware sampling wastes fewer groups than uniform on a population with easy and impossible tasks', () => {
  // 60 tasks: a third always solved, a third never, a third in between (pass rates 0.2 … 0.8).
  const tasks = ids(60);
  const truth = new Map(tasks.map((id, i) => [id, i < 20 ? 1 : i < 40 ? 0 : 0.2 + (0.6 * (i - 40)) / 19]));
  const simulate = (strategy: 'difficulty' | 'uniform') => {
    const s = createSampler(tasks, { strategy, recheck_every: 20 }, new StatsTable(5));
    const world = new Rng(99);
    let groups = 0;
    let noSignal = 0;
    for (let step = 0; step < 150; step++) {
      for (const id of s.draw(4)) {
        const outcomes = Array.from({ length: 8 }, () => Number(world.next() < truth.get(id)!));
        groups++;
        if (!s.observe(id, outcomes).keep) noSignal++;
      }
      s.step();
    }
    return noSignal / groups;
  };
  const difficulty = simulate('difficulty');
  const uniform = simulate('uniform');
  expect(uniform).toBeGreaterThan(0.6); // two thirds of the tasks never give signal
  // (measured: 0.32 against 0.68; what remains are the re-checks of the 40 dead tasks every 20 steps)
  expect(difficulty).toBeLessThan(uniform - 0.25);
});

test("the demo config's resolved sampling block drives a sampler", () => {
  const config = loadConfigFile(path.join(__dirname, '../../configs/demo.yaml'));
  const rl = config.stages.find((s) => s.kind === 'rl')!;
  const s = createSampler(ids(8), rl.sampling, new StatsTable(1));
  expect(s.strategy).toBe(rl.sampling!.strategy);
  expect(s.draw(3)).toHaveLength(3);
});

test('the task drawer serves the rollout manager one task at a time, distinct within a chunk', () => {
  const tasks = ids(10).map((id) => ({ id, prompt: `task ${id}` }));
  const drawer = new TaskDrawer(tasks, createSampler(ids(10), {}, new StatsTable(4)), 4);
  const sampler: Sampler = drawer; // the rollout manager's interface
  const chunk = Array.from({ length: 4 }, () => sampler.next());
  expect(new Set(chunk.map((t) => t.id)).size).toBe(4);
  expect(chunk[0].prompt).toBe(`task ${chunk[0].id}`);
  expect(drawer.observe(chunk[0].id, [1, 1]).keep).toBe(false);
  drawer.step();
  expect(drawer.sampler.stats.step).toBe(1);
  const stray = new TaskDrawer([{ id: 'zz' }], createSampler(['a'], {}), 1);
  expect(() => stray.next()).toThrow(/drew "a", which is not a task here/);
});
