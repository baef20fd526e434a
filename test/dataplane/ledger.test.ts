// The ledger: durability and exactly-once consumption under kill -9 of both sides (real processes), and
// shipping to S3 (the local MinIO).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { encodeLine, Ledger, parseSegment, readLedger, restoreFromS3 } from '../../src/dataplane/ledger';

const ROOT = path.resolve(__dirname, '../..');
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tf-ledger-'));

function run(script: string, args: string[]): ChildProcess {
  return spawn(process.execPath, ['-r', 'tsx/cjs', path.join(__dirname, 'crash', script), ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

const exited = (p: ChildProcess): Promise<number | null> =>
  p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve(p.exitCode)
    : new Promise((r) => p.once('exit', (code) => r(code)));

test('a torn last record is ignored by readers and cut off by the next writer', () => {
  const dir = tmp();
  const l = new Ledger(dir, { segmentRecords: 10 });
  for (let i = 0; i < 3; i++) l.append(`t${i}`, { i });
  l.close();
  const file = path.join(dir, 'segment-000000000000.log');
  const torn = encodeLine({ seq: 3, id: 't3', record: { i: 3 } });
  fs.appendFileSync(file, torn.slice(0, 20));
  expect(readLedger(dir, -1).map((e) => e.id)).toEqual(['t0', 't1', 't2']);
  const l2 = new Ledger(dir, { segmentRecords: 10 });
  expect(l2.append('t1', { again: true })).toBe(1); // idempotent by id
  expect(l2.append('t3', { i: 3 })).toBe(3);
  l2.close();
  expect(parseSegment(fs.readFileSync(file)).entries.map((e) => e.seq)).toEqual([0, 1, 2, 3]);
  expect(readLedger(dir, 1).map((e) => e.id)).toEqual(['t2', 't3']);
  // The trainer reads the same folder from Python (trainflow_trainer.serve.ledger), torn tail and all.
  fs.appendFileSync(file, encodeLine({ seq: 4, id: 't4', record: { i: 4 } }).slice(0, 30));
  const py = execFileSync(
    path.join(ROOT, '.venv/bin/python'),
    ['-m', 'trainflow_trainer.serve.ledger', dir, '0'],
    {
      cwd: path.join(ROOT, 'trainer'),
      encoding: 'utf8',
    },
  );
  const fromPython = py
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as unknown);
  expect(fromPython).toEqual(readLedger(dir, 0));
});

test('kill -9 of the data plane and the consumer at random points, 24 rounds: every trajectory consumed exactly once', async () => {
  const dir = tmp();
  const ckpt = path.join(dir, 'consumer-checkpoint.json');
  const n = 240;
  let producerDone = false;
  let kills = 0;
  let producerKillsMidway = 0;
  let consumerKillsMidway = 0;
  for (let round = 0; round < 24; round++) {
    const procs: { p: ChildProcess; who: string }[] = [
      { p: run('consumer.ts', [dir, ckpt, String(n)]), who: 'consumer' },
    ];
    if (!producerDone) procs.push({ p: run('producer.ts', [dir, String(n)]), who: 'producer' });
    // Each process is killed at its own random moment (unless it finished first).
    await Promise.all(
      procs.map(async (v) => {
        await new Promise((r) => setTimeout(r, 250 + Math.random() * 700));
        if (v.p.exitCode === null && v.p.kill('SIGKILL')) {
          kills++;
          if (v.who === 'producer') producerKillsMidway++;
          else consumerKillsMidway++;
        }
        const code = await exited(v.p);
        if (v.who === 'producer' && code === 0) producerDone = true;
      }),
    );
  }
  expect(kills).toBeGreaterThanOrEqual(20);
  // Both sides were killed while they still had work (the producer runs across several rounds).
  expect(producerKillsMidway).toBeGreaterThanOrEqual(3);
  expect(consumerKillsMidway).toBeGreaterThanOrEqual(10);
  // Then let both finish undisturbed.
  const last = [run('producer.ts', [dir, String(n)]), run('consumer.ts', [dir, ckpt, String(n)])];
  expect(await Promise.all(last.map(exited))).toEqual([0, 0]);
  const produced = readLedger(dir, -1);
  expect(produced.map((e) => e.seq)).toEqual(produced.map((_, i) => i));
  expect(new Set(produced.map((e) => e.id)).size).toBe(n);
  const consumed = (JSON.parse(fs.readFileSync(ckpt, 'utf8')) as { consumed: string[] }).consumed;
  expect(consumed).toHaveLength(n); // no duplicates ...
  expect([...consumed].sort()).toEqual(produced.map((e) => e.id).sort()); // ... and nothing lost
}, 120_000);

test('sealed segments ship to S3; an empty folder is restored from there', async () => {
  const endpoint = process.env.TRAINFLOW_S3_ENDPOINT ?? 'http://127.0.0.1:9000';
  const bucket = process.env.TRAINFLOW_BUCKET ?? 'trainflow';
  const client = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: {
      accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? 'trainflow',
      secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? 'trainflow-secret',
    },
  });
  try {
    await client.send(new HeadBucketCommand({ Bucket: bucket }));
  } catch (err) {
    throw new Error(
      `MinIO is unreachable at ${endpoint} (bucket ${bucket}): start the local stack with \`trainflow dev up\` (${String(err)})`,
    );
  }
  const ship = { client, bucket, prefix: `test/ledger-${Date.now()}-${process.pid}` };
  const dir = tmp();
  const l = new Ledger(dir, { segmentRecords: 4, ship });
  for (let i = 0; i < 10; i++) l.append(`t${i}`, { reward: i });
  l.seal();
  await l.flushShipping();
  expect(l.shipErrors).toEqual([]);
  l.close();
  const restored = tmp();
  expect(await restoreFromS3(restored, ship)).toBe(3);
  expect(readLedger(restored, -1)).toEqual(readLedger(dir, -1));
  const l2 = new Ledger(restored, { segmentRecords: 4 });
  expect(l2.size).toBe(10);
  expect(l2.append('t10', {})).toBe(10);
  l2.close();
  client.destroy();
});
