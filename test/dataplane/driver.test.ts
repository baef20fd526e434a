// The RL driver's start-up decisions: the session idle timeout it gives the proxy (stage
// rollout.session_idle_timeout), and where its ledger comes from on a retry (prepareLedger): the folder's
// own, the checkpoint's generation restored from the real MinIO, or a new ledger when S3 holds nothing usable.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ledger, readLedger } from '../../src/dataplane/ledger';
import { ledgerShipping, prepareLedger, sessionIdleMs, type DriverSpec } from '../../src/rl/driver';
import { minio } from './s3';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tf-driver-'));

function spec(over: Partial<DriverSpec> = {}): DriverSpec {
  return {
    mode: 'rl',
    ledger_dir: path.join(tmp(), 'ledger'),
    cursor: -1,
    agent: { timeout_s: 20 },
    storage: {
      endpoint: process.env.TRAINFLOW_S3_ENDPOINT ?? 'http://127.0.0.1:9000',
      force_path_style: true,
    },
    ...over,
  } as DriverSpec;
}

test('session idle timeout: the stage value in seconds, else max(5 min, 3 agent timeouts); RFT never expires', () => {
  expect(sessionIdleMs(spec({ session_idle_timeout_s: 600 }))).toBe(600_000);
  expect(sessionIdleMs(spec({ session_idle_timeout_s: null }))).toBe(300_000);
  expect(sessionIdleMs(spec({ agent: { timeout_s: 200 } as DriverSpec['agent'] }))).toBe(600_000);
  expect(sessionIdleMs(spec({ mode: 'collect', session_idle_timeout_s: 600 }))).toBe(0);
  expect(() => sessionIdleMs(spec({ session_idle_timeout_s: -1 }))).toThrow(
    'session_idle_timeout_s: expected a positive number of seconds (stage rollout.session_idle_timeout), got -1',
  );
});

test('a retry on a new machine restores the checkpoint generation from S3; a short or missing copy starts anew', async () => {
  const { client, bucket } = await minio();
  const uri = `s3://${bucket}/test/driver-restore-${Date.now()}-${process.pid}`;
  // machine 1: five records shipped under its generation
  const first = spec({ ledger_uri: uri });
  const l = new Ledger(first.ledger_dir, { ship: ledgerShipping(first), segmentRecords: 2 });
  for (let i = 0; i < 5; i++) l.append(`g${i}`, { kind: 'group', i });
  await l.shutdown();
  expect(l.shipErrors).toEqual([]);
  const generation = fs.readFileSync(path.join(first.ledger_dir, 'generation'), 'utf8').trim();

  // the same machine: its folder is used as it is
  expect(await prepareLedger({ ...first, cursor: 2 })).toMatchObject({ from: 'local', cursor: 2 });

  // machine 2, cursor 2: seqs 0..4 come back, reading continues after the cursor in the same generation
  const second = spec({ ledger_uri: uri, ledger_generation: generation, cursor: 2 });
  const restored = await prepareLedger(second);
  expect(restored).toMatchObject({ from: 's3', cursor: 2 });
  expect(restored.note).toContain(`3 segment(s) from ${uri}/${generation}, seqs 0..4`);
  expect(readLedger(second.ledger_dir, 2).map((e) => e.id)).toEqual(['g3', 'g4']);
  expect(ledgerShipping(second)!.prefix).toBe(ledgerShipping(first)!.prefix);

  // S3 holds less than the cursor, or nothing under that generation, or no generation was recorded: anew
  for (const over of [
    { cursor: 7, ledger_generation: generation },
    { cursor: 2, ledger_generation: 'g-missing' },
    { cursor: 2, ledger_generation: null },
  ]) {
    const s = spec({ ledger_uri: uri, ...over });
    const o = await prepareLedger(s);
    expect(o).toMatchObject({ from: 'new', cursor: -1 });
    expect(fs.existsSync(s.ledger_dir)).toBe(false); // no segments and a new generation for the new ledger
    expect(ledgerShipping(s)!.prefix).not.toBe(ledgerShipping(first)!.prefix);
  }
  // nothing consumed yet: an empty folder is simply a new ledger
  expect(await prepareLedger(spec({ ledger_uri: uri }))).toMatchObject({ from: 'new', cursor: -1 });
  client.destroy();
});
