// `trainflow run` while the Temporal dev server is killed (kill -9) and restarted five times mid-stage: the
// workers and the follow loop ride out every outage, the pipeline completes, and the command exits 0 — no
// unhandled error, no `Channel has been shut down` from a gRPC retry firing after its connection closed. The
// last outage is long and the stage's job finishes during it, so the pipeline completes moments after the
// server is back, while calls made during the outage may still be waiting to retry: the case that crashed.
// The server is the test's own (private-temporal.ts): the shared one serves the other lanes meanwhile.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { JobStatus } from '../../src/contract/job';
import type { PipelineStatus } from '../../src/pipeline/status';
import { stagePrefix } from '../../src/storage/manifest';
import { joinUri, ObjectStore } from '../../src/storage/s3';
import { BUCKET, connectTestClient, S3_ENDPOINT, uniqueId, useDataDir, waitFor } from './helpers';
import { usePrivateTemporal } from './private-temporal';
import { spawnRun, writeRunConfig } from './run-cli';

const dataDir = useDataDir();
const store = new ObjectStore({ endpoint: S3_ENDPOINT, region: 'us-east-1', force_path_style: true });
const RESTARTS = 5;
const privateTemporal = usePrivateTemporal();

test(`the Temporal server killed and restarted ${RESTARTS} times mid-run: \`trainflow run\` exits 0`, async () => {
  const temporal = privateTemporal();
  const id = uniqueId('run-restart');
  const prefix = `tests/${id}`;
  // Stage one holds before its last step until the test has done its restarts.
  const release = path.join(dataDir, `${id}.release`);
  const file = writeRunConfig(dataDir, {
    name: 'restart',
    taskQueue: uniqueId('tq'),
    storagePrefix: prefix,
    heartbeat: '20s',
    stages: [{ name: 'one', steps: 20, every: 5, stepMs: 50, env: { FAKE_HOLD_FILE: release } }],
    address: temporal.address,
  });
  const run = spawnRun(file, id, dataDir, { TEMPORAL_ADDRESS: temporal.address });
  const client = await connectTestClient(temporal.address);
  try {
    const statusUri = joinUri(stagePrefix(`s3://${BUCKET}/${prefix}`, id, 'one'), 'status.json');
    await waitFor(
      'the job of stage one to start',
      async () => (await store.getJson<JobStatus>(statusUri).catch(() => undefined)) ?? undefined,
      90_000,
    );
    const handle = client.workflow.getHandle(id);
    for (let i = 0; i < RESTARTS; i++) {
      const last = i === RESTARTS - 1;
      await temporal.kill();
      // Down for a while: polls, the follow loop and heartbeats all fail meanwhile.
      if (last) writeFileSync(release, '');
      await sleep(last ? 12_000 : 1500);
      await temporal.start();
      if (last) break;
      // Back in service: the pipeline answers its status query again (its control worker reconnected).
      await waitFor(
        `the pipeline to answer after restart ${i + 1}`,
        async () => (await handle.query<PipelineStatus>('status').catch(() => undefined))?.state,
        60_000,
      );
    }
    const code = await run.exited;
    const stdout = run.stdout();
    const stderr = run.stderr();
    expect({ code, stderrTail: code === 0 ? '' : stderr.slice(-3000) }).toEqual({ code: 0, stderrTail: '' });
    // The end as the status query saw it, or — when the run closed while a query went unanswered — as described.
    expect(stdout).toMatch(new RegExp(`^pipeline ${id}( \\(restart\\))?: completed$`, 'm'));
    const both = `${stdout}\n${stderr}`;
    expect(both).not.toMatch(/Unhandled|Channel has been shut down|uncaught/i);
    expect(both).not.toMatch(/^\s+at /m); // no stack trace
    expect(both).not.toMatch(/retried \d+ times/); // core's retries while the server is away: debug only
    const result = (await handle.result()) as PipelineStatus;
    expect(result.stages.map((s) => s.state)).toEqual(['completed']);
  } finally {
    run.kill();
    await client.connection.close();
  }
}, 240_000);
