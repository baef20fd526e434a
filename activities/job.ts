// The job activity: runs one stage's job to its end through a launcher and reports how it ended.
//
// - One live copy: the job's name is derived from (pipeline, stage), so a retry first looks for the job an
//   earlier attempt started. A live one is re-attached (a worker died, the job did not); one that ended while no
//   worker watched is judged by its recorded exit code; otherwise the job is (re)launched with resume=true and
//   picks up the latest committed checkpoint itself.
// - S3 is the source of truth: progress comes from the status object and the committed checkpoints in S3;
//   heartbeat details (step, last checkpoint) are a hint for humans and the UI.
// - Cancellation reaches an activity only through heartbeats, so it heartbeats every poll; on cancel it stops
//   the whole process group (SIGTERM, then SIGKILL after a grace period) before reporting, so no orphan remains.
// - Exit codes: 0 done; 2 bad input → non-retryable `BadInput`; 75 preempted → retryable `Preempted`; anything
//   else (or a job gone without an exit code) → retryable `JobFailed` / `JobLost`.
import { ApplicationFailure, CancelledFailure, Context } from '@temporalio/activity';
import path from 'node:path';
import { UserError } from '../src/errors';
import { createLauncher } from '../src/launchers';
import type { Launcher } from '../src/launchers/types';
import { jobName } from '../src/launchers/types';
import { logFor } from '../src/log';
import { dataDir, trainerJobCommand } from '../src/pipeline/paths';
import {
  BAD_INPUT_PREFIX,
  EXIT_BAD_INPUT,
  EXIT_DONE,
  EXIT_PREEMPTED,
  STATUS_LINE_PREFIX,
  buildJobSpec,
  type JobStatus,
} from '../src/contract/job';
import type { PipelineConfig, StageConfig } from '../src/config/schema';
import type { StageProgress } from '../src/pipeline/status';
import { CheckpointStore } from '../src/storage/checkpoints';
import { stagePrefix } from '../src/storage/manifest';
import { joinUri, ObjectStore, type StorageEndpoint } from '../src/storage/s3';

export interface StageJobInput {
  pipelineId: string;
  runId: string;
  /** Workflow id of the pipeline run, to which progress is signalled. */
  pipelineWorkflowId: string;
  stageIndex: number;
  /** The pipeline's metadata.name (tracking groups a pipeline's runs under it). */
  pipelineName: string;
  stage: StageConfig;
  model: PipelineConfig['model'];
  tracking: PipelineConfig['tracking'];
  storageUri: string;
  storage: StorageEndpoint;
  inputCheckpoint: string | null;
  launcher: string;
}

export interface StageJobResult {
  outputCheckpoint: string;
  step: number;
  metrics: Record<string, number>;
  jobName: string;
  attempt: number;
}

export interface JobActivityOptions {
  /** Overrides the trainer command for every stage without a `job` block (tests run the fake job this way). */
  command?: { command: string[]; cwd: string; env?: Record<string, string> };
  /** Launcher per kind; default: the built-in ones. */
  launcherFor?: (kind: string) => Launcher;
  /** How often the job's process state is checked (and a heartbeat sent). */
  pollMs?: number;
  /** How often the status object is read from S3. */
  statusPollMs?: number;
  /** Minimum time between progress signals to the pipeline workflow. */
  progressMs?: number;
  /** SIGTERM → SIGKILL grace period on cancel. */
  cancelGraceMs?: number;
}

function exitFailure(code: number | undefined, tail: string, name: string): Error {
  if (code === EXIT_BAD_INPUT) {
    const line = tail
      .split('\n')
      .reverse()
      .find((l) => l.startsWith(BAD_INPUT_PREFIX));
    const reason = line
      ? line.slice(BAD_INPUT_PREFIX.length)
      : 'the job reported bad input (no reason printed)';
    return ApplicationFailure.nonRetryable(`bad input: ${reason}`, 'BadInput');
  }
  if (code === EXIT_PREEMPTED)
    return ApplicationFailure.retryable(`job ${name} was preempted (exit 75)`, 'Preempted');
  const lastLines = tail.trimEnd().split('\n').slice(-5).join('\n');
  if (code === undefined) {
    return ApplicationFailure.retryable(
      `job ${name} is gone without an exit code (killed, or its host lost)`,
      'JobLost',
    );
  }
  return ApplicationFailure.retryable(
    `job ${name} failed with exit code ${code}; last lines:\n${lastLines}`,
    'JobFailed',
  );
}

async function readTail(launcher: Launcher, name: string, bytes = 8192): Promise<string> {
  let out = '';
  for await (const chunk of launcher.logs(name, { tailBytes: bytes })) out += chunk;
  return out;
}

export function createJobActivities(options: JobActivityOptions = {}) {
  const pollMs = options.pollMs ?? 250;
  const statusPollMs = options.statusPollMs ?? 2000;
  const progressMs = options.progressMs ?? 5000;
  const graceMs = options.cancelGraceMs ?? 10_000;
  const launcherFor = options.launcherFor ?? createLauncher;

  async function runStageJob(input: StageJobInput): Promise<StageJobResult> {
    const ctx = Context.current();
    const attempt = ctx.info.attempt;
    const stageName = input.stage.name;
    const log = logFor({ pipeline: input.pipelineId, stage: stageName, attempt });
    const launcher = launcherFor(input.launcher);
    const name = jobName(input.pipelineId, stageName);
    const store = new ObjectStore(input.storage);
    const checkpoints = new CheckpointStore(store);
    const outputPrefix = stagePrefix(input.storageUri, input.pipelineId, stageName);
    const statusUri = joinUri(outputPrefix, 'status.json');

    let job = await launcher.attach(name);
    if (job?.state === 'running') {
      log.info(
        { job: name, id: job.id, launchedBy: job.attempt },
        're-attaching to the live job of an earlier attempt',
      );
    } else if (job?.state === 'exited') {
      log.info(
        { job: name, exitCode: job.exitCode },
        'the job ended while no worker watched it; using its exit code',
      );
    } else {
      if (job?.state === 'lost')
        log.warn({ job: name }, 'the previous job is gone without an exit code; relaunching');
      const custom = input.stage.job;
      const base = options.command ?? trainerJobCommand();
      const spec = buildJobSpec({
        ...input,
        attempt,
        outputPrefix,
        statusUri,
        workDir: path.join(dataDir(), 'work', name),
      });
      job = await launcher
        .launch({
          name,
          command: custom?.command ?? base.command,
          cwd: base.cwd,
          env: {
            ...threadEnv(input.stage.resources),
            ...(options.command?.env ?? {}),
            ...(custom?.env ?? {}),
          },
          spec,
          attempt,
        })
        .catch((err: unknown) => {
          // A launcher's UserError (the stage asks what its host or pool cannot give: GPUs, nodes): a retry
          // meets it again, so the stage fails at once with the launcher's message (field and fix).
          if (err instanceof UserError)
            throw ApplicationFailure.nonRetryable(`bad input: ${err.message}`, 'BadInput');
          throw err;
        });
      log.info({ job: name, id: job.id }, 'launched the job');
    }

    // Progress: the status object in S3 (source of truth), refreshed by the job's stdout status lines (a hint
    // that arrives sooner), heartbeated and signalled to the pipeline workflow for its status query.
    let status: JobStatus | undefined;
    let lastStatusRead = 0;
    let lastSignal = 0;
    let lastSignalledStep = -1;
    let signalling: Promise<void> | undefined;
    const heartbeat = () =>
      ctx.heartbeat({
        job: name,
        step: status?.step ?? null,
        lastCheckpoint: status?.last_checkpoint ?? null,
      });
    const signalProgress = async (force: boolean) => {
      if (!status) return;
      if (force && signalling) await signalling;
      if (!force && (status.step === lastSignalledStep || Date.now() - lastSignal < progressMs)) return;
      lastSignal = Date.now();
      lastSignalledStep = status.step;
      const progress: StageProgress = {
        stage: stageName,
        attempt,
        step: status.step,
        totalSteps: status.total_steps,
        metrics: status.metrics,
        lastCheckpoint: status.last_checkpoint,
        jobName: name,
      };
      // At most one signal in flight, never awaited by the watch loop: while Temporal is unreachable the
      // client retries for a while, and the job must still be watched (and cancellable) meanwhile.
      if (signalling) return;
      signalling = ctx.client.workflow
        .getHandle(input.pipelineWorkflowId)
        .signal('stageProgress', progress)
        .catch((err: unknown) =>
          log.debug({ err }, 'progress signal not delivered (pipeline gone or Temporal unreachable)'),
        )
        .finally(() => {
          signalling = undefined;
        });
      if (force) await signalling;
    };

    // Stream the job's log into the worker's log, and take status lines from it as they come.
    const streamAbort = new AbortController();
    const streaming = (async () => {
      let partial = '';
      for await (const chunk of launcher.logs(name, {
        follow: true,
        tailBytes: 0,
        signal: streamAbort.signal,
      })) {
        const lines = (partial + chunk).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) {
          if (line.startsWith(STATUS_LINE_PREFIX)) {
            try {
              status = JSON.parse(line.slice(STATUS_LINE_PREFIX.length)) as JobStatus;
            } catch {
              // A torn line: the S3 status object will do.
            }
          } else if (line.trim() !== '') {
            log.debug({ job: name }, line);
          }
        }
      }
    })().catch((err: unknown) => log.debug({ err }, 'log streaming stopped'));

    // Woken at once when the launcher can tell the job ended (local: the exit-code file appears), else polled.
    let wake: () => void = () => undefined;
    const nextChange = () => new Promise<void>((resolve) => (wake = resolve));
    let changed = nextChange();
    const unwatch = launcher.watch?.(name, () => wake()) ?? (() => undefined);
    try {
      for (;;) {
        heartbeat();
        if (ctx.cancellationSignal.aborted) {
          const details = ctx.cancellationDetails;
          if (details?.cancelRequested) {
            log.info({ job: name }, 'cancelled: stopping the job’s process group');
            await launcher.cancel(name, graceMs);
            await launcher.release(name);
            throw new CancelledFailure('stage job cancelled; its process group was stopped');
          }
          // Worker shutdown, heartbeat timeout, activity gone: this attempt ends but the job lives on, for the
          // next attempt (on this worker or another) to re-attach to.
          log.info(
            { job: name, details },
            'activity attempt ended; leaving the job running for the next attempt',
          );
          throw new CancelledFailure('activity attempt ended; job left running for re-attach');
        }
        job = await launcher.status(name);
        if (!job || job.state !== 'running') break;
        if (Date.now() - lastStatusRead >= statusPollMs) {
          lastStatusRead = Date.now();
          status = (await store.getJson<JobStatus>(statusUri).catch(() => undefined)) ?? status;
        }
        await signalProgress(false);
        await Promise.race([sleep(pollMs), ctx.cancelled.catch(() => undefined), changed]);
        changed = nextChange();
      }
    } finally {
      unwatch();
      streamAbort.abort();
      await streaming;
    }

    if (job?.state === 'exited' && job.exitCode === EXIT_DONE) {
      // Sizes only: the reader that loads this checkpoint (the next stage's job) verifies every sha256 itself,
      // and hashing a large model here would sit on the critical path between stages.
      const latest = await checkpoints.latest(outputPrefix, 'size');
      if (!latest) {
        await launcher.release(name);
        throw ApplicationFailure.retryable(
          `job ${name} exited 0 without a committed checkpoint under ${outputPrefix}`,
          'JobFailed',
        );
      }
      status = (await store.getJson<JobStatus>(statusUri)) ?? status;
      const metrics = status?.metrics ?? {};
      status = status ? { ...status, step: latest.step, last_checkpoint: latest.uri } : status;
      void signalProgress(true); // the pipeline learns the outcome from the result; the signal is only a hint
      await launcher.release(name);
      // An eval stage's commit holds its result, not weights: its output is the checkpoint it evaluated
      // (trainer/trainflow_trainer/stages/eval.py), so later stages continue from the same weights.
      const evaluated =
        input.stage.kind === 'eval'
          ? (await store.getJson<{ checkpoint?: string }>(joinUri(latest.uri, 'eval.json')))?.checkpoint
          : undefined;
      const output = evaluated ?? latest.uri;
      log.info({ job: name, checkpoint: output, step: latest.step }, 'job done');
      return { outputCheckpoint: output, step: latest.step, metrics, jobName: name, attempt };
    }
    const tail = await readTail(launcher, name);
    await launcher.release(name);
    const failure = exitFailure(job?.exitCode, tail, name);
    // The worker's logger says it in one line (stage, attempt, last output line, retry); the full tail at debug.
    log.debug({ job: name, exitCode: job?.exitCode }, failure.message);
    throw failure;
  }

  return { runStageJob };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The trainer's CPU threads follow the stage's `resources.cpus_per_node`, shared by the node's processes (one per
 * GPU, or procs_per_node ranks, under torchrun; else one): PyTorch (OpenMP) otherwise starts one thread per core
 * in every process, and processes sharing a machine then oversubscribe it — two 2-thread jobs on 2 cores ran a
 * tiny model's step 4x slower than two 1-thread jobs. A `job.env` entry still wins.
 */
export function threadEnv(
  resources: { cpus_per_node?: number; gpus_per_node?: number; procs_per_node?: number } = {},
): Record<string, string> {
  if (!resources.cpus_per_node) return {};
  // the node's processes: one per GPU, else procs_per_node ranks on a CPU host (torchrun), else one
  const procs =
    (resources.gpus_per_node ?? 0) > 0 ? resources.gpus_per_node! : (resources.procs_per_node ?? 1);
  const threads = String(Math.max(1, Math.floor(resources.cpus_per_node / Math.max(1, procs))));
  return { OMP_NUM_THREADS: threads, MKL_NUM_THREADS: threads };
}
