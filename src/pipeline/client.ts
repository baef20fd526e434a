// Driving pipelines from the client side (CLI, tests, benches): start, resume, status. Workflows are started
// and queried through their definitions (typed arguments and results); the client only takes their names and
// types from them and never runs workflow code.
import {
  type Client,
  ServiceError,
  WorkflowExecutionAlreadyStartedError,
  type WorkflowHandle,
  type WorkflowStartOptions,
} from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { statusQuery, trainingPipeline, type PipelineInput } from '../../workflows';
import type { PipelineConfig } from '../config/schema';
import { parseConfig } from '../config/load';
import { UserError } from '../errors';
import { ManifestStore } from '../storage/manifest';
import { ObjectStore } from '../storage/s3';
import { logger } from '../log';
import { completedStageChanges, formatStageChanges } from './identity';
import { initialSearchAttributes, registerCommand } from './search-attributes';
import type { PipelineStatus } from './status';

/** `demo-20261129-0512`: the pipeline name and the UTC start minute (plus seconds when asked to be unique). */
export function newPipelineId(name: string, now = new Date()): string {
  const iso = now.toISOString();
  return `${name}-${iso.slice(0, 10).replaceAll('-', '')}-${iso.slice(11, 16).replace(':', '')}${iso.slice(17, 19)}`;
}

export function storageOf(config: PipelineConfig): ObjectStore {
  return new ObjectStore({
    endpoint: config.storage.endpoint,
    region: config.storage.region,
    force_path_style: config.storage.force_path_style,
  });
}

export async function startPipeline(
  client: Client,
  config: PipelineConfig,
  options: { id?: string } = {},
): Promise<WorkflowHandle<typeof trainingPipeline>> {
  const id = options.id ?? newPipelineId(config.metadata.name);
  try {
    return await startWithSearchAttributes(client, config, {
      workflowId: id,
      taskQueue: config.temporal.task_queue,
      args: [{ config }],
      memo: { pipeline: config.metadata.name },
    });
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) {
      throw new UserError(
        `pipeline ${id} is already running; follow it with \`trainflow status ${id} --watch\``,
      );
    }
    throw err;
  }
}

/** The input the latest run of a pipeline was started with (from its history's first event). */
export async function previousInput(client: Client, id: string): Promise<PipelineInput> {
  const handle = client.workflow.getHandle(id);
  let history;
  try {
    history = await handle.fetchHistory();
  } catch {
    throw new UserError(`no pipeline ${id} in Temporal namespace ${client.options.namespace}`);
  }
  const payload = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
  if (!payload) throw new UserError(`pipeline ${id} has no recorded input`);
  return defaultPayloadConverter.fromPayload<PipelineInput>(payload);
}

export function resolveInputConfig(input: PipelineInput): PipelineConfig {
  if (input.config) return input.config;
  if (input.source) return parseConfig(input.source.yaml, input.source.file);
  throw new UserError('the previous run has neither a config nor a config source');
}

/**
 * `resume`: a new run of the same pipeline id that skips completed stages (per the manifest) and restarts the
 * failed stage from its last committed checkpoint. A changed config is refused for completed stages (with the
 * difference) unless `force`; `from` reruns that stage and all after it.
 */
export async function resumePipeline(
  client: Client,
  id: string,
  options: { config?: PipelineConfig; from?: string; force?: boolean } = {},
): Promise<WorkflowHandle<typeof trainingPipeline>> {
  const handle = client.workflow.getHandle(id);
  const description = await handle.describe().catch(() => undefined);
  if (description?.status.name === 'RUNNING') {
    throw new UserError(
      `pipeline ${id} is still running; cancel it first (\`trainflow cancel ${id}\`) or let it finish`,
    );
  }
  const config = options.config ?? resolveInputConfig(await previousInput(client, id));
  const manifest = await new ManifestStore(storageOf(config), config.storage.uri).read(id);
  if (!manifest)
    throw new UserError(`pipeline ${id} has no manifest under ${config.storage.uri}: nothing to resume`);
  if (options.from && !config.stages.some((s) => s.name === options.from)) {
    throw new UserError(
      `--from ${options.from}: no such stage (stages: ${config.stages.map((s) => s.name).join(', ')})`,
    );
  }
  const fromIndex = options.from
    ? config.stages.findIndex((s) => s.name === options.from)
    : config.stages.length;
  const kept = Object.keys(manifest.stages).filter((name) => {
    const index = config.stages.findIndex((s) => s.name === name);
    return index >= 0 && index < fromIndex;
  });
  const changes = completedStageChanges(manifest.config as PipelineConfig, config, kept);
  if (changes.length > 0 && !options.force) {
    throw new UserError(
      `the config changed for completed stage(s) of ${id}:\n${formatStageChanges(changes)}\n` +
        'rerun from the first changed stage with --from STAGE, or keep their recorded outputs with --force',
    );
  }
  return startWithSearchAttributes(client, config, {
    workflowId: id,
    taskQueue: config.temporal.task_queue,
    args: [{ config, resume: { fromStage: options.from, force: options.force } }],
    memo: { pipeline: config.metadata.name },
  });
}

const unregistered = new Set<string>();

/**
 * Starts a pipeline run with its search attributes (see search-attributes.ts). A namespace where they are not
 * registered refuses them: the run then starts without them (the workflow only upserts attributes it started
 * with), and a line says how to register them, once per namespace.
 */
async function startWithSearchAttributes(
  client: Client,
  config: PipelineConfig,
  options: Omit<WorkflowStartOptions<typeof trainingPipeline>, 'typedSearchAttributes'>,
): Promise<WorkflowHandle<typeof trainingPipeline>> {
  const namespace = client.options.namespace;
  if (!unregistered.has(namespace)) {
    try {
      return await client.workflow.start(trainingPipeline, {
        ...options,
        typedSearchAttributes: initialSearchAttributes(config.metadata.name),
      });
    } catch (err) {
      // The server's reason is on the gRPC cause: `Namespace default has no mapping defined for search attribute …`.
      const reason = err instanceof ServiceError ? `${err.message} ${String(err.cause)}` : '';
      if (!/search attribute/i.test(reason)) throw err;
      unregistered.add(namespace);
      logger.warn(
        `namespace ${namespace} has no trainflow search attributes: \`trainflow list --name/--state\` will ` +
          `not find this run; register them once with \`${registerCommand(namespace)}\``,
      );
    }
  }
  return client.workflow.start(trainingPipeline, options);
}

export async function queryStatus(client: Client, id: string): Promise<PipelineStatus> {
  return client.workflow.getHandle(id).query(statusQuery);
}
