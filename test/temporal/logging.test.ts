// The one-line account of a failed attempt and the piped progress lines, as pure functions (the integration
// tests in test/pipeline/run-*.test.ts check them through `trainflow run`).
import { ApplicationFailure } from '@temporalio/common';
import { changeLines } from '../../src/pipeline/render';
import type { PipelineStatus, StageStatus } from '../../src/pipeline/status';
import { attemptLine, failureSummary } from '../../src/temporal/logging';

const policy = { initialInterval: 5000, backoffCoefficient: 2, maximumInterval: 60_000, maximumAttempts: 4 };
const attempt = (n: number) => ({
  attempt: n,
  activityType: 'runStageJob',
  workflowId: 'demo-20261201-0942--sft',
  retryPolicy: { ...policy, nonRetryableErrorTypes: ['BadInput'] },
});

test('a failed job attempt is one line: stage, attempt, the last output line, the retry delay', () => {
  const err = ApplicationFailure.retryable(
    'job demo.sft failed with exit code 1; last lines:\nloading shard 3\nRuntimeError: CUDA out of memory',
    'JobFailed',
  );
  expect(attemptLine(err, attempt(2))).toBe(
    'stage sft: attempt 2 failed (job exited 1: RuntimeError: CUDA out of memory); retrying in 10s',
  );
  expect(attemptLine(err, attempt(4))).toMatch(/attempt 4 failed .*; not retried$/); // the last attempt
  const bad = ApplicationFailure.nonRetryable('bad input: shard 3 is missing', 'BadInput');
  expect(attemptLine(bad, attempt(1))).toBe(
    'stage sft: attempt 1 failed (bad input: shard 3 is missing); not retried',
  );
  expect(failureSummary(new Error('first\nsecond'))).toBe('first');
});

function stage(over: Partial<StageStatus>): StageStatus {
  return {
    name: 'sft',
    kind: 'sft',
    state: 'pending',
    attempt: 0,
    step: 0,
    totalSteps: 100,
    metrics: {},
    inputCheckpoint: null,
    lastCheckpoint: null,
    outputCheckpoint: null,
    jobName: null,
    startedAt: null,
    endedAt: null,
    error: null,
    ...over,
  };
}

test('piped progress: a line per change of state, attempt or step decile, nothing when nothing moved', () => {
  const status = (state: PipelineStatus['state'], s: Partial<StageStatus>): PipelineStatus => ({
    pipelineId: 'p',
    name: 'demo',
    runId: 'r',
    state,
    configHash: '',
    startedAt: '',
    endedAt: null,
    error: null,
    stages: [stage(s)],
  });
  const seen = new Map<string, string>();
  expect(changeLines(seen, status('running', {}))).toEqual(['pipeline p (demo): running']);
  expect(changeLines(seen, status('running', { state: 'running', step: 3 }))).toEqual([
    'stage sft: running, step 3/100',
  ]);
  expect(changeLines(seen, status('running', { state: 'running', step: 9 }))).toEqual([]); // same decile
  expect(changeLines(seen, status('running', { state: 'running', step: 10, attempt: 2 }))).toEqual([
    'stage sft: running, step 10/100, attempt 2',
  ]);
  expect(
    changeLines(
      seen,
      status('completed', { state: 'completed', step: 100, attempt: 2, outputCheckpoint: 's3://x' }),
    ),
  ).toEqual([
    'stage sft: completed, step 100/100, attempt 2',
    'latest output: s3://x',
    'pipeline p (demo): completed',
  ]);
});
