// Determinism guard: every recorded history under test/histories replays against the current workflow code
// (a change that would break running pipelines fails here; make it behind patched() instead), and a bundle
// with a deliberate break is caught. Needs no server. Record new histories with record-histories.ts.
import { temporal } from '@temporalio/proto';
import { bundleWorkflowCode, Worker } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../../src/pipeline/paths';
import { workflowBundle } from '../../workers/build';
import './helpers'; // quiet SDK logger

const dir = path.join(repoRoot, 'test', 'histories');
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .sort();

/** A recorded history (protobufjs object form, written by record-histories.ts) and its workflow id. */
function load(file: string): { workflowId: string; history: temporal.api.history.v1.History } {
  const { workflowId, history } = JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as {
    workflowId: string;
    history: object;
  };
  return { workflowId, history: temporal.api.history.v1.History.fromObject(history) };
}

test('histories of every kind of run are recorded', () => {
  for (const kind of [
    'three-stage.trainingPipeline',
    'three-stage.stageWorkflow',
    'bad-input',
    'resumed',
    'cancelled',
  ]) {
    expect(files.some((f) => f.startsWith(kind))).toBe(true);
  }
});

test.each(files)('%s replays against the current workflow code', async (file) => {
  const { workflowId, history } = load(file);
  await Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, history, workflowId);
});

test('a determinism break is caught', async () => {
  const broken = await bundleWorkflowCode({
    workflowsPath: path.join(repoRoot, 'test/fixtures/broken-workflows.ts'),
    logger: {
      log: () => undefined,
      trace: () => undefined,
      debug: () => undefined,
      info: () => undefined,
      warn: () => undefined,
      error: () => undefined,
    },
  });
  const stageHistory = files.find((f) => f.startsWith('three-stage.stageWorkflow'))!;
  await expect(
    Worker.runReplayHistory(
      { workflowBundle: broken },
      load(stageHistory).history,
      load(stageHistory).workflowId,
    ),
  ).rejects.toThrow(DeterminismViolationError);
});
