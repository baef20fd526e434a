import { TagScheduler } from '../../src/dataplane/scheduler';

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
