// The Temporal dev server is stopped and restarted mid-run (its SQLite file keeps the history): workers ride
// out the outage, the job keeps running meanwhile, and the pipeline completes. The server is the test's own
// (private-temporal.ts): the shared one serves the other lanes meanwhile.
import { WorkflowFailedError } from '@temporalio/client';
import { setTimeout as sleep } from 'node:timers/promises';
import { startPipeline } from '../../src/pipeline/client';
import type { PipelineStatus } from '../../src/pipeline/status';
import { connectTestClient, makeConfig, startWorkers, uniqueId, useDataDir, waitFor } from './helpers';
import { usePrivateTemporal } from './private-temporal';

useDataDir();
const privateTemporal = usePrivateTemporal();

test('the Temporal dev server stopped and restarted mid-run: the pipeline completes', async () => {
  const temporal = privateTemporal();
  const id = uniqueId('temporal-restart');
  const config = makeConfig({
    taskQueue: uniqueId('tq'),
    storagePrefix: `tests/${id}`,
    heartbeatTimeout: '10s',
    address: temporal.address,
    stages: [
      { name: 'one', steps: 40, every: 10, stepMs: 100 },
      { name: 'two', steps: 10, every: 5, stepMs: 50 },
    ],
  });
  const client = await connectTestClient(temporal.address);
  const workers = await startWorkers(config);
  try {
    const handle = await startPipeline(client, config, { id });
    await waitFor(
      'stage one to reach step 5',
      async () => (await handle.query<PipelineStatus>('status')).stages[0].step >= 5 || undefined,
    );
    await temporal.stop();
    await sleep(3000); // the job runs on while the server is down
    await temporal.start();

    let status: PipelineStatus | undefined;
    for (let i = 0; i < 60 && !status; i++) {
      try {
        status = await handle.result();
      } catch (err) {
        if (err instanceof WorkflowFailedError) throw err;
        await sleep(1000); // the client's long poll broke with the server: ask again
      }
    }
    expect(status?.state).toBe('completed');
    expect(status?.stages.map((s) => s.state)).toEqual(['completed', 'completed']);
    expect(status?.stages[1].inputCheckpoint).toBe(status?.stages[0].outputCheckpoint);
  } finally {
    await workers.stop();
    await client.connection.close();
  }
}, 180_000);
