// `trainflow run` with its output piped (a log file, a CI job): a stage whose job is killed with SIGKILL is
// retried, and the run says so in one line — no stack trace, no SDK notice — while the progress is a line per
// change, never a redraw of the status table.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { JobStatus } from '../../src/contract/job';
import { jobName } from '../../src/launchers/types';
import { stagePrefix } from '../../src/storage/manifest';
import { joinUri, ObjectStore } from '../../src/storage/s3';
import { BUCKET, S3_ENDPOINT, uniqueId, useDataDir, waitFor } from './helpers';
import { spawnRun, writeRunConfig } from './run-cli';

const dataDir = useDataDir();
const store = new ObjectStore({ endpoint: S3_ENDPOINT, region: 'us-east-1', force_path_style: true });

test('a stage retried after kill -9 of its job: one line for the retry, no stack trace, no redraws', async () => {
  const id = uniqueId('run-output');
  const prefix = `tests/${id}`;
  const file = writeRunConfig(dataDir, {
    name: 'output',
    taskQueue: uniqueId('tq'),
    storagePrefix: prefix,
    stages: [
      { name: 'one', steps: 40, every: 10, stepMs: 100 },
      { name: 'two', steps: 4, every: 2, stepMs: 20 },
    ],
  });
  const run = spawnRun(file, id, dataDir);
  try {
    const statusUri = joinUri(stagePrefix(`s3://${BUCKET}/${prefix}`, id, 'one'), 'status.json');
    const running = await waitFor(
      'the job of stage one to pass step 12',
      async () => {
        const s = await store.getJson<JobStatus>(statusUri).catch(() => undefined);
        return s && s.step >= 12 && s.step % 10 !== 0 ? s : undefined;
      },
      90_000,
    );
    process.kill(running.pid, 'SIGKILL');
    const code = await run.exited;
    const stdout = run.stdout();
    const stderr = run.stderr();
    const both = `${stdout}\n${stderr}`;
    expect({ code, stderrTail: code === 0 ? '' : stderr.slice(-2000) }).toEqual({ code: 0, stderrTail: '' });

    // The retry: exactly one line for the failed attempt, naming stage and attempt, with the retry's delay.
    const retryLines = stderr.split('\n').filter((l) => /stage one: attempt \d+ failed/.test(l));
    expect(retryLines).toHaveLength(1);
    expect(retryLines[0]).toMatch(/stage one: attempt 1 failed \(.+\); retrying in 1s/);
    expect(both).not.toMatch(/^\s+at /m); // no stack trace
    expect(both).not.toContain('Activity failed');
    expect(both).not.toContain('No workflows registered');
    expect(both).not.toContain('\x1b['); // no cursor movement (redraw) nor colour in a pipe

    // Progress: a line per change, so no line twice; the pipeline's start and end once each.
    const lines = stdout.split('\n').filter(Boolean);
    expect(lines.filter((l) => l === `pipeline ${id} (output): running`)).toHaveLength(1);
    expect(lines.filter((l) => l === `pipeline ${id} (output): completed`)).toHaveLength(1);
    expect(new Set(lines).size).toBe(lines.length);
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^stage one: running, step \d+\/40(, loss [\d.]+)?$/),
        expect.stringMatching(/^stage one: running, step \d+\/40(, loss [\d.]+)?, attempt 2$/),
        expect.stringMatching(/^stage one: completed, step 40\/40(, loss [\d.]+)?, attempt 2$/),
        expect.stringMatching(/^stage two: completed, step 4\/4(, loss [\d.]+)?$/),
      ]),
    );
    // The job really was killed once: two launches in its log.
    const jobLog = readFileSync(path.join(dataDir, 'jobs', jobName(id, 'one'), 'job.log'), 'utf8');
    expect([...jobLog.matchAll(/^=== trainflow: attempt \d+ launching/gm)]).toHaveLength(2);
  } finally {
    run.kill();
  }
}, 180_000);
