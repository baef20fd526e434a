// What the pipeline CLI commands share: connecting (from a config file or flags/env), following a pipeline
// until it ends, and reading a pipeline's status even when no worker answers queries.
import type { Client } from '@temporalio/client';
import type { Command } from 'commander';
import { setTimeout as sleep } from 'node:timers/promises';
import { statusQuery, type trainingPipeline } from '../../workflows';
import { loadConfigFile } from '../config/load';
import type { PipelineConfig } from '../config/schema';
import { connectClient, temporalAddress, workflowUiUrl } from '../temporal/connection';
import { renderStatus } from './render';
import type { PipelineStatus } from './status';

export interface ConnectionFlags {
  address?: string;
  namespace?: string;
  config?: string;
}

export function addConnectionFlags(command: Command): Command {
  return command
    .option(
      '--address <host:port>',
      'Temporal frontend (default: the config’s, $TEMPORAL_ADDRESS or 127.0.0.1:7233)',
    )
    .option('--namespace <name>', 'Temporal namespace (default: the config’s or "default")');
}

export async function clientFor(flags: ConnectionFlags, config?: PipelineConfig): Promise<Client> {
  const loaded = config ?? (flags.config ? loadConfigFile(flags.config) : undefined);
  return connectClient({
    address: flags.address ?? loaded?.temporal.address ?? temporalAddress(),
    namespace: flags.namespace ?? loaded?.temporal.namespace ?? 'default',
  });
}

export function uiUrl(client: Client, id: string, address = temporalAddress()): string {
  return workflowUiUrl(address, client.options.namespace, id);
}

/** The status query, or — for a closed run no worker answers for — its result when it completed. */
export async function readStatus(client: Client, id: string): Promise<PipelineStatus | undefined> {
  const handle = client.workflow.getHandle<typeof trainingPipeline>(id);
  try {
    return await Promise.race([
      handle.query(statusQuery),
      sleep(5000).then(() => Promise.reject(new Error('query timed out'))),
    ]);
  } catch {
    const d = await handle.describe();
    if (d.status.name === 'COMPLETED') return await handle.result();
    return undefined;
  }
}

/**
 * Redraws the status every second until the run ends; returns its final status. On a terminal the block is
 * redrawn in place; otherwise a line is printed when something changes.
 */
export async function follow(
  client: Client,
  id: string,
  out: NodeJS.WriteStream = process.stdout,
): Promise<PipelineStatus | undefined> {
  let previousLines = 0;
  let previousText = '';
  const link = uiUrl(client, id);
  for (;;) {
    const status = await readStatus(client, id).catch(() => undefined);
    const text = status
      ? renderStatus(status, link)
      : `pipeline ${id}: waiting for a control worker to answer (start one: \`trainflow worker\`)`;
    if (text !== previousText) {
      if (out.isTTY && previousLines > 0) out.write(`\x1b[${previousLines}A\x1b[J`);
      out.write(`${text}\n`);
      previousLines = text.split('\n').length;
      previousText = text;
    }
    if (status && status.state !== 'running') return status;
    if (!status) {
      const d = await client.workflow
        .getHandle(id)
        .describe()
        .catch(() => undefined);
      if (d && d.status.name !== 'RUNNING') {
        out.write(`pipeline ${id}: ${d.status.name.toLowerCase()}\n`);
        return undefined;
      }
    }
    await sleep(1000);
  }
}
