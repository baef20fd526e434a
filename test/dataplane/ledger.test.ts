// The ledger: durability and exactly-once consumption under kill -9 of both sides (real processes), and
// shipping to S3 (the local MinIO).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import {
  encodeLine,
  Ledger,
  parseSegment,
  readLedger,
  readShipped,
  restoreFromS3,
  shippedThrough,
} from '../../src/dataplane/ledger';
import { ledgerShipping, type DriverSpec } from '../../src/rl/driver';
import { minio } from './s3';

const ROOT = path.resolve(__dirname, '../..');
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tf-ledger-'));

function run(script: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, ['-r', 'tsx/cjs', path.join(__dirname, 'crash', script), ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
}

/** Resolves when the process printed READY (its start-up is done) or exited. */
function ready(p: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    p.stdout!.on('data', (b: Buffer) => {
      if (b.toString().includes('READY')) resolve();
    });
    p.once('exit', () => resolve());
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
  const { client, bucket } = await minio();
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

test("the open segment's tail ships on an interval and at shutdown; only shipped records are offered", async () => {
  const { client, bucket } = await minio();
  const ship = { client, bucket, prefix: `test/ledger-tail-${Date.now()}-${process.pid}` };
  const dir = tmp();
  const l = new Ledger(dir, { segmentRecords: 100, ship, shipIntervalMs: 50 });
  for (let i = 0; i < 3; i++) l.append(`t${i}`, { reward: i });
  expect(readShipped(dir, -1)).toEqual([]); // appended, not yet in S3: not offered
  for (let waited = 0; l.shippedThrough < 2 && waited < 5000; waited += 25)
    await new Promise((r) => setTimeout(r, 25));
  expect(l.shippedThrough).toBe(2);
  expect(shippedThrough(dir)).toBe(2);
  expect(readShipped(dir, -1).map((e) => e.id)).toEqual(['t0', 't1', 't2']);
  let restored = tmp();
  expect(await restoreFromS3(restored, ship)).toBe(1); // the open segment, as far as it was shipped
  expect(readLedger(restored, -1)).toEqual(readLedger(dir, -1));
  l.close();
  // No interval now: new records wait for the clean shutdown, which ships them.
  const l2 = new Ledger(dir, { segmentRecords: 100, ship, shipIntervalMs: 0 });
  l2.append('t3', { reward: 3 });
  l2.append('t4', { reward: 4 });
  await new Promise((r) => setTimeout(r, 200));
  expect(readShipped(dir, 1).map((e) => e.id)).toEqual(['t2']);
  expect(readShipped(dir, 1, 1).map((e) => e.id)).toEqual(['t2']);
  await l2.shutdown();
  expect(l2.shipErrors).toEqual([]);
  expect(readShipped(dir, 1).map((e) => e.id)).toEqual(['t2', 't3', 't4']);
  restored = tmp();
  await restoreFromS3(restored, ship);
  expect(readLedger(restored, -1)).toEqual(readLedger(dir, -1));
  expect(shippedThrough(restored)).toBe(4);
  await expect(restoreFromS3(restored, ship)).rejects.toThrow(/already holds segments/);
  client.destroy();
});

test('kill -9 at random points, the machine lost for good now and then: restored from MinIO, every trajectory consumed exactly once', async () => {
  const { client, bucket } = await minio();
  const prefix = `test/ledger-lost-${Date.now()}-${process.pid}`;
  const ship = { client, bucket, prefix };
  const work = tmp();
  const dir = path.join(work, 'machine'); // the data plane's disk: deleted when the machine is lost
  const ckpt = path.join(work, 'consumer-checkpoint.json'); // the trainer's checkpoint (in S3 in real life)
  const env = { SHIP_PREFIX: prefix, SHIP_INTERVAL_MS: '60', SHIPPED: '1', PRODUCER_PACE_MS: '60' };
  const n = 200;
  let producerDone = false;
  let kills = 0;
  let losses = 0;
  let lostRecords = 0;
  // At least twenty rounds, and more (up to forty) until twenty processes were killed mid-work: how many
  // finish on their own before their kill depends on the machine's speed.
  for (let round = 0; round < 20 || (kills < 20 && round < 40); round++) {
    // Every other round the machine is gone: a new one restores the ledger from S3 into an empty disk.
    if (round % 2 === 1 && !producerDone) {
      const local = fs.existsSync(dir) ? readLedger(dir, -1).length : 0;
      fs.rmSync(dir, { recursive: true, force: true });
      await restoreFromS3(dir, ship);
      lostRecords += local - readLedger(dir, -1).length;
      losses++;
    }
    const procs: { p: ChildProcess; who: string }[] = [
      { p: run('consumer.ts', [dir, ckpt, String(n)], env), who: 'consumer' },
    ];
    if (!producerDone)
      procs.push({
        p: run('producer.ts', [dir, String(n)], { ...env, GEN: String(losses) }),
        who: 'producer',
      });
    const producer = procs.find((v) => v.who === 'producer')?.p;
    const beforeLoss = round % 2 === 0;
    await Promise.all(
      procs.map(async (v) => {
        // The producer is killed at a random moment after its start-up (loading the S3 client takes a while).
        if (v.who === 'producer') await ready(v.p);
        await new Promise((r) => setTimeout(r, (v.who === 'producer' ? 50 : 300) + Math.random() * 600));
        // Before a loss the consumer outlives the producer a little: it is offered whatever it may take
        // (a consumer that took records not yet in S3 would have trained on records the loss erases).
        if (v.who === 'consumer' && beforeLoss && producer) {
          await exited(producer);
          await new Promise((r) => setTimeout(r, 300));
        }
        if (v.p.exitCode === null && v.p.kill('SIGKILL')) kills++;
        const code = await exited(v.p);
        if (v.who === 'producer' && code === 0) producerDone = true;
      }),
    );
  }
  expect(kills).toBeGreaterThanOrEqual(20);
  expect(losses).toBeGreaterThanOrEqual(3);
  // Some appended records were not in S3 yet when their machine was lost (at most one interval's worth).
  expect(lostRecords).toBeGreaterThan(0);
  const last = [
    run('producer.ts', [dir, String(n)], { ...env, GEN: String(losses) }),
    run('consumer.ts', [dir, ckpt, String(n)], env),
  ];
  expect(await Promise.all(last.map(exited))).toEqual([0, 0]);
  const produced = readLedger(dir, -1);
  expect(produced.map((e) => e.seq)).toEqual(produced.map((_, i) => i));
  expect(new Set(produced.map((e) => e.id)).size).toBe(n);
  expect(new Set(produced.map((e) => e.id.split('@')[0])).size).toBe(n); // each task once
  expect(produced.some((e) => e.id.includes('@'))).toBe(true); // some work was redone after a loss
  const consumed = (JSON.parse(fs.readFileSync(ckpt, 'utf8')) as { consumed: string[] }).consumed;
  expect(consumed).toHaveLength(n); // no duplicates ...
  expect([...consumed].sort()).toEqual(produced.map((e) => e.id).sort()); // ... and nothing lost
  // And S3 holds the whole ledger after the clean shutdown.
  const again = tmp();
  await restoreFromS3(again, ship);
  expect(readLedger(again, -1)).toEqual(produced);
  client.destroy();
}, 300_000); // kill -9 cycles and restores from MinIO: minutes on a loaded 2-core machine

test("the RL driver's ledger ships to the stage's S3 location, one generation per ledger folder", async () => {
  const { client, bucket } = await minio();
  const uri = `s3://${bucket}/test/driver-ledger-${Date.now()}-${process.pid}`;
  const spec = {
    ledger_dir: path.join(tmp(), 'ledger'),
    ledger_uri: uri,
    storage: {
      endpoint: process.env.TRAINFLOW_S3_ENDPOINT ?? 'http://127.0.0.1:9000',
      force_path_style: true,
    },
  } as unknown as DriverSpec;
  const ship = ledgerShipping(spec)!;
  expect(ship.prefix).toMatch(/^test\/driver-ledger-[^/]+\/g-\d{8}T\d+Z-[0-9a-f]{8}$/);
  const l = new Ledger(spec.ledger_dir, { ship });
  l.append('g0-task', { kind: 'group' });
  await l.shutdown();
  expect(l.shipErrors).toEqual([]);
  const restored = tmp();
  expect(await restoreFromS3(restored, ship)).toBe(1);
  expect(readLedger(restored, -1).map((e) => e.id)).toEqual(['g0-task']);
  // The same folder keeps its generation; a fresh folder (a new machine) gets its own, never overwriting.
  expect(ledgerShipping(spec)!.prefix).toBe(ship.prefix);
  const fresh = ledgerShipping({ ...spec, ledger_dir: path.join(tmp(), 'ledger') })!;
  expect(fresh.prefix).not.toBe(ship.prefix);
  // Without an S3 location (a local output prefix) nothing ships.
  expect(ledgerShipping({ ...spec, ledger_uri: null })).toBeUndefined();
  client.destroy();
});

test('a failed upload is retried in order; S3 never holds a later segment without the earlier one', async () => {
  const { client, bucket } = await minio();
  // Segment 0's upload goes to a bucket that does not exist (S3 refusing); S3 works again for what follows.
  const prefix = `test/ledger-retry-${Date.now()}-${process.pid}`;
  const ship = { client, bucket: `missing-${Date.now()}`, prefix };
  const dir = tmp();
  const l = new Ledger(dir, { segmentRecords: 2, ship, shipIntervalMs: 0 });
  for (let i = 0; i < 3; i++) l.append(`t${i}`, { i }); // seals segment 0 (its upload starts), opens 2
  l.shipTail(); // queues segment 2's tail behind it
  await new Promise((r) => setImmediate(r)); // segment 0's request is on its way to the missing bucket
  ship.bucket = bucket;
  await l.flushShipping();
  expect(l.shipErrors.length).toBe(1);
  // Segment 2 alone was not uploaded (a restore would have a gap), and nothing is offered.
  const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  expect(listed.Contents ?? []).toEqual([]);
  expect(l.shippedThrough).toBe(-1);
  expect(readShipped(dir, -1)).toEqual([]);
  l.append('t3', { i: 3 });
  await l.syncShipped();
  expect(l.shippedThrough).toBe(3);
  expect(readShipped(dir, -1).map((e) => e.id)).toEqual(['t0', 't1', 't2', 't3']);
  const restored = tmp();
  expect(await restoreFromS3(restored, ship)).toBe(2);
  expect(readLedger(restored, -1)).toEqual(readLedger(dir, -1));
  await l.shutdown();
  client.destroy();
});
