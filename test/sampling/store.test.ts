// Statistics persistence against the real MinIO (and a local file): a save/load round trip, seeding RL from
// RFT's table through S3, and clear errors for a corrupt file.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createSampler, defaultStatsUri, StatsStore, StatsTable } from '../../src/sampling';
import { ObjectStore } from '../../src/storage/s3';

const S3_ENDPOINT = process.env.TRAINFLOW_S3_ENDPOINT ?? 'http://127.0.0.1:9000';
const BUCKET = process.env.TRAINFLOW_BUCKET ?? 'trainflow';
const endpoint = { endpoint: S3_ENDPOINT, region: 'us-east-1', force_path_style: true };
const unique = () => `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

test('a sampler carries its statistics across stages through S3; RFT seeds RL once', async () => {
  const store = new StatsStore(endpoint);
  const root = `s3://${BUCKET}/tests/sampling-${unique()}`;
  const rftUri = defaultStatsUri(root, 'rft-pipeline');
  expect(rftUri).toBe(`${root}/sampling/rft-pipeline/stats.json`);
  expect(await store.load(rftUri)).toBeUndefined();

  const tasks = ['a', 'b', 'c'];
  const rft = createSampler(tasks, {}, await store.loadOrCreate(rftUri, 11));
  rft.observe('a', [1, 1, 0, 1]);
  rft.observe('b', [0, 0, 0, 0]);
  rft.step();
  rft.draw(2);
  await store.save(rftUri, rft.stats);

  const back = await store.load(rftUri);
  const { updated_at: _saved, ...savedFields } = back!.toJSON();
  const { updated_at: _now, ...liveFields } = rft.stats.toJSON();
  expect(savedFields).toEqual(liveFields);
  expect(back?.isFiltered('b')).toBe(true);

  // RL in another table (its own stats_uri), seeded from RFT's: the pass rates carry over, once.
  const rlUri = `${root}/rl/stats.json`;
  const rlTable = await store.loadOrCreate(rlUri, 12);
  expect(await store.seed(rlTable, rftUri)).toBe(true);
  expect(await store.seed(rlTable, rftUri)).toBe(false);
  expect(rlTable.passRate('a')).toBeCloseTo(4 / 6);
  await store.save(rlUri, rlTable);
  const reloaded = await store.load(rlUri);
  expect(await store.seed(reloaded!, rftUri)).toBe(false); // a retried stage seeds nothing twice
  expect(reloaded!.get('a')?.attempts).toBe(4);

  await new ObjectStore(endpoint).putBytes(`${root}/broken.json`, '{"format": 1, "id": ');
  await expect(store.load(`${root}/broken.json`)).rejects.toThrow(
    `${root}/broken.json: sampling statistics are not valid JSON`,
  );
});

test('local files work the same way', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'trainflow-sampling-'));
  const store = new StatsStore();
  const file = path.join(dir, 'nested', 'stats.json');
  const t = new StatsTable(3);
  t.record('x', [1, 0]);
  await store.save(file, t);
  expect((await store.load(`file://${file}`))?.get('x')).toMatchObject({ attempts: 2, successes: 1 });
  writeFileSync(file, JSON.stringify({ format: 1 }));
  await expect(store.load(file)).rejects.toThrow(
    `${file}: sampling statistics field id must be a non-empty string`,
  );
});
