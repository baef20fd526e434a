// Records the workflow histories the replay test checks (test/histories/*.json): run with the local stack up,
//   npx tsx test/pipeline/record-histories.ts
// Re-record only on purpose: when a workflow change is made behind patched(), keep the old files (they are
// what proves old runs still replay) and add new ones.
import { temporal } from '@temporalio/proto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { resumePipeline, startPipeline } from '../../src/pipeline/client';
import { repoRoot } from '../../src/pipeline/paths';
import type { PipelineStatus } from '../../src/pipeline/status';
import { connectTestClient, makeConfig, startWorkers, uniqueId, useDataDir, waitFor } from './helpers';

const OUT = path.join(repoRoot, 'test', 'histories');

async function save(client: Client, scenario: string, workflowId: string, runId?: string): Promise<void> {
  const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
  const type = history.events?.[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name ?? 'workflow';
  const file = path.join(
    OUT,
    `${scenario}.${type}${workflowId.includes('--') ? `.${workflowId.split('--')[1]}` : ''}.json`,
  );
  // protobufjs's own object form (longs and enums as strings, bytes base64), read back with History.fromObject.
  // (The SDK's historyFromJSON cannot be used here: @temporalio/common 1.24 bundles protobufjs 8 while
  // @temporalio/proto is built on protobufjs 7, and its JSON reader rejects the other copy's types.)
  const json = temporal.api.history.v1.History.toObject(history as temporal.api.history.v1.History, {
    longs: String,
    enums: String,
    bytes: String,
  });
  // The workflow id goes along: workflows derive child ids from it, so replay must use the same one.
  writeFileSync(file, `${JSON.stringify({ workflowId, history: json })}\n`);
  process.stdout.write(`recorded ${path.relative(repoRoot, file)} (${history.events?.length} events)\n`);
}

async function main(): Promise<void> {
  useDataDir();
  mkdirSync(OUT, { recursive: true });
  const client = await connectTestClient();
  const taskQueue = uniqueId('record');
  const base = { taskQueue, storagePrefix: `histories/${uniqueId('h')}` };

  const three = makeConfig({
    ...base,
    stages: [
      { name: 'mid-1', steps: 4, every: 2 },
      { name: 'mid-2', steps: 2, every: 2 },
      { name: 'sft', steps: 2, every: 1 },
    ],
  });
  const workers = await startWorkers(three);
  try {
    const id = uniqueId('three-stage');
    await (await startPipeline(client, three, { id })).result();
    await save(client, 'three-stage', id);
    for (const s of three.stages) await save(client, 'three-stage', `${id}--${s.name}`);

    // A bad-input failure, then a resume with the fixed config (a skipped stage in the second run).
    const broken = makeConfig({
      ...base,
      stages: [
        { name: 'first', steps: 2, every: 2 },
        { name: 'second', steps: 2, every: 2, env: { FAKE_BAD_INPUT: 'no data' } },
      ],
    });
    const fixed = makeConfig({
      ...base,
      stages: [
        { name: 'first', steps: 2, every: 2 },
        { name: 'second', steps: 2, every: 2 },
      ],
    });
    const rid = uniqueId('resume');
    const failed = await startPipeline(client, broken, { id: rid });
    const failedRun = (await failed.describe()).runId;
    await failed.result().catch(() => undefined);
    await save(client, 'bad-input', rid, failedRun);
    const resumed = await resumePipeline(client, rid, { config: fixed });
    await resumed.result();
    await save(client, 'resumed', rid, (await resumed.describe()).runId);

    // A cancelled run.
    const long = makeConfig({
      ...base,
      stages: [{ name: 'forever', steps: 100000, every: 1000, stepMs: 50 }],
    });
    const cid = uniqueId('cancel');
    const cancelled = await startPipeline(client, long, { id: cid });
    await waitFor(
      'the job to run',
      async () => (await cancelled.query<PipelineStatus>('status')).stages[0].step > 1 || undefined,
    );
    await cancelled.cancel();
    await cancelled.result().catch(() => undefined);
    await save(client, 'cancelled', cid);
    await save(client, 'cancelled', `${cid}--forever`);
  } finally {
    await workers.stop();
    await client.connection.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
