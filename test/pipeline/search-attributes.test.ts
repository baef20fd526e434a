// The pipeline's search attributes on the real dev server (`trainflow dev up` registers them): set at start,
// kept current by the workflow (the stage, the final state — failed too), and `trainflow list --name/--state`
// filters through them. Visibility is eventually consistent: the list is polled briefly.
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { startPipeline } from '../../src/pipeline/client';
import { repoRoot } from '../../src/pipeline/paths';
import { PIPELINE_ATTRIBUTE, STAGE_ATTRIBUTE, STATE_ATTRIBUTE } from '../../src/pipeline/search-attributes';
import {
  connectTestClient,
  makeConfig,
  startWorkers,
  TEMPORAL_ADDRESS,
  uniqueId,
  useDataDir,
  waitFor,
  type RunningWorkers,
} from './helpers';

const dataDir = useDataDir();
let client: Client;
let workers: RunningWorkers | undefined;

beforeAll(async () => {
  client = await connectTestClient();
});
afterAll(async () => {
  await workers?.stop();
  await client.connection.close();
});

function list(...args: string[]): string {
  const run = spawnSync(process.execPath, [path.join(repoRoot, 'bin/trainflow.js'), 'list', ...args], {
    cwd: repoRoot,
    env: { ...process.env, TRAINFLOW_DATA_DIR: dataDir, TEMPORAL_ADDRESS, NODE_NO_WARNINGS: '1' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (run.status !== 0)
    throw new Error(`trainflow list ${args.join(' ')}: exit ${run.status}: ${run.stderr}`);
  return run.stdout;
}

/** Polls `trainflow list ARGS` until `ok` holds for its output (visibility lags the workflow a little). */
async function listUntil(args: string[], ok: (out: string) => boolean): Promise<string> {
  let last = '';
  try {
    return await waitFor(
      `trainflow list ${args.join(' ')}`,
      () => {
        last = list(...args);
        return ok(last) ? last : undefined;
      },
      30_000,
    );
  } catch (err) {
    throw new Error(`${String(err)}; last output:\n${last}`);
  }
}

test('search attributes follow the run; list --name and --state filter by them', async () => {
  const suffix = uniqueId('sa');
  const taskQueue = uniqueId('tq');
  const failing = makeConfig({
    name: `bad-${suffix}`,
    taskQueue,
    storagePrefix: `tests/${suffix}-bad`,
    stages: [
      { name: 'prep', steps: 2, every: 1 },
      { name: 'broken', steps: 3, every: 1, env: { FAKE_BAD_INPUT: 'shard 3 is missing' } },
    ],
  });
  const passing = makeConfig({
    name: `good-${suffix}`,
    taskQueue,
    storagePrefix: `tests/${suffix}-good`,
    stages: [{ name: 'only', steps: 3, every: 1 }],
  });
  workers = await startWorkers(passing);
  const bad = await startPipeline(client, failing, { id: `${suffix}-bad` });
  const good = await startPipeline(client, passing, { id: `${suffix}-good` });
  await expect(bad.result()).rejects.toBeInstanceOf(WorkflowFailedError);
  expect(((await good.result())).state).toBe('completed');

  // The attributes as the server recorded them: name, the stage each run was in, its final state.
  const attrs = async (id: string) => {
    const d = await client.workflow.getHandle(id).describe();
    return [PIPELINE_ATTRIBUTE, STAGE_ATTRIBUTE, STATE_ATTRIBUTE].map((k) => d.typedSearchAttributes.get(k));
  };
  expect(await attrs(bad.workflowId)).toEqual([failing.metadata.name, 'broken', 'failed']);
  expect(await attrs(good.workflowId)).toEqual([passing.metadata.name, 'only', 'completed']);

  const failed = await listUntil(['--state', 'failed', '--limit', '500'], (o) => o.includes(bad.workflowId));
  expect(failed).not.toContain(good.workflowId);
  expect(failed).toMatch(new RegExp(`${bad.workflowId}\\s+${failing.metadata.name}\\s+failed\\s+broken`));
  const byName = await listUntil(['--name', passing.metadata.name], (o) => o.includes(good.workflowId));
  expect(byName).not.toContain(bad.workflowId);
  expect(byName).toMatch(new RegExp(`${good.workflowId}\\s+${passing.metadata.name}\\s+completed\\s+only`));
  expect(list('--name', passing.metadata.name, '--state', 'failed')).toBe('no pipeline runs match\n');
  expect(list('--name', failing.metadata.name, '--state', 'running')).toBe('no pipeline runs match\n');
}, 120_000);

test('list --state rejects an unknown state', () => {
  expect(() => list('--state', 'exploded')).toThrow(
    /--state exploded: expected one of running, completed, failed, cancelled/,
  );
});
