// Recurring retrains on Temporal Schedules. A schedule keeps the config's YAML source (not a resolved config),
// so each run parses it at its scheduled time: `{{scheduled_time}}` / `{{scheduled_date}}` in the config pick
// the data snapshot, and `model.init: {from_pipeline: NAME}` takes the latest successful run's final checkpoint.
// Runs get the workflow id `<schedule name>-<scheduled time>` (Temporal appends the time).
import { type Client, ScheduleNotFoundError, ScheduleOverlapPolicy } from '@temporalio/client';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { loadConfigFile } from '../config/load';
import { UserError } from '../errors';
import { trainingPipeline, type PipelineInput } from '../../workflows';

export const OVERLAP_POLICIES = {
  skip: ScheduleOverlapPolicy.SKIP,
  'buffer-one': ScheduleOverlapPolicy.BUFFER_ONE,
  'buffer-all': ScheduleOverlapPolicy.BUFFER_ALL,
  'cancel-other': ScheduleOverlapPolicy.CANCEL_OTHER,
  'terminate-other': ScheduleOverlapPolicy.TERMINATE_OTHER,
  'allow-all': ScheduleOverlapPolicy.ALLOW_ALL,
} as const;
export type OverlapName = keyof typeof OVERLAP_POLICIES;

export interface CreateScheduleOptions {
  name: string;
  configFile: string;
  /** Defaults to the config's schedule block. */
  cron?: string;
  overlap?: OverlapName;
  pauseOnFailure?: boolean;
  timezone?: string;
}

export async function createSchedule(client: Client, options: CreateScheduleOptions): Promise<void> {
  const file = path.resolve(options.configFile);
  // Validate now, with a sample time, so a broken config fails here and not at 3 a.m.
  const now = new Date().toISOString();
  const config = loadConfigFile(file, { scheduled_time: now, scheduled_date: now.slice(0, 10) });
  const cron = options.cron ?? config.schedule?.cron;
  if (!cron)
    throw new UserError(`${options.configFile}: no --cron given and the config has no schedule.cron`);
  const overlap = options.overlap ?? config.schedule?.overlap ?? 'skip';
  if (!(overlap in OVERLAP_POLICIES)) {
    throw new UserError(`--overlap ${overlap}: expected one of ${Object.keys(OVERLAP_POLICIES).join(' | ')}`);
  }
  const input: PipelineInput = { source: { yaml: readFileSync(file, 'utf8'), file } };
  try {
    await client.schedule.create({
      scheduleId: options.name,
      spec: { cronExpressions: [cron], timezone: options.timezone ?? config.schedule?.timezone },
      action: {
        type: 'startWorkflow',
        workflowType: trainingPipeline,
        workflowId: options.name,
        taskQueue: config.temporal.task_queue,
        args: [input],
        memo: { pipeline: config.metadata.name },
      },
      policies: {
        overlap: OVERLAP_POLICIES[overlap],
        pauseOnFailure: options.pauseOnFailure ?? config.schedule?.pause_on_failure ?? true,
      },
      memo: { configFile: file },
    });
  } catch (err) {
    if ((err as Error).name === 'ScheduleAlreadyRunning') {
      throw new UserError(`schedule ${options.name} already exists; delete it first or pick another name`);
    }
    throw err;
  }
}

/** Runs on a missing schedule: one sentence instead of a gRPC error. */
export async function withSchedule<T>(
  client: Client,
  name: string,
  fn: (h: ReturnType<Client['schedule']['getHandle']>) => Promise<T>,
): Promise<T> {
  try {
    return await fn(client.schedule.getHandle(name));
  } catch (err) {
    if (err instanceof ScheduleNotFoundError)
      throw new UserError(`no schedule named ${name} (see \`trainflow schedule list\`)`);
    throw err;
  }
}

/** Workflow ids of the runs a schedule started, newest last (recent and running). */
export async function scheduleRuns(client: Client, name: string): Promise<string[]> {
  return withSchedule(client, name, async (handle) => {
    const d = await handle.describe();
    const ids = [
      ...d.info.recentActions.map((a) => a.action.workflow.workflowId),
      ...d.info.runningActions.map((a) => a.workflow.workflowId),
    ];
    return [...new Set(ids)];
  });
}
