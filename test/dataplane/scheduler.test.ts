import { autoSplit, foldRates, TagScheduler, type SplitRates } from '../../src/dataplane/scheduler';

const gpus = (both: number, rolloutOnly: number) => [
  ...Array.from({ length: both }, (_, i) => ({
    id: `b${i}`,
    tags: ['train', 'rollout'] as ('train' | 'rollout')[],
  })),
  ...Array.from({ length: rolloutOnly }, (_, i) => ({
    id: `r${i}`,
    tags: ['rollout'] as ('train' | 'rollout')[],
  })),
];

test('staleness admission: at most (version + maxStaleness + 1) batches launched', () => {
  const s = new TagScheduler(gpus(1, 1), { batchSize: 4, maxStaleness: 1, wholeBatches: false });
  let n = 0;
  while (s.admit()) {
    s.launch();
    n++;
  }
  expect(n).toBe(8);
  for (let i = 0; i < 3; i++) expect(s.complete()).toBe(false);
  expect(s.complete()).toBe(true);
  expect(s.admit()).toBe(false); // still version 0
  s.startTraining();
  s.finishTraining();
  expect(s.version).toBe(1);
  expect(s.admit()).toBe(true); // one more batch may start
});

test('whole batches with staleness 0 is the synchronous loop', () => {
  const s = new TagScheduler(gpus(2, 0), { batchSize: 2, maxStaleness: 0, wholeBatches: true });
  s.launch();
  s.launch();
  expect(s.admit()).toBe(false);
  s.complete();
  s.complete();
  expect(s.admit()).toBe(false); // the batch must be trained first
  s.startTraining();
  s.finishTraining();
  expect(s.admit()).toBe(true);
});

test('train-tagged resources serve rollout while the trainer is idle and are taken back for a batch', () => {
  const s = new TagScheduler(gpus(2, 1), { batchSize: 1, maxStaleness: 1, wholeBatches: false });
  expect(s.rolloutResources().sort()).toEqual(['b0', 'b1', 'r0']);
  s.launch();
  expect(s.complete()).toBe(true);
  expect(s.startTraining().sort()).toEqual(['b0', 'b1']); // their in-flight work must move: partial rollout
  expect(s.rolloutResources()).toEqual(['r0']);
  expect(s.role('b0')).toBe('train');
  expect(s.finishTraining().sort()).toEqual(['b0', 'b1']);
  expect(s.rolloutResources().sort()).toEqual(['b0', 'b1', 'r0']);
  expect(
    () =>
      new TagScheduler([{ id: 'x', tags: ['rollout'] }], {
        batchSize: 1,
        maxStaleness: 0,
        wholeBatches: true,
      }),
  ).toThrow(/train/);
});

test('autoSplit: training gets the share of resources its share of the work needs, capped by capacity', () => {
  // 32 resources, a batch of 1000 tokens, 100 tokens/s per rollout resource, 90 resource-seconds of training:
  // k = 32 * 100 * 90 / (1000 + 100 * 90) = 28.8 -> 28 (then 4 resources make 4*100*90/28 = 1286 >= 1000).
  expect(autoSplit(32, { rolloutTokensPerS: 100, trainResourceSeconds: 90, tokensPerBatch: 1000 })).toBe(28);
  // The in-flight generations must fit on those left serving: 700 at 128 each need 6 of them.
  expect(
    autoSplit(32, {
      rolloutTokensPerS: 100,
      trainResourceSeconds: 90,
      tokensPerBatch: 1000,
      inFlight: 700,
      slotsPerResource: 128,
    }),
  ).toBe(26);
  // Rollout-heavy work trains on few; never 0 and never all (rollout must not stop); capped at `max`.
  expect(autoSplit(8, { rolloutTokensPerS: 1, trainResourceSeconds: 1, tokensPerBatch: 1000 })).toBe(1);
  expect(autoSplit(8, { rolloutTokensPerS: 1e6, trainResourceSeconds: 1e6, tokensPerBatch: 1 })).toBe(7);
  expect(autoSplit(8, { rolloutTokensPerS: 1e6, trainResourceSeconds: 1e6, tokensPerBatch: 1 }, 3)).toBe(3);
  // Nothing measured yet: all but one.
  expect(autoSplit(4, { rolloutTokensPerS: 0, trainResourceSeconds: 0, tokensPerBatch: 0 })).toBe(3);
});

test('startTraining(count, load) takes the least loaded train-tagged resources; the rest keep serving', () => {
  const s = new TagScheduler(gpus(3, 1), { batchSize: 1, maxStaleness: 1, wholeBatches: false });
  s.launch();
  s.complete();
  const load: Record<string, number> = { b0: 5, b1: 0, b2: 2, r0: 0 };
  expect(s.startTraining(2, (id) => load[id]).sort()).toEqual(['b1', 'b2']);
  expect(s.trainingResources().sort()).toEqual(['b1', 'b2']);
  expect(s.rolloutResources().sort()).toEqual(['b0', 'r0']);
  expect(s.finishTraining().sort()).toEqual(['b1', 'b2']);
  expect(s.rolloutResources().sort()).toEqual(['b0', 'b1', 'b2', 'r0']);
});

test('doomed: an in-flight sample that can no longer be trained within the staleness bound', () => {
  const s = new TagScheduler(gpus(1, 1), { batchSize: 2, maxStaleness: 1, wholeBatches: false });
  // Version 0: four launched (the bound), none finished: the next batch trains version 0.
  for (let i = 0; i < 4; i++) s.launch();
  expect(s.earliestTrainVersion()).toBe(0);
  expect(s.doomed(0)).toBe(false);
  // Two finish (batch 0 ready): an in-flight sample joins the batch after it, at version 1 at the earliest.
  s.complete();
  s.complete();
  expect(s.earliestTrainVersion()).toBe(1);
  s.startTraining();
  expect(s.earliestTrainVersion()).toBe(1); // training now: the next batch trains the version it makes
  expect(s.doomed(0)).toBe(false); // staleness 1: still fine
  s.finishTraining();
  // Version 1: two more launched; two of the version-0 ones finish (batch 1 ready), two still run.
  s.launch();
  s.launch();
  s.complete();
  s.complete();
  s.startTraining();
  // Batch 1 is taken; the version-0 samples still in flight can be trained no earlier than version 2.
  expect(s.earliestTrainVersion()).toBe(2);
  expect(s.doomed(0)).toBe(true);
  expect(s.doomed(1)).toBe(false);
  // Aborting them frees their launch slots: fresh samples may take their places.
  expect(s.admit()).toBe(false);
  s.abandon();
  s.abandon();
  expect(s.admit()).toBe(true);
  // Whole completed batches waiting ahead push the earliest version further.
  s.finishTraining();
  for (let i = 0; i < 4; i++) {
    s.launch();
    s.complete();
  }
  expect(s.earliestTrainVersion()).toBe(4); // version 2, batches 2 and 3 complete ahead of any in-flight one
  expect(s.doomed(2)).toBe(true);
  expect(s.doomed(3)).toBe(false);
});

test('foldRates: the best rollout rate measured, moving averages of the rest, unmeasured rates ignored', () => {
  let r = foldRates(null, { rolloutTokensPerS: 2000, trainResourceSeconds: 8000, tokensPerBatch: 1.2e6 });
  expect(r).toEqual({ rolloutTokensPerS: 2000, trainResourceSeconds: 8000, tokensPerBatch: 1.2e6 });
  // A starved step (its serving resources ran out of work) measures less: the best rate stays.
  r = foldRates(r, { rolloutTokensPerS: 1200, trainResourceSeconds: 7000, tokensPerBatch: 1.0e6 });
  expect(r).toEqual({ rolloutTokensPerS: 2000, trainResourceSeconds: 7500, tokensPerBatch: 1.1e6 });
  r = foldRates(r, { rolloutTokensPerS: 2500, trainResourceSeconds: 7500, tokensPerBatch: 1.1e6 });
  expect(r.rolloutTokensPerS).toBe(2500);
  // A step in which nothing served (0/0) or nothing trained leaves those rates as they were.
  r = foldRates(r, { rolloutTokensPerS: NaN, trainResourceSeconds: 0, tokensPerBatch: Infinity });
  expect(r).toEqual({ rolloutTokensPerS: 2500, trainResourceSeconds: 7500, tokensPerBatch: 1.1e6 });
  // Nothing measured yet and a first step that served nothing: still unmeasured, so autoSplit gives n - 1.
  const none = foldRates(null, { rolloutTokensPerS: NaN, trainResourceSeconds: 9000, tokensPerBatch: 1e6 });
  expect(none.rolloutTokensPerS).toBe(0);
  expect(autoSplit(32, none)).toBe(31);
  expect(autoSplit(32, { rolloutTokensPerS: NaN, trainResourceSeconds: 1, tokensPerBatch: 1 })).toBe(31);
});

test('autoSplit fed by foldRates does not drift toward rollout when the serving resources starve', () => {
  // 32 resources; a resource generates up to 2000 tokens/s when it has work; a batch is 1.2M tokens and
  // 8000 resource-seconds of training. The serving resources have one batch to generate per step (no more
  // may start: the staleness bound), and draining it they work at 90% of their rate on average.
  const n = 32;
  const full = 2000;
  const T = 8000;
  const B = 1.2e6;
  const measuredRate = (k: number): number => Math.min(full, (B * k) / ((n - k) * T)) * 0.9;
  const run = (fold: (prev: SplitRates | null, m: SplitRates) => SplitRates): number[] => {
    let rates: SplitRates | null = null;
    const ks: number[] = [];
    for (let step = 0; step < 12; step++) {
      const k = autoSplit(n, rates ?? { rolloutTokensPerS: 0, trainResourceSeconds: 0, tokensPerBatch: 0 });
      ks.push(k);
      rates = fold(rates, { rolloutTokensPerS: measuredRate(k), trainResourceSeconds: T, tokensPerBatch: B });
    }
    return ks;
  };
  // k = 32 * 1800 * 8000 / (1.2M + 1800 * 8000) = 29.5 -> 29, and it stays there.
  const kept = run((p, m) => foldRates(p, m));
  expect(kept.slice(1)).toEqual(Array(11).fill(29));
  // Averaging the rollout rate (what the fold did before) feeds each starved step's rate back: the split
  // gives rollout one more resource after another.
  const averaged = run((p, m) => ({
    ...m,
    rolloutTokensPerS: p ? (p.rolloutTokensPerS + m.rolloutTokensPerS) / 2 : m.rolloutTokensPerS,
  }));
  expect(averaged[averaged.length - 1]).toBeLessThan(26);
});
