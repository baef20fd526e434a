// The checkpoint store against the real MinIO: the commit protocol, verification on read (a half-written
// checkpoint or one with a wrong checksum is never loaded, by the store nor by a job resuming), multipart
// uploads, retention; and the local launcher's process-group handling.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CheckpointStore, checkpointUri } from '../../src/storage/checkpoints';
import { joinUri, ObjectStore } from '../../src/storage/s3';
import { FAKE_JOB, S3_ENDPOINT, BUCKET, uniqueId } from './helpers';

const store = new ObjectStore({ endpoint: S3_ENDPOINT, region: 'us-east-1', force_path_style: true });
const checkpoints = new CheckpointStore(store);
const files = (step: number) => [
  { path: 'model.safetensors', bytes: Buffer.from(`weights-${step}`) },
  { path: 'trainer_state.json', bytes: Buffer.from(JSON.stringify({ step })) },
];

test('latest() skips a half-written checkpoint and one with a wrong checksum or size', async () => {
  const prefix = `s3://${BUCKET}/tests/${uniqueId('ckpt')}/stage`;
  expect(await checkpoints.latest(prefix)).toBeUndefined();
  await checkpoints.write(prefix, 2, files(2));
  await checkpoints.write(prefix, 4, files(4));
  await checkpoints.write(prefix, 6, files(6));
  // step 8: half-written (files, no COMMIT.json)
  await store.putBytes(joinUri(checkpointUri(prefix, 8), 'model.safetensors'), 'weights-8');
  expect((await checkpoints.latest(prefix))?.step).toBe(6);

  // step 6: same size, different bytes → sha256 mismatch; only a full verification catches it.
  await store.putBytes(joinUri(checkpointUri(prefix, 6), 'model.safetensors'), 'weights-X');
  expect(await checkpoints.verify(checkpointUri(prefix, 6), 'full')).toMatch(/sha256/);
  expect(await checkpoints.verify(checkpointUri(prefix, 6), 'size')).toBeUndefined();
  // step 4: truncated → size mismatch
  await store.putBytes(joinUri(checkpointUri(prefix, 4), 'model.safetensors'), 'w');
  expect(await checkpoints.verify(checkpointUri(prefix, 4), 'size')).toMatch(/1 bytes/);
  const latest = await checkpoints.latest(prefix, 'full');
  expect(latest?.step).toBe(2);
  expect((await store.getBytes(joinUri(latest!.uri, 'model.safetensors')))?.toString()).toBe('weights-2');

  // A job resuming under that prefix loads step 2, never 8 (uncommitted), 6 (checksum) or 4 (size).
  const specPath = path.join(mkdtempSync(path.join(tmpdir(), 'trainflow-spec-')), 'spec.json');
  // The job's weights are text (a hash chain); give step 2 a valid one so the job can continue from it.
  const spec = {
    protocol: 1,
    pipeline_id: 'p',
    run_id: 'r',
    stage_index: 0,
    attempt: 1,
    stage: { name: 'stage', kind: 'midtrain', train: { steps: 3 }, checkpoint: { every: 5 } },
    model: {},
    input_checkpoint: null,
    output_prefix: prefix,
    resume: true,
    status_uri: joinUri(prefix, 'status.json'),
    storage: { endpoint: S3_ENDPOINT, region: 'us-east-1', force_path_style: true },
    work_dir: tmpdir(),
  };
  writeFileSync(specPath, JSON.stringify(spec));
  const run = spawnSync(FAKE_JOB.command[0], [...FAKE_JOB.command.slice(1, -1), specPath], {
    env: { ...process.env, ...FAKE_JOB.env },
    encoding: 'utf8',
  });
  expect(run.status).toBe(0);
  expect(run.stdout).toContain(`FAKE_RESUME 2 from ${checkpointUri(prefix, 2)}`);
  expect(run.stdout).toMatch(/^FAKE_STEP 3$/m);
  expect(run.stdout).not.toMatch(/^FAKE_STEP [12]$/m);
});

test('an input checkpoint that fails verification is bad input (exit 2), not a retry', async () => {
  const prefix = `s3://${BUCKET}/tests/${uniqueId('ckpt-in')}/stage`;
  await checkpoints.write(prefix, 5, files(5));
  await store.putBytes(joinUri(checkpointUri(prefix, 5), 'trainer_state.json'), '{"step":6}'); // same size, wrong bytes
  const dir = mkdtempSync(path.join(tmpdir(), 'trainflow-spec-'));
  const specPath = path.join(dir, 'spec.json');
  writeFileSync(
    specPath,
    JSON.stringify({
      protocol: 1,
      pipeline_id: 'p',
      run_id: 'r',
      stage_index: 1,
      attempt: 1,
      stage: { name: 'next', kind: 'sft', train: { steps: 2 } },
      model: {},
      input_checkpoint: checkpointUri(prefix, 5),
      output_prefix: `${prefix}-next`,
      resume: true,
      status_uri: `${prefix}-next/status.json`,
      storage: { endpoint: S3_ENDPOINT, region: 'us-east-1', force_path_style: true },
      work_dir: dir,
    }),
  );
  const run = spawnSync(FAKE_JOB.command[0], [...FAKE_JOB.command.slice(1, -1), specPath], {
    env: { ...process.env, ...FAKE_JOB.env },
    encoding: 'utf8',
  });
  expect(run.status).toBe(2);
  expect(run.stderr).toMatch(/^trainflow: bad input: input checkpoint unusable: .*sha256/m);
});

test('large files go up as multipart uploads and verify', async () => {
  const prefix = `s3://${BUCKET}/tests/${uniqueId('ckpt-big')}/stage`;
  const dir = mkdtempSync(path.join(tmpdir(), 'trainflow-big-'));
  const big = path.join(dir, 'model.safetensors');
  writeFileSync(big, randomBytes(20 * 1024 * 1024)); // 20 MiB: three 8 MiB parts
  const saved = await checkpoints.write(prefix, 1, [{ path: 'model.safetensors', localPath: big }], true);
  expect(saved.commit.files[0].size).toBe(20 * 1024 * 1024);
  expect(await checkpoints.verify(saved.uri, 'full')).toBeUndefined();
  const latest = await checkpoints.latest(prefix);
  expect(latest).toMatchObject({ step: 1, final: true });
});

test('retention keeps the newest K and every final checkpoint, and drops stale uncommitted folders', async () => {
  const prefix = `s3://${BUCKET}/tests/${uniqueId('retention')}/stage`;
  await checkpoints.write(prefix, 1, files(1), true); // a final checkpoint (an earlier phase's output) is kept
  for (const step of [2, 3, 4, 5]) await checkpoints.write(prefix, step, files(step));
  await store.putBytes(joinUri(checkpointUri(prefix, 3), 'extra.bin'), 'x'); // (inside a committed one: goes with it)
  await store.putBytes(joinUri(checkpointUri(prefix, 4) + 'x', 'junk'), 'x'); // not a step folder: untouched
  await store.putBytes(joinUri(checkpointUri(prefix, 6), 'model.safetensors'), 'partial'); // save in progress
  await checkpoints.write(prefix, 7, files(7));
  await store.putBytes(joinUri(checkpointUri(prefix, 8), 'model.safetensors'), 'partial'); // above newest: kept
  const deleted = await checkpoints.applyRetention(prefix, 2);
  expect(deleted.sort()).toEqual([2, 3, 4, 6].map((s) => checkpointUri(prefix, s)));
  const { committed, uncommitted } = await checkpoints.scan(prefix);
  expect(committed).toEqual([1, 5, 7]);
  expect(uncommitted).toEqual([8]);
});
